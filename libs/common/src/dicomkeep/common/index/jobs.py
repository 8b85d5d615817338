"""Jobs, modalities and REST queries in the index: the jobs, modalities and queries tables.

Reached through `Index.jobs`. Everything here is shared by every replica: a job
submitted through one gateway is visible through the other, run by any jobs
worker, and survives the restart of any process (Orthanc's `SaveJobs`, made
cluster-wide). `JobStore` gathers the REST side (here), the workers' side
(job_leases.py) and the REST queries (queries.py).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from dicomkeep.common.events import ChangeType
from dicomkeep.common.index.job_leases import CANCELED, JobLeases, announce, release_output
from dicomkeep.common.index.job_records import (
    JOB_COLUMNS,
    JobAction,
    JobRecord,
    JobState,
    job_from_row,
    restart_payload,
)
from dicomkeep.common.index.peers import read_overrides, write_override
from dicomkeep.common.index.queries import QueryStore
from dicomkeep.common.ports.database import Tx
from dicomkeep.common.timestamps import job_stamp


class JobStore(JobLeases, QueryStore):
    """Jobs, modalities and queries in the index. Every method is one transaction."""

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
            await announce(tx, ChangeType.JOB_SUBMITTED, job_id)
            return await self._fetch(tx, job_id)

        result: JobRecord = await self._run(body)
        return result

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return one job, or None if unknown (or dropped from the history)."""

        async def body(tx: Tx) -> JobRecord | None:
            row = await tx.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
            return None if row is None else job_from_row(row)

        result: JobRecord | None = await self._run(body, readonly=True)
        return result

    async def list_jobs(self) -> list[JobRecord]:
        """Return every job in creation order."""

        async def body(tx: Tx) -> list[JobRecord]:
            rows = await tx.fetch(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at, id")
            return [job_from_row(r) for r in rows]

        result: list[JobRecord] = await self._run(body, readonly=True)
        return result

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
                + self.for_update,
                job_id,
            )
            if found is None:
                return False
            await release_output(tx, job_id)
            await tx.execute("DELETE FROM jobs WHERE id = $1", job_id)
            return True

        result: bool = await self._run(body)
        return result

    async def set_output(
        self, job_id: str, output: dict[str, Any], keep: int
    ) -> list[str]:
        """Record a job's output (stored in the blob keyed by the job ID) and keep only
        the `keep` newest outputs (Orthanc's MediaArchiveSize); return the job IDs
        whose output was dropped, their blobs queued for deletion."""

        async def body(tx: Tx) -> list[str]:
            stamped = {**output, "Created": time.time()}
            await tx.execute(
                "UPDATE jobs SET output = $2 WHERE id = $1", job_id, json.dumps(stamped)
            )
            rows = await tx.fetch("SELECT id, output FROM jobs WHERE output <> '{}'")
            ordered = sorted(
                rows, key=lambda row: float(json.loads(row[1]).get("Created", 0)), reverse=True
            )
            dropped = [row[0] for row in ordered[max(keep, 0):]]
            for other in dropped:
                await release_output(tx, other)
            return dropped

        result: list[str] = await self._run(body)
        return result

    async def delete_output(self, job_id: str) -> bool:
        """Forget a job's output and queue its blob for deletion; False if it had none."""

        async def body(tx: Tx) -> bool:
            output = await tx.fetchval(
                "SELECT output FROM jobs WHERE id = $1" + self.for_update, job_id
            )
            if output is None or not json.loads(output):
                return False
            await release_output(tx, job_id)
            return True

        result: bool = await self._run(body)
        return result

    # -- modalities -------------------------------------------------------------------
    async def modality_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return the modalities set through REST: name -> object form, None = deleted."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            return await read_overrides(tx, "modalities")

        return await self._run(body, readonly=True)

    async def set_modality(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a modality (object form), or its deletion with None."""

        async def body(tx: Tx) -> None:
            await write_override(tx, "modalities", name, value)

        await self._run(body)
