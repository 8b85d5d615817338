"""The DICOM edge: a pynetdicom AE answering C-ECHO and C-STORE.

Every DIMSE service checks its caller with the one `AccessControl` (access.py);
associations are vetted and their contexts chosen by `Negotiation`
(negotiation.py). The listener's backlog is LISTEN_BACKLOG; an association idle
for DicomScpTimeout seconds is aborted.

pynetdicom runs each association in its own thread; handlers reach the
service's event loop with `run_coroutine_threadsafe(...).result(timeout)`, so
the C-STORE response leaves only after the indexer committed (ARCHITECTURE.md
step 4).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import socketserver
import ssl
import struct
import threading
import weakref
from collections.abc import Callable
from typing import Any

from dicomkeep.common.dicom import commands
from dicomkeep.common.dicom.receiving import Origin, Receiver
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.logs import patient_text
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.telemetry import SpanKind, current_span, tracer
from dicomkeep.ingest.access import AccessControl
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

#: Pending connections the kernel queues while every association thread is busy
#: (Python's socketserver default is 5: a burst of senders got refused).
LISTEN_BACKLOG = 128

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


def _meta_element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the file meta group (short form)."""
    return struct.pack("<HH2sH", 0x0002, group_element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


#: The fixed tail of the file meta group: (0002,0012) and (0002,0013), pynetdicom's
#: implementation class UID and version name, as `Event.file_meta` sets them.
_META_TAIL = _meta_element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)) + _meta_element(
    0x0013, b"SH",
    PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    + (b" " if len(PYNETDICOM_IMPLEMENTATION_VERSION) % 2 else b""),
)


def part10(event: Any) -> bytes:
    """The received C-STORE data set as a DICOM file (preamble, `DICM`, file meta).

    The bytes `event.encoded_dataset(include_meta=True)` returns, without building
    a pydicom FileMetaDataset and encoding it through pydicom's writer per
    instance (~10% of an association thread's CPU): the meta group has fixed
    elements, packed here directly.
    """
    request = event.request
    body = (
        b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"  # (0002,0001) version 00\01
        + _meta_element(0x0002, b"UI", _uid(str(request.AffectedSOPClassUID)))
        + _meta_element(0x0003, b"UI", _uid(str(request.AffectedSOPInstanceUID)))
        + _meta_element(0x0010, b"UI", _uid(str(event.context.transfer_syntax)))
        + _META_TAIL
    )
    return b"".join((
        b"\x00" * 128, b"DICM",
        _meta_element(0x0000, b"UL", struct.pack("<I", len(body))), body,
        request.DataSet.getvalue(),
    ))


#: A-ASSOCIATE-RJ (rejected transient, service provider, temporary congestion).
TEMPORARY_CONGESTION = (0x02, 0x03, 0x01)


class AssociationSlots:
    """DicomThreadsCount: how many associations are served at once.

    Mirrors Orthanc's pool of DICOM worker threads: an association beyond the
    count waits (its A-ASSOCIATE-RQ unanswered) until one ends; one that waits
    longer than DicomScpTimeout is rejected as temporary congestion. A slot is
    taken when the A-ASSOCIATE-RQ arrives and freed when the connection closes.
    """

    def __init__(self, count: int, wait: float) -> None:
        self._slots = threading.BoundedSemaphore(count)
        self._wait = wait
        self._lock = threading.Lock()
        # Associations holding a slot, and those whose connection closed first (the
        # peer may give up while its association waits for a slot).
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed: weakref.WeakSet[Any] = weakref.WeakSet()

    def take(self, event: Any) -> None:
        """EVT_REQUESTED handler: wait for a slot, or reject the association."""
        assoc = event.assoc
        if not self._slots.acquire(timeout=self._wait):
            log.warning("DICOM association rejected: every slot busy (DicomThreadsCount)")
            assoc.acse.send_reject(*TEMPORARY_CONGESTION)
            assoc.kill()
            return
        with self._lock:
            gone = assoc in self._closed
            if not gone:
                self._holders.add(assoc)
        if gone:  # the peer left while waiting: nothing to negotiate
            self._slots.release()
            assoc.is_aborted = True  # pynetdicom then skips the negotiation
            assoc.kill()

    def free(self, event: Any) -> None:
        """EVT_CONN_CLOSE handler: give the association's slot back (if it had one)."""
        with self._lock:
            held = event.assoc in self._holders
            if held:
                self._holders.discard(event.assoc)
            else:
                self._closed.add(event.assoc)
        if held:
            self._slots.release()


