"""The C-MOVE and C-GET SCPs (ORTHANC_API.md §11.5).

pynetdicom calls the handlers in the association's thread; index and blob reads
run on the service's event loop (`run_coroutine_threadsafe`). Identifiers by
level: PATIENT -> PatientID; STUDY -> AccessionNumber if not empty, else
StudyInstanceUID; SERIES -> SeriesInstanceUID; IMAGE -> SOPInstanceUID;
`\\`-lists allowed, exact match; without a level the most specific of those tags
present is used. The move destination is the first modality (in name order)
whose AET equals it, as StrictAetComparison says.

- `SynchronousCMove` true: the C-STORE sub-operations run inside the C-MOVE,
  with Pending responses carrying the counts, on one association to the
  destination: a `common.dicom.scu.StoreSession` (TCP_NODELAY, the lost-response
  guard, stored files sent as they are), handed to pynetdicom as the
  destination association (`route_move_destinations`). The final status is
  Success, 0xB000 when some sub-operations failed, 0xA702 when all did.
- false: a DicomModalityStore job (Description `C-MOVE`, MoveOriginatorAET/ID
  set) is queued and the C-MOVE answers Success at once.

The instances, their syntaxes and DICOM attachments come from one index read
(`Index.instance_files`); the files are read ahead (READ_AHEAD) on the event
loop while the previous ones are sent, and go out as stored when the
destination accepts their transfer syntax, else transcoded
(`common.dicom.sending`).

Statuses, as Orthanc 1.10.1: unknown destination, a destination that cannot be
reached, an undecodable identifier, no identifier or nothing matched -> 0xC000
(pynetdicom counts the sub-operations not done as failed); a caller not
allowed to move or get (§11.2) gets its association aborted. C-GET sends the
instances over the requestor's own association (its storage contexts with the
SCP role).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dicomkeep.common.dicom.scu import DicomNetworkError, Peer, StoreSession
from dicomkeep.common.dicom.sending import EncodedInstance, read_file_meta, send_files_on
from dicomkeep.common.find import Constraint, Kind
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index, InstanceFile
from dicomkeep.common.jobs import DICOM_MODALITY_STORE, store_job, submit
from dicomkeep.common.logs import patient_text
from dicomkeep.common.modalities import Modality, by_aet, load_modalities
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import CorruptedBlob, StorageAccessor
from dicomkeep.common.telemetry import traced
from dicomkeep.ingest.access import AccessControl
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ACCESSION_NUMBER = 0x00080050
#: The identifying tag of each level, most specific first (the order tried without a level).
IDENTIFYING = (
    (Level.INSTANCE, "SOPInstanceUID"),
    (Level.SERIES, "SeriesInstanceUID"),
    (Level.STUDY, "StudyInstanceUID"),
    (Level.PATIENT, "PatientID"),
)
_LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES,
           "IMAGE": Level.INSTANCE, "INSTANCE": Level.INSTANCE}  # fmt: skip


def add_retrieve_contexts(ae: AE) -> None:
    """Accept C-MOVE and C-GET, and the SCP role for storage (C-GET sub-operations)."""
    for model in (
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(
                context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )


#: How many files are read ahead of the one being sent.
READ_AHEAD = 4


def route_move_destinations(ae: AE) -> None:
    """Let C-MOVE handlers hand pynetdicom their own destination association.

    pynetdicom's C-MOVE SCP associates with the destination itself and answers
    0xA801 when that fails; Orthanc answers 0xC000 and DicomKeep sends through
    a StoreSession. A handler puts `store_session` in the destination options;
    `ae.associate` then returns it instead of associating.
    """
    associate = ae.associate

    def associate_or_session(addr: str, port: int, **kwargs: Any) -> Any:
        session = kwargs.pop("store_session", None)
        return session if session is not None else associate(addr, port, **kwargs)

    ae.associate = associate_or_session  # type: ignore[method-assign,assignment]


class _NoDestination:
    """The destination association of a C-MOVE that fails before any sub-operation."""

    is_established = True

    def release(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class Retrieval:
    """What a C-MOVE or C-GET asks for: the instances to send and their attachments."""

    instances: list[InstanceFile]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (SOP class, transfer syntax) pairs to propose."""
        return sorted({(item.sop_class_uid, item.transfer_syntax) for item in self.instances})

    @property
    def ids(self) -> list[str]:
        """The public IDs of the instances."""
        return [item.public_id for item in self.instances]


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):  # a multi-valued element: a list
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    if not text.strip():
        return []
    return [item.strip() for item in text.split("\\") if item.strip()]


