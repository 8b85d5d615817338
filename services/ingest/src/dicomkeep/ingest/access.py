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

from dicomkeep.common.index import Index
from dicomkeep.common.modalities import Modality, configured_modalities, load_modalities
from dicomkeep.common.settings import Settings

#: Commands and the option allowing them from unknown AETs.
ALWAYS_ALLOW = {
    "Echo": "dicom_always_allow_echo",
    "Store": "dicom_always_allow_store",
    "Find": "dicom_always_allow_find",
    "FindWorklist": "dicom_always_allow_find_worklist",
    "Get": "dicom_always_allow_get",
    "Move": "dicom_always_allow_move",
}


async def effective_modalities(settings: Settings, index: Index | None) -> list[Modality]:
    """Return the configured modalities with the REST overrides of the index applied.

    Entries are parsed by `dicomkeep.common.modalities`, the one parser of
    `DicomModalities`; malformed ones are logged there and left out.
    """
    if index is None:
        return list(configured_modalities(settings).values())
    return list((await load_modalities(settings, index.jobs)).values())


def is_allowed(
    settings: Settings,
    modalities: list[Modality],
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
        return (not check_host or only.host == remote_ip) and only.allows(f"Allow{command}")
    if not matches:
        return False
    if any(m.host == remote_ip and m.allows(f"Allow{command}") for m in matches):
        return True
    return all(m.allows(f"Allow{command}") for m in matches)
