"""Contract of `Index.jobs` (the JobStore port): jobs, modalities, queries, on both databases."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from backends import PG_ADMIN_DSN, pg_dsn
from dicomkeep.common.adapters.postgres_db import PostgresDatabase
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.errors import ErrorCode
from dicomkeep.common.events import ChangeType
from dicomkeep.common.index import (
    Index,
    JobAction,
    JobOutcome,
    JobState,
    JobUpdate,
    LeaseLost,
    QueryRecord,
)

CANCELED = ErrorCode.CANCELED_JOB.status


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the module (creating one per test is slow)."""
    name = f"dicomkeep_contract_jobs_{os.getpid()}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def run(statement: str) -> None:
        # Requested from inside the test's event loop: run on a thread of its own.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, admin(statement)).result()

    run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    run(f"CREATE DATABASE {name}")
    yield pg_dsn(name)
    run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    if request.param == "sqlite":
        idx = Index(SqliteDatabase(tmp_path / "index"))
    else:
        idx = Index(PostgresDatabase(request.getfixturevalue("pg_database"), size=8))
    await idx.open()
    async with idx.db.transaction() as tx:
        for table in ("jobs", "modalities", "queries", "outbox", "changes"):
            await tx.execute(f"DELETE FROM {table}")
    try:
        yield idx
    finally:
        await idx.close()


def done(state: JobState = JobState.SUCCESS, code: int = 0, details: str = "") -> JobOutcome:
    return JobOutcome(state, JobUpdate(100, {"Done": True}, {"Checkpoint": {"Next": 3}}), code, details)


async def job_events(index: Index) -> list[tuple[ChangeType, str, str]]:
    return [
        (e.change.change_type, e.change.resource_type, e.change.id)
        for e in await index.outbox_batch(1000)
        if e.change.resource_type == "Job"
    ]


