"""The jobs engine on SQLite: the state machine of ORTHANC_API.md §10 driven by workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dicom_peers import storage_scp
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.dicom.receiving import Origin, Receiver
from dicomkeep.common.errors import ErrorCode
from dicomkeep.common.events import ChangeType
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index, JobAction, JobOutcome, JobRecord, JobState, JobUpdate
from dicomkeep.common.jobs import DICOM_MODALITY_STORE, store_job
from dicomkeep.common.modalities import parse_modality
from dicomkeep.common.settings import Settings
from dicomkeep.jobs.usecases import Deps, JobRun, execute, success
from dicomkeep.jobs.worker import JobWorkers
from synthetic import generate_study

LEASE = 0.3  # heartbeats every 0.1 s


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    idx = Index(SqliteDatabase(tmp_path / "index"))
    await idx.open()
    yield idx
    await idx.close()


@pytest.fixture
def deps(index: Index, tmp_path: Path) -> Deps:
    return Deps(Settings(), index, FileBlobStore(tmp_path / "storage"))


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def state_of(index: Index, job_id: str) -> JobRecord:
    job = await index.jobs.get_job(job_id)
    assert job is not None
    return job


def workers(index: Index, deps: Deps, executor: Any, concurrency: int = 1) -> JobWorkers:
    return JobWorkers(
        index.jobs, deps, concurrency=concurrency, history_size=10, lease=LEASE, poll=0.05,
        execute_job=executor,
    )


class Steps:
    """A fake executor: counts steps, checkpoints each one, honours stop requests."""

    def __init__(self, total: int = 5, hold_at: int | None = None) -> None:
        self.total = total
        self.hold_at = hold_at  # the gate closes again when this step is reached
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.starts: list[int] = []
        self.run: JobRun | None = None

    async def requested(self) -> bool:
        """True once the heartbeat passed a cancel/pause on to the running job."""
        return self.run is not None and self.run.requested is not None

    async def __call__(self, job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
        position = int(job.payload.get("Checkpoint", {}).get("Next", 0))
        self.starts.append(position)
        self.run = run
        self.started.set()
        while position < self.total:
            action = run.stop_requested()
            if action is not None:
                payload = {"Checkpoint": {"Next": position}}
                update = JobUpdate(position * 20, {}, payload)
                return JobOutcome(JobState.PAUSED, update) if action is JobAction.PAUSE else JobOutcome(
                    JobState.FAILURE, update, ErrorCode.CANCELED_JOB.status
                )
            await self.gate.wait()
            position += 1
            if position == self.hold_at:
                self.gate.clear()
            run.checkpoint(position * 20, {}, {"Checkpoint": {"Next": position}})
            await asyncio.sleep(0.01)
        return success(JobUpdate(100, {"Done": position}, {"Checkpoint": {"Next": position}}))


async def test_job_runs_to_success_with_events(index: Index, deps: Deps) -> None:
    steps = Steps()
    steps.gate.set()
    engine = workers(index, deps, steps)
    job = await index.jobs.submit_job("Fake", {}, {})
    engine.start()
    try:
        await until(lambda: _is(index, job.id, JobState.SUCCESS))
    finally:
        await engine.stop()
    done = await state_of(index, job.id)
    assert done.progress == 100 and done.content == {"Done": 5} and done.attempts == 1
    types = [e.change.change_type for e in await index.outbox_batch(100)]
    assert types == [ChangeType.JOB_SUBMITTED, ChangeType.JOB_SUCCESS]


async def _is(index: Index, job_id: str, state: JobState) -> bool:
    job = await index.jobs.get_job(job_id)
    return job is not None and job.state is state


async def test_crashing_executor_fails_the_job(index: Index, deps: Deps) -> None:
    async def crash(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
        raise RuntimeError("boom")

    engine = workers(index, deps, crash)
    job = await index.jobs.submit_job("Fake", {}, {})
    engine.start()
    try:
        await until(lambda: _is(index, job.id, JobState.FAILURE))
    finally:
        await engine.stop()
    failed = await state_of(index, job.id)
    assert failed.error_code == ErrorCode.INTERNAL_ERROR.status and failed.error_details == "boom"


async def test_cancel_and_pause_reach_a_running_job(index: Index, deps: Deps) -> None:
    steps = Steps()
    engine = workers(index, deps, steps)
    job = await index.jobs.submit_job("Fake", {}, {})
    engine.start()
    try:
        await steps.started.wait()
        assert (await state_of(index, job.id)).state is JobState.RUNNING
        assert await index.jobs.control_job(job.id, JobAction.PAUSE, 10)
        await until(steps.requested)
        steps.gate.set()
        await until(lambda: _is(index, job.id, JobState.PAUSED))
        paused = await state_of(index, job.id)
        assert 0 < paused.payload["Checkpoint"]["Next"] < 5
        # Resume: the job goes on from its checkpoint, then a cancel stops it.
        steps.gate.clear()
        steps.started.clear()
        assert await index.jobs.control_job(job.id, JobAction.RESUME, 10)
        await steps.started.wait()
        assert steps.starts == [0, paused.payload["Checkpoint"]["Next"]]
        assert await index.jobs.control_job(job.id, JobAction.CANCEL, 10)
        await until(steps.requested)
        steps.gate.set()
        await until(lambda: _is(index, job.id, JobState.FAILURE))
    finally:
        await engine.stop()
    cancelled = await state_of(index, job.id)
    assert cancelled.error_code == ErrorCode.CANCELED_JOB.status
    assert cancelled.attempts == 2


async def test_priority_decides_the_order(index: Index, deps: Deps) -> None:
    order: list[int] = []

    async def record(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
        order.append(job.priority)
        return success(JobUpdate(100, {}, {}))

    for priority in (0, -5, 7, 3):
        await index.jobs.submit_job("Fake", {}, {}, priority)
    engine = workers(index, deps, record)
    engine.start()
    try:
        await until(lambda: _count_done(index, 4))
    finally:
        await engine.stop()
    assert order == [7, 3, 0, -5]


async def _count_done(index: Index, count: int) -> bool:
    return sum(j.state is JobState.SUCCESS for j in await index.jobs.list_jobs()) == count


async def test_stopped_worker_gives_the_job_back_and_another_finishes_it(
    index: Index, deps: Deps
) -> None:
    first = Steps(hold_at=2)
    engine = workers(index, deps, first)
    job = await index.jobs.submit_job("Fake", {}, {})
    engine.start()
    await first.started.wait()
    first.gate.set()
    await until(lambda: _checkpointed(index, job.id))
    await engine.stop()
    released = await state_of(index, job.id)
    assert released.state is JobState.RETRY and released.payload["Checkpoint"]["Next"] == 2
    second = Steps()
    second.gate.set()
    other = workers(index, deps, second)
    other.start()
    try:
        await until(lambda: _is(index, job.id, JobState.SUCCESS))
    finally:
        await other.stop()
    assert second.starts == [released.payload["Checkpoint"]["Next"]]
    assert (await state_of(index, job.id)).attempts == 2


async def _checkpointed(index: Index, job_id: str) -> bool:
    job = await index.jobs.get_job(job_id)
    return job is not None and job.payload.get("Checkpoint", {}).get("Next", 0) > 0


async def test_a_worker_that_lost_its_lease_does_not_record_an_outcome(
    index: Index, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker cut off from the index (heartbeats failing) loses the job to another
    worker, which finishes it; the first one's outcome is dropped, not recorded twice."""
    stuck = Steps()
    engine = workers(index, deps, stuck)

    async def failing_renew(*args: Any) -> None:
        raise ConnectionError("index unreachable")

    caplog.set_level(logging.INFO, logger="dicomkeep.jobs.worker")
    job = await index.jobs.submit_job("Fake", {}, {})
    engine.start()
    await stuck.started.wait()
    engine.store = _Wrapped(index.jobs, renew_job=failing_renew)
    fast = Steps()
    fast.gate.set()
    other = workers(index, deps, fast)
    other.start()
    try:
        await until(lambda: _is(index, job.id, JobState.SUCCESS))
        stuck.gate.set()  # the first worker now ends its run...

        async def gave_up() -> bool:
            return "taken over by another worker" in caplog.text

        await until(gave_up)
    finally:
        await other.stop()
        await engine.stop()
    done = await state_of(index, job.id)
    assert done.state is JobState.SUCCESS and done.attempts == 2
    types = [e.change.change_type for e in await index.outbox_batch(100)]
    assert types.count(ChangeType.JOB_SUCCESS) == 1  # ...but records nothing


