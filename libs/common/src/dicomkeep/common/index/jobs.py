"""Jobs, modalities and REST queries in the index: the jobs, modalities and queries tables.

Written once for SQLite and PostgreSQL, like `Index` (which hands it its
database and its retrying transaction runner). Job events go to the outbox in
the job's own transaction, so JobSubmitted/JobSuccess/JobFailure are published
exactly when the state they announce is committed. The tables are created with
the rest of the index schema (`schema.JOBS_SCHEMA`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from dicomkeep.common.errors import ErrorCode
from dicomkeep.common.events import ChangeType
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.index.job_records import (
    JobAction,
    JobOutcome,
    JobRecord,
    JobState,
    JobUpdate,
    LeaseLost,
    QueryRecord,
)
from dicomkeep.common.ports.database import Database, Tx
from dicomkeep.common.timestamps import job_stamp

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]

JOB_COLUMNS = (
    "id, type, priority, state, progress, created, last_update, completed, content, "
    "payload, output, error_code, error_details, worker, lease_until, attempts, runtime, "
    "control"
)
#: The resource type of job events on the bus (`Job.JobSubmitted`), as Orthanc's SDK.
JOB_RESOURCE = "Job"
CANCELED = ErrorCode.CANCELED_JOB.status


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        id=row[0],
        type=row[1],
        priority=int(row[2]),
        state=JobState(row[3]),
        progress=int(row[4]),
        created=row[5],
        last_update=row[6],
        completed=row[7],
        content=json.loads(row[8]),
        payload=json.loads(row[9]),
        output=json.loads(row[10]),
        error_code=int(row[11]),
        error_details=row[12],
        worker=row[13],
        lease_until=float(row[14]),
        attempts=int(row[15]),
        runtime=float(row[16]),
        control=JobAction(row[17]) if row[17] else None,
    )


class JobStore:
    """Jobs, modalities and queries in the index database (records in job_records.py)."""

    def __init__(self, db: Database, run: Runner) -> None:
        self.db = db
        self._run = run

    @property
    def _skip_locked(self) -> str:
        # SQLite has one writer: no row locks to take or skip.
        return " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgres" else ""

    @property
    def _for_update(self) -> str:
        return " FOR UPDATE" if self.db.dialect == "postgres" else ""

    # -- jobs -------------------------------------------------------------------------
    async def submit_job(
        self,
        job_type: str,
        content: dict[str, Any],
        payload: dict[str, Any],
        priority: int = 0,
    ) -> JobRecord:
        """Insert a Pending job and publish JobSubmitted (outbox) in the same transaction."""
        job_id = str(uuid.uuid4())

        async def body(tx: Tx) -> JobRecord:
            stamp = job_stamp()
            await tx.execute(
                "INSERT INTO jobs(id, type, priority, state, progress, created, created_at, "
                "last_update, content, payload, output) "
                "VALUES ($1, $2, $3, $4, 0, $5, $6, $5, $7, $8, '{}')",
                job_id,
                job_type,
                priority,
                JobState.PENDING.value,
                stamp,
                time.time(),
                json.dumps(content),
                json.dumps(payload),
            )
            await _announce(tx, ChangeType.JOB_SUBMITTED, job_id)
            return await self._fetch(tx, job_id)

        result: JobRecord = await self._run(body)
        return result

    async def _fetch(self, tx: Tx, job_id: str, lock: bool = False) -> JobRecord:
        row = await tx.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1" + (self._for_update if lock else ""),
            job_id,
        )
        if row is None:
            raise KeyError(job_id)
        return _job(row)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return one job, or None if unknown (or dropped from the history)."""

        async def body(tx: Tx) -> JobRecord | None:
            row = await tx.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
            return None if row is None else _job(row)

        result: JobRecord | None = await self._run(body, readonly=True)
        return result

    async def list_jobs(self) -> list[JobRecord]:
        """Return every job in creation order."""

        async def body(tx: Tx) -> list[JobRecord]:
            rows = await tx.fetch(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at, id")
            return [_job(r) for r in rows]

        result: list[JobRecord] = await self._run(body, readonly=True)
        return result

    async def claim_job(self, worker: str, lease_seconds: float) -> JobRecord | None:
        """Take the next job to run, or None.

        Running jobs whose lease expired first go to Retry (a cancel or pause asked
        meanwhile is applied then). The job taken is the Pending or Retry one with
        the highest priority, oldest first; it becomes Running, owned by `worker`
        until now + `lease_seconds`, and its `attempts` grows by one. Workers on
        several hosts never take the same job (row locks with SKIP LOCKED on
        PostgreSQL, the single writer on SQLite).
        """

        async def body(tx: Tx) -> JobRecord | None:
            now = time.time()
            await self._expire_leases(tx, now)
            job_id = await tx.fetchval(
                "SELECT id FROM jobs WHERE state IN ('Pending', 'Retry') "
                "ORDER BY priority DESC, created_at, id LIMIT 1" + self._skip_locked
            )
            if job_id is None:
                return None
            await tx.execute(
                "UPDATE jobs SET state = 'Running', worker = $2, lease_until = $3, "
                "run_started = $4, attempts = attempts + 1, last_update = $5, control = NULL "
                "WHERE id = $1",
                job_id,
                worker,
                now + lease_seconds,
                now,
                job_stamp(),
            )
            return await self._fetch(tx, job_id)

        result: JobRecord | None = await self._run(body)
        return result

    async def _expire_leases(self, tx: Tx, now: float) -> None:
        """Put the Running jobs of lost workers back in the queue (state Retry).

        A cancel or pause asked while their worker was gone is applied now.
        """
        rows = await tx.fetch(
            "SELECT id, control FROM jobs WHERE state = 'Running' AND lease_until < $1"
            + self._skip_locked,
            now,
        )
        for job_id, control in rows:
            if control == JobAction.CANCEL.value:
                await self._complete(tx, job_id, JobState.FAILURE, CANCELED, "")
            elif control == JobAction.PAUSE.value:
                await self._set_state(tx, job_id, JobState.PAUSED)
            else:
                await self._set_state(tx, job_id, JobState.RETRY)

    async def _set_state(self, tx: Tx, job_id: str, state: JobState) -> None:
        await tx.execute(
            "UPDATE jobs SET state = $2, worker = NULL, control = NULL, last_update = $3 "
            "WHERE id = $1",
            job_id,
            state.value,
            job_stamp(),
        )

    async def _complete(
        self, tx: Tx, job_id: str, state: JobState, error_code: int, details: str
    ) -> None:
        stamp = job_stamp()
        await tx.execute(
            "UPDATE jobs SET state = $2, error_code = $3, error_details = $4, worker = NULL, "
            "control = NULL, completed = $5, completed_at = $6, last_update = $5 WHERE id = $1",
            job_id,
            state.value,
            error_code,
            details,
            stamp,
            time.time(),
        )
        change = ChangeType.JOB_SUCCESS if state is JobState.SUCCESS else ChangeType.JOB_FAILURE
        await _announce(tx, change, job_id)

    async def renew_job(
        self, job_id: str, worker: str, lease_seconds: float, update: JobUpdate | None
    ) -> JobAction | None:
        """Extend the lease, record the checkpoint if given; return a pending cancel/pause.

        Raises LeaseLost when the job is no longer Running for this worker.
        """

        async def body(tx: Tx) -> JobAction | None:
            job = await self._held(tx, job_id, worker)
            await tx.execute(
                "UPDATE jobs SET lease_until = $2 WHERE id = $1",
                job_id,
                time.time() + lease_seconds,
            )
            if update is not None:
                await self._record(tx, job_id, update)
            return job.control

        result: JobAction | None = await self._run(body)
        return result

    async def _held(self, tx: Tx, job_id: str, worker: str) -> JobRecord:
        try:
            job = await self._fetch(tx, job_id, lock=True)
        except KeyError:
            raise LeaseLost(job_id) from None
        if job.state is not JobState.RUNNING or job.worker != worker:
            raise LeaseLost(job_id)
        return job

    async def _record(self, tx: Tx, job_id: str, update: JobUpdate) -> None:
        await tx.execute(
            "UPDATE jobs SET progress = $2, content = $3, payload = $4, last_update = $5 "
            "WHERE id = $1",
            job_id,
            max(0, min(100, update.progress)),
            json.dumps(update.content),
            json.dumps(update.payload),
            job_stamp(),
        )

    async def finish_job(
        self, job_id: str, worker: str, outcome: JobOutcome, history_size: int
    ) -> JobRecord:
        """End the run: Success/Failure (publishing JobSuccess/JobFailure) or Paused.

        Completed jobs beyond `history_size` (oldest completion first) are dropped,
        as Orthanc's JobsHistorySize. Raises LeaseLost when `worker` no longer holds it.
        """

        async def body(tx: Tx) -> JobRecord:
            await self._held(tx, job_id, worker)
            await self._record(tx, job_id, outcome.update)
            await tx.execute(
                "UPDATE jobs SET runtime = runtime + ($2 - run_started) WHERE id = $1",
                job_id,
                time.time(),
            )
            if outcome.state is JobState.PAUSED:
                await self._set_state(tx, job_id, JobState.PAUSED)
            else:
                await self._complete(
                    tx, job_id, outcome.state, outcome.error_code, outcome.error_details
                )
            job = await self._fetch(tx, job_id)
            await self._trim_history(tx, history_size)
            return job

        result: JobRecord = await self._run(body)
        return result

    async def _trim_history(self, tx: Tx, history_size: int) -> None:
        """Drop completed jobs beyond `history_size`, oldest completion first."""
        rows = await tx.fetch(
            "SELECT id FROM jobs WHERE state IN ('Success', 'Failure') "
            "ORDER BY completed_at DESC, id DESC"
        )
        stale = [(r[0],) for r in rows[history_size:]]
        if stale:
            await tx.executemany("DELETE FROM jobs WHERE id = $1", stale)

    async def release_job(self, job_id: str, worker: str, update: JobUpdate | None) -> None:
        """Give a Running job back (state Retry, checkpoint kept) when its worker stops.

        Another worker, or this one after a restart, resumes it from the checkpoint.
        Does nothing when `worker` no longer holds the job.
        """

        async def body(tx: Tx) -> None:
            try:
                await self._held(tx, job_id, worker)
            except LeaseLost:
                return
            if update is not None:
                await self._record(tx, job_id, update)
            await tx.execute(
                "UPDATE jobs SET runtime = runtime + ($2 - run_started) WHERE id = $1",
                job_id,
                time.time(),
            )
            await self._set_state(tx, job_id, JobState.RETRY)

        await self._run(body)

    async def control_job(self, job_id: str, action: JobAction, history_size: int) -> bool:
        """Apply cancel/pause/resume/resubmit as ORTHANC_API.md §10's table says.

        Returns False when the job is unknown or the action is not allowed in its
        state (the REST layer answers 400); True otherwise, no-ops included. A
        cancel or pause of a Running job is recorded for its worker to apply.
        """

        async def body(tx: Tx) -> bool:
            try:
                job = await self._fetch(tx, job_id, lock=True)
            except KeyError:
                return False
            state = job.state
            if action is JobAction.CANCEL:
                if state in (JobState.PENDING, JobState.RETRY, JobState.PAUSED):
                    await self._complete(tx, job_id, JobState.FAILURE, CANCELED, "")
                    await self._trim_history(tx, history_size)
                elif state is JobState.RUNNING:
                    await self._request(tx, job_id, action)
                return True
            if action is JobAction.PAUSE:
                if state in (JobState.PENDING, JobState.RETRY):
                    await self._set_state(tx, job_id, JobState.PAUSED)
                elif state is JobState.RUNNING:
                    await self._request(tx, job_id, action)
                return True
            if action is JobAction.RESUME:
                if state is not JobState.PAUSED:
                    return False
                await self._set_state(tx, job_id, JobState.PENDING)
                return True
            if state is not JobState.FAILURE:
                return False
            await tx.execute(
                "UPDATE jobs SET state = 'Pending', progress = 0, error_code = 0, "
                "error_details = '', completed = NULL, completed_at = NULL, worker = NULL, "
                "control = NULL, payload = $2, last_update = $3 WHERE id = $1",
                job_id,
                json.dumps(restart_payload(job.payload)),
                job_stamp(),
            )
            return True

        result: bool = await self._run(body)
        return result

    async def _request(self, tx: Tx, job_id: str, action: JobAction) -> None:
        await tx.execute("UPDATE jobs SET control = $2 WHERE id = $1", job_id, action.value)

    async def delete_job(self, job_id: str) -> bool:
        """Remove a completed job from the history; False if unknown or not completed."""

        async def body(tx: Tx) -> bool:
            found = await tx.fetchval(
                "SELECT id FROM jobs WHERE id = $1 AND state IN ('Success', 'Failure')"
                + self._for_update,
                job_id,
            )
            if found is None:
                return False
            await tx.execute("DELETE FROM jobs WHERE id = $1", job_id)
            return True

        result: bool = await self._run(body)
        return result

    # -- modalities -------------------------------------------------------------------
    async def modality_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return the modalities set through REST: name -> object form, None = deleted."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            rows = await tx.fetch("SELECT name, value FROM modalities ORDER BY name")
            return {r[0]: (json.loads(r[1]) if r[1] is not None else None) for r in rows}

        result: dict[str, dict[str, Any] | None] = await self._run(body, readonly=True)
        return result

    async def set_modality(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a modality (object form), or its deletion with None."""

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO modalities(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                None if value is None else json.dumps(value),
            )

        await self._run(body)

    # -- queries ----------------------------------------------------------------------
    async def save_query(self, query: QueryRecord, keep: int) -> None:
        """Store a query with its answers, dropping the oldest beyond `keep` (LRU)."""

        async def body(tx: Tx) -> None:
            answers = [base64.b64encode(a).decode("ascii") for a in query.answers]
            await tx.execute(
                "INSERT INTO queries(id, created_at, modality, level, query, answers) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                query.id,
                time.time(),
                query.modality,
                query.level,
                json.dumps(query.query),
                json.dumps(answers),
            )
            rows = await tx.fetch("SELECT id FROM queries ORDER BY created_at DESC, id DESC")
            stale = [(r[0],) for r in rows[max(keep, 1) :]]
            if stale:
                await tx.executemany("DELETE FROM queries WHERE id = $1", stale)

        await self._run(body)

    async def get_query(self, query_id: str) -> QueryRecord | None:
        """Return one query, or None if unknown."""

        async def body(tx: Tx) -> QueryRecord | None:
            row = await tx.fetchrow(
                "SELECT id, modality, level, query, answers FROM queries WHERE id = $1",
                query_id,
            )
            if row is None:
                return None
            return QueryRecord(
                id=row[0],
                modality=row[1],
                level=row[2],
                query=json.loads(row[3]),
                answers=[base64.b64decode(a) for a in json.loads(row[4])],
            )

        result: QueryRecord | None = await self._run(body, readonly=True)
        return result

    async def list_queries(self) -> list[str]:
        """Return the query IDs, oldest first."""

        async def body(tx: Tx) -> list[str]:
            rows = await tx.fetch("SELECT id FROM queries ORDER BY created_at, id")
            return [r[0] for r in rows]

        result: list[str] = await self._run(body, readonly=True)
        return result

    async def delete_query(self, query_id: str) -> bool:
        """Forget a query; False if unknown."""

        async def body(tx: Tx) -> bool:
            found = await tx.fetchval("SELECT id FROM queries WHERE id = $1", query_id)
            if found is None:
                return False
            await tx.execute("DELETE FROM queries WHERE id = $1", query_id)
            return True

        result: bool = await self._run(body)
        return result


def restart_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a job's payload with its checkpoint cleared (`resubmit` starts over).

    Job payloads keep their checkpoint under the `Checkpoint` key by convention.
    """
    return {k: v for k, v in payload.items() if k != "Checkpoint"}


async def _announce(tx: Tx, change_type: ChangeType, job_id: str) -> None:
    """Queue a job event in the outbox (not logged in /changes: events.py)."""
    pending = PendingChanges()
    pending.add(change_type, JOB_RESOURCE, job_id)
    await pending.flush(tx)
