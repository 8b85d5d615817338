"""Which DICOM requests the SCP serves, per calling AET and IP (ORTHANC_API.md §11.2).

Mirrors OrthancApplicationEntityFilter::IsAllowedRequest: `DicomAlwaysAllow<Cmd>`
allows anyone; otherwise the calling AET must be a known modality (compared per
StrictAetComparison), pass the host check when DicomCheckModalityHost is on, and
have `Allow<Cmd>` (default true). With several modalities of that AET, the request
is allowed if one whose host matches allows it, or if all of them allow it.
The modalities are those of the configuration, overridden by the ones set or
deleted through REST (kept in the index, `JobStore.modality_overrides`).

`AccessControl` is the one check every DIMSE service of the SCP uses (C-ECHO,
C-STORE, C-FIND, C-MOVE, C-GET), and the association-level checks (called AET,
unknown callers) of `negotiation.py`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dicomkeep.common.index import Index
from dicomkeep.common.modalities import Modality, configured_modalities, load_modalities
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


async def effective_modalities(settings: Settings, index: Index | None) -> list[Modality]:
    """Return the configured modalities with the REST overrides of the index applied.

    Entries are parsed by `dicomkeep.common.modalities`, the one parser of
    `DicomModalities`; malformed ones are logged there and left out.
    """
    if index is None:
        return list(configured_modalities(settings).values())
    return list((await load_modalities(settings, index.jobs)).values())


def same_aet(settings: Settings, left: str, right: str) -> bool:
    """Compare two AE titles as StrictAetComparison says (case-insensitive by default)."""
    if settings.strict_aet_comparison:
        return left == right
    return left.upper() == right.upper()


def is_known(settings: Settings, modalities: list[Modality], remote_aet: str, remote_ip: str) -> bool:
    """Tell whether the caller is a known modality (and from its Host with
    DicomCheckModalityHost): Orthanc's IsKnownAETitle."""
    check_host = settings.dicom_check_modality_host
    return any(
        same_aet(settings, m.aet, remote_aet) and (not check_host or m.host == remote_ip)
        for m in modalities
    )


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
    matches = [m for m in modalities if same_aet(settings, m.aet, remote_aet)]
    check_host = settings.dicom_check_modality_host
    if len(matches) == 1:
        only = matches[0]
        return (not check_host or only.host == remote_ip) and only.allows(f"Allow{command}")
    if not matches:
        return False
    if any(m.host == remote_ip and m.allows(f"Allow{command}") for m in matches):
        return True
    return all(m.allows(f"Allow{command}") for m in matches)


class AccessControl:
    """The access check of every DIMSE service, run in pynetdicom's association threads.

    Mirrors Orthanc: a request that is not allowed is not served and its
    association is aborted (Orthanc's dispatcher answers DIMSE_BADCOMMANDTYPE and
    drops the association). Modalities are read from the configuration and the
    index at each request, so a `PUT /modalities/{id}` on any gateway applies at once.
    """

    def __init__(
        self, settings: Settings, index: Index | None, loop: asyncio.AbstractEventLoop,
        *, timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.loop = loop
        self.timeout = timeout

    def modalities(self) -> list[Modality]:
        """Return the effective modalities (read on the service's loop)."""
        future = asyncio.run_coroutine_threadsafe(
            effective_modalities(self.settings, self.index), self.loop
        )
        return future.result(self.timeout)

    def allows(self, assoc: Any, command: str) -> bool:
        """Tell whether `command` from this association's caller is served; a refusal is
        logged and aborts the association. A failure to read the modalities refuses."""
        if getattr(self.settings, ALWAYS_ALLOW[command]):
            return True
        aet, ip = str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address)
        try:
            allowed = is_allowed(self.settings, self.modalities(), command, aet, ip)
        except Exception:
            log.exception("DICOM access check failed command=%s aet=%s", command, aet)
            allowed = False
        if not allowed:
            log.warning("C-%s refused aet=%s ip=%s: not allowed", command.upper(), aet, ip)
            assoc.abort()
        return allowed

    def allows_connection(self, remote_aet: str, remote_ip: str) -> bool:
        """Tell whether an association from this caller is accepted at all: yes when some
        `DicomAlwaysAllow*` is on, else only from a known modality (Orthanc's
        IsAllowedConnection)."""
        if any(getattr(self.settings, option) for option in ALWAYS_ALLOW.values()):
            return True
        return is_known(self.settings, self.modalities(), remote_aet, remote_ip)