class _Wrapped:
    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._inner, name)


async def test_store_job_resumes_from_its_checkpoint(index: Index, deps: Deps) -> None:
    """The real DicomModalityStore executor sends only what its checkpoint has not."""
    study = generate_study(series=1, instances_per_series=4, seed=21)
    receiver = Receiver(deps.blobs, index.store_instance)
    ids = [(await receiver.receive(item.data, Origin("RestApi"))).parsed.ids[3] for item in study]
    with storage_scp() as scp:
        modality = parse_modality(["PYSCP", "127.0.0.1", scp.port])
        content, payload = store_job(modality, ids, ids[:1], local_aet="DICOMKEEP", timeout=5)
        payload["Checkpoint"] = {"Next": 1, "Failed": 0}
        job = await index.jobs.submit_job(DICOM_MODALITY_STORE, content, payload)
        claimed = await index.jobs.claim_job("w", 30)
        assert claimed is not None
        outcome = await execute(claimed, JobRun(claimed), deps)
    assert outcome.state is JobState.SUCCESS and outcome.update.progress == 100
    assert outcome.update.content["InstancesCount"] == 4
    assert outcome.update.content["FailedInstancesCount"] == 0
    assert sorted(scp.received) == sorted(item.sop_uid for item in study[1:])
    assert job.content["RemoteAet"] == "PYSCP" and job.content["LocalAet"] == "DICOMKEEP"
    assert (await index.get_resource(Level.INSTANCE, ids[0])) is not None


