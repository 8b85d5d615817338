"""Every message that crosses the bus: changes (facts) and commands (StoreInstance).

A change serialises with Orthanc's keys (`Seq`, `ChangeType`, `ResourceType`, `ID`,
`Path`, `Date`), so the body published on `dicomkeep.changes` equals one entry of
`GET /changes`. Model names and schema versions travel in headers, never in the body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from dicomkeep.common.ids import Level
from pydantic import BaseModel, ConfigDict, Field

#: The public topic exchange that external applications bind to.
CHANGES_EXCHANGE = "dicomkeep.changes"
#: The durable work queue of StoreInstance commands (request/reply).
STORE_QUEUE = "dicomkeep.store-instance"
#: Header of a StoreInstance message carrying its `issued_at` (Unix time, decimal):
#: outside the body, so that an indexer of the earlier version, whose model
#: forbids unknown fields, still reads the body during a rolling update.
ISSUED_AT_HEADER = "x-dicomkeep-issued-at"
#: The durable work queue of RunJob commands (wakes the jobs workers).
JOBS_QUEUE = "dicomkeep.jobs"
#: The schema version of every message, sent in the `x-dicomkeep-schema` header.
SCHEMA_VERSION = "1"
#: The AMQP `app_id` of every message DicomKeep publishes.
APP_ID = "dicomkeep"


class ChangeType(str, Enum):
    """Orthanc's change types, with their JSON strings (ORTHANC_API.md §6)."""

    COMPLETED_SERIES = "CompletedSeries"
    NEW_INSTANCE = "NewInstance"
    NEW_PATIENT = "NewPatient"
    NEW_SERIES = "NewSeries"
    NEW_STUDY = "NewStudy"
    STABLE_PATIENT = "StablePatient"
    STABLE_STUDY = "StableStudy"
    STABLE_SERIES = "StableSeries"
    UPDATED_ATTACHMENT = "UpdatedAttachment"
    UPDATED_METADATA = "UpdatedMetadata"
    DELETED = "Deleted"
    JOB_SUBMITTED = "JobSubmitted"
    JOB_SUCCESS = "JobSuccess"
    JOB_FAILURE = "JobFailure"

    @property
    def is_logged(self) -> bool:
        """True for the types that Orthanc writes to `GET /changes`."""
        return self not in _NOT_LOGGED


_NOT_LOGGED = {
    ChangeType.DELETED,
    ChangeType.JOB_SUBMITTED,
    ChangeType.JOB_SUCCESS,
    ChangeType.JOB_FAILURE,
}

#: Orthanc's database codes of the change types (for compatibility and ordering).
CHANGE_CODES: dict[ChangeType, int] = {
    ChangeType.COMPLETED_SERIES: 1,
    ChangeType.NEW_INSTANCE: 2,
    ChangeType.NEW_PATIENT: 3,
    ChangeType.NEW_SERIES: 4,
    ChangeType.NEW_STUDY: 5,
    ChangeType.STABLE_PATIENT: 12,
    ChangeType.STABLE_STUDY: 13,
    ChangeType.STABLE_SERIES: 14,
    ChangeType.UPDATED_ATTACHMENT: 15,
    ChangeType.UPDATED_METADATA: 16,
    ChangeType.DELETED: 4096,
    ChangeType.JOB_SUBMITTED: 8192,
    ChangeType.JOB_SUCCESS: 8193,
    ChangeType.JOB_FAILURE: 8194,
}

STABLE_CHANGE = {
    Level.PATIENT: ChangeType.STABLE_PATIENT,
    Level.STUDY: ChangeType.STABLE_STUDY,
    Level.SERIES: ChangeType.STABLE_SERIES,
}


