"""What each job type does: store to a modality, C-MOVE SCU, store to a peer.

An executor runs one job from its checkpoint to its end, asynchronously; the
blocking DICOM calls go to worker threads. Steps are idempotent: a job resumed
after its worker died re-sends at most the instances sent since its last
recorded checkpoint (a receiver answers a repeated C-STORE with success). A
cancel or pause is honoured between two steps (ORTHANC_API.md §10).

Over 400 lines because the executors share one checkpoint-and-step loop and its
helpers; split by job type, each module would import the loop back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dicomkeep.common import archives, peer_transfer
from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.receiving import Receiver
from dicomkeep.common.dicom.scu import DicomNetworkError, Peer, StoreSession
from dicomkeep.common.dicom.sending import FileMeta, read_file_meta
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index import (
    Index,
    InstanceFile,
    JobAction,
    JobOutcome,
    JobRecord,
    JobState,
    JobUpdate,
)
from dicomkeep.common.jobs import DICOM_MODALITY_STORE, DICOM_MOVE_SCU
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.peer_http import HttpOptions
from dicomkeep.common.peers import find_peer
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.resource_modification import JOB_TYPE as MODIFICATION_JOB
from dicomkeep.common.resource_modification import (
    checkpoint_payload,
    job_content,
    modification_from_payload,
    modify_resources,
    origin_from_payload,
    parse_options,
)
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import StorageAccessor

log = logging.getLogger(__name__)



class JobRun:
    """A running job's link to its worker: checkpoints out, stop requests in.

    The worker's heartbeat saves the latest checkpoint with the lease renewal and
    passes on a cancel or pause asked through REST.
    """

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.update: JobUpdate | None = None
        self.requested: JobAction | None = None
        self.lost = False

    def checkpoint(self, progress: int, content: dict[str, Any], payload: dict[str, Any]) -> None:
        """Record how far the job got (saved at the next heartbeat and at the end)."""
        self.update = JobUpdate(progress, copy.deepcopy(content), copy.deepcopy(payload))

    def stop_requested(self) -> JobAction | None:
        """Return CANCEL or PAUSE when the job must stop before its next step.

        A job whose lease was lost stops as if cancelled (its outcome is dropped).
        """
        return JobAction.CANCEL if self.lost else self.requested


@dataclass(frozen=True)
class Deps:
    """What executors use."""

    settings: Settings
    index: Index
    blobs: BlobStore
    #: Stores modified copies (ResourceModification jobs) through the indexer.
    receiver: Receiver | None = None


Executor = Callable[[JobRecord, JobRun, Deps], Awaitable[JobOutcome]]


def success(update: JobUpdate) -> JobOutcome:
    """Return a Success outcome."""
    return JobOutcome(JobState.SUCCESS, update)


def failure(update: JobUpdate, code: ErrorCode, details: str = "") -> JobOutcome:
    """Return a Failure outcome with an Orthanc error."""
    return JobOutcome(JobState.FAILURE, update, code.status, details)


def stopped(action: JobAction, update: JobUpdate) -> JobOutcome:
    """Return the outcome of a job stopped between steps: Failure(37) or Paused."""
    if action is JobAction.PAUSE:
        return JobOutcome(JobState.PAUSED, update)
    return failure(update, ErrorCode.CANCELED_JOB)


def peer_of(payload: dict[str, Any]) -> Peer:
    """Return where a DICOM job connects, from its payload (common.jobs)."""
    modality = payload["Modality"]
    return Peer(
        aet=modality["AET"],
        host=modality["Host"],
        port=int(modality["Port"]),
        local_aet=payload["LocalAet"],
        timeout=float(payload["Timeout"]),
        allow_transcoding=bool(modality.get("AllowTranscoding", True)),
    )


class InstanceReader:
    """Reads a store job's files, one ahead of the one being sent.

    The job's instances, syntaxes and attachment rows come from one index read
    (`Index.instance_files`); then each file costs one blob read, started while
    the previous file is on the wire.
    """

    def __init__(self, deps: Deps, files: list[InstanceFile]) -> None:
        self.storage = StorageAccessor(deps.blobs)
        self.files = {item.public_id: item for item in files}
        self._ahead: dict[str, asyncio.Task[bytes]] = {}

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (SOP class, transfer syntax) pairs to propose."""
        return sorted({(f.sop_class_uid, f.transfer_syntax) for f in self.files.values()})

    def meta(self, instance_id: str, data: bytes) -> FileMeta | None:
        """Return the file meta of a file read, with the index's SOP class and UID."""
        item = self.files[instance_id]
        return read_file_meta(data, item.sop_class_uid, item.sop_instance_uid)

    def prefetch(self, instance_id: str) -> None:
        """Start reading a file that `read` will be asked for."""
        if instance_id not in self._ahead:
            self._ahead[instance_id] = asyncio.ensure_future(self._read(instance_id))

    async def read(self, instance_id: str) -> bytes:
        """Return the DICOM file of an instance; raise OrthancError if it is gone."""
        self.prefetch(instance_id)
        return await self._ahead.pop(instance_id)

    async def _read(self, instance_id: str) -> bytes:
        item = self.files.get(instance_id)
        if item is None or item.dicom is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Instance {instance_id} was deleted")
        try:
            return await self.storage.read(item.dicom)
        except KeyError as error:
            raise OrthancError(
                ErrorCode.INEXISTENT_ITEM, f"The DICOM file of instance {instance_id} is missing"
            ) from error

    def close(self) -> None:
        """Cancel the reads nobody will wait for."""
        for task in self._ahead.values():
            task.cancel()
        self._ahead.clear()


