"""DICOM SCU: C-ECHO, C-FIND, C-MOVE and C-STORE towards a remote modality.

Blocking (pynetdicom): callers run these functions in a worker thread. Shared by
the jobs service (store and move jobs), ingest (the C-MOVE SCP's sub-operations)
and the gateway (echo, query). Every association we request gets two handlers:

- TCP_NODELAY on its socket: small instances stall ~40 ms each otherwise.
- A guard against pynetdicom 3.0.4 losing responses (INFRA.md): the requestor's
  reactor thread polls the DIMSE queue while `send_c_store()` waits on it, and can
  take the C-STORE response for itself ("Received unexpected C-STORE service
  message"), leaving the sender stuck until the DIMSE timeout. Our requestor
  associations never serve requests from the peer, so the reactor is kept away
  from the queue entirely (`keep_responses_for_caller`). As a second line, a
  C-STORE left without an answer is re-sent once on a fresh association.

C-STORE sends stored files as they are (no decoding) through `sending.py`.
The module is over 400 lines because the four DIMSE operations share the
association set-up and the two guards above, which read best beside them; the
next split would move `StoreSession` and `store_contexts` to `sending.py`.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from dicomkeep.common.dicom import commands
from dicomkeep.common.dicom.orthanc_json import parse_tag
from dicomkeep.common.dicom.sending import EncodedInstance, FileMeta, read_file_meta, send_file
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.retries import retrying_sync
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

log = logging.getLogger(__name__)

#: The C-FIND/C-GET/C-MOVE statuses that announce more responses.
PENDING = (DimseStatus.PENDING, DimseStatus.PENDING_WARNING)
#: pynetdicom accepts at most 128 presentation contexts in a request.
MAX_CONTEXTS = 128
UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, "1.2.840.10008.1.2.2"}
)


class DicomNetworkError(Exception):
    """The peer could not be reached, refused, timed out or answered a failure.

    The REST layer answers Orthanc's 500 *Error in the network protocol*.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _NoResponse(Exception):
    """No C-STORE response came on the association (it is dropped; try a new one)."""


@dataclass(frozen=True)
class Peer:
    """Where to connect: the remote AET, address, our calling AET and a timeout (s)."""

    aet: str
    host: str
    port: int
    local_aet: str
    timeout: float
    #: The modality's `Manufacturer`: "GE" asks for return keys with `*`, not empty.
    manufacturer: str = "Generic"
    #: The modality's `AllowTranscoding`: compressed files the peer does not accept
    #: in their syntax are sent decompressed (else they fail).
    allow_transcoding: bool = True


@dataclass(frozen=True)
class MoveCounts:
    """The sub-operation counters of a C-MOVE response."""

    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0


_BINARY_NUMBERS = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})


def identifier(fields: Mapping[str, str]) -> Dataset:
    """Build a C-FIND/C-MOVE identifier from keyword or `gggg,eeee` keys and text values.

    An empty value asks for the tag (universal match). Raises KeyError for an
    unknown keyword and ValueError for a value that does not fit its VR.
    """
    dataset = Dataset()
    for key, value in fields.items():
        tag = parse_tag(key)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "LO"
        if vr == "SQ":
            dataset.add_new(tag, vr, [])
        elif vr in _BINARY_NUMBERS:
            number = float(value) if vr.startswith("F") else int(value) if value else None
            dataset.add_new(tag, vr, number if value else None)
        else:
            dataset.add_new(tag, vr, value)
    return dataset


def read_dataset(data: bytes) -> Dataset:
    """Parse a DICOM file (raises pydicom's errors when it is not one)."""
    return dcmread(BytesIO(data))


