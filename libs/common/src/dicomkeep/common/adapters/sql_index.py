"""The index logic, written once over the `Database` seam (SQLite or PostgreSQL).

Mirrors Orthanc's ServerIndex: the store transaction, deletes that walk up the
hierarchy, metadata and attachments with revisions, the changes log. Every
committed change is also written to the `outbox` table in the same transaction,
so a crash between commit and publication loses nothing: the relay publishes
the outbox later (ARCHITECTURE.md step 5).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from dicomkeep.common.adapters import sql_find, sql_stability
from dicomkeep.common.adapters.sql_peers import SqlPeerStore
from dicomkeep.common.adapters.sql_recycling import Recycler, StorageLimits
from dicomkeep.common.adapters.sql_schema import schema_for
from dicomkeep.common.adapters.sql_store import StoreTransaction
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
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.ports.database import Database, RetryableError, Tx
from dicomkeep.common.ports.index import (
    ChangesPage,
    DeleteOutcome,
    Expected,
    MetadataValue,
    Resource,
    Statistics,
    UnstableResource,
)
from dicomkeep.common.ports.jobs import JobStore
from dicomkeep.common.ports.peers import PeerStore
from dicomkeep.common.timestamps import now_stamp

log = logging.getLogger(__name__)
T = TypeVar("T")

LAST_UPDATE = 7
DICOM = 1
FIRST_USER_CONTENT_TYPE = 1024


def md5_hex(value: bytes | str) -> str:
    """Return the hex MD5 of bytes or of a UTF-8 string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.md5(data).hexdigest()


class PendingChanges:
    """Changes collected during a transaction, written with their Seq at the end.

    Seqs are reserved by one `UPDATE counters ... RETURNING` just before commit:
    on PostgreSQL that row lock orders concurrent writers, so Seq order equals
    commit order and `GET /changes?since=` never skips a late commit.
    """

    def __init__(self) -> None:
        self.items: list[tuple[ChangeType, Level | str, str, dict[str, str]]] = []

    def add(
        self,
        change_type: ChangeType,
        level: Level | str,
        public_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.items.append((change_type, level, public_id, headers or {}))

    async def flush(self, tx: Tx) -> list[Change]:
        if not self.items:
            return []
        count = len(self.items)
        last = await tx.fetchval(
            "UPDATE counters SET value = value + $1 WHERE name = 'seq' RETURNING value", count
        )
        first = int(last) - count + 1
        date = now_stamp()
        changes: list[Change] = []
        change_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[Any, ...]] = []
        for offset, (change_type, level, public_id, headers) in enumerate(self.items):
            resource_type = level.value if isinstance(level, Level) else level
            path = (
                resource_path(level, public_id)
                if isinstance(level, Level)
                else f"/{resource_type.lower()}s/{public_id}"
            )
            change = Change(
                Seq=first + offset,
                ChangeType=change_type,
                ResourceType=resource_type,
                ID=public_id,
                Path=path,
                Date=date,
            )
            changes.append(change)
            if change_type.is_logged:
                change_rows.append(
                    (change.seq, change_type.value, resource_type, public_id, path, date)
                )
            outbox_rows.append(
                (change.seq, json.dumps(change.to_json()), json.dumps(headers))
            )
        if change_rows:
            await tx.executemany(
                "INSERT INTO changes(seq, change_type, resource_type, public_id, path, date) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                change_rows,
            )
        await tx.executemany(
            "INSERT INTO outbox(seq, body, headers) VALUES ($1, $2, $3)", outbox_rows
        )
        self.items.clear()
        return changes


def _attachment(row: Sequence[Any]) -> AttachmentInfo:
    """Build an AttachmentInfo from (content_type, uuid, csize, usize, compression,
    umd5, cmd5, revision)."""
    return AttachmentInfo(
        content_type=int(row[0]),
        uuid=row[1],
        compressed_size=int(row[2]),
        uncompressed_size=int(row[3]),
        compression=int(row[4]),
        uncompressed_md5=row[5],
        compressed_md5=row[6],
        revision=int(row[7]),
    )


ATTACHMENT_COLUMNS = (
    "content_type, uuid, compressed_size, uncompressed_size, compression, "
    "uncompressed_md5, compressed_md5, revision"
)

DESCENDANTS = """WITH RECURSIVE d(internal_id) AS (
    SELECT internal_id FROM resources WHERE internal_id = $1
    UNION ALL
    SELECT r.internal_id FROM resources r JOIN d ON r.parent_id = d.internal_id)"""


