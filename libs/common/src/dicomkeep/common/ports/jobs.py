"""The JobStore port: jobs, registered modalities and REST queries, kept in the index.

Reached through `Index.jobs`. Everything here is shared by every replica: a job
submitted through one gateway is visible through the other, run by any jobs
worker, and survives the restart of any process (Orthanc's `SaveJobs`, made
cluster-wide). Workers hold a job through a lease they renew; a job whose lease
expired is taken over by another worker (ORTHANC_API.md §10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class JobState(str, Enum):
    """Orthanc's job states (`State` of `GET /jobs/{id}`)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RETRY = "Retry"

    @property
    def is_done(self) -> bool:
        """True for the final states (Success, Failure)."""
        return self in (JobState.SUCCESS, JobState.FAILURE)


class JobAction(str, Enum):
    """The actions of `POST /jobs/{id}/{action}`."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RESUBMIT = "resubmit"


@dataclass(frozen=True)
class JobRecord:
    """One job as the store keeps it.

    `content` is the public content (`Content` of `GET /jobs/{id}`); `payload` the
    private parameters and checkpoint the worker resumes from; `control` a pending
    cancel/pause request for a Running job; `lease_until` a UNIX time.
    """

    id: str
    type: str
    priority: int
    state: JobState
    progress: int
    created: str
    last_update: str
    completed: str | None
    content: dict[str, Any]
    payload: dict[str, Any]
    output: dict[str, Any]
    error_code: int
    error_details: str
    worker: str | None
    lease_until: float
    attempts: int
    runtime: float
    control: JobAction | None = None


@dataclass(frozen=True)
class JobUpdate:
    """What a worker reports about the job it holds (checkpoint and public view)."""

    progress: int
    content: dict[str, Any]
    payload: dict[str, Any]


@dataclass(frozen=True)
class JobOutcome:
    """How a run ended: Success, Failure (with an Orthanc error) or Paused."""

    state: JobState
    update: JobUpdate
    error_code: int = 0
    error_details: str = ""


@dataclass(frozen=True)
class QueryRecord:
    """A REST query (`/queries/{id}`): the C-FIND sent to a modality and its answers.

    `answers` hold each answer as a DICOM file (bytes) as received.
    """

    id: str
    modality: str
    level: str
    query: dict[str, str]
    answers: list[bytes] = field(default_factory=list)


class LeaseLost(Exception):
    """The worker no longer holds the job (its lease expired and another took it)."""


class JobStore(Protocol):
    """Jobs, modalities and queries in the index. Every method is one transaction."""

    # -- jobs -------------------------------------------------------------------------
    async def submit_job(
        self,
        job_type: str,
        content: dict[str, Any],
        payload: dict[str, Any],
        priority: int = 0,
    ) -> JobRecord:
        """Insert a Pending job and publish JobSubmitted (outbox) in the same transaction."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return one job, or None if unknown (or dropped from the history)."""

    async def list_jobs(self) -> list[JobRecord]:
        """Return every job in creation order."""

    async def claim_job(self, worker: str, lease_seconds: float) -> JobRecord | None:
        """Take the next job to run, or None.

        Running jobs whose lease expired first go to Retry (a cancel or pause asked
        meanwhile is applied then). The job taken is the Pending or Retry one with
        the highest priority, oldest first; it becomes Running, owned by `worker`
        until now + `lease_seconds`, and its `attempts` grows by one. Workers on
        several hosts never take the same job (row locks with SKIP LOCKED on
        PostgreSQL, the single writer on SQLite).
        """

    async def renew_job(
        self, job_id: str, worker: str, lease_seconds: float, update: JobUpdate | None
    ) -> JobAction | None:
        """Extend the lease, record the checkpoint if given; return a pending cancel/pause.

        Raises LeaseLost when the job is no longer Running for this worker.
        """

    async def finish_job(
        self, job_id: str, worker: str, outcome: JobOutcome, history_size: int
    ) -> JobRecord:
        """End the run: Success/Failure (publishing JobSuccess/JobFailure) or Paused.

        Completed jobs beyond `history_size` (oldest completion first) are dropped,
        as Orthanc's JobsHistorySize. Raises LeaseLost when `worker` no longer holds it.
        """

    async def release_job(self, job_id: str, worker: str, update: JobUpdate | None) -> None:
        """Give a Running job back (state Retry, checkpoint kept) when its worker stops.

        Another worker, or this one after a restart, resumes it from the checkpoint.
        Does nothing when `worker` no longer holds the job.
        """

    async def control_job(self, job_id: str, action: JobAction, history_size: int) -> bool:
        """Apply cancel/pause/resume/resubmit as ORTHANC_API.md §10's table says.

        Returns False when the job is unknown or the action is not allowed in its
        state (the REST layer answers 400); True otherwise, no-ops included. A
        cancel or pause of a Running job is recorded for its worker to apply.
        """

    async def delete_job(self, job_id: str) -> bool:
        """Remove a completed job from the history; False if unknown or not completed."""

    # -- modalities -------------------------------------------------------------------
    async def modality_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return the modalities set through REST: name -> object form, None = deleted."""

    async def set_modality(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a modality (object form), or its deletion with None."""

    # -- queries ----------------------------------------------------------------------
    async def save_query(self, query: QueryRecord, keep: int) -> None:
        """Store a query with its answers, dropping the oldest beyond `keep` (LRU)."""

    async def get_query(self, query_id: str) -> QueryRecord | None:
        """Return one query, or None if unknown."""

    async def list_queries(self) -> list[str]:
        """Return the query IDs, oldest first."""

    async def delete_query(self, query_id: str) -> bool:
        """Forget a query; False if unknown."""