def encode_answer(answer: Dataset) -> bytes:
    """Encode a C-FIND answer as a DICOM file (explicit VR little endian) to keep it."""
    answer = copy.copy(answer)
    answer.file_meta = FileMetaDataset()
    answer.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    answer.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def set_nodelay(event: Any) -> None:
    """Disable Nagle on an association's socket."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_responses_for_caller(event: Any) -> None:
    """Keep the reactor thread of a requestor association off the DIMSE queue.

    Bound to EVT_ESTABLISHED, which pynetdicom fires in the association thread
    before its reactor loop starts. The reactor's only reads are non-blocking polls
    meant for requests from the peer, which our SCU associations never serve; the
    responses then always reach the thread that sent the request.
    """
    assoc = event.assoc
    if not assoc.is_requestor:
        return
    dimse = assoc.dimse
    original = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if threading.current_thread() is assoc:
            return None, None
        return original(block)

    dimse.get_msg = get_msg
    # send_raw need not pause this reactor: it can no longer take a response.
    assoc.dicomkeep_responses_kept = True
    assoc._reactor_checkpoint = _IdleCheckpoint(assoc._reactor_checkpoint)


#: Seconds a requestor association's reactor rests between its checks.
REACTOR_REST = 0.02


class _IdleCheckpoint:
    """A requestor reactor's pause event, with a rest before each pass.

    pynetdicom's reactor loop sleeps 1 ms, then waits on this event, then polls
    for a request, a release or an abort from the peer. Kept off the DIMSE queue,
    a requestor's reactor only watches for the peer's release or abort, and those
    can wait 20 ms: polling 1,000 times a second took ~8% of a C-MOVE's CPU
    (the GIL taken from the thread that sends). Pausing (clear) and resuming
    (set) are unchanged; the reactor says it is paused before it rests.
    """

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def wait(self, timeout: float | None = None) -> bool:
        if self._event.is_set():
            time.sleep(REACTOR_REST)
        return self._event.wait(timeout)

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


#: The handlers of every association DicomKeep requests.
REQUESTOR_HANDLERS: list[Any] = [
    (evt.EVT_CONN_OPEN, set_nodelay),
    (evt.EVT_ESTABLISHED, keep_responses_for_caller),
]


def _ae(peer: Peer) -> AE:
    commands.install()
    ae = AE(ae_title=peer.local_aet)
    ae.acse_timeout = peer.timeout
    ae.dimse_timeout = peer.timeout
    ae.network_timeout = peer.timeout
    ae.connection_timeout = peer.timeout
    return ae


def _associate(peer: Peer, contexts: list[Any]) -> Any:
    ae = _ae(peer)
    try:
        assoc = ae.associate(
            peer.host, peer.port, contexts=contexts, ae_title=peer.aet,
            evt_handlers=REQUESTOR_HANDLERS,
        )
    except (OSError, ValueError) as error:
        raise DicomNetworkError(f"Cannot connect to {peer.aet}@{peer.host}:{peer.port}: {error}") from error
    if not assoc.is_established:
        raise DicomNetworkError(
            f"DICOM association with {peer.aet}@{peer.host}:{peer.port} was not established"
        )
    return assoc


def echo(peer: Peer) -> None:
    """Send a C-ECHO; raise DicomNetworkError unless it succeeds."""
    assoc = _associate(peer, [build_context(Verification)])
    try:
        status = assoc.send_c_echo()
    finally:
        _close(assoc)
    if "Status" not in status or status.Status != DimseStatus.SUCCESS:
        raise DicomNetworkError(f"C-ECHO to {peer.aet} failed", _status(status))


def _status(status: Dataset) -> int | None:
    return int(status.Status) if "Status" in status else None


def _close(assoc: Any) -> None:
    if assoc.is_established:
        assoc.release()


def _models(level: str) -> tuple[UID, UID]:
    """Return the (FIND, MOVE) information models of a level, as Orthanc picks them."""
    if level.upper() == "PATIENT":
        return (
            PatientRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
        )
    return StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove


#: The return keys Orthanc's C-FIND SCU adds at each level when absent
#: (DicomControlUserConnection::Find): the identifiers of the level and those above.
FIND_TEMPLATE = {
    "PATIENT": ("PatientID",),
    "STUDY": ("AccessionNumber", "StudyInstanceUID", "PatientID"),
    "SERIES": ("SeriesInstanceUID", "AccessionNumber", "StudyInstanceUID", "PatientID"),
    "IMAGE": ("SOPInstanceUID", "SeriesInstanceUID", "AccessionNumber", "StudyInstanceUID", "PatientID"),
}


def add_find_template(identifier: Dataset, manufacturer: str = "Generic") -> None:
    """Ask for the level's template keys absent from `identifier` (universal match: empty,
    or `*` for a GE modality, as Orthanc)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    universal = "*" if manufacturer == "GE" else ""
    for keyword in FIND_TEMPLATE.get(level, ()):
        if keyword not in identifier:
            setattr(identifier, keyword, universal)