async def test_submit_get_list_and_job_submitted_event(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("DicomModalityStore", {"InstancesCount": 2}, {"Instances": ["a", "b"]}, 5)
    assert job.state is JobState.PENDING and job.priority == 5 and job.progress == 0
    assert job.content == {"InstancesCount": 2} and job.payload == {"Instances": ["a", "b"]}
    assert job.completed is None and job.attempts == 0 and job.worker is None
    assert await store.get_job(job.id) == job
    assert [j.id for j in await store.list_jobs()] == [job.id]
    assert await store.get_job("unknown") is None
    assert await job_events(index) == [(ChangeType.JOB_SUBMITTED, "Job", job.id)]
    outbox = await index.outbox_batch(10)
    assert outbox[-1].change.path == f"/jobs/{job.id}"
    # Job events are published, not logged in /changes (ORTHANC_API.md §6).
    assert (await index.get_changes(0, 100)).changes == []


async def test_claim_takes_highest_priority_then_oldest(index: Index) -> None:
    store = index.jobs
    low = await store.submit_job("T", {}, {}, -1)
    first = await store.submit_job("T", {}, {}, 3)
    second = await store.submit_job("T", {}, {}, 3)
    order = []
    for _ in range(3):
        claimed = await store.claim_job("w1", 30)
        assert claimed is not None and claimed.state is JobState.RUNNING
        assert claimed.worker == "w1" and claimed.attempts == 1
        order.append(claimed.id)
    assert order == [first.id, second.id, low.id]
    assert await store.claim_job("w1", 30) is None


async def test_concurrent_claims_never_share_a_job(index: Index) -> None:
    store = index.jobs
    submitted = {(await store.submit_job("T", {}, {})).id for _ in range(20)}

    async def worker(name: str) -> list[str]:
        mine = []
        while (job := await store.claim_job(name, 30)) is not None:
            mine.append(job.id)
        return mine

    results = await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    claimed = [job_id for mine in results for job_id in mine]
    assert sorted(claimed) == sorted(submitted)


async def test_renew_records_checkpoint_and_reports_requests(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("T", {"A": 1}, {"P": 1})
    await store.claim_job("w1", 30)
    update = JobUpdate(40, {"A": 2}, {"P": 1, "Checkpoint": {"Next": 2}})
    assert await store.renew_job(job.id, "w1", 30, update) is None
    current = await store.get_job(job.id)
    assert current is not None
    assert (current.progress, current.content, current.payload) == (40, update.content, update.payload)
    assert await store.control_job(job.id, JobAction.PAUSE, 10)
    assert await store.renew_job(job.id, "w1", 30, None) is JobAction.PAUSE
    assert await store.control_job(job.id, JobAction.CANCEL, 10)
    assert await store.renew_job(job.id, "w1", 30, None) is JobAction.CANCEL
    with pytest.raises(LeaseLost):
        await store.renew_job(job.id, "w2", 30, None)


async def test_finish_success_failure_and_paused(index: Index) -> None:
    store = index.jobs
    ok, bad, paused = [await store.submit_job("T", {}, {}) for _ in range(3)]
    for _ in range(3):
        await store.claim_job("w1", 30)
    finished = await store.finish_job(ok.id, "w1", done(), 10)
    assert finished.state is JobState.SUCCESS and finished.progress == 100
    assert finished.completed is not None and finished.content == {"Done": True}
    assert finished.worker is None and finished.runtime >= 0
    failed = await store.finish_job(bad.id, "w1", done(JobState.FAILURE, 9, "no peer"), 10)
    assert (failed.state, failed.error_code, failed.error_details) == (JobState.FAILURE, 9, "no peer")
    held = await store.finish_job(paused.id, "w1", JobOutcome(JobState.PAUSED, JobUpdate(30, {}, {})), 10)
    assert held.state is JobState.PAUSED and held.completed is None and held.progress == 30
    events = [e for e in await job_events(index) if e[0] is not ChangeType.JOB_SUBMITTED]
    assert events == [(ChangeType.JOB_SUCCESS, "Job", ok.id), (ChangeType.JOB_FAILURE, "Job", bad.id)]
    with pytest.raises(LeaseLost):
        await store.finish_job(ok.id, "w1", done(), 10)


async def test_history_keeps_the_newest_completed_jobs(index: Index) -> None:
    store = index.jobs
    pending = await store.submit_job("T", {}, {}, -10)
    ids = []
    for _ in range(4):
        job = await store.submit_job("T", {}, {})
        await store.claim_job("w1", 30)
        await store.finish_job(job.id, "w1", done(), 2)
        ids.append(job.id)
    remaining = [j.id for j in await store.list_jobs()]
    assert remaining == [pending.id, *ids[-2:]]


async def test_expired_lease_goes_to_retry_and_is_resumed(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("T", {}, {"Instances": [1, 2, 3]})
    await store.claim_job("dead", -1)  # a lease already over: the worker died
    await store.control_job(job.id, JobAction.RESUME, 10)  # not paused: refused, no change
    retried = await store.claim_job("alive", 30)
    assert retried is not None and retried.id == job.id
    assert retried.worker == "alive" and retried.attempts == 2 and retried.state is JobState.RUNNING
    with pytest.raises(LeaseLost):
        await store.renew_job(job.id, "dead", 30, None)
    with pytest.raises(LeaseLost):
        await store.finish_job(job.id, "dead", done(), 10)
    assert (await store.finish_job(job.id, "alive", done(), 10)).state is JobState.SUCCESS


async def test_expired_lease_applies_requests_made_meanwhile(index: Index) -> None:
    store = index.jobs
    cancelled = await store.submit_job("T", {}, {})
    paused = await store.submit_job("T", {}, {})
    await store.claim_job("dead", -1)
    await store.claim_job("dead", -1)
    assert await store.control_job(cancelled.id, JobAction.CANCEL, 10)
    assert await store.control_job(paused.id, JobAction.PAUSE, 10)
    assert await store.claim_job("alive", 30) is None
    after_cancel = await store.get_job(cancelled.id)
    after_pause = await store.get_job(paused.id)
    assert after_cancel is not None and after_cancel.state is JobState.FAILURE
    assert after_cancel.error_code == CANCELED
    assert after_pause is not None and after_pause.state is JobState.PAUSED


async def test_release_gives_the_job_back_with_its_checkpoint(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("T", {}, {})
    await store.claim_job("w1", 30)
    await store.release_job(job.id, "w1", JobUpdate(50, {"C": 1}, {"Checkpoint": {"Next": 5}}))
    released = await store.get_job(job.id)
    assert released is not None and released.state is JobState.RETRY and released.progress == 50
    again = await store.claim_job("w2", 30)
    assert again is not None and again.payload == {"Checkpoint": {"Next": 5}}
    await store.release_job(job.id, "w1", None)  # not ours any more: nothing happens
    current = await store.get_job(job.id)
    assert current is not None and current.worker == "w2"


async def test_actions_follow_orthancs_table(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("T", {}, {"Instances": [1], "Checkpoint": {"Next": 1}})
    assert not await store.control_job(job.id, JobAction.RESUME, 10)
    assert not await store.control_job(job.id, JobAction.RESUBMIT, 10)
    assert await store.control_job(job.id, JobAction.PAUSE, 10)
    assert (await store.get_job(job.id)).state is JobState.PAUSED  # type: ignore[union-attr]
    assert await store.claim_job("w1", 30) is None  # a paused job does not run
    assert await store.control_job(job.id, JobAction.RESUME, 10)
    assert (await store.get_job(job.id)).state is JobState.PENDING  # type: ignore[union-attr]
    assert await store.control_job(job.id, JobAction.CANCEL, 10)
    cancelled = await store.get_job(job.id)
    assert cancelled is not None and cancelled.state is JobState.FAILURE
    assert cancelled.error_code == CANCELED and cancelled.completed is not None
    assert await store.control_job(job.id, JobAction.CANCEL, 10)  # no-op, still allowed
    assert await store.control_job(job.id, JobAction.PAUSE, 10)  # no-op
    assert (await store.get_job(job.id)).state is JobState.FAILURE  # type: ignore[union-attr]
    assert await store.control_job(job.id, JobAction.RESUBMIT, 10)
    resubmitted = await store.get_job(job.id)
    assert resubmitted is not None and resubmitted.state is JobState.PENDING
    assert resubmitted.error_code == 0 and resubmitted.completed is None
    assert resubmitted.payload == {"Instances": [1]}  # the checkpoint is cleared
    for action in JobAction:
        assert not await store.control_job("unknown", action, 10)


async def test_delete_only_completed_jobs(index: Index) -> None:
    store = index.jobs
    job = await store.submit_job("T", {}, {})
    assert not await store.delete_job(job.id)
    await store.control_job(job.id, JobAction.CANCEL, 10)
    assert await store.delete_job(job.id)
    assert await store.get_job(job.id) is None
    assert not await store.delete_job(job.id)


async def test_modality_overrides(index: Index) -> None:
    store = index.jobs
    assert await store.modality_overrides() == {}
    await store.set_modality("b", {"AET": "B", "Host": "h", "Port": 104})
    await store.set_modality("a", None)
    await store.set_modality("b", {"AET": "B2", "Host": "h", "Port": 105})
    assert await store.modality_overrides() == {"a": None, "b": {"AET": "B2", "Host": "h", "Port": 105}}


async def test_queries_are_kept_with_their_answers_up_to_a_limit(index: Index) -> None:
    store = index.jobs
    records = [
        QueryRecord(f"q{n}", "pacs", "Study", {"PatientID": str(n)}, [b"\x00\x01", bytes([n])])
        for n in range(3)
    ]
    for record in records:
        await store.save_query(record, keep=2)
    assert await store.list_queries() == ["q1", "q2"]
    assert await store.get_query("q2") == records[2]
    assert await store.get_query("q0") is None
    assert await store.delete_query("q1")
    assert not await store.delete_query("q1")
    assert await store.list_queries() == ["q2"]


async def test_job_outputs_are_kept_up_to_a_limit_and_their_blobs_released(index: Index) -> None:
    """Archive outputs (blob keyed by the job ID): MediaArchiveSize newest kept, the
    others' blobs queued for deletion; referenced_blobs protects the kept ones."""
    async with index.db.transaction() as tx:
        await tx.execute("DELETE FROM pending_blobs")
    store = index.jobs
    jobs = [await store.submit_job("Archive", {}, {}) for _ in range(3)]
    ids = [job.id for job in jobs]
    assert await store.set_output(ids[0], {"archive": {"Size": 1}}, 2) == []
    assert await store.set_output(ids[1], {"archive": {"Size": 2}}, 2) == []
    assert await store.set_output(ids[2], {"archive": {"Size": 3}}, 2) == [ids[0]]
    assert await index.pending_blobs(10) == [ids[0]]
    assert (await store.get_job(ids[0])).output == {}  # type: ignore[union-attr]
    assert (await store.get_job(ids[2])).output["archive"] == {"Size": 3}  # type: ignore[union-attr]
    assert await index.referenced_blobs(ids) == {ids[1], ids[2]}
    assert await store.delete_output(ids[1])
    assert not await store.delete_output(ids[1])
    assert not await store.delete_output("unknown")
    assert sorted(await index.pending_blobs(10)) == sorted(ids[:2])
    # A job that leaves the history releases its output.
    await store.control_job(ids[2], JobAction.CANCEL, 10)
    assert await store.delete_job(ids[2])
    assert sorted(await index.pending_blobs(10)) == sorted(ids)
    assert await index.referenced_blobs(ids) == set()


async def test_history_trim_releases_outputs(index: Index) -> None:
    async with index.db.transaction() as tx:
        await tx.execute("DELETE FROM pending_blobs")
    store = index.jobs
    first = await store.submit_job("Archive", {}, {})
    await store.claim_job("w1", 30)
    await store.set_output(first.id, {"archive": {"Size": 1}}, 5)
    await store.finish_job(first.id, "w1", done(), 1)
    second = await store.submit_job("T", {}, {})
    await store.claim_job("w1", 30)
    await store.finish_job(second.id, "w1", done(), 1)
    assert await store.get_job(first.id) is None
    assert await index.pending_blobs(10) == [first.id]