def _is_stored(status: int) -> bool:
    """Success or a warning (0xB000-0xBFFF, e.g. coercion): the peer kept the instance."""
    return DimseStatus.is_stored(status)


async def run_modality_store(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Send the job's instances with C-STORE on one association (DicomModalityStore).

    Mirrors Orthanc's DicomModalityStoreJob: a refused instance fails the job
    (500 *Error in the network protocol*) unless Permissive, where it counts in
    FailedInstancesCount. `Checkpoint.Next` is the first instance not yet sent.
    """
    payload = copy.deepcopy(job.payload)
    content = copy.deepcopy(job.content)
    checkpoint: dict[str, Any] = payload.setdefault("Checkpoint", {})
    instances: list[str] = payload["Instances"]
    position = int(checkpoint.get("Next", 0))
    failed = int(checkpoint.get("Failed", 0))
    peer = peer_of(payload)

    def update() -> JobUpdate:
        checkpoint.update({"Next": position, "Failed": failed})
        content["FailedInstancesCount"] = failed
        progress = 100 if not instances else position * 100 // len(instances)
        return JobUpdate(progress, content, payload)

    originator = payload.get("MoveOriginator")
    reader = InstanceReader(deps, await deps.index.instance_files(Level.INSTANCE, instances[position:]))
    session = StoreSession(
        peer,
        reader.pairs,
        originator=(originator[0], int(originator[1])) if originator else None,
    )
    try:
        while position < len(instances):
            action = run.stop_requested()
            if action is not None:
                return stopped(action, update())
            instance_id = instances[position]
            try:
                data = await reader.read(instance_id)
                if position + 1 < len(instances):
                    reader.prefetch(instances[position + 1])
                status = await asyncio.to_thread(session.send, data, reader.meta(instance_id, data))
            except OrthancError as error:
                status, reason = -1, error.details or error.code.message
            else:
                reason = f"C-STORE SCU to AET \"{peer.aet}\" has failed with DIMSE status 0x{status:04X}"
            position += 1
            if not _is_stored(status):
                failed += 1
                if not payload.get("Permissive"):
                    return failure(update(), ErrorCode.NETWORK_PROTOCOL, reason)
            run.checkpoint(*_parts(update()))
    except DicomNetworkError as error:
        return failure(update(), ErrorCode.NETWORK_PROTOCOL, str(error))
    finally:
        reader.close()
        await asyncio.to_thread(session.close)
    return success(update())


def _parts(update: JobUpdate) -> tuple[int, dict[str, Any], dict[str, Any]]:
    return update.progress, update.content, update.payload


async def run_move_scu(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Send one C-MOVE per identifier of the job (DicomMoveScu).

    Any failure status fails the job with 500 *Error in the network protocol*
    (Orthanc's DicomMoveScuJob). `Checkpoint.Next` is the first identifier not done.
    """
    payload = copy.deepcopy(job.payload)
    content = copy.deepcopy(job.content)
    checkpoint: dict[str, Any] = payload.setdefault("Checkpoint", {})
    queries: list[dict[str, str]] = payload["Queries"]
    position = int(checkpoint.get("Next", 0))
    peer = peer_of(payload)

    def update() -> JobUpdate:
        checkpoint["Next"] = position
        progress = 100 if not queries else position * 100 // len(queries)
        return JobUpdate(progress, content, payload)

    while position < len(queries):
        action = run.stop_requested()
        if action is not None:
            return stopped(action, update())
        try:
            query = dicom_scu.identifier(queries[position])
            await asyncio.to_thread(dicom_scu.move, peer, query, payload["TargetAet"])
        except (KeyError, ValueError) as error:
            return failure(update(), ErrorCode.BAD_REQUEST, f"Bad identifier: {error}")
        except DicomNetworkError as error:
            return failure(update(), ErrorCode.NETWORK_PROTOCOL, str(error))
        position += 1
        run.checkpoint(*_parts(update()))
    return success(update())


async def run_peer_store(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Send the job's instances to an Orthanc peer over HTTP (OrthancPeerStore).

    The transfer itself is `common.peer_transfer` (shared with the gateway's
    synchronous path); it records each delivered instance in the payload.
    """
    payload = job.payload
    peer = await find_peer(deps.settings.orthanc_peers, deps.index.peers, payload.get("Peer", ""))
    if peer is None:
        update = JobUpdate(job.progress, job.content, payload)
        return failure(update, ErrorCode.UNKNOWN_RESOURCE, f"No peer with symbolic name: {payload.get('Peer')}")

    async def checkpoint(state: dict[str, Any], content: dict[str, Any], progress: int) -> bool:
        run.checkpoint(progress, content, state)
        return run.stop_requested() is None

    outcome = await peer_transfer.transfer(
        deps.index, deps.blobs, peer, HttpOptions.from_settings(deps.settings), payload,
        checkpoint=checkpoint,
    )
    update = JobUpdate(outcome.progress, outcome.content, outcome.payload)
    action = run.stop_requested()
    if outcome.stopped and action is not None:
        return stopped(action, update)
    if outcome.error is not None:
        return failure(update, outcome.error.code, outcome.error.details or "")
    return success(update)


async def run_resource_modification(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Modify or anonymize the job's instances one by one (Orthanc's ResourceModificationJob).

    The UID map and the copies made so far are checkpointed after each instance,
    so a resumed job maps the remaining instances to the same new UIDs.
    """
    payload = job.payload
    modification, outcome = modification_from_payload(payload)
    options = parse_options(payload["Body"])
    resource = payload.get("Resource")
    level = Level(resource["Level"]) if resource else None
    public_id = resource["ID"] if resource else None
    instances: list[str] = payload["Instances"]
    done = int(payload.get("Done", 0))
    origin = origin_from_payload(payload)

    def update() -> JobUpdate:
        progress = 100 * done // len(instances) if instances else 100
        state = checkpoint_payload(payload, modification, outcome, done)
        return JobUpdate(progress, job_content(outcome, level, public_id), state)

    if deps.receiver is None:
        return failure(update(), ErrorCode.INTERNAL_ERROR, "This worker cannot store instances")
    while done < len(instances):
        action = run.stop_requested()
        if action is not None:
            return stopped(action, update())
        try:
            await modify_resources(
                deps.index, deps.blobs, deps.receiver, modification, [instances[done]],
                options, origin, outcome=outcome,
            )  # fmt: skip
        except OrthancError as error:
            return failure(update(), error.code, error.details or "")
        done += 1
        current = update()
        run.checkpoint(current.progress, current.content, current.payload)
    return success(update())


async def run_archive(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Build a ZIP archive or DICOMDIR media into the blob store (Orthanc's ArchiveJob).

    The ZIP is written to a temporary file, then copied into the blob keyed by
    the job ID (piece by piece), which `GET /jobs/{id}/archive` answers. Only
    the `MediaArchiveSize` newest archives are kept. A cancel (Failure 37) or a
    pause is honoured between two files; a resumed archive starts over.
    """
    payload = job.payload
    media = bool(payload.get("Media"))
    target = payload.get("Transcode")
    try:
        archive_plan = await archives.plan(deps.index, list(payload["Resources"]), media=media)
    except OrthancError as error:
        unchanged = JobUpdate(job.progress, job.content, payload)
        return failure(unchanged, error.code, error.details or "")
    progress = archives.Progress()
    total = max(1, len(archive_plan.entries))

    def update(done: bool = False) -> JobUpdate:
        content = archives.job_content(archive_plan, target, progress.archive_size)
        return JobUpdate(100 if done else progress.files * 99 // total, content, payload)

    chunks = archives.stream_zip(
        deps.index, deps.blobs, archive_plan, media=media, target=target,
        extended=bool(payload.get("Extended")), progress=progress,
    )  # fmt: skip
    async with contextlib.aclosing(chunks):
        with tempfile.TemporaryFile() as spool:
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
                action = run.stop_requested()
                if action is not None:
                    return stopped(action, update())
                run.checkpoint(*_parts(update()))
            size = spool.tell()
            spool.seek(0)
            await deps.blobs.put_file(job.id, spool, size)
    await deps.index.jobs.set_output(
        job.id, {archives.OUTPUT_KEY: {"Size": size}}, deps.settings.media_archive_size
    )
    return success(update(done=True))


EXECUTORS: dict[str, Executor] = {
    DICOM_MODALITY_STORE: run_modality_store,
    DICOM_MOVE_SCU: run_move_scu,
    peer_transfer.JOB_TYPE: run_peer_store,
    MODIFICATION_JOB: run_resource_modification,
    archives.ARCHIVE_JOB: run_archive,
    archives.MEDIA_JOB: run_archive,
}


async def execute(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
    """Run a job with the executor of its type; an unknown type fails it."""
    executor = EXECUTORS.get(job.type)
    if executor is None:
        update = JobUpdate(job.progress, job.content, job.payload)
        return failure(update, ErrorCode.NOT_IMPLEMENTED, f"Unknown job type: {job.type}")
    return await executor(job, run, deps)
