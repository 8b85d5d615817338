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
  destination requested with DicomKeep's guarded SCU handlers (TCP_NODELAY and
  the lost-response guard of `common.dicom.scu`). The final status is Success,
  0xB000 when some sub-operations failed, 0xA702 when all did.
- false: a DicomModalityStore job (Description `C-MOVE`, MoveOriginatorAET/ID
  set) is queued and the C-MOVE answers Success at once.

Statuses: unknown destination -> 0xA801; undecodable identifier, no identifier
or nothing matched -> 0xC000; a caller not allowed to move or get (§11.2) gets
its association aborted, as Orthanc does. C-GET sends the instances over the
requestor's own association (its storage contexts with the SCP role).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dicomkeep.common.dicom.scu import REQUESTOR_HANDLERS, read_dataset, store_contexts
from dicomkeep.common.find import Constraint, Kind
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.jobs import DICOM_MODALITY_STORE, store_job, submit
from dicomkeep.common.logs import patient_text
from dicomkeep.common.modalities import Modality, by_aet, load_modalities
from dicomkeep.common.orthanc import DimseStatus, MetadataType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import StorageAccessor, read_instance_file
from dicomkeep.common.telemetry import traced
from dicomkeep.ingest.access import AccessControl
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
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


@dataclass(frozen=True)
class Retrieval:
    """What a C-MOVE or C-GET asks for: the instances, with their (SOP class, syntax)."""

    instances: list[str]
    pairs: list[tuple[str, str]]


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
        instances: dict[str, None] = {}
        for public_id in found:
            instances.update(dict.fromkeys(await self.index.descendants(level, public_id, Level.INSTANCE)))
        pairs: set[tuple[str, str]] = set()
        for instance_id in instances:
            resource = await self.index.get_resource(Level.INSTANCE, instance_id)
            if resource is not None:
                pairs.add((resource.metadata.get(MetadataType.SOP_CLASS_UID, ""), resource.metadata.get(MetadataType.TRANSFER_SYNTAX, "")))
        return Retrieval(list(instances), sorted(pairs))

    async def _dataset(self, instance_id: str) -> Dataset | None:
        try:
            data = await read_instance_file(self.index, self.storage, instance_id)
        except KeyError:
            return None
        if data is None:
            return None
        return await asyncio.to_thread(read_dataset, data)

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
        for instance_id in retrieval.instances:
            if event.is_cancelled:
                yield DimseStatus.CANCEL, None
                return
            dataset = self._run(self._dataset(instance_id))
            if dataset is None:
                # Deleted meanwhile: a dataset without SOP class fails its C-STORE,
                # which pynetdicom counts as a failed sub-operation.
                missing = Dataset()
                missing.SOPInstanceUID = ""
                yield DimseStatus.PENDING, missing
                continue
            yield DimseStatus.PENDING, dataset

    # -- C-MOVE ---------------------------------------------------------------------
    def handle_move(self, event: Any) -> Iterator[Any]:
        """Answer one C-MOVE (pynetdicom EVT_C_MOVE handler; see the module docstring)."""
        if not self._allowed(event, "Move"):
            return iter(())
        destination = self._destination(str(event.move_destination).strip())
        if destination is None:
            log.warning("C-MOVE: unknown move destination %s", event.move_destination)
            return iter([(None, None)])
        retrieval = self._retrieval(event, "MOVE")
        if retrieval is None:
            # pynetdicom associates with the destination before it sends a failure
            # status: offer it Verification only.
            options = self._options(destination, [build_context(Verification)])
            return iter([(destination.host, destination.port, options), 1, (DimseStatus.UNABLE_TO_PROCESS, None)])
        if not self.settings.synchronous_cmove:
            self._run(self._queue_move(event, destination, retrieval))
            return iter([(destination.host, destination.port), 0])
        log.info(
            "C-MOVE to %s: %d instances (synchronous)", destination.aet, len(retrieval.instances)
        )
        options = self._options(destination, store_contexts(retrieval.pairs))
        return traced(
            self._move(event, destination, options, retrieval), "C-MOVE",
            attributes={"dicom.move_destination": destination.aet,
                        "dicomkeep.instances": len(retrieval.instances)},
            each="C-MOVE sub-operation", each_from=2,
        )

    @staticmethod
    def _options(destination: Modality, contexts: list[Any]) -> dict[str, Any]:
        """pynetdicom's association options for the sub-operations: our guarded handlers."""
        return {"ae_title": destination.aet, "contexts": contexts, "evt_handlers": REQUESTOR_HANDLERS}

    def _move(
        self, event: Any, destination: Modality, options: dict[str, Any], retrieval: Retrieval
    ) -> Iterator[Any]:
        yield destination.host, destination.port, options
        yield len(retrieval.instances)
        yield from self._sub_operations(event, retrieval)

    def _destination(self, aet: str) -> Modality | None:
        modalities = self._run(load_modalities(self.settings, self.index.jobs))
        matches = by_aet(modalities, aet, self.settings.strict_aet_comparison)
        return matches[0] if matches else None

    async def _queue_move(self, event: Any, destination: Modality, retrieval: Retrieval) -> None:
        settings = self.settings
        originator = (str(event.assoc.requestor.ae_title).strip(), int(event.request.MessageID))
        content, payload = store_job(
            destination,
            retrieval.instances,
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
        yield from self._sub_operations(event, retrieval)