def find(peer: Peer, identifier: Dataset) -> list[Dataset]:
    """Send a C-FIND at the identifier's QueryRetrieveLevel, with Orthanc's template of
    return keys for that level (FIND_TEMPLATE); return every answer.

    Raises DicomNetworkError when the association fails, the peer stops answering
    or the final status is a failure.
    """
    identifier = copy.deepcopy(identifier)
    add_find_template(identifier, peer.manufacturer)
    model, _ = _models(str(identifier.get("QueryRetrieveLevel", "STUDY")))
    assoc = _associate(peer, [build_context(model)])
    answers: list[Dataset] = []
    try:
        for status, answer in assoc.send_c_find(identifier, model):
            code = _status(status)
            if code is None:
                raise DicomNetworkError(f"C-FIND to {peer.aet}: no answer in time")
            if code in PENDING:
                if answer is not None:
                    answers.append(answer)
                continue
            if code != DimseStatus.SUCCESS:
                raise DicomNetworkError(f"C-FIND to {peer.aet} failed with status 0x{code:04X}", code)
    finally:
        _close(assoc)
    return answers


def move(
    peer: Peer,
    identifier: Dataset,
    target_aet: str,
    progress: Callable[[MoveCounts], None] | None = None,
) -> MoveCounts:
    """Send a C-MOVE asking `peer` to store the matches to `target_aet`.

    `progress` gets the counters of each Pending response. Returns the final
    counters; raises DicomNetworkError unless the final status is Success.
    """
    _, model = _models(str(identifier.get("QueryRetrieveLevel", "STUDY")))
    assoc = _associate(peer, [build_context(model)])
    counts = MoveCounts()
    try:
        for status, _ in assoc.send_c_move(identifier, target_aet, model):
            code = _status(status)
            if code is None:
                raise DicomNetworkError(f"C-MOVE to {peer.aet}: no answer in time")
            counts = MoveCounts(
                remaining=int(status.get("NumberOfRemainingSuboperations", 0) or 0),
                completed=int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                failed=int(status.get("NumberOfFailedSuboperations", 0) or 0),
                warning=int(status.get("NumberOfWarningSuboperations", 0) or 0),
            )
            if code in PENDING:
                if progress is not None:
                    progress(counts)
                continue
            if code != DimseStatus.SUCCESS:
                raise DicomNetworkError(
                    f"C-MOVE SCU to AET \"{peer.aet}\" has failed with DIMSE status 0x{code:04X}",
                    code,
                )
    finally:
        _close(assoc)
    return counts


def store_contexts(pairs: Iterable[tuple[str, str]], *, transcode: bool = True) -> list[Any]:
    """Return presentation contexts for (SOP class, transfer syntax) pairs.

    Uncompressed files are offered as explicit and implicit little endian (pynetdicom
    converts); each compressed syntax gets its own context and, when `transcode`,
    its SOP class is offered uncompressed too, to send it decompressed when the
    peer refuses the compressed syntax (Orthanc's DicomStoreUserConnection).
    """
    contexts: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for sop_class, syntax in pairs:
        if not sop_class:
            continue
        wanted = [syntax] if syntax and syntax not in UNCOMPRESSED else []
        if not wanted or transcode:
            wanted.append("")
        for key in ((sop_class, s) for s in wanted):
            if key in seen:
                continue
            seen.add(key)
            syntaxes: list[str | UID] = (
                [ExplicitVRLittleEndian, ImplicitVRLittleEndian] if not key[1] else [key[1]]
            )
            contexts.append(build_context(sop_class, syntaxes))
    if len(contexts) > MAX_CONTEXTS:
        log.warning("more than %d kinds of instances: some cannot be sent", MAX_CONTEXTS)
    return contexts[:MAX_CONTEXTS]