class SqlIndex:
    """The Index port over a SQL database. Every public method is one transaction."""

    def __init__(
        self, db: Database, *, max_retries: int = 10, limits: StorageLimits | None = None
    ) -> None:
        self.db = db
        self._max_retries = max_retries
        #: MaximumStorageSize/MaximumPatientCount, applied in the store transaction.
        self.recycler = Recycler(self, limits)

    async def open(self) -> None:
        """Connect and apply the schema (idempotent)."""
        await self.db.open(schema_for(self.db.dialect))

    async def close(self) -> None:
        """Release connections."""
        await self.db.close()

    @property
    def jobs(self) -> JobStore:
        """Jobs, modalities and REST queries, in this database (adapters/sql_jobs.py)."""
        from dicomkeep.common.adapters.sql_jobs import SqlJobStore  # imports this module

        return SqlJobStore(self.db, self._run)

    @property
    def peers(self) -> PeerStore:
        """Orthanc peers set or deleted through REST (adapters/sql_peers.py)."""
        return SqlPeerStore(self.db, self._run)

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
        """Run the store transaction (see the port)."""

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
        """Return one resource with its children, tags and metadata."""

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
                dicom = _attachment(att) if att is not None else None
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
        """Find resources whose DICOM identifier equals `identifier`."""

        async def body(tx: Tx) -> list[tuple[Level, str]]:
            rows = await tx.fetch(
                "SELECT level, public_id FROM resources WHERE dicom_uid = $1 "
                "ORDER BY level, internal_id",
                identifier,
            )
            return [(_LEVELS[int(r[0])], r[1]) for r in rows]

        return await self._run(body, readonly=True)

    async def descendants(self, level: Level, public_id: str, target: Level) -> list[str]:
        """Return the IDs of every descendant at `target` level, in index order."""

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
        """Return the IDs matching every main-tag constraint (see sql_find.find_ids)."""

        async def body(tx: Tx) -> list[str]:
            return await sql_find.find_ids(
                tx, self.db.dialect, level, constraints, since=since, limit=limit,
                labels=labels, labels_constraint=labels_constraint,
            )

        return await self._run(body, readonly=True)

    async def find_tags(
        self, level: Level, public_ids: Sequence[str], computed: Collection[str] = ()
    ) -> dict[str, dict[str, str]]:
        """Return main (and computed) tags per resource (see sql_find.find_tags)."""

        async def body(tx: Tx) -> dict[str, dict[str, str]]:
            return await sql_find.find_tags(tx, self.db.dialect, level, public_ids, computed)

        return await self._run(body, readonly=True)

    async def statistics(
        self, level: Level | None = None, public_id: str | None = None
    ) -> Statistics:
        """Return global statistics, or those of one resource (zeros if unknown)."""

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
        """Delete a resource, its descendants and the ancestors left empty."""

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

    # -- metadata ------------------------------------------------------------------
    async def get_metadata(
        self, level: Level, public_id: str
    ) -> dict[int, MetadataValue] | None:
        """Return all metadata of a resource, or None if unknown."""

        async def body(tx: Tx) -> dict[int, MetadataValue] | None:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                return None
            rows = await tx.fetch(
                "SELECT key, value, revision FROM metadata WHERE internal_id = $1 ORDER BY key",
                internal_id,
            )
            return {int(k): MetadataValue(value=v, revision=int(r)) for k, v, r in rows}

        return await self._run(body, readonly=True)

    @staticmethod
    def check_expected(
        current: tuple[int, str] | None, expected: Expected | None, *, check_revisions: bool,
        deleting: bool,
    ) -> None:
        """Apply Orthanc's If-Match rules (ORTHANC_API.md §5) to (revision, md5)."""
        if expected is not None:
            if current is None:
                if deleting:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
                return
            if current != (expected.revision, expected.md5):
                raise OrthancError(ErrorCode.REVISION)
            return
        if check_revisions and current is not None:
            raise OrthancError(
                ErrorCode.REVISION,
                'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"',
            )

    async def set_metadata(
        self,
        level: Level,
        public_id: str,
        key: int,
        value: str,
        expected: Expected | None,
        *,
        check_revisions: bool,
    ) -> int:
        """Create or replace a user metadata value; return its new revision."""

        async def body(tx: Tx) -> int:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            row = await tx.fetchrow(
                "SELECT value, revision FROM metadata WHERE internal_id = $1 AND key = $2"
                + self.for_update,
                internal_id,
                key,
            )
            current = None if row is None else (int(row[1]), md5_hex(row[0]))
            self.check_expected(current, expected, check_revisions=check_revisions, deleting=False)
            revision = await tx.fetchval(
                "INSERT INTO metadata(internal_id, key, value, revision) VALUES ($1, $2, $3, 0) "
                "ON CONFLICT (internal_id, key) DO UPDATE SET value = excluded.value, "
                "revision = metadata.revision + 1 RETURNING revision",
                internal_id,
                key,
                value,
            )
            pending = PendingChanges()
            pending.add(ChangeType.UPDATED_METADATA, level, public_id)
            await pending.flush(tx)
            return int(revision)

        return await self._run(body)

    async def delete_metadata(
        self,
        level: Level,
        public_id: str,
        key: int,
        expected: Expected | None,
        *,
        check_revisions: bool,
    ) -> None:
        """Delete a user metadata value."""

        async def body(tx: Tx) -> None:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            row = await tx.fetchrow(
                "SELECT value, revision FROM metadata WHERE internal_id = $1 AND key = $2"
                + self.for_update,
                internal_id,
                key,
            )
            current = None if row is None else (int(row[1]), md5_hex(row[0]))
            self.check_expected(current, expected, check_revisions=check_revisions, deleting=True)
            if row is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            await tx.execute(
                "DELETE FROM metadata WHERE internal_id = $1 AND key = $2", internal_id, key
            )
            pending = PendingChanges()
            pending.add(ChangeType.UPDATED_METADATA, level, public_id)
            await pending.flush(tx)

        await self._run(body)

    # -- attachments ---------------------------------------------------------------
    async def list_attachments(
        self, level: Level, public_id: str
    ) -> list[AttachmentInfo] | None:
        """Return the attachments of a resource, or None if unknown."""

        async def body(tx: Tx) -> list[AttachmentInfo] | None:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                return None
            rows = await tx.fetch(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE internal_id = $1 "
                "ORDER BY content_type",
                internal_id,
            )
            return [_attachment(r) for r in rows]

        return await self._run(body, readonly=True)

    async def set_attachment(
        self,
        level: Level,
        public_id: str,
        info: AttachmentInfo,
        expected: Expected | None,
        *,
        check_revisions: bool,
        log_change: bool = True,
    ) -> int:
        """Create or replace an attachment; the replaced blob becomes pending.

        With storage limits, recycles other patients first (or raises FULL_STORAGE).
        """

        async def body(tx: Tx) -> int:
            await self.recycler.lock(tx)
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            row = await tx.fetchrow(
                "SELECT uuid, revision, uncompressed_md5 FROM attachments "
                "WHERE internal_id = $1 AND content_type = $2" + self.for_update,
                internal_id,
                info.content_type,
            )
            current = None if row is None else (int(row[1]), row[2])
            self.check_expected(current, expected, check_revisions=check_revisions, deleting=False)
            revision = 0 if row is None else int(row[1]) + 1
            if row is not None:
                await self.release_blob(tx, row[0])
                await tx.execute(
                    "DELETE FROM attachments WHERE internal_id = $1 AND content_type = $2",
                    internal_id,
                    info.content_type,
                )
            pending = PendingChanges()
            if self.recycler.is_active:
                owner = await self.recycler.owning_patient(tx, internal_id)
                await self.recycler.make_room(
                    tx, pending, incoming=info.compressed_size, keep=owner
                )
            await self.insert_attachment(tx, internal_id, info, revision)
            if log_change:
                pending.add(ChangeType.UPDATED_ATTACHMENT, level, public_id)
            await pending.flush(tx)
            return revision

        return await self._run(body)

    async def delete_attachment(
        self,
        level: Level,
        public_id: str,
        content_type: int,
        expected: Expected | None,
        *,
        check_revisions: bool,
    ) -> None:
        """Delete an attachment; its blob becomes pending.

        Deleting a user type (>= 1024) appends an UpdatedAttachment change, as
        Orthanc's DeleteAttachment does.
        """

        async def body(tx: Tx) -> None:
            internal_id = await self._find(tx, level, public_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            row = await tx.fetchrow(
                "SELECT uuid, revision, uncompressed_md5 FROM attachments "
                "WHERE internal_id = $1 AND content_type = $2" + self.for_update,
                internal_id,
                content_type,
            )
            current = None if row is None else (int(row[1]), row[2])
            self.check_expected(current, expected, check_revisions=check_revisions, deleting=True)
            if row is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            await self.release_blob(tx, row[0])
            await tx.execute(
                "DELETE FROM attachments WHERE internal_id = $1 AND content_type = $2",
                internal_id,
                content_type,
            )
            if content_type >= FIRST_USER_CONTENT_TYPE:
                pending = PendingChanges()
                pending.add(ChangeType.UPDATED_ATTACHMENT, level, public_id)
                await pending.flush(tx)

        await self._run(body)

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
        """Protect a patient, or unprotect it (moved to the end of the recycling order)."""

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
        """Recycle until the storage limits hold (adapters/sql_recycling.py)."""

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
        """Append the Stable* changes now due (adapters/sql_stability.py)."""

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

    # -- changes and outbox --------------------------------------------------------
    async def get_changes(self, since: int, limit: int) -> ChangesPage:
        """Return logged changes with Seq > since, ascending, at most `limit`."""

        async def body(tx: Tx) -> ChangesPage:
            rows = await tx.fetch(
                "SELECT seq, change_type, resource_type, public_id, path, date FROM changes "
                "WHERE seq > $1 ORDER BY seq LIMIT $2",
                since,
                limit + 1,
            )
            changes = [_change(r) for r in rows[:limit]]
            done = len(rows) <= limit
            if changes:
                last = changes[-1].seq
            else:
                last = await self._last_seq(tx)
            return ChangesPage(changes=changes, done=done, last=last)

        return await self._run(body, readonly=True)

    async def _last_seq(self, tx: Tx) -> int:
        value = await tx.fetchval("SELECT MAX(seq) FROM changes")
        if value is None:
            value = await tx.fetchval("SELECT value FROM counters WHERE name = 'seq'")
        return int(value or 0)

    async def last_change(self) -> ChangesPage:
        """Return the latest logged change, if any."""

        async def body(tx: Tx) -> ChangesPage:
            row = await tx.fetchrow(
                "SELECT seq, change_type, resource_type, public_id, path, date FROM changes "
                "ORDER BY seq DESC LIMIT 1"
            )
            changes = [_change(row)] if row is not None else []
            last = changes[0].seq if changes else await self._last_seq(tx)
            return ChangesPage(changes=changes, done=True, last=last)

        return await self._run(body, readonly=True)

    async def clear_changes(self) -> None:
        """Empty the changes log; the Seq counter goes on."""

        async def body(tx: Tx) -> None:
            await tx.execute("DELETE FROM changes")

        await self._run(body)

    async def append_change(
        self,
        change_type: ChangeType,
        resource_type: str,
        public_id: str,
        path: str,
        headers: dict[str, str] | None = None,
    ) -> Change:
        """Append one change to the log (when logged) and to the outbox."""

        async def body(tx: Tx) -> Change:
            pending = PendingChanges()
            level: Level | str = resource_type
            try:
                level = Level(resource_type)
            except ValueError:
                pass
            pending.add(change_type, level, public_id, headers)
            changes = await pending.flush(tx)
            return changes[0]

        return await self._run(body)

    async def outbox_batch(self, limit: int) -> list[OutboxEvent]:
        """Return the oldest unpublished events, in Seq order."""

        async def body(tx: Tx) -> list[OutboxEvent]:
            rows = await tx.fetch(
                "SELECT body, headers FROM outbox ORDER BY seq LIMIT $1", limit
            )
            return [
                OutboxEvent(change=Change.model_validate_json(r[0]), headers=json.loads(r[1]))
                for r in rows
            ]

        return await self._run(body, readonly=True)

    async def outbox_done(self, seqs: Sequence[int]) -> None:
        """Forget published events."""
        if not seqs:
            return

        async def body(tx: Tx) -> None:
            await tx.executemany("DELETE FROM outbox WHERE seq = $1", [(s,) for s in seqs])

        await self._run(body)

    # -- blob garbage --------------------------------------------------------------
    async def pending_blobs(self, limit: int) -> list[str]:
        """Return blob keys released by committed transactions."""

        async def body(tx: Tx) -> list[str]:
            rows = await tx.fetch(
                "SELECT uuid FROM pending_blobs ORDER BY since LIMIT $1", limit
            )
            return [r[0] for r in rows]

        return await self._run(body, readonly=True)

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        """Forget pending deletions once the blobs are gone."""
        if not keys:
            return

        async def body(tx: Tx) -> None:
            await tx.executemany(
                "DELETE FROM pending_blobs WHERE uuid = $1", [(k,) for k in keys]
            )

        await self._run(body)

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the keys that an attachment row refers to."""
        if not keys:
            return set()

        async def body(tx: Tx) -> set[str]:
            found: set[str] = set()
            for key in keys:
                if await tx.fetchval("SELECT 1 FROM attachments WHERE uuid = $1", key):
                    found.add(key)
            return found

        return await self._run(body, readonly=True)

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
        """Take a cluster-wide named lock for this process's lifetime, if free."""
        return await self.db.try_lock(name)


_LEVELS = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]


def _change(row: Sequence[Any]) -> Change:
    return Change(
        Seq=int(row[0]),
        ChangeType=ChangeType(row[1]),
        ResourceType=row[2],
        ID=row[3],
        Path=row[4],
        Date=row[5],
    )
