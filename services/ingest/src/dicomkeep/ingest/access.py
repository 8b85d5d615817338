"""Which DICOM requests the SCP serves, per calling AET and IP (ORTHANC_API.md §11.2).

Mirrors OrthancApplicationEntityFilter::IsAllowedRequest: `DicomAlwaysAllow<Cmd>`
allows anyone; otherwise the calling AET must be a known modality (compared per
StrictAetComparison), pass the host check when DicomCheckModalityHost is on, and
have `Allow<Cmd>` (default true). With several modalities of that AET, the request
is allowed if one whose host matches allows it, or if all of them allow it.
The modalities are those of the configuration, overridden by the ones set or
deleted through REST (kept in the index, `JobStore.modality_overrides`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomkeep.common.index import Index
from dicomkeep.common.settings import Settings

log = logging.getLogger(__name__)

#: Commands and the option allowing them from unknown AETs.
ALWAYS_ALLOW = {
    "Echo": "dicom_always_allow_echo",
    "Store": "dicom_always_allow_store",
    "Find": "dicom_always_allow_find",
    "FindWorklist": "dicom_always_allow_find_worklist",
    "Get": "dicom_always_allow_get",
    "Move": "dicom_always_allow_move",
}


@dataclass(frozen=True)
class ModalityAccess:
    """What access control needs of one `DicomModalities` entry."""

    aet: str
    host: str
    permissions: Mapping[str, Any]

    def allows(self, command: str) -> bool:
        """Return the entry's `Allow<command>` (true when absent, as Orthanc)."""
        return bool(self.permissions.get(f"Allow{command}", True))


def modality_access(name: str, entry: Any) -> ModalityAccess | None:
    """Read one entry (array or object form); None, with a warning, if malformed."""
    if isinstance(entry, list) and len(entry) >= 3:
        return ModalityAccess(str(entry[0]), str(entry[1]), {})
    if isinstance(entry, dict) and "AET" in entry and "Host" in entry:
        return ModalityAccess(str(entry["AET"]), str(entry["Host"]), entry)
    log.warning("ignoring malformed DicomModalities entry %s", name)
    return None


async def effective_modalities(settings: Settings, index: Index | None) -> list[ModalityAccess]:
    """Return the configured modalities with the REST overrides of the index applied."""
    entries: dict[str, Any] = dict(settings.dicom_modalities)
    if index is not None:
        for name, value in (await index.jobs.modality_overrides()).items():
            if value is None:
                entries.pop(name, None)
            else:
                entries[name] = value
    found = [modality_access(name, entry) for name, entry in entries.items()]
    return [m for m in found if m is not None]


def is_allowed(
    settings: Settings,
    modalities: list[ModalityAccess],
    command: str,
    remote_aet: str,
    remote_ip: str,
) -> bool:
    """Tell whether `command` (`Find`, `Move`, ...) from this AET and IP is served."""
    if getattr(settings, ALWAYS_ALLOW[command]):
        return True
    strict = settings.strict_aet_comparison

    def same(aet: str) -> bool:
        return aet == remote_aet if strict else aet.upper() == remote_aet.upper()

    matches = [m for m in modalities if same(m.aet)]
    check_host = settings.dicom_check_modality_host
    if len(matches) == 1:
        only = matches[0]
        return (not check_host or only.host == remote_ip) and only.allows(command)
    if not matches:
        return False
    if any(m.host == remote_ip and m.allows(command) for m in matches):
        return True
    return all(m.allows(command) for m in matches)
