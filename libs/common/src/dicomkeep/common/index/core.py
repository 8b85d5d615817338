"""The index logic, written once over the `Database` seam (SQLite or PostgreSQL).

Mirrors Orthanc's ServerIndex: the store transaction, deletes that walk up the
hierarchy, metadata and attachments with revisions, the changes log. Every
committed change is also written to the `outbox` table in the same transaction,
so a crash between commit and publication loses nothing: the relay publishes
the outbox later (ARCHITECTURE.md step 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import (
    AttachmentInfo,
    Change,
    ChangeType,
    OutboxEvent,
    RemainingAncestor,
    StoreInstance,
    StoreReply,
    StoreStatus,
)
from dicomkeep.common.find import Constraint
from dicomkeep.common.ids import Level
from dicomkeep.common.index import find as sql_find
from dicomkeep.common.index import stability as sql_stability
from dicomkeep.common.index.annotations import (
    ATTACHMENT_COLUMNS,
    Annotations,
    attachment_from_row,
)
from dicomkeep.common.index.changes import ChangeLog, PendingChanges
from dicomkeep.common.index.jobs import JobStore
from dicomkeep.common.index.labels import Labels
from dicomkeep.common.index.peers import PeerStore
from dicomkeep.common.index.records import (
    ChangesPage,
    DeleteOutcome,
    Expected,
    MetadataValue,
    Resource,
    Statistics,
    UnstableResource,
)
from dicomkeep.common.index.recycling import Recycler, StorageLimits
from dicomkeep.common.index.schema import schema_for
from dicomkeep.common.index.store import StoreTransaction
from dicomkeep.common.ports.database import Database, RetryableError, Tx
from dicomkeep.common.timestamps import now_stamp

log = logging.getLogger(__name__)
T = TypeVar("T")

LAST_UPDATE = 7
DICOM = 1



DESCENDANTS = """WITH RECURSIVE d(internal_id) AS (
    SELECT internal_id FROM resources WHERE internal_id = $1
    UNION ALL
    SELECT r.internal_id FROM resources r JOIN d ON r.parent_id = d.internal_id)"""


class Index:
    """The index of every DICOM resource over a SQL database. Every public method is one transaction."""

    def __init__(
        self, db: Database, *, max_retries: int = 10, limits: StorageLimits | None = None
    ) -> None:
        self.db = db
        self._max_retries = max_retries
        #: MaximumStorageSize/MaximumPatientCount, applied in the store transaction.
        self.recycler = Recycler(self, limits)
        self.annotations = Annotations(self)
        self.changelog = ChangeLog(self._run)

    async def open(self) -> None:
        """Connect and apply the schema migrations (idempotent)."""
        await self.db.open(schema_for(self.db.dialect))

    async def close(self) -> None:
        """Release connections."""
        await self.db.close()

    async def __aenter__(self) -> Index:
        """Open the index (`async with index:`); closed when the block ends."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def jobs(self) -> JobStore:
        """Jobs, registered modalities and REST queries kept in the index (index/jobs.py)."""
        return JobStore(self.db, self._run)

    @property
    def labels(self) -> Labels:
        """Labels of resources (index/labels.py)."""
        return Labels(self)

    @property
    def peers(self) -> PeerStore:
        """Orthanc peers set or deleted through REST, kept in the index (index/peers.py)."""
        return PeerStore(self.db, self._run)

    @property
    def for_update(self) -> str:
        """Row-locking suffix of SELECTs (SQLite has one writer and needs none)."""
        return " FOR UPDATE" if self.db.dialect == "postgres" else ""

    async def _run(
        self, body: Callable[[Tx], Awaitable[T]], *, readonly: bool = False
    ) -> T:
        """Run `body` in a transaction, replaying it on serialization failures.

        Mirrors Orthanc's retries with the PostgreSQL plugin: wait a little longer
        each time, then answer 503 (OrthancStatus 42).
        """
        for attempt in range(self._max_retries + 1):
            try:
                async with self.db.transaction(readonly=readonly) as tx:
                    return await body(tx)
            except RetryableError:
                if attempt == self._max_retries:
                    break
                await asyncio.sleep(min(0.005 * 2**attempt, 0.5))
        raise OrthancError(ErrorCode.DATABASE_CANNOT_SERIALIZE)

    # -- store ---------------------------------------------------------------------
    async def store_instance(self, command: StoreInstance) -> StoreReply:
        """Run the store transaction (ARCHITECTURE.md step 3).

        Mirrors Orthanc's ServerIndex::Store: upsert patient/study/series, answer
        AlreadyStored (changing nothing) when the instance exists and overwrite is
        off, replace it when on; record attachments, metadata, LastUpdate and the
        changes NewInstance, NewSeries, NewStudy, NewPatient, CompletedSeries.
        """

        async def body(tx: Tx) -> StoreReply:
            pending = PendingChanges()
            status = await StoreTransaction(tx, self, pending, command).run()
            changes = await pending.flush(tx)
            return StoreReply(
                status=status,
                instance_id=command.instance_id,
                seq=changes[-1].seq if changes else None,
            )

        try:
            return await self._run(body)
        except OrthancError as error:
            return StoreReply(
                status=StoreStatus.FAILURE,
                instance_id=command.instance_id,
                error_code=error.code.name,
                details=error.details,
            )

    # -- reads ---------------------------------------------------------------------
    async def _find(self, tx: Tx, level: Level, public_id: str) -> int | None:
        value = await tx.fetchval(
            "SELECT internal_id FROM resources WHERE public_id = $1 AND level = $2",
            public_id,
            level.depth,
        )
        return None if value is None else int(value)

    async def get_resource(self, level: Level, public_id: str) -> Resource | None:
        """Return one resource, or None if unknown at this level."""

        async def body(tx: Tx) -> Resource | None:
            row = await tx.fetchrow(
                "SELECT r.internal_id, p.public_id, r.is_protected, "
                "(SELECT COUNT(*) FROM stability s WHERE s.internal_id = r.internal_id) "
                "FROM resources r LEFT JOIN resources p ON p.internal_id = r.parent_id "
                "WHERE r.public_id = $1 AND r.level = $2",
                public_id,
                level.depth,
            )
            if row is None:
                return None
            internal_id = int(row[0])
            children = [
                r[0]
                for r in await tx.fetch(
                    "SELECT public_id FROM resources WHERE parent_id = $1 ORDER BY internal_id",
                    internal_id,
                )
            ]
            tags: dict[int, dict[str, str]] = {}
            for tag_level, name, value in await tx.fetch(
                "SELECT tag_level, name, value FROM main_tags WHERE internal_id = $1",
                internal_id,
            ):
                tags.setdefault(int(tag_level), {})[name] = value
            metadata = {
                int(k): v
                for k, v in await tx.fetch(
                    "SELECT key, value FROM metadata WHERE internal_id = $1", internal_id
                )
            }
            labels = [
                r[0]
                for r in await tx.fetch(
                    "SELECT label FROM labels WHERE internal_id = $1 ORDER BY label",
                    internal_id,
                )
            ]
            dicom = None
            if level is Level.INSTANCE:
                att = await tx.fetchrow(
                    f"SELECT {ATTACHMENT_COLUMNS} FROM attachments "
                    "WHERE internal_id = $1 AND content_type = $2",
                    internal_id,
                    DICOM,
                )
                dicom = attachment_from_row(att) if att is not None else None
            return Resource(
                level=level,
                public_id=public_id,
                parent_id=row[1],
                children=children,
                main_tags=dict(sorted(tags.get(level.depth, {}).items())),
                metadata=metadata,
                is_protected=bool(row[2]),
                labels=labels,
                patient_main_tags=(
                    dict(sorted(tags.get(Level.PATIENT.depth, {}).items()))
                    if level is Level.STUDY
                    else None
                ),
                dicom=dicom,
                is_stable=int(row[3]) == 0,
            )

        return await self._run(body, readonly=True)

    async def list_resources(
        self, level: Level, since: int | None = None, limit: int | None = None
    ) -> list[str]:
        """Return public IDs in index order, skipping `since`, at most `limit`."""

        async def body(tx: Tx) -> list[str]:
            sql = "SELECT public_id FROM resources WHERE level = $1 ORDER BY internal_id"
            args: list[Any] = [level.depth]
            if limit is not None:
                sql += " LIMIT $2 OFFSET $3"
                args += [limit, since or 0]
            elif since:
                sql += " LIMIT -1 OFFSET $2" if self.db.dialect == "sqlite" else " OFFSET $2"
                args.append(since)
            return [r[0] for r in await tx.fetch(sql, *args)]

        return await self._run(body, readonly=True)

    async def lookup(self, identifier: str) -> list[tuple[Level, str]]:
        """Find resources whose PatientID or Study/Series/SOP Instance UID equals this."""

        async def body(tx: Tx) -> list[tuple[Level, str]]:
            rows = await tx.fetch(
                "SELECT level, public_id FROM resources WHERE dicom_uid = $1 "
                "ORDER BY level, internal_id",
                identifier,
            )
            return [(_LEVELS[int(r[0])], r[1]) for r in rows]

        return await self._run(body, readonly=True)

    async def descendants(self, level: Level, public_id: str, target: Level) -> list[str]:
        """Return the IDs of all descendants at `target` level (itself if same level)."""

        async def body(tx: Tx) -> list[str]:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                return []
            rows = await tx.fetch(
                f"{DESCENDANTS} SELECT r.public_id FROM resources r "
                "JOIN d ON d.internal_id = r.internal_id WHERE r.level = $2 "
                "ORDER BY r.internal_id",
                internal_id,
                target.depth,
            )
            return [r[0] for r in rows]

        return await self._run(body, readonly=True)

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

        async def body(tx: Tx) -> list[str]:
            return await sql_find.find_ids(
                tx, self.db.dialect, level, constraints, since=since, limit=limit,
                labels=labels, labels_constraint=labels_constraint,
            )

        return await self._run(body, readonly=True)

    async def find_tags(
        self, level: Level, public_ids: Sequence[str], computed: Collection[str] = ()
    ) -> dict[str, dict[str, str]]:
        """Return per known resource its and its ancestors' main tags by keyword, plus
        the asked computed tags of its level (`find.COMPUTED_TAGS`)."""

        async def body(tx: Tx) -> dict[str, dict[str, str]]:
            return await sql_find.find_tags(tx, self.db.dialect, level, public_ids, computed)

        return await self._run(body, readonly=True)

    async def statistics(
        self, level: Level | None = None, public_id: str | None = None
    ) -> Statistics:
        """Return global statistics, or those of one resource."""

        async def body(tx: Tx) -> Statistics:
            if level is None or public_id is None:
                counts = dict(
                    (int(r[0]), int(r[1]))
                    for r in await tx.fetch(
                        "SELECT level, COUNT(*) FROM resources GROUP BY level"
                    )
                )
                sizes = await tx.fetchrow(
                    "SELECT COALESCE(SUM(compressed_size), 0), "
                    "COALESCE(SUM(uncompressed_size), 0), "
                    "COALESCE(SUM(CASE WHEN content_type = 1 THEN compressed_size ELSE 0 END), 0), "
                    "COALESCE(SUM(CASE WHEN content_type = 1 THEN uncompressed_size ELSE 0 END), 0) "
                    "FROM attachments"
                )
            else:
                internal_id = await self._find(tx, level, public_id)
                if internal_id is None:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
                counts = dict(
                    (int(r[0]), int(r[1]))
                    for r in await tx.fetch(
                        f"{DESCENDANTS} SELECT r.level, COUNT(*) FROM resources r "
                        "JOIN d ON d.internal_id = r.internal_id GROUP BY r.level",
                        internal_id,
                    )
                )
                sizes = await tx.fetchrow(
                    f"{DESCENDANTS} SELECT COALESCE(SUM(a.compressed_size), 0), "
                    "COALESCE(SUM(a.uncompressed_size), 0), "
                    "COALESCE(SUM(CASE WHEN a.content_type = 1 THEN a.compressed_size ELSE 0 END), 0), "
                    "COALESCE(SUM(CASE WHEN a.content_type = 1 THEN a.uncompressed_size ELSE 0 END), 0) "
                    "FROM attachments a JOIN d ON d.internal_id = a.internal_id",
                    internal_id,
                )
            assert sizes is not None
            return Statistics(
                count_patients=counts.get(0, 0),
                count_studies=counts.get(1, 0),
                count_series=counts.get(2, 0),
                count_instances=counts.get(3, 0),
                disk_size=int(sizes[0]),
                uncompressed_size=int(sizes[1]),
                dicom_disk_size=int(sizes[2]),
                dicom_uncompressed_size=int(sizes[3]),
            )

        return await self._run(body, readonly=True)

    # -- deletes -------------------------------------------------------------------
    async def delete_subtree(
        self, tx: Tx, internal_id: int, pending: PendingChanges
    ) -> list[tuple[Level, str]]:
        """Delete a resource and its descendants inside `tx`; queue their blobs.

        Returns the deleted (level, public_id), top first; a Deleted event is queued
        for each. Mirrors Orthanc: files are removed after the commit (by storage).
        """
        rows = await tx.fetch(
            f"{DESCENDANTS} SELECT r.level, r.public_id, r.internal_id FROM resources r "
            "JOIN d ON d.internal_id = r.internal_id ORDER BY r.level",
            internal_id,
        )
        since = now_stamp()
        await tx.execute(
            f"{DESCENDANTS} INSERT INTO pending_blobs(uuid, since) "
            "SELECT a.uuid, $2 FROM attachments a JOIN d ON d.internal_id = a.internal_id "
            "ON CONFLICT (uuid) DO NOTHING",
            internal_id,
            since,
        )
        await tx.execute("DELETE FROM resources WHERE internal_id = $1", internal_id)
        deleted = [(_LEVELS[int(r[0])], r[1]) for r in rows]
        for level, public_id in deleted:
            pending.add(ChangeType.DELETED, level, public_id)
        return deleted

    async def delete_resource(self, level: Level, public_id: str) -> DeleteOutcome | None:
        """Delete a resource, its descendants and the ancestors left empty.

        The blobs become pending deletions (`pending_blobs`); a Deleted event per
        removed resource goes to the outbox. Returns None if the resource is unknown.
        """

        async def body(tx: Tx) -> DeleteOutcome | None:
            row = await tx.fetchrow(
                "SELECT internal_id, parent_id FROM resources WHERE public_id = $1 "
                "AND level = $2" + self.for_update,
                public_id,
                level.depth,
            )
            if row is None:
                return None
            pending = PendingChanges()
            deleted = await self.delete_subtree(tx, int(row[0]), pending)
            remaining = await self.prune_ancestors(tx, row[1], level, pending, deleted)
            await pending.flush(tx)
            return DeleteOutcome(remaining=remaining, deleted=deleted)

        return await self._run(body)

    async def prune_ancestors(
        self,
        tx: Tx,
        parent_internal: int | None,
        level: Level,
        pending: PendingChanges,
        deleted: list[tuple[Level, str]],
    ) -> RemainingAncestor | None:
        """Delete ancestors left without children; return the nearest survivor.

        Since Orthanc 1.12.1 the survivor's LastUpdate becomes now.
        """
        current = parent_internal
        current_level = level.parent
        while current is not None and current_level is not None:
            row = await tx.fetchrow(
                "SELECT public_id, parent_id, "
                "(SELECT COUNT(*) FROM resources c WHERE c.parent_id = r.internal_id) "
                "FROM resources r WHERE internal_id = $1",
                int(current),
            )
            if row is None:
                return None
            if int(row[2]) > 0:
                await self.set_core_metadata(tx, int(current), LAST_UPDATE, now_stamp())
                return RemainingAncestor(level=current_level, public_id=row[0])
            deleted.extend(await self.delete_subtree(tx, int(current), pending))
            current = row[1]
            current_level = current_level.parent
        return None

    async def set_core_metadata(self, tx: Tx, internal_id: int, key: int, value: str) -> None:
        """Upsert one metadata value written by the core (no change logged)."""
        await tx.execute(
            "INSERT INTO metadata(internal_id, key, value, revision) VALUES ($1, $2, $3, 0) "
            "ON CONFLICT (internal_id, key) DO UPDATE SET value = excluded.value, "
            "revision = metadata.revision + 1",
            internal_id,
            key,
            value,
        )

    # -- metadata and attachments (annotations.py) ------------------
    async def get_metadata(
        self, level: Level, public_id: str
    ) -> dict[int, MetadataValue] | None:
        """Return all metadata of a resource, or None if the resource is unknown."""
        return await self.annotations.get_metadata(level, public_id)

    async def set_metadata(
        self, level: Level, public_id: str, key: int, value: str, expected: Expected | None,
        *, check_revisions: bool,
    ) -> int:
        """Create or replace a metadata value; return its new revision.

        Raises OrthancError UNKNOWN_RESOURCE or REVISION (ORTHANC_API.md §5).
        Appends an UpdatedMetadata change.
        """
        return await self.annotations.set_metadata(
            level, public_id, key, value, expected, check_revisions=check_revisions
        )

    async def delete_metadata(
        self, level: Level, public_id: str, key: int, expected: Expected | None,
        *, check_revisions: bool,
    ) -> None:
        """Delete a metadata value; raise UNKNOWN_RESOURCE if absent, REVISION on conflict."""
        await self.annotations.delete_metadata(
            level, public_id, key, expected, check_revisions=check_revisions
        )

    async def list_attachments(
        self, level: Level, public_id: str
    ) -> list[AttachmentInfo] | None:
        """Return the attachments of a resource, or None if the resource is unknown."""
        return await self.annotations.list_attachments(level, public_id)

    async def set_attachment(
        self, level: Level, public_id: str, info: AttachmentInfo, expected: Expected | None,
        *, check_revisions: bool, log_change: bool = True,
    ) -> int:
        """Create or replace an attachment; the replaced blob becomes a pending deletion."""
        return await self.annotations.set_attachment(
            level, public_id, info, expected,
            check_revisions=check_revisions, log_change=log_change,
        )

    async def delete_attachment(
        self, level: Level, public_id: str, content_type: int, expected: Expected | None,
        *, check_revisions: bool,
    ) -> None:
        """Delete an attachment; its blob becomes a pending deletion."""
        await self.annotations.delete_attachment(
            level, public_id, content_type, expected, check_revisions=check_revisions
        )

    # -- attachment rows (shared with the store transaction) ---------------------
    async def insert_attachment(
        self, tx: Tx, internal_id: int, info: AttachmentInfo, revision: int = 0
    ) -> None:
        """Insert one attachment row."""
        await tx.execute(
            f"INSERT INTO attachments(internal_id, {ATTACHMENT_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            internal_id,
            info.content_type,
            info.uuid,
            info.compressed_size,
            info.uncompressed_size,
            info.compression,
            info.uncompressed_md5,
            info.compressed_md5,
            revision,
        )

    async def release_blob(self, tx: Tx, uuid: str) -> None:
        """Queue a blob for deletion once this transaction commits."""
        await tx.execute(
            "INSERT INTO pending_blobs(uuid, since) VALUES ($1, $2) "
            "ON CONFLICT (uuid) DO NOTHING",
            uuid,
            now_stamp(),
        )

    # -- protection ----------------------------------------------------------------
    async def set_protected(self, patient_id: str, protected: bool) -> None:
        """Protect a patient from recycling, or unprotect it (moved to the end)."""

        async def body(tx: Tx) -> None:
            internal_id = await self._find(tx, Level.PATIENT, patient_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if protected:
                await tx.execute(
                    "UPDATE resources SET is_protected = 1 WHERE internal_id = $1", internal_id
                )
                return
            order = await self.next_recycling_order(tx)
            await tx.execute(
                "UPDATE resources SET is_protected = 0, recycling_order = $2 "
                "WHERE internal_id = $1 AND is_protected = 1",
                internal_id,
                order,
            )

        await self._run(body)

    async def next_recycling_order(self, tx: Tx) -> int:
        """Return the next position at the end of the recycling order."""
        value = await tx.fetchval(
            "UPDATE counters SET value = value + 1 WHERE name = 'recycling' RETURNING value"
        )
        return int(value)

    # -- recycling and stability ---------------------------------------------------
    async def enforce_limits(self) -> list[tuple[Level, str]]:
        """Recycle oldest unprotected patients until the storage limits hold.

        Mirrors Orthanc's recycling at start-up (Recycle mode only; stops quietly
        when only protected patients are left). Returns the deleted resources.
        """

        async def body(tx: Tx) -> list[tuple[Level, str]]:
            await self.recycler.lock(tx)
            pending = PendingChanges()
            deleted = await self.recycler.enforce(tx, pending)
            await pending.flush(tx)
            return deleted

        if not self.recycler.is_active:
            return []
        return await self._run(body)

    async def emit_stable(self, cutoff: float, limit: int = 500) -> list[Change]:
        """Append the Stable* change of resources whose last new instance is before
        `cutoff` (UNIX time), at most `limit`, series then studies then patients.

        Exactly once per quiet period, whichever replicas call it concurrently.
        """

        async def body(tx: Tx) -> list[Change]:
            pending = PendingChanges()
            await sql_stability.emit_stable(tx, self.db.dialect, pending, cutoff, limit)
            return await pending.flush(tx)

        return await self._run(body)

    async def unstable_resources(self, limit: int = 100_000) -> list[UnstableResource]:
        """Return the resources waiting for their Stable* change, oldest first."""

        async def body(tx: Tx) -> list[UnstableResource]:
            return await sql_stability.unstable_resources(tx, limit)

        return await self._run(body, readonly=True)

    # -- changes, outbox, blob garbage (changes.py) -----------------
    async def get_changes(self, since: int, limit: int) -> ChangesPage:
        """Return logged changes with Seq > since, ascending, at most `limit`."""
        return await self.changelog.get_changes(since, limit)

    async def last_change(self) -> ChangesPage:
        """Return the latest logged change (if any)."""
        return await self.changelog.last_change()

    async def clear_changes(self) -> None:
        """Empty the changes log (`DELETE /changes`); Seq is not reset."""
        await self.changelog.clear_changes()

    async def append_change(
        self, change_type: ChangeType, resource_type: str, public_id: str, path: str,
        headers: dict[str, str] | None = None,
    ) -> Change:
        """Append one change (Stable*, job events) to the log and the outbox."""
        return await self.changelog.append_change(
            change_type, resource_type, public_id, path, headers
        )

    async def outbox_batch(self, limit: int) -> list[OutboxEvent]:
        """Return the oldest unpublished events, in Seq order."""
        return await self.changelog.outbox_batch(limit)

    async def outbox_done(self, seqs: Sequence[int]) -> None:
        """Mark events as published."""
        await self.changelog.outbox_done(seqs)

    async def pending_blobs(self, limit: int) -> list[str]:
        """Return blob keys that no row refers to any more and must be deleted."""
        return await self.changelog.pending_blobs(limit)

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        """Forget pending deletions once the blobs are gone."""
        await self.changelog.blobs_deleted(keys)

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the subset of keys that an attachment row refers to."""
        return await self.changelog.referenced_blobs(keys)


    # -- global properties ---------------------------------------------------------
    async def get_property(self, name: str) -> str | None:
        """Read a global property."""

        async def body(tx: Tx) -> str | None:
            value = await tx.fetchval(
                "SELECT value FROM global_properties WHERE name = $1", name
            )
            return None if value is None else str(value)

        return await self._run(body, readonly=True)

    async def set_property(self, name: str, value: str) -> None:
        """Write a global property."""

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO global_properties(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )

        await self._run(body)

    async def try_lock(self, name: str) -> bool:
        """Take (or confirm holding) a cluster-wide named lock for this process."""
        return await self.db.try_lock(name)


_LEVELS = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]
