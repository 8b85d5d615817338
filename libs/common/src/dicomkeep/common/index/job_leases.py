"""The worker side of jobs in the index: claim, renew, finish, release (leases).

Workers hold a job through a lease they renew; a job whose lease expired is
taken over by another worker (ORTHANC_API.md §10). Job events go to the outbox
in the job's own transaction, so JobSubmitted/JobSuccess/JobFailure are
published exactly when the state they announce is committed. `JobLeases` is
the part of `JobStore` (jobs.py) that workers use.
"""

from __future__ import annotations

import json
import time

from dicomkeep.common.errors import ErrorCode
from dicomkeep.common.events import ChangeType
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.index.hierarchy import release_blob
from dicomkeep.common.index.job_records import (
    JOB_COLUMNS,
    JobAction,
    JobOutcome,
    JobRecord,
    JobState,
    JobUpdate,
    LeaseLost,
    job_from_row,
)
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx
from dicomkeep.common.timestamps import job_stamp

#: The resource type of job events on the bus (`Job.JobSubmitted`), as Orthanc's SDK.
JOB_RESOURCE = "Job"
CANCELED = ErrorCode.CANCELED_JOB.status


async def release_output(tx: Tx, job_id: str) -> None:
    """Forget a job's output; its blob (keyed by the job ID) goes to the storage
    service's deletion queue when the job had one (archives.py)."""
    output = await tx.fetchval("SELECT output FROM jobs WHERE id = $1", job_id)
    if output is not None and json.loads(output):
        await tx.execute("UPDATE jobs SET output = '{}' WHERE id = $1", job_id)
        await release_blob(tx, job_id)


async def announce(tx: Tx, change_type: ChangeType, job_id: str) -> None:
    """Queue a job event in the outbox (not logged in /changes: events.py)."""
    pending = PendingChanges()
    pending.add(change_type, JOB_RESOURCE, job_id)
    await pending.flush(tx)


class JobLeases(Transactions):
    """Jobs as their workers see them. Every public method is one transaction."""

    @property
    def _skip_locked(self) -> str:
        # SQLite has one writer: no row locks to take or skip.
        return " FOR UPDATE SKIP LOCKED" if self.dialect == "postgres" else ""

    async def _fetch(self, tx: Tx, job_id: str, lock: bool = False) -> JobRecord:
        row = await tx.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1" + (self.for_update if lock else ""),
            job_id,
        )
        if row is None:
            raise KeyError(job_id)
        return job_from_row(row)

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
        await announce(tx, change, job_id)

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
            for (job_id,) in stale:
                await release_output(tx, job_id)
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
