"""The DICOM edge: a pynetdicom AE answering C-ECHO and C-STORE.

pynetdicom runs each association in its own thread; handlers reach the
service's event loop with `run_coroutine_threadsafe(...).result(timeout)`, so
the C-STORE response leaves only after the indexer committed (ARCHITECTURE.md
step 4).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.receiving import Origin, Receiver
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

log = logging.getLogger(__name__)


#: Orthanc answers a full storage with 0xA700 and an unparsable dataset with 0xC000.
_STATUS_OF_ERROR = {
    ErrorCode.FULL_STORAGE: DimseStatus.OUT_OF_RESOURCES,
    ErrorCode.BAD_FILE_FORMAT: DimseStatus.CANNOT_UNDERSTAND,
    ErrorCode.INEXISTENT_TAG: DimseStatus.CANNOT_UNDERSTAND,
}


def set_nodelay(event: Any) -> None:
    """Disable Nagle on the association's socket: small instances stall ~40 ms otherwise."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_ae(ae_title: str, *, timeout: float, require_called_aet: bool) -> AE:
    """Build an AE accepting every storage SOP class in every transfer syntax."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    # C-FIND (ingest/find.py): identifiers in the uncompressed transfer syntaxes.
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.require_called_aet = require_called_aet
    ae.maximum_associations = 64
    ae.maximum_pdu_size = 0  # no limit on what we accept
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.acse_timeout = timeout
    return ae


class StoreScp:
    """C-ECHO and C-STORE SCP feeding a Receiver on the given event loop."""

    def __init__(
        self,
        receiver: Receiver,
        loop: asyncio.AbstractEventLoop,
        *,
        ae_title: str,
        timeout: float = 30.0,
        store_timeout: float = 60.0,
        require_called_aet: bool = False,
        extra_handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
    ) -> None:
        self.receiver = receiver
        self.loop = loop
        self.store_timeout = store_timeout
        self.ae = make_ae(ae_title, timeout=timeout, require_called_aet=require_called_aet)
        self._extra = extra_handlers or []
        self._server: Any = None

    def start(self, host: str, port: int) -> None:
        """Listen on (host, port) in background threads."""
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, lambda event: DimseStatus.SUCCESS),
            (evt.EVT_C_STORE, self.handle_store),
            *self._extra,
        ]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)
        log.info("DICOM server listening aet=%s port=%d", self.ae.ae_title, port)

    def stop(self) -> None:
        """Stop listening and close the associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def handle_store(self, event: Any) -> int:
        """Store one instance; answer only after the indexer committed it."""
        assoc = event.assoc
        origin = Origin(
            protocol="DicomProtocol",
            remote_ip=str(assoc.requestor.address),
            remote_aet=str(assoc.requestor.ae_title).strip(),
            called_aet=str(assoc.acceptor.ae_title).strip(),
        )
        try:
            data = event.encoded_dataset(include_meta=True)
            future = asyncio.run_coroutine_threadsafe(
                self.receiver.receive(data, origin), self.loop
            )
            received = future.result(self.store_timeout)
        except OrthancError as error:
            status = _STATUS_OF_ERROR.get(error.code, DimseStatus.PROCESSING_FAILURE)
            log.warning(
                "C-STORE refused aet=%s status=0x%04X reason=%s",
                origin.remote_aet, status, error.details or error.code.message,
            )
            return status
        except Exception:
            log.exception("C-STORE failed aet=%s", origin.remote_aet)
            return DimseStatus.PROCESSING_FAILURE
        log.debug("C-STORE instance=%s status=%s", received.parsed.ids[3], received.reply.status)
        return DimseStatus.SUCCESS
