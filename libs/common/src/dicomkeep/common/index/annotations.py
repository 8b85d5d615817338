"""Metadata and attachments of the index, with Orthanc's revision rules (§3-§5).

`Annotations` holds these methods of the index; each is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import AttachmentInfo, ChangeType
from dicomkeep.common.ids import Level
from dicomkeep.common.index.changes import PendingChanges, md5_hex
from dicomkeep.common.index.hierarchy import (
    ATTACHMENT_COLUMNS,
    attachment_from_row,
    find_internal,
    insert_attachment,
    release_blob,
)
from dicomkeep.common.index.records import Expected, MetadataValue
from dicomkeep.common.index.recycling import Recycler
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.orthanc import FIRST_USER_CONTENT_TYPE, MetadataType
from dicomkeep.common.ports.database import Tx


class Annotations(Transactions):
    """Metadata and attachments with their revisions, as methods of the index."""

    recycler: Recycler

    async def get_metadata(
        self, level: Level, public_id: str
    ) -> dict[int, MetadataValue] | None:
        """Return all metadata of a resource, or None if the resource is unknown."""

        async def body(tx: Tx) -> dict[int, MetadataValue] | None:
            internal_id = await find_internal(tx, level, public_id)
            if internal_id is None:
                return None
            rows = await tx.fetch(
                "SELECT key, value, revision FROM metadata WHERE internal_id = $1 ORDER BY key",
                internal_id,
            )
            return {int(k): MetadataValue(value=v, revision=int(r)) for k, v, r in rows}

        return await self._run(body, readonly=True, point=True)

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

    async def _checked_metadata(
        self,
        tx: Tx,
        level: Level,
        public_id: str,
        key: int,
        expected: Expected | None,
        check_revisions: bool,
        *,
        deleting: bool,
    ) -> tuple[int, Sequence[Any] | None]:
        """Find the resource, lock its metadata row, apply the If-Match rules.

        Returns (internal_id, the (value, revision) row or None); raises
        UNKNOWN_RESOURCE or REVISION.
        """
        internal_id = await find_internal(tx, level, public_id)
        if internal_id is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        row = await tx.fetchrow(
            "SELECT value, revision FROM metadata WHERE internal_id = $1 AND key = $2"
            + self.for_update,
            internal_id,
            key,
        )
        current = None if row is None else (int(row[1]), md5_hex(row[0]))
        self.check_expected(current, expected, check_revisions=check_revisions, deleting=deleting)
        return internal_id, row

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
        """Create or replace a metadata value; return its new revision.

        Raises OrthancError UNKNOWN_RESOURCE or REVISION (ORTHANC_API.md §5).
        Appends an UpdatedMetadata change.
        """

        async def body(tx: Tx) -> int:
            internal_id, _ = await self._checked_metadata(
                tx, level, public_id, key, expected, check_revisions, deleting=False
            )
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
        """Delete a metadata value; raise UNKNOWN_RESOURCE if absent, REVISION on conflict."""

        async def body(tx: Tx) -> None:
            internal_id, row = await self._checked_metadata(
                tx, level, public_id, key, expected, check_revisions, deleting=True
            )
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
    async def rewrite_main_tags(
        self, ids: Sequence[str], main_tags: dict[Level, dict[str, str]], signatures: dict[Level, str]
    ) -> bool:
        """Replace the main tags and MainDicomTagsSignature of an instance and its parents.

        `ids` are the (patient, study, series, instance) public IDs; a study also
        keeps its patient's tags. Return False when the instance no longer exists.
        """

        async def body(tx: Tx) -> bool:
            rows: list[tuple[Level, int]] = []
            for level, public_id in zip(Level, ids, strict=True):
                internal_id = await tx.fetchval(
                    "SELECT internal_id FROM resources WHERE public_id = $1 AND level = $2",
                    public_id,
                    level.depth,
                )
                if internal_id is None:
                    return False
                rows.append((level, int(internal_id)))
            for level, internal_id in rows:
                sources = [level] + ([Level.PATIENT] if level is Level.STUDY else [])
                await tx.execute("DELETE FROM main_tags WHERE internal_id = $1", internal_id)
                values = [
                    (internal_id, source.depth, name, value)
                    for source in sources
                    for name, value in main_tags.get(source, {}).items()
                ]
                if values:
                    await tx.executemany(
                        "INSERT INTO main_tags(internal_id, tag_level, name, value) "
                        "VALUES ($1, $2, $3, $4)",
                        values,
                    )
                await tx.execute(
                    "INSERT INTO metadata(internal_id, key, value, revision) VALUES ($1, $2, $3, 0) "
                    "ON CONFLICT (internal_id, key) DO UPDATE SET value = excluded.value",
                    internal_id,
                    int(MetadataType.MAIN_DICOM_TAGS_SIGNATURE),
                    signatures[level],
                )
            return True

        return await self._run(body)

    async def list_attachments(
        self, level: Level, public_id: str
    ) -> list[AttachmentInfo] | None:
        """Return the attachments of a resource, or None if the resource is unknown."""

        async def body(tx: Tx) -> list[AttachmentInfo] | None:
            internal_id = await find_internal(tx, level, public_id)
            if internal_id is None:
                return None
            rows = await tx.fetch(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE internal_id = $1 "
                "ORDER BY content_type",
                internal_id,
            )
            return [attachment_from_row(r) for r in rows]

        return await self._run(body, readonly=True, point=True)

    async def attachment(
        self, level: Level, public_id: str, content_type: int
    ) -> AttachmentInfo | None:
        """Return one attachment of a resource, in one query; None if either is absent.

        The lookup behind `GET /instances/{id}/file` and the attachment routes:
        the resource and its attachment row are read together, so a reader costs
        one index query and one blob read.
        """

        async def body(tx: Tx) -> AttachmentInfo | None:
            row = await tx.fetchrow(
                f"SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE content_type = $3 "
                "AND internal_id = (SELECT internal_id FROM resources "
                "WHERE public_id = $1 AND level = $2)",
                public_id,
                level.depth,
                content_type,
            )
            return None if row is None else attachment_from_row(row)

        return await self._run(body, readonly=True, point=True)

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
        """Create or replace an attachment; the replaced blob becomes a pending deletion."""

        async def body(tx: Tx) -> int:
            await self.recycler.lock(tx)
            internal_id = await find_internal(tx, level, public_id)
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
                await release_blob(tx, row[0])
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
            await insert_attachment(tx, internal_id, info, revision)
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
        """Delete an attachment; its blob becomes a pending deletion."""

        async def body(tx: Tx) -> None:
            internal_id = await find_internal(tx, level, public_id)
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
            await release_blob(tx, row[0])
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