async def test_store_job_to_nobody_fails_with_network_error(index: Index, deps: Deps) -> None:
    from servers import free_port

    study = generate_study(series=1, instances_per_series=1, seed=22)
    receiver = Receiver(deps.blobs, index.store_instance)
    ids = [(await receiver.receive(study[0].data, Origin("RestApi"))).parsed.ids[3]]
    modality = parse_modality(["NOBODY", "127.0.0.1", free_port()])
    content, payload = store_job(modality, ids, ids, local_aet="DICOMKEEP", timeout=2)
    await index.jobs.submit_job(DICOM_MODALITY_STORE, content, payload)
    claimed = await index.jobs.claim_job("w", 30)
    assert claimed is not None
    outcome = await execute(claimed, JobRun(claimed), deps)
    assert outcome.state is JobState.FAILURE
    assert outcome.error_code == ErrorCode.NETWORK_PROTOCOL.status
    assert "NOBODY" in outcome.error_details


class _UnreachableIndex:
    """The job store of an index that refuses connections for the first `down` claims."""

    def __init__(self, store: Any, down: int) -> None:
        self.store = store
        self.down = down
        self.claims = 0

    async def claim_job(self, worker: str, lease: float) -> JobRecord | None:
        self.claims += 1
        if self.claims <= self.down:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        return await self.store.claim_job(worker, lease)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_index_outage_is_one_line_and_backoff(
    index: Index, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15: while the index is unreachable the workers log one warning (no
    traceback), wait longer and longer between claims, and resume when it is back."""
    ran: list[str] = []

    async def executor(job: JobRecord, run: JobRun, deps: Deps) -> JobOutcome:
        ran.append(job.id)
        return success(JobUpdate(100, {}, job.payload))

    store = _UnreachableIndex(index.jobs, down=6)
    engine = JobWorkers(store, deps, concurrency=2, history_size=10, lease=LEASE,  # type: ignore[arg-type]
                        poll=0.01, execute_job=executor)
    caplog.set_level(logging.INFO, logger="dicomkeep")
    job_id = (await index.jobs.submit_job("Fake", {}, {})).id
    started = time.monotonic()
    engine.start()
    try:
        await until(lambda: _ran(ran, job_id), timeout=60)  # a loaded machine
    finally:
        await engine.stop()
    assert store.claims > 6
    assert time.monotonic() - started >= 0.01 + 0.02  # at least two growing waits
    worker_lines = [r for r in caplog.records if r.name == "dicomkeep.jobs.worker"]
    outage = [r for r in worker_lines if "index unavailable" in r.getMessage()]
    assert len(outage) == 1 and outage[0].exc_info is None
    assert [r for r in worker_lines if "available again" in r.getMessage()]
    assert not [r for r in worker_lines if r.exc_info is not None]


async def _ran(ran: list[str], job_id: str) -> bool:
    return job_id in ran
