"""The Index port: the DICOM hierarchy, metadata, attachments, changes and outbox.

Mirrors Orthanc's IDatabaseWrapper in domain words. One implementation of the
logic (`adapters.sql_index.SqlIndex`) runs over two databases: SQLite (embedded)
and PostgreSQL (distributed).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dicomkeep.common.events import (
    AttachmentInfo,
    Change,
    ChangeType,
    OutboxEvent,
    RemainingAncestor,
    StoreInstance,
    StoreReply,
)
from dicomkeep.common.find import Constraint
from dicomkeep.common.ids import Level
from dicomkeep.common.ports.jobs import JobStore
from dicomkeep.common.ports.peers import PeerStore


@dataclass(frozen=True)
class Resource:
    """One resource as the index knows it (the raw material of `GET /{level}/{id}`)."""

    level: Level
    public_id: str
    parent_id: str | None
    children: list[str]
    main_tags: dict[str, str]
    metadata: dict[int, str]
    is_protected: bool = False
    labels: list[str] = field(default_factory=list)
    # Only for studies: the patient tags copied at study creation.
    patient_main_tags: dict[str, str] | None = None
    # Only for instances: the DICOM attachment.
    dicom: AttachmentInfo | None = None
    # Patients, studies, series: False from a new instance until its Stable* change.
    is_stable: bool = True


@dataclass(frozen=True)
class UnstableResource:
    """A resource waiting for its Stable* change (ORTHANC_API.md §7)."""

    level: Level
    public_id: str
    touched_at: float  # UNIX time of its last new instance


@dataclass(frozen=True)
class MetadataValue:
    """A metadata value with its revision (ETag is `"<revision>-<md5(value)>"`)."""

    value: str
    revision: int


@dataclass(frozen=True)
class Expected:
    """An If-Match condition: the item must exist with this revision and MD5."""

    revision: int
    md5: str


@dataclass(frozen=True)
class ChangesPage:
    """An answer of `GET /changes`."""

    changes: list[Change]
    done: bool
    last: int


@dataclass(frozen=True)
class DeleteOutcome:
    """What `delete_resource` did."""

    remaining: RemainingAncestor | None
    deleted: list[tuple[Level, str]]


@dataclass(frozen=True)
class Statistics:
    """Counts and sizes for `/statistics` and `/{level}/{id}/statistics`."""

    count_patients: int = 0
    count_studies: int = 0
    count_series: int = 0
    count_instances: int = 0
    disk_size: int = 0
    uncompressed_size: int = 0
    dicom_disk_size: int = 0
    dicom_uncompressed_size: int = 0


class Index(Protocol):
    """The index of every DICOM resource. Every method is one transaction."""

    @property
    def jobs(self) -> JobStore:
        """Jobs, registered modalities and REST queries kept in the index (ports/jobs.py)."""

    @property
    def peers(self) -> PeerStore:
        """Orthanc peers set or deleted through REST, kept in the index (ports/peers.py)."""

    async def open(self) -> None:
        """Connect and apply the schema migrations (idempotent)."""

    async def close(self) -> None:
        """Release connections."""

    # -- the store transaction ------------------------------------------------------
    async def store_instance(self, command: StoreInstance) -> StoreReply:
        """Run the store transaction (ARCHITECTURE.md step 3).

        Mirrors Orthanc's ServerIndex::Store: upsert patient/study/series, answer
        AlreadyStored (changing nothing) when the instance exists and overwrite is
        off, replace it when on; record attachments, metadata, LastUpdate and the
        changes NewInstance, NewSeries, NewStudy, NewPatient, CompletedSeries.
        """

    # -- reads ------------------------------------------------------------------------
    async def get_resource(self, level: Level, public_id: str) -> Resource | None:
        """Return one resource, or None if unknown at this level."""

    async def list_resources(
        self, level: Level, since: int | None = None, limit: int | None = None
    ) -> list[str]:
        """Return public IDs in index order, skipping `since`, at most `limit`."""

    async def lookup(self, identifier: str) -> list[tuple[Level, str]]:
        """Find resources whose PatientID or Study/Series/SOP Instance UID equals this."""

    async def descendants(self, level: Level, public_id: str, target: Level) -> list[str]:
        """Return the IDs of all descendants at `target` level (itself if same level)."""

    # -- find (adapters/sql_find.py; rules in dicomkeep.common.find) ----------------
    async def find(
        self, level: Level, constraints: Sequence[Constraint], *, since: int = 0,
        limit: int | None = None, labels: Sequence[str] = (), labels_constraint: str = "All",
    ) -> list[str]:
        """Return the IDs at `level` matching every main-tag constraint, in index order.

        Mirrors Orthanc's lookup: upper-level tags are those of the ancestors (patient
        tags from the study's copy), lower-level tags hold if one descendant matches.
        Skips `since` matches, returns at most `limit`. `labels` with `All`/`Any`/`None`.
        Raises ValueError for a constraint whose `level` is None (read from files).
        """

    async def find_tags(
        self, level: Level, public_ids: Sequence[str], computed: Collection[str] = ()
    ) -> dict[str, dict[str, str]]:
        """Return per known resource its and its ancestors' main tags by keyword, plus
        the asked computed tags of its level (`find.COMPUTED_TAGS`)."""

    async def statistics(self, level: Level | None = None, public_id: str | None = None) -> Statistics:
        """Return global statistics, or those of one resource."""

    # -- deletes ----------------------------------------------------------------------
    async def delete_resource(self, level: Level, public_id: str) -> DeleteOutcome | None:
        """Delete a resource, its descendants and the ancestors left empty.

        The blobs become pending deletions (`pending_blobs`); a Deleted event per
        removed resource goes to the outbox. Returns None if the resource is unknown.
        """

    # -- metadata and attachments --------------------------------------------------
    async def get_metadata(self, level: Level, public_id: str) -> dict[int, MetadataValue] | None:
        """Return all metadata of a resource, or None if the resource is unknown."""

    async def set_metadata(
        self, level: Level, public_id: str, key: int, value: str, expected: Expected | None,
        *, check_revisions: bool,
    ) -> int:
        """Create or replace a metadata value; return its new revision.

        Raises OrthancError UNKNOWN_RESOURCE or REVISION (ORTHANC_API.md §5).
        Appends an UpdatedMetadata change.
        """

    async def delete_metadata(
        self, level: Level, public_id: str, key: int, expected: Expected | None,
        *, check_revisions: bool,
    ) -> None:
        """Delete a metadata value; raise UNKNOWN_RESOURCE if absent, REVISION on conflict."""

    async def list_attachments(self, level: Level, public_id: str) -> list[AttachmentInfo] | None:
        """Return the attachments of a resource, or None if the resource is unknown."""

    async def set_attachment(
        self, level: Level, public_id: str, info: AttachmentInfo, expected: Expected | None,
        *, check_revisions: bool, log_change: bool = True,
    ) -> int:
        """Create or replace an attachment; the replaced blob becomes a pending deletion."""

    async def delete_attachment(
        self, level: Level, public_id: str, content_type: int, expected: Expected | None,
        *, check_revisions: bool,
    ) -> None:
        """Delete an attachment; its blob becomes a pending deletion."""

    # -- protection -----------------------------------------------------------------
    async def set_protected(self, patient_id: str, protected: bool) -> None:
        """Protect a patient from recycling, or unprotect it (moved to the end)."""

    # -- recycling and stability (adapters/sql_recycling.py, sql_stability.py) ------
    async def enforce_limits(self) -> list[tuple[Level, str]]:
        """Recycle oldest unprotected patients until the storage limits hold.

        Mirrors Orthanc's recycling at start-up (Recycle mode only; stops quietly
        when only protected patients are left). Returns the deleted resources.
        """

    async def emit_stable(self, cutoff: float, limit: int = 500) -> list[Change]:
        """Append the Stable* change of resources whose last new instance is before
        `cutoff` (UNIX time), at most `limit`, series then studies then patients.

        Exactly once per quiet period, whichever replicas call it concurrently.
        """

    async def unstable_resources(self, limit: int = 100_000) -> list[UnstableResource]:
        """Return the resources waiting for their Stable* change, oldest first."""

    # -- changes, outbox and blob garbage ----------------------------------------
    async def get_changes(self, since: int, limit: int) -> ChangesPage:
        """Return logged changes with Seq > since, ascending, at most `limit`."""

    async def last_change(self) -> ChangesPage:
        """Return the latest logged change (if any)."""

    async def clear_changes(self) -> None:
        """Empty the changes log (`DELETE /changes`); Seq is not reset."""

    async def append_change(
        self, change_type: ChangeType, resource_type: str, public_id: str, path: str,
        headers: dict[str, str] | None = None,
    ) -> Change:
        """Append one change (Stable*, job events) to the log and the outbox."""

    async def outbox_batch(self, limit: int) -> list[OutboxEvent]:
        """Return the oldest unpublished events, in Seq order."""

    async def outbox_done(self, seqs: Sequence[int]) -> None:
        """Mark events as published."""

    async def pending_blobs(self, limit: int) -> list[str]:
        """Return blob keys that no row refers to any more and must be deleted."""

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        """Forget pending deletions once the blobs are gone."""

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the subset of keys that an attachment row refers to."""

    # -- global properties -------------------------------------------------------
    async def get_property(self, name: str) -> str | None:
        """Read a global property."""

    async def set_property(self, name: str, value: str) -> None:
        """Write a global property."""

    async def try_lock(self, name: str) -> bool:
        """Take (or confirm holding) a cluster-wide named lock for this process."""