class _Listener(ThreadedAssociationServer):
    """pynetdicom's threaded server with a sensible listen backlog."""

    request_queue_size = LISTEN_BACKLOG

    def service_actions(self) -> None:
        """Run after each accepted connection and each idle poll: a young-generation
        collection only.

        pynetdicom runs a full `gc.collect()` every 60th call, to reclaim dead
        association threads; in a process that holds the whole server that took
        ~200 ms with the GIL held, stalling every request in flight (C-FIND p50 and
        REST latencies). Association cycles are young and die here, or in the
        interpreter's own generational passes.
        """
        gc.collect(1)

    def shutdown(self) -> None:
        """Stop serving and close the socket (started by us, not by `AE.start_server`)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def make_ae(ae_title: str, *, timeout: float) -> AE:
    """Build an AE accepting every storage SOP class in every transfer syntax
    (narrowed per association by `Negotiation`); command sets are written by
    `common.dicom.commands`."""
    commands.install()
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # pynetdicom's own list: always set
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    # C-FIND (ingest/find.py): identifiers in the uncompressed transfer syntaxes.
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
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
        access: AccessControl,
        threads: int = 4,
        ssl_context: ssl.SSLContext | None = None,
        extra_handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
    ) -> None:
        self.receiver = receiver
        self.loop = loop
        self.store_timeout = store_timeout
        self.access = access
        self.slots = AssociationSlots(threads, timeout)
        self.ssl_context = ssl_context
        self.ae = make_ae(ae_title, timeout=timeout)
        self._extra = extra_handlers or []
        self._server: Any = None
        #: The contexts pynetdicom deep-copies into every new association before
        #: EVT_REQUESTED (None: all of the AE's). When an EVT_REQUESTED handler
        #: (negotiation.py) sets each association's contexts, the composition root
        #: narrows this to Verification: deep-copying ~150 storage contexts cost
        #: ~50 ms of CPU per association.
        self.listener_contexts: list[Any] | None = None

    def start(self, host: str, port: int) -> None:
        """Listen on (host, port) in background threads."""
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            # First of the EVT_REQUESTED handlers: the others run once a slot is held.
            (evt.EVT_REQUESTED, self.slots.take),
            (evt.EVT_CONN_CLOSE, self.slots.free),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            *self._extra,
        ]
        server = self.ae.make_server(
            (host, port), evt_handlers=handlers, server_class=_Listener,
            ssl_context=self.ssl_context, contexts=self.listener_contexts,
        )
        thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        thread.start()
        self._server = server
        log.info(
            "DICOM server listening aet=%s port=%d tls=%s",
            self.ae.ae_title, port, self.ssl_context is not None,
        )

    def stop(self) -> None:
        """Stop listening and close the associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def handle_echo(self, event: Any) -> int:
        """Answer a C-ECHO when the caller may echo (else the association is aborted)."""
        if not self.access.allows(event.assoc, "Echo"):
            return DimseStatus.PROCESSING_FAILURE
        return DimseStatus.SUCCESS

    def handle_store(self, event: Any) -> int:
        """Store one instance; answer only after the indexer committed it.

        One trace per instance starts here (its context reaches the event loop
        with the coroutine, then the indexer through the bus)."""
        with tracer().start_as_current_span(
            "C-STORE",
            kind=SpanKind.SERVER,
            attributes={
                "network.peer.address": str(event.assoc.requestor.address),
                "dicom.calling_ae_title": str(event.assoc.requestor.ae_title).strip(),
                "dicom.called_ae_title": str(event.assoc.acceptor.ae_title).strip(),
            },
        ) as span:
            status = self._store(event)
            span.set_attribute("dicom.status", status)
            return status

    def _store(self, event: Any) -> int:
        assoc = event.assoc
        if not self.access.allows(assoc, "Store"):
            return DimseStatus.PROCESSING_FAILURE
        origin = Origin(
            protocol="DicomProtocol",
            remote_ip=str(assoc.requestor.address),
            remote_aet=str(assoc.requestor.ae_title).strip(),
            # The called AE title of this association, whatever our own AET (Orthanc's CalledAET).
            called_aet=str(assoc.requestor.primitive.called_ae_title).strip(),
        )
        try:
            data = part10(event)
            # Parsing, hashing and the blob write run here, in the association's
            # thread: the event loop then only waits for the indexer.
            prepared = self.receiver.prepare(data, write=True)
            future = asyncio.run_coroutine_threadsafe(
                self.receiver.receive(data, origin, prepared=prepared), self.loop
            )
            received = future.result(self.store_timeout)
        except OrthancError as error:
            status = _STATUS_OF_ERROR.get(error.code, DimseStatus.PROCESSING_FAILURE)
            log.warning(
                "C-STORE refused aet=%s status=0x%04X reason=%s",
                origin.remote_aet, status, patient_text(error.details or error.code.message),
            )
            return status
        except Exception:
            log.exception("C-STORE failed aet=%s", origin.remote_aet)
            return DimseStatus.PROCESSING_FAILURE
        log.debug("C-STORE instance=%s status=%s", received.parsed.ids[3], received.reply.status)
        trace_span = current_span()
        trace_span.set_attribute("dicomkeep.instance_id", received.parsed.ids[3])
        trace_span.set_attribute("dicomkeep.store_status", received.reply.status.value)
        return DimseStatus.SUCCESS
