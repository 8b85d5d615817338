"""Orthanc-style configuration sources: JSON files, folders, variables, secrets.

Model-agnostic: these functions know Orthanc's file format and the orthancteam
Docker conventions, not DicomKeep's options; `dicomkeep.common.settings` feeds
them its model. Mirrors ORTHANC_API.md §15:

- a file or a folder of `*.json` files (a top-level key in two files is an error,
  as in Orthanc's core, which does not merge);
- `//` and `/* */` comments and trailing commas (JsonCpp accepts both), read by
  the `json5` parser (a superset of what JsonCpp's lenient mode accepts);
- `${VAR}` / `${VAR:-default}` replaced in the file text before parsing;
- `ORTHANC_JSON`, `ORTHANC__STABLE_AGE`-style variables and `NAME_SECRET=file`
  (orthancteam/orthanc images), applied by deep merge.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import json5
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

logger = logging.getLogger(__name__)

#: Prefix of the orthancteam variables (`ORTHANC__STABLE_AGE`).
ENV_PREFIX = "ORTHANC__"

#: Segments whose variable name does not follow "underscore before each capital":
#: acronyms, as in orthancteam/orthanc's `env-var-non-standards.json`.
ENV_SEGMENT_EXCEPTIONS: Mapping[str, str] = {
    "CaseSensitivePN": "CASE_SENSITIVE_PN",
    "HttpsCACertificates": "HTTPS_CA_CERTIFICATES",
    "StoreMD5ForAttachments": "STORE_MD5_FOR_ATTACHMENTS",
    "PostgreSQL": "POSTGRESQL",
    "MySQL": "MYSQL",
    "RabbitMQ": "RABBITMQ",
}

# A JSON string (escapes included) or a comment; strings are matched first so that
# "http://host" keeps its `//`.
_STRING = r'"(?:\\.|[^"\\])*"'
_COMMENT_RE = re.compile(_STRING + r"|//[^\n]*|/\*.*?\*/", re.DOTALL)
_TRAILING_COMMA_RE = re.compile(_STRING + r"|,(?=\s*[}\]])")
_JSON5_ERROR_RE = re.compile(r"<string>:(\d+) (.*) at column (\d+)$")
_VARIABLE_RE = re.compile(r"\$\{([^}]*)\}")
_CAPITAL_RE = re.compile(r"(?<!^)(?=[A-Z])")


class ConfigError(ValueError):
    """The configuration cannot be loaded: the message names the option or file."""


def env_name(path: Sequence[str]) -> str:
    """Return the orthancteam variable name of an option path.

    `("StableAge",)` -> `ORTHANC__STABLE_AGE`; `("PostgreSQL", "Host")` ->
    `ORTHANC__POSTGRESQL__HOST`. Each segment gets an underscore before every
    capital and is upper-cased; segments are joined by `__`. Acronyms listed in
    `ENV_SEGMENT_EXCEPTIONS` keep their orthancteam spelling
    (`ORTHANC__CASE_SENSITIVE_PN`, not `..._P_N`). Raises ValueError on an empty path.
    """
    if not path:
        raise ValueError("an option path has at least one segment")
    return ENV_PREFIX + "__".join(_env_segment(segment) for segment in path)


def _env_segment(segment: str) -> str:
    exception = ENV_SEGMENT_EXCEPTIONS.get(segment)
    if exception is not None:
        return exception
    return _CAPITAL_RE.sub("_", segment).upper()


def strip_json_comments(text: str) -> str:
    """Remove `//` and `/* */` comments and trailing commas outside JSON strings.

    Not used to load configurations (`parse_json_object` reads them with `json5`):
    kept for tools that need the strict JSON of a commented file.

    A comment becomes a space (a block comment keeps its newlines, so JSON error
    line numbers still match the file). Text inside strings is never touched.
    """

    def replace_comment(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith('"'):
            return token
        return " " + "\n" * token.count("\n")

    def replace_comma(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else ""

    return _TRAILING_COMMA_RE.sub(replace_comma, _COMMENT_RE.sub(replace_comment, text))


def substitute_variables(text: str, environ: Mapping[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}` from `environ`.

    Mirrors Orthanc's `Toolbox::SubstituteVariables`: the default is used only when
    the variable is unset (an empty variable stays empty, unlike the shell's `:-`);
    an unset variable without default becomes the empty string.
    """

    def replace(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return environ.get(name, default)

    return _VARIABLE_RE.sub(replace, text)


def parse_json_object(text: str, source: str) -> dict[str, Any]:
    """Parse a JSON object that may contain comments; raise ConfigError naming `source`.

    Read by `json5`: `//` and `/* */` comments and trailing commas are accepted, as
    Orthanc's JsonCpp does; the error names the line and column.
    """
    try:
        document = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid JSON at {_json5_position(str(exc))}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: a configuration must be a JSON object")
    return document


def _json5_position(message: str) -> str:
    """Turn json5's `<string>:4 Unexpected "x" at column 3` into `line 4 column 3: ...`."""
    match = _JSON5_ERROR_RE.match(message)
    if match is None:
        return message
    line, what, column = match.groups()
    return f"line {line} column {column}: {what}"


def read_configuration(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read a configuration file, or every `*.json` file of a folder (not recursive).

    Variables are substituted in each file's text, which is then parsed. Files
    of a folder are read in name order; a top-level key present in two of them raises
    ConfigError, as Orthanc's core does (no merge). Raises ConfigError if the path
    does not exist or a file cannot be read or parsed.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"Inexistent configuration file or folder: {path}")
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the configuration file {file}: {exc}") from exc
        document = parse_json_object(substitute_variables(text, environ), str(file))
        for key, value in document.items():
            if key in merged:
                raise ConfigError(
                    f'The configuration section "{key}" is defined in 2 different '
                    f"configuration files ({origin[key]} and {file})"
                )
            merged[key] = value
            origin[key] = file
        logger.debug("configuration file loaded: %s (%d options)", file, len(document))
    return merged


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated by `override`; nested objects are merged, later wins.

    Neither argument is modified. Mirrors the orthancteam images' merge of files,
    `ORTHANC_JSON` and variables.
    """
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def option_paths(model: type[BaseModel]) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Yield the alias path and field of every option of `model`, sections included.

    A field whose type is a pydantic model (a section such as `PostgreSQL`) yields
    its own path and then those of its fields.
    """
    for name, field in model.model_fields.items():
        path = (field.alias or name,)
        yield path, field
        section = _section_model(field)
        if section is not None:
            for sub_path, sub_field in option_paths(section):
                yield path + sub_path, sub_field


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def accepts_only_strings(field: FieldInfo) -> bool:
    """Tell whether a field takes a string (or null) and nothing else."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        members = set(get_args(annotation)) - {NoneType}
    else:
        members = {annotation}
    return members == {str}


def parse_env_value(raw: str, field: FieldInfo) -> Any:
    """Interpret a variable's text for `field`: JSON when possible, else the text.

    As orthancteam does (`5` -> 5, `true` -> True, `{"a": "b"}` -> an object), except
    that a string-only field keeps the text as is, so that a numeric password stays
    a string instead of failing the type check.
    """
    if accepts_only_strings(field):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def resolve_secrets(
    environ: Mapping[str, str], names: set[str], secrets_dir: Path
) -> dict[str, str]:
    """Return `environ` plus the value of each `NAME_SECRET=file` whose NAME is in `names`.

    The value is the content of `secrets_dir / file` (Docker secrets; an absolute
    `file` is used as is) without its trailing line break, and wins over a plain
    `NAME`. Variables of other names are ignored. Raises ConfigError if the file
    cannot be read.
    """
    resolved = dict(environ)
    for key, file_name in environ.items():
        name = key.removesuffix("_SECRET")
        if name == key or name not in names:
            continue
        secret_path = secrets_dir / file_name
        try:
            resolved[name] = secret_path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read the secret {secret_path}: {exc}") from exc
    return resolved


def overlay_from_variables(
    environ: Mapping[str, str],
    variables: Mapping[str, tuple[tuple[str, ...], FieldInfo]],
) -> dict[str, Any]:
    """Build the nested option object set by the variables named in `variables`.

    `variables` maps a variable name to its option path and field. Values are read
    with `parse_env_value`. A shorter path (a whole section) is applied before a
    longer one, so `ORTHANC__POSTGRESQL__HOST` wins over `ORTHANC__POSTGRESQL`.
    Variables not named in `variables` are ignored.
    """
    present = [(variables[name], name) for name in environ if name in variables]
    present.sort(key=lambda item: (len(item[0][0]), item[1]))
    overlay: dict[str, Any] = {}
    for (path, field), name in present:
        value = parse_env_value(environ[name], field)
        for key in reversed(path):
            value = {key: value}
        overlay = deep_merge(overlay, value)
        logger.debug("configuration option %s set by variable %s", ".".join(path), name)
    return overlay


def render_sample(model: type[BaseModel], header: str) -> str:
    """Render an annotated JSON configuration of `model`'s options and defaults.

    Each option is preceded by its description as `//` comments; an option whose
    default is null is written commented out, with its `examples[0]` when the field
    has one. Nested models become nested objects. After comment removal the text is
    strict JSON, and loading it yields the defaults.
    """
    lines = [f"// {line}" for line in header.splitlines()]
    lines += ["{", *_render_object(model, "  "), "}"]
    return "\n".join(lines) + "\n"


def _render_object(model: type[BaseModel], indent: str) -> list[str]:
    entries: list[tuple[list[str], list[str], bool]] = []
    for name, field in model.model_fields.items():
        key = json.dumps(field.alias or name)
        comment = [
            f"{indent}// {line}"
            for line in textwrap.wrap(field.description or "", 96 - len(indent))
        ]
        section = _section_model(field)
        default = field.get_default(call_default_factory=True)
        if section is not None:
            body = [f"{indent}{key} : {{", *_render_object(section, indent + "  "), f"{indent}}}"]
            entries.append((comment, body, True))
        elif default is None:
            example = field.examples[0] if field.examples else None
            text = json.dumps(example) if example is not None else "..."
            entries.append((comment, [f"{indent}// {key} : {text}"], False))
        else:
            entries.append((comment, [f"{indent}{key} : {json.dumps(default)}"], True))
    last_active = max((i for i, entry in enumerate(entries) if entry[2]), default=-1)
    lines: list[str] = []
    for i, (comment, body, active) in enumerate(entries):
        if i > 0:
            lines.append("")
        if active and i < last_active:
            body = [*body[:-1], body[-1] + ","]
        lines += comment + body
    return lines


def describe_validation_error(exc: ValidationError) -> str:
    """Turn a pydantic error into one line naming each bad option by its JSON path.

    Strict-type errors add the JSON type that was found ("got a string"); values
    themselves are never echoed, as they may be passwords.
    """
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if error["type"] == "value_error" and cause else error["msg"]
        if error["type"].endswith("_type"):
            message += f" (got {_json_kind(error['input'])})"
        problems.append(f'"{where}": {message}' if where else message)
    return "Bad configuration: " + "; ".join(problems)


def _json_kind(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"))
    if value is None:
        return "null"
    for kind, text in kinds:
        if isinstance(value, kind):
            return text
    return "an array" if isinstance(value, list) else "an object"