class StoreSession:
    """One C-STORE association, re-opened when needed (Orthanc: one per store job).

    Not thread-safe: one thread sends. `originator` sets MoveOriginatorAET and
    MoveOriginatorMessageID (C-STORE sub-operations of a C-MOVE). Files go out as
    they are stored when the peer accepts their syntax (`common.dicom.sending`).

    It also stands for the destination association of pynetdicom's C-MOVE SCP
    (`is_established`, `send_c_store`, `release`): the SCP's sub-operations then
    get the same raw sending and lost-response guard as store jobs.
    """

    def __init__(
        self,
        peer: Peer,
        pairs: Iterable[tuple[str, str]],
        *,
        originator: tuple[str, int] | None = None,
    ) -> None:
        self.peer = peer
        self.contexts = store_contexts(pairs, transcode=peer.allow_transcoding)
        self.originator = originator
        self._assoc: Any = None
        self._message_id = 0

    def __enter__(self) -> StoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Associate now; raise DicomNetworkError if the peer cannot be reached."""
        self._association()

    def close(self) -> None:
        """Release the association (idempotent)."""
        if self._assoc is not None:
            _close(self._assoc)
            self._assoc = None

    # pynetdicom's C-MOVE SCP sees the session as its destination association.
    is_established = True

    def release(self) -> None:
        """Release the association (pynetdicom's name, for the C-MOVE SCP)."""
        self.close()

    def send_c_store(self, dataset: Dataset, **_: Any) -> Dataset:
        """Send an EncodedInstance for pynetdicom's C-MOVE SCP; answer its status dataset.

        pynetdicom's message ID and originator are ignored: the session's own are
        used (pynetdicom would name itself as the move originator).
        """
        if not isinstance(dataset, EncodedInstance) or dataset.dicomkeep_meta is None:
            raise ValueError("not a stored DICOM file")
        answer = Dataset()
        answer.Status = self.send(dataset.dicomkeep_file, dataset.dicomkeep_meta)
        return answer

    def _association(self) -> Any:
        if self._assoc is None or not self._assoc.is_established:
            self._assoc = _associate(self.peer, self.contexts)
        return self._assoc

    def send(self, data: bytes, meta: FileMeta | None = None) -> int:
        """Send one DICOM file; return the peer's status (0x0000, a warning or a failure).

        The stored bytes go out as they are when the peer accepted their syntax,
        else transcoded (`common.dicom.sending`). A file that fits no accepted
        context gets 0x0122 (not sent). Raises DicomNetworkError when no
        association can be made or no response comes twice in a row (the second
        try on a fresh association).
        """
        meta = meta if meta is not None else read_file_meta(data)
        try:
            for attempt in retrying_sync(
                f"C-STORE to {self.peer.aet} on a new association",
                attempts=2, first=0.0, longest=0.0, on=(_NoResponse,),
            ):
                with attempt:
                    return self._send_once(data, meta)
        except _NoResponse:
            pass
        raise DicomNetworkError(f"C-STORE to {self.peer.aet}: no response")

    def _send_once(self, data: bytes, meta: FileMeta) -> int:
        """One try of `send` on the current association (a new one if needed)."""
        assoc = self._association()
        self._message_id = self._message_id % 65535 + 1
        try:
            status = send_file(
                assoc, data, msg_id=self._message_id, originator=self.originator,
                transcode=self.peer.allow_transcoding, meta=meta,
            )  # fmt: skip
        except (ValueError, AttributeError) as error:  # no accepted context, not DICOM
            log.warning("C-STORE to %s not sent: %s", self.peer.aet, error)
            return DimseStatus.SOP_CLASS_NOT_SUPPORTED
        code = _status(status)
        if code is None:
            self._drop()
            raise _NoResponse(f"no C-STORE response from {self.peer.aet}")
        return code

    def _drop(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.abort()
            self._assoc = None
