"""Association negotiation as Orthanc's DICOM server does it (pynetdicom EVT_REQUESTED).

Runs when an A-ASSOCIATE-RQ arrives, before pynetdicom negotiates:

- `DicomCheckCalledAet`: a called AE title other than DicomAet (compared as
  StrictAetComparison says) is rejected (called AE title not recognised).
- An unknown caller is rejected (calling AE title not recognised) unless one of
  the `DicomAlwaysAllow*` options is on (Orthanc's IsAllowedConnection).
- Storage contexts accept the transfer syntaxes of `AcceptedTransferSyntaxes`
  (or of `PUT /tools/accepted-transfer-syntaxes`), preferring as Orthanc does:
  Explicit VR Little Endian, Explicit VR Big Endian, Implicit VR Little Endian,
  then the others (pynetdicom takes the first of the acceptor's syntaxes that
  was proposed, whatever the order of the proposal). Other contexts
  (Verification, query/retrieve) get the same preference.
- `UnknownSopClassAccepted`: a SOP class that pynetdicom does not know is
  accepted as a storage SOP class.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from dicomkeep.common import scp_options
from dicomkeep.common.scp_options import ScpOptions
from dicomkeep.common.settings import Settings
from dicomkeep.ingest.access import AccessControl, same_aet
from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts, sop_class
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass

log = logging.getLogger(__name__)

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
#: Orthanc's preference among the proposed transfer syntaxes (lower first).
_PREFERENCE = {EXPLICIT_LITTLE: 0, EXPLICIT_BIG: 1, IMPLICIT_LITTLE: 2}
_OTHER = 3

#: A-ASSOCIATE-RJ (result, source, diagnostic): rejected permanent, service user.
CALLING_AET_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AET_NOT_RECOGNISED = (0x01, 0x01, 0x07)

STORAGE_SOP_CLASSES = frozenset(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax
)


def preferred_order(syntaxes: list[str]) -> list[str]:
    """Return the syntaxes in Orthanc's order of preference (stable otherwise)."""
    return sorted(syntaxes, key=lambda ts: _PREFERENCE.get(ts, _OTHER))


def is_unknown_sop_class(uid: str) -> bool:
    """Tell whether pynetdicom knows nothing of `uid` (private or unlisted SOP class)."""
    keyword = sop_class.uid_to_sop_class(uid).keyword if uid else ""
    return not keyword or not hasattr(sop_class, keyword)


def _register_storage(uid: str) -> None:
    """Let pynetdicom serve C-STORE for an unknown SOP class (its public register_uid)."""
    if sop_class.uid_to_service_class(uid) is StorageServiceClass:
        return
    keyword = "DicomKeepUnknown_" + re.sub(r"[^0-9]", "_", uid)
    sop_class.register_uid(uid, keyword, StorageServiceClass)


def _uids(syntaxes: list[str]) -> list[str | bytes | UID]:
    return list(syntaxes)


def _copy(context: PresentationContext, syntaxes: list[str]) -> PresentationContext:
    copied = PresentationContext()
    copied.abstract_syntax = context.abstract_syntax
    copied.transfer_syntax = _uids(syntaxes)
    copied.scu_role = context.scu_role
    copied.scp_role = context.scp_role
    return copied


def association_contexts(
    supported: list[PresentationContext], proposed: list[PresentationContext], options: ScpOptions
) -> list[PresentationContext]:
    """Return the contexts this association supports, syntaxes in Orthanc's preference.

    Storage contexts get the accepted transfer syntaxes; other contexts
    (Verification, query/retrieve) keep theirs. Unknown proposed SOP classes are
    added as storage when UnknownSopClassAccepted is on. Only the SOP classes the
    requestor proposed are returned: the others take no part in the negotiation,
    and copying all ~150 storage contexts (each transfer syntax validated by
    pydicom) cost ~70 ms of CPU per association.
    """
    accepted = preferred_order(scp_options.sorted_syntaxes(options.accepted_transfer_syntaxes))
    wanted = {str(rq.abstract_syntax or "") for rq in proposed}
    contexts = [
        _copy(cx, accepted) if str(cx.abstract_syntax) in STORAGE_SOP_CLASSES
        else _copy(cx, preferred_order([str(ts) for ts in cx.transfer_syntax]))
        for cx in supported
        if str(cx.abstract_syntax) in wanted
    ]
    known = {str(cx.abstract_syntax) for cx in supported}
    for rq in proposed:
        uid = str(rq.abstract_syntax or "")
        if options.unknown_sop_class_accepted and uid not in known and is_unknown_sop_class(uid):
            _register_storage(uid)
            added = PresentationContext()
            added.abstract_syntax = uid
            added.transfer_syntax = _uids(accepted)
            contexts.append(added)
            known.add(uid)
    return contexts


class Negotiation:
    """The EVT_REQUESTED handler: checks the caller, then sets the association's contexts."""

    def __init__(
        self,
        settings: Settings,
        access: AccessControl,
        loop: asyncio.AbstractEventLoop,
        supported: list[PresentationContext],
        *,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.access = access
        self.loop = loop
        self.supported = supported
        self.timeout = timeout

    def _reject(self, assoc: Any, reason: tuple[int, int, int], why: str) -> None:
        log.warning("DICOM association rejected: %s", why)
        assoc.acse.send_reject(*reason)
        assoc.kill()

    def handle_requested(self, event: Any) -> None:
        """Check the A-ASSOCIATE-RQ; reject it, or prepare the negotiation."""
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted:
            return  # already refused (no association slot, see scp.AssociationSlots)
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        remote_ip = str(assoc.requestor.address)
        settings = self.settings
        try:
            if settings.dicom_check_called_aet and not same_aet(settings, called, settings.dicom_aet):
                self._reject(assoc, CALLED_AET_NOT_RECOGNISED, f"called AET {called!r} is not ours")
                return
            if not self.access.allows_connection(calling, remote_ip):
                self._reject(
                    assoc, CALLING_AET_NOT_RECOGNISED,
                    f"unknown caller aet={calling} ip={remote_ip}",
                )
                return
            options = asyncio.run_coroutine_threadsafe(
                scp_options.current(settings, self.access.index), self.loop
            ).result(self.timeout)
            assoc.acceptor.supported_contexts = association_contexts(
                self.supported, list(request.presentation_context_definition_list), options
            )
        except Exception:
            log.exception("DICOM negotiation failed aet=%s ip=%s", calling, remote_ip)
            assoc.abort()