class Change(BaseModel):
    """One entry of the changes log, as `GET /changes` shows it and the bus carries it.

    For job events, `ResourceType` is `Job` and `ID` the job id (Orthanc's plugin
    SDK does the same). `Path` is the resource's REST path.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    seq: int = Field(alias="Seq")
    change_type: ChangeType = Field(alias="ChangeType")
    resource_type: str = Field(alias="ResourceType")
    id: str = Field(alias="ID")
    path: str = Field(alias="Path")
    date: str = Field(alias="Date")

    def to_json(self) -> dict[str, Any]:
        """Return the Orthanc-shaped JSON object."""
        return self.model_dump(by_alias=True, mode="json")

    @property
    def routing_key(self) -> str:
        """`<ResourceType>.<ChangeType>`, e.g. `Study.StableStudy`."""
        return routing_key(self.resource_type, self.change_type)


def routing_key(resource_type: str, change_type: ChangeType | str) -> str:
    """Return the routing key on `dicomkeep.changes` for a change."""
    value = change_type.value if isinstance(change_type, ChangeType) else change_type
    return f"{resource_type}.{value}"


class Envelope(BaseModel):
    """AMQP properties of a published event (docs/events.md, "Envelope").

    `message_id` is stable per change (the same change re-published after a crash
    keeps it), so that subscribers deduplicate with standard tooling; `timestamp`
    is the commit time; `type` the ChangeType.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str
    timestamp: datetime
    type: str

    @classmethod
    def of_change(cls, change: Change, database_id: str) -> Envelope:
        """Return the envelope of a change: `message_id` is `<database id>:<Seq>`."""
        stamp = datetime.strptime(change.date, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return cls(
            message_id=f"{database_id}:{change.seq}",
            timestamp=stamp,
            type=change.change_type.value,
        )


class OutboxEvent(BaseModel):
    """A committed change waiting to be published, with its filtering headers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    change: Change
    headers: dict[str, str] = Field(default_factory=dict)


class StoreStatus(str, Enum):
    """The `Status` of `POST /instances` (ORTHANC_API.md §2.5)."""

    SUCCESS = "Success"
    ALREADY_STORED = "AlreadyStored"
    FILTERED_OUT = "FilteredOut"
    FAILURE = "Failure"


class AttachmentInfo(BaseModel):
    """What the index records of one attachment (Orthanc's FileInfo)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_type: int
    uuid: str
    uncompressed_size: int
    uncompressed_md5: str
    compressed_size: int
    compressed_md5: str
    compression: int = 0  # 0 = none, 1 = zlib with size (Orthanc's CompressionType)
    revision: int = 0


class StoreInstance(BaseModel):
    """Command: index one instance whose blobs are already written.

    Sent by ingest and gateway to the indexer, which answers a `StoreReply`.
    `main_tags` hold, per level, the keyword → value pairs of ORTHANC_API.md §2.1;
    `metadata` the core metadata per level (key → value). `issued_at` is the
    sender's Unix time (s) taken before it wrote the blobs; the indexer refuses a
    command older than OrphanGracePeriod allows (index/staleness.py). On the bus
    it travels in the `ISSUED_AT_HEADER` header, not in the body; a message of the
    earlier format has no such header and is judged by `received_at`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: str
    study_id: str
    series_id: str
    instance_id: str
    patient_uid: str
    study_uid: str
    series_uid: str
    sop_uid: str
    main_tags: dict[Level, dict[str, str]]
    metadata: dict[Level, dict[int, str]]
    attachments: list[AttachmentInfo]
    overwrite: bool = False
    received_at: str = ""
    traceparent: str | None = None
    issued_at: float | None = None


class StoreReply(BaseModel):
    """Answer of the indexer to a `StoreInstance`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: StoreStatus
    instance_id: str
    error_code: str | None = None  # an errors.ErrorCode name on failure
    details: str | None = None
    seq: int | None = None  # the last Seq that the store appended


class RemainingAncestor(BaseModel):
    """The nearest surviving ancestor after a delete."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Level
    public_id: str


class RunJob(BaseModel):
    """Command: a job became Pending (submitted, resumed, resubmitted); run it soon.

    Sent on `JOBS_QUEUE` by whoever queued the job; a jobs worker wakes up and
    claims the next job from the index (not necessarily this one: priorities hold).
    Losing it only delays the job until the workers' next poll.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
