"""Loading the settings: files, folders, variables and secrets, in Orthanc's order.

`load_settings` reads, low to high: defaults, a JSON file or folder, `ORTHANC_JSON`,
`ORTHANC__...` variables and their `_SECRET` files, then the `DICOMKEEP_*`
variables (ORTHANC_API.md §15). A plain `pydantic-settings` model is not used: it
would name variables after the aliases, not after the orthancteam convention.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomkeep.common.config_files import (
    ConfigError,
    deep_merge,
    describe_validation_error,
    env_name,
    option_paths,
    overlay_from_variables,
    parse_json_object,
    read_configuration,
    render_sample,
    resolve_secrets,
)
from dicomkeep.common.settings.backends import DIRECT_VARIABLES
from dicomkeep.common.settings.model import Settings
from pydantic import ValidationError
from pydantic.fields import FieldInfo


def settings_variables() -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """Map each `ORTHANC__...` variable name to its option path and field.

    Computed with `env_name` from every alias of `Settings`, sections included
    (`ORTHANC__POSTGRESQL` and `ORTHANC__POSTGRESQL__HOST`); the inverse of the name
    rule, restricted to known options.
    """
    return {env_name(path): (path, field) for path, field in option_paths(Settings)}


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """Validate an option object (Orthanc's keys) into Settings; raise ConfigError.

    The message lists every bad option by its Orthanc path and the JSON type found.
    """
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: str | Path = "/run/secrets",
) -> Settings:
    """Load the settings from defaults, a file or folder, and the environment.

    Sources, low to high: defaults; `path` (a JSON file, or every `*.json` of a
    folder; comments and `${VAR:-default}` allowed); `ORTHANC_JSON` (deep-merged);
    `ORTHANC__...` variables (see `env_name`), whose `NAME_SECRET=file` form reads
    `secrets_dir/file`; then `DICOMKEEP_POSTGRES_DSN`, `DICOMKEEP_AMQP_URL`,
    `DICOMKEEP_REDIS_URL`, `DICOMKEEP_S3_*` (also with `_SECRET`). `environ`
    defaults to `os.environ`. Unknown keys and variables are ignored. Raises
    ConfigError on unreadable or invalid input; reads nothing but those files.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        data = read_configuration(Path(path), env)
    if env.get("ORTHANC_JSON"):
        data = deep_merge(data, parse_json_object(env["ORTHANC_JSON"], "ORTHANC_JSON"))
    variables = settings_variables()
    fields = dict(variables.values())
    direct = {name: (p, fields[p]) for name, p in DIRECT_VARIABLES.items()}
    env = resolve_secrets(env, set(variables) | set(direct), Path(secrets_dir))
    data = deep_merge(data, overlay_from_variables(env, variables))
    data = deep_merge(data, overlay_from_variables(env, direct))
    return parse_settings(data)


def sample_configuration() -> str:
    """Return an annotated Orthanc-style JSON of every option at its default.

    Like `Orthanc --config=file`: `//` comments give each option's meaning, unit
    and default; options without a default value are commented out. Loading the
    text with `load_settings` yields `Settings()`.
    """
    header = (
        "DicomKeep configuration, Orthanc-compatible: an Orthanc configuration file\n"
        "loads unchanged, unknown options are ignored. Comments are allowed."
    )
    return render_sample(Settings, header)