def identifier_targets(identifier: Dataset) -> tuple[Level, str, list[str]]:
    """Return (level, keyword, values) naming what to retrieve (see the module docstring).

    Raises ValueError when the level is unknown or no identifying value is given.
    """
    level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level_text and level_text not in _LEVELS:
        raise ValueError(f"unknown QueryRetrieveLevel {level_text}")
    candidates: tuple[tuple[Level, str], ...] = IDENTIFYING
    if level_text:
        level = _LEVELS[level_text]
        keyword = dict((lvl, kw) for lvl, kw in IDENTIFYING)[level]
        if level is Level.STUDY and _values(identifier, "AccessionNumber"):
            keyword = "AccessionNumber"
        candidates = ((level, keyword),)
    for level, keyword in candidates:
        values = _values(identifier, keyword)
        if values:
            return level, keyword, values
    raise ValueError("no identifier to retrieve")


class RetrieveScp:
    """C-MOVE and C-GET SCP handlers over the index and blob store."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        blobs: BlobStore,
        bus: Bus,
        loop: asyncio.AbstractEventLoop,
        *,
        access: AccessControl,
        timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.storage = StorageAccessor(blobs)
        self.bus = bus
        self.loop = loop
        self.access = access
        self.timeout = timeout

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(self.timeout)

    def _allowed(self, event: Any, command: str) -> bool:
        return self.access.allows(event.assoc, command)

    async def _resolve(self, identifier: Dataset) -> Retrieval:
        level, keyword, values = identifier_targets(identifier)
        found: list[str] = []
        if keyword == "AccessionNumber":
            constraint = Constraint(
                tag=ACCESSION_NUMBER, keyword=keyword, kind=Kind.LIST, values=tuple(values),
                level=Level.STUDY,
            )
            found = await self.index.find(Level.STUDY, [constraint])
        else:
            for value in values:
                found += [pid for lvl, pid in await self.index.lookup(value) if lvl is level]
        return Retrieval(await self.index.instance_files(level, found))

    async def _read(self, item: InstanceFile) -> EncodedInstance:
        """Read one stored file; a file gone meanwhile gives an instance that fails."""
        data = b""
        if item.dicom is not None:
            try:
                data = await self.storage.read(item.dicom)
            except (KeyError, CorruptedBlob):
                log.warning("C-MOVE/C-GET: the DICOM file of %s is missing", item.public_id)
        encoded = EncodedInstance(data, read_file_meta(data, item.sop_class_uid, item.sop_instance_uid))
        if encoded.dicomkeep_meta is None:
            encoded.SOPInstanceUID = item.sop_instance_uid
        return encoded

    def _retrieval(self, event: Any, what: str) -> Retrieval | None:
        try:
            retrieval = self._run(self._resolve(event.identifier))
        except Exception as error:
            log.warning(
                "C-%s aet=%s: bad identifier: %s",
                what, event.assoc.requestor.ae_title, patient_text(error),
            )
            return None
        if not retrieval.instances:
            log.warning("C-%s aet=%s: nothing matched", what, event.assoc.requestor.ae_title)
            return None
        return retrieval

    def _sub_operations(self, event: Any, retrieval: Retrieval) -> Iterator[tuple[int, Dataset | None]]:
        """Yield (Pending, file) per instance, reading READ_AHEAD files ahead on the loop."""
        items = retrieval.instances
        ahead: deque[concurrent.futures.Future[EncodedInstance]] = deque()
        try:
            for position in range(len(items)):
                while len(ahead) < READ_AHEAD and position + len(ahead) < len(items):
                    upcoming = items[position + len(ahead)]
                    ahead.append(asyncio.run_coroutine_threadsafe(self._read(upcoming), self.loop))
                if event.is_cancelled:
                    yield DimseStatus.CANCEL, None
                    return
                yield DimseStatus.PENDING, ahead.popleft().result(self.timeout)
        finally:
            for future in ahead:
                future.cancel()

    # -- C-MOVE ---------------------------------------------------------------------
    def handle_move(self, event: Any) -> Iterator[Any]:
        """Answer one C-MOVE (pynetdicom EVT_C_MOVE handler; see the module docstring)."""
        if not self._allowed(event, "Move"):
            return iter(())
        destination = self._destination(str(event.move_destination).strip())
        if destination is None:
            log.warning("C-MOVE: unknown move destination %s", event.move_destination)
            return self._fail()
        retrieval = self._retrieval(event, "MOVE")
        if retrieval is None:
            return self._fail()
        if not self.settings.synchronous_cmove:
            self._run(self._queue_move(event, destination, retrieval))
            return iter([(destination.host, destination.port), 0])
        log.info(
            "C-MOVE to %s: %d instances (synchronous)", destination.aet, len(retrieval.instances)
        )
        session = self._session(event, destination, retrieval)
        try:
            session.open()
        except DicomNetworkError as error:
            log.warning("C-MOVE: %s", error)
            return self._fail(len(retrieval.instances))
        return traced(
            self._move(event, session, retrieval), "C-MOVE",
            attributes={"dicom.move_destination": destination.aet,
                        "dicomkeep.instances": len(retrieval.instances)},
            each="C-MOVE sub-operation", each_from=2,
        )

    @staticmethod
    def _fail(count: int = 1) -> Iterator[Any]:
        """Answer 0xC000 without associating with any destination (Orthanc's status)."""
        options = {"store_session": _NoDestination()}
        return iter([("", 0, options), count, (DimseStatus.UNABLE_TO_PROCESS, None)])

    def _session(self, event: Any, destination: Modality, retrieval: Retrieval) -> StoreSession:
        settings = self.settings
        peer = Peer(
            aet=destination.aet, host=destination.host, port=destination.port,
            local_aet=destination.local_aet or settings.dicom_aet,
            timeout=float(destination.timeout or settings.dicom_scu_timeout),
            manufacturer=destination.manufacturer,
            allow_transcoding=destination.allows("AllowTranscoding"),
        )  # fmt: skip
        originator = (str(event.assoc.requestor.ae_title).strip(), int(event.request.MessageID))
        return StoreSession(peer, retrieval.pairs, originator=originator)

    def _move(self, event: Any, session: StoreSession, retrieval: Retrieval) -> Iterator[Any]:
        try:
            yield session.peer.host, session.peer.port, {"store_session": session}
            yield len(retrieval.instances)
            yield from self._sub_operations(event, retrieval)
        finally:
            session.close()

    def _destination(self, aet: str) -> Modality | None:
        modalities = self._run(load_modalities(self.settings, self.index.jobs))
        matches = by_aet(modalities, aet, self.settings.strict_aet_comparison)
        return matches[0] if matches else None

    async def _queue_move(self, event: Any, destination: Modality, retrieval: Retrieval) -> None:
        settings = self.settings
        originator = (str(event.assoc.requestor.ae_title).strip(), int(event.request.MessageID))
        content, payload = store_job(
            destination,
            retrieval.ids,
            [],
            local_aet=destination.local_aet or settings.dicom_aet,
            timeout=float(destination.timeout or settings.dicom_scu_timeout),
            description="C-MOVE",
            originator=originator,
        )
        job = await submit(self.index.jobs, self.bus, DICOM_MODALITY_STORE, content, payload)
        log.info(
            "C-MOVE to %s: %d instances queued as job %s",
            destination.aet, len(retrieval.instances), job.id,
        )

    # -- C-GET ----------------------------------------------------------------------
    def handle_get(self, event: Any) -> Iterator[Any]:
        """Answer one C-GET (pynetdicom EVT_C_GET handler): the instances go back over
        the requestor's association."""
        if not self._allowed(event, "Get"):
            return iter(())
        retrieval = self._retrieval(event, "GET")
        if retrieval is None:
            return iter([1, (DimseStatus.UNABLE_TO_PROCESS, None)])
        return traced(
            self._get(event, retrieval), "C-GET",
            attributes={"dicomkeep.instances": len(retrieval.instances)},
            each="C-GET sub-operation", each_from=1,
        )

    def _get(self, event: Any, retrieval: Retrieval) -> Iterator[Any]:
        yield len(retrieval.instances)
        send_files_on(event.assoc)
        yield from self._sub_operations(event, retrieval)
