"""Options DicomKeep accepts but does not act on: refused at start, or logged as ignored.

An Orthanc configuration file must load unchanged, so the settings model accepts
every Orthanc option it knows. Most are honoured; the rest fall in two groups:
- *refused*: a value that asks for a behaviour DicomKeep does not have (Lua
  scripts, extra main DICOM tags...). Starting anyway would let the user believe
  it works, so `check_options` raises ConfigError naming each such option;
- *ignored*: harmless Orthanc-only tuning (thread counts, caches, WebDAV...).
  When the configuration sets one, it is logged once, at start, as ignored.
Every composition root calls `check_options` right after loading the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dicomkeep.common.config_files import ConfigError
from dicomkeep.common.settings import Settings

log = logging.getLogger(__name__)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

#: Options that DicomKeep reads nowhere, with why ignoring them is harmless. Logged
#: once when the configuration sets them.
IGNORED_OPTIONS: dict[str, str] = {
    "TemporaryDirectory": "DicomKeep keeps no temporary files of its own",
    "MaximumStorageCacheSize": "DicomKeep has no DICOM file cache",
    "HttpThreadsCount": "the REST API is served by an asynchronous server, not a thread pool",
    "WebDavEnabled": "DicomKeep serves no WebDAV share",
    "SaveJobs": "jobs are always kept in the index, as the distributed mode needs",
    "DicomModalitiesInDatabase": "modalities changed through REST are always kept in the index",
    "OrthancPeersInDatabase": "peers changed through REST are always kept in the index",
    "DicomAssociationCloseDelay": (
        "DicomKeep's SCU closes each association when its operation ends"
    ),
}


def _refusals(settings: Settings) -> list[str]:
    checks: list[tuple[bool, str]] = [
        (
            settings.execute_lua_enabled,
            '"ExecuteLuaEnabled" is true, but DicomKeep does not run Lua scripts '
            "(/tools/execute-script answers 403 as in Orthanc); remove it or set it to false",
        ),
        (
            bool(settings.extra_main_dicom_tags),
            '"ExtraMainDicomTags" is set, but DicomKeep indexes only Orthanc\'s default '
            "main DICOM tags; remove it",
        ),
        (
            not settings.http_server_enabled and settings.dicomkeep.mode == "distributed",
            '"HttpServerEnabled" is false in the distributed mode: the gateway service '
            "is the HTTP server; run no gateway instead",
        ),
        (
            settings.postgresql.enable_index and settings.dicomkeep.mode != "distributed",
            '"PostgreSQL.EnableIndex" is true, but "DicomKeep.Mode" is "allinone" (SQLite): '
            'set "DicomKeep": {"Mode": "distributed"} to use PostgreSQL',
        ),
        (
            settings.aws_s3_storage.virtual_addressing,
            '"AwsS3Storage.VirtualAddressing" is true, but DicomKeep addresses buckets '
            "path-style only; remove it or set it to false",
        ),
        (
            settings.dicom_scu_preferred_transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN,
            '"DicomScuPreferredTransferSyntax" is not Explicit VR Little Endian, but '
            "DicomKeep's SCU sends files in their stored syntax (uncompressed ones "
            "proposed as Explicit, then Implicit VR Little Endian) and never transcodes; "
            "remove it",
        ),
        (
            any(_uses_dicom_tls(value) for value in settings.dicom_modalities.values()),
            '"DicomModalities" has a modality with "UseDicomTls": true, but DicomKeep\'s '
            "SCU does not open TLS associations (only its DICOM server offers TLS); "
            "remove it",
        ),
    ]
    return [message for refused, message in checks if refused]


def _uses_dicom_tls(value: object) -> bool:
    return isinstance(value, dict) and bool(value.get("UseDicomTls", False))


def refused_options(settings: Settings) -> list[str]:
    """Return one message per option whose value DicomKeep cannot honour."""
    return _refusals(settings)


def ignored_options(settings: Settings) -> list[str]:
    """Return one message per harmless option that the configuration sets."""
    given = {Settings.model_fields[name].alias or name for name in settings.model_fields_set}
    return [
        f'"{option}" is ignored: {reason}'
        for option, reason in IGNORED_OPTIONS.items()
        if option in given
    ]


def check_options(settings: Settings, warn: Callable[[str], None] | None = None) -> Settings:
    """Refuse unsupported option values; log the ignored options once; return `settings`.

    Raises ConfigError listing every refused option (one per line). `warn`
    receives each ignored-option message (default: this module's logger).
    """
    refused = refused_options(settings)
    if refused:
        raise ConfigError("\n".join(refused))
    for message in ignored_options(settings):
        (warn or log.warning)(message)
    return settings
