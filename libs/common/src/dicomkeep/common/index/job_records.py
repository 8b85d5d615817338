"""Jobs as the index keeps them: states, actions, records, outcomes, REST queries.

Returned and taken by `dicomkeep.common.index.JobStore`, reached through
`Index.jobs`. Everything here is shared by every replica: a job submitted
through one gateway is visible through the other, run by any jobs worker, and survives the restart of any process (Orthanc's `SaveJobs`, made
cluster-wide). Workers hold a job through a lease they renew; a job whose lease
expired is taken over by another worker (ORTHANC_API.md §10).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


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

    `answers` hold each answer as a DICOM file (bytes) as received; `normalize` and
    `timeout` (seconds, None when the request named none) are the options its
    drill-downs inherit (Orthanc's QueryAnswerChildren).
    """

    id: str
    modality: str
    level: str
    query: dict[str, str]
    answers: list[bytes] = field(default_factory=list)
    normalize: bool = True
    timeout: int | None = None


class LeaseLost(Exception):
    """The worker no longer holds the job (its lease expired and another took it)."""


#: The columns `job_from_row` reads, in order.
JOB_COLUMNS = (
    "id, type, priority, state, progress, created, last_update, completed, content, "
    "payload, output, error_code, error_details, worker, lease_until, attempts, runtime, "
    "control"
)


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """Build a JobRecord from a row of `JOB_COLUMNS`."""
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


def restart_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a job's payload with its checkpoint cleared (`resubmit` starts over).

    Job payloads keep their checkpoint under the `Checkpoint` key by convention.
    """
    return {k: v for k, v in payload.items() if k != "Checkpoint"}
