"""Remote DICOM modalities: `DicomModalities` entries, as REST and the SCUs use them.

Mirrors Orthanc's RemoteModalityParameters (ORTHANC_API.md §11.1, §11.6):
the array form `["AET", "host", port(, "Manufacturer")]` or the object form, names
of `[A-Za-z0-9_-]`. The effective set is the configuration overlaid by what REST
clients set or deleted, which the index keeps (`JobStore.modality_overrides`) so
that every replica sees the same modalities. (The SCP's access rules, §11.2,
are ingest's `access.py`.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import JobStore
from dicomkeep.common.settings import Settings

log = logging.getLogger(__name__)

#: Longest modality or peer name accepted (an Orthanc name is a short identifier).
MAX_NAME_LENGTH = 256
_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
MANUFACTURERS = ("Generic", "GenericNoWildcardInDates", "GenericNoUniversalWildcard", "Vitrea", "GE")
#: The permission flags of the object form, each true by default.
PERMISSIONS = (
    "AllowEcho", "AllowFind", "AllowFindWorklist", "AllowGet", "AllowMove", "AllowStore",
    "AllowNAction", "AllowEventReport", "AllowTranscoding",
)  # fmt: skip


@dataclass(frozen=True)
class Modality:
    """One remote modality (Orthanc's object form)."""

    aet: str
    host: str
    port: int
    manufacturer: str = "Generic"
    permissions: tuple[tuple[str, bool], ...] = tuple((p, True) for p in PERMISSIONS)
    use_dicom_tls: bool = False
    local_aet: str = ""
    timeout: int = 0

    def allows(self, permission: str) -> bool:
        """Tell whether a flag such as `AllowMove` is set."""
        return dict(self.permissions).get(permission, True)

    def to_json(self) -> dict[str, Any]:
        """Return the object form with every field (`GET /modalities?expand`)."""
        body: dict[str, Any] = {
            "AET": self.aet,
            "Host": self.host,
            "Port": self.port,
            "Manufacturer": self.manufacturer,
            "UseDicomTls": self.use_dicom_tls,
            "LocalAet": self.local_aet,
            "Timeout": self.timeout,
        }
        body.update(dict(self.permissions))
        return body


def _bad(details: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


def check_name(name: str) -> None:
    """Raise 400 unless a modality name uses only `[A-Za-z0-9_-]`, at most
    MAX_NAME_LENGTH characters."""
    if not _NAME.fullmatch(name):
        raise OrthancError(
            ErrorCode.BAD_REQUEST, f"Invalid modality name (only [A-Za-z0-9_-], at most {MAX_NAME_LENGTH}): "
            f"{name[:80]}"
        )


def _port(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _bad(f"Invalid port number for a modality: {value!r}")
    return value


def _text(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise _bad(f'The field "{key}" of a modality must be a non-empty string')
    return value


def parse_modality(value: Any) -> Modality:
    """Parse the array or object form; raise 400 *Bad file format* when malformed."""
    if isinstance(value, list):
        if len(value) not in (3, 4) or not all(isinstance(v, str) for v in value[:2]):
            raise _bad('A modality must be ["AET", "host", port] or ["AET", "host", port, "Manufacturer"]')
        body: dict[str, Any] = {"AET": value[0], "Host": value[1], "Port": value[2]}
        if len(value) == 4:
            body["Manufacturer"] = value[3]
        value = body
    if not isinstance(value, dict):
        raise _bad("A modality must be a JSON array or object")
    aet = _text(value, "AET")
    if len(aet) > 16:
        raise _bad(f"AET longer than 16 characters: {aet}")
    manufacturer = _text(value, "Manufacturer", "Generic")
    if manufacturer not in MANUFACTURERS:
        raise _bad(f"Unknown manufacturer: {manufacturer}")
    permissions = dict((p, True) for p in PERMISSIONS)
    for key in (*PERMISSIONS, "AllowStorageCommitment", "UseDicomTls"):
        if key in value and not isinstance(value[key], bool):
            raise _bad(f'The field "{key}" of a modality must be a Boolean')
    if "AllowStorageCommitment" in value:
        permissions["AllowNAction"] = permissions["AllowEventReport"] = value["AllowStorageCommitment"]
    permissions.update({p: value[p] for p in PERMISSIONS if p in value})
    timeout = value.get("Timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise _bad(f"Invalid timeout for a modality: {timeout!r}")
    return Modality(
        aet=aet,
        host=_text(value, "Host"),
        port=_port(value.get("Port")),
        manufacturer=manufacturer,
        permissions=tuple(permissions.items()),
        use_dicom_tls=bool(value.get("UseDicomTls", False)),
        local_aet=_text(value, "LocalAet", ""),
        timeout=timeout,
    )


def configured_modalities(settings: Settings) -> dict[str, Modality]:
    """Return the valid `DicomModalities` entries; malformed ones are logged and skipped."""
    found: dict[str, Modality] = {}
    for name, value in settings.dicom_modalities.items():
        try:
            check_name(name)
            found[name] = parse_modality(value)
        except OrthancError as error:
            log.error("ignoring DicomModalities entry %s: %s", name, error.details)
    return found


async def load_modalities(settings: Settings, store: JobStore) -> dict[str, Modality]:
    """Return every modality by name (sorted): configuration, then REST changes."""
    modalities = configured_modalities(settings)
    for name, value in (await store.modality_overrides()).items():
        if value is None:
            modalities.pop(name, None)
            continue
        try:
            modalities[name] = parse_modality(value)
        except OrthancError:
            log.error("ignoring stored modality %s", name)
    return dict(sorted(modalities.items()))


async def get_modality(settings: Settings, store: JobStore, name: str) -> Modality:
    """Return one modality; raise 404 *Inexistent item* when unknown."""
    modality = (await load_modalities(settings, store)).get(name)
    if modality is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return modality


def same_aet(a: str, b: str, strict: bool) -> bool:
    """Compare two AETs as `StrictAetComparison` says (case-insensitive by default)."""
    return a == b if strict else a.upper() == b.upper()


def by_aet(modalities: Mapping[str, Modality], aet: str, strict: bool) -> list[Modality]:
    """Return the modalities with this AET, in name order (the first one is Orthanc's pick)."""
    return [m for _, m in sorted(modalities.items()) if same_aet(m.aet, aet, strict)]


def with_local_aet(modality: Modality, local_aet: str | None) -> Modality:
    """Return the modality with its `LocalAet` overridden when a request gives one."""
    return replace(modality, local_aet=local_aet) if local_aet else modality
