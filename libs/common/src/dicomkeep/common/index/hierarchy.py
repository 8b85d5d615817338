"""Row operations on the resource hierarchy, inside an open transaction.

The building blocks the store transaction, deletes, recycling and attachment
writes share: find a resource, delete a subtree (its blobs become pending
deletions, a Deleted change per resource), prune ancestors left empty, write
core metadata and attachment rows. Each function takes the open `Tx` and
commits nothing itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dicomkeep.common.events import AttachmentInfo, ChangeType, RemainingAncestor
from dicomkeep.common.ids import Level
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.orthanc import FileContentType, MetadataType
from dicomkeep.common.ports.database import Tx
from dicomkeep.common.timestamps import now_stamp

#: Levels by depth (the `level` column): 0 patient ... 3 instance.
LEVELS = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]
#: Orthanc's metadata LastUpdate, written on patients, studies and series.
LAST_UPDATE = MetadataType.LAST_UPDATE
#: Orthanc's content type of the DICOM file.
DICOM = FileContentType.DICOM

#: A recursive CTE `d(internal_id)`: the resource `$1` and all its descendants.
DESCENDANTS = """WITH RECURSIVE d(internal_id) AS (
    SELECT internal_id FROM resources WHERE internal_id = $1
    UNION ALL
    SELECT r.internal_id FROM resources r JOIN d ON r.parent_id = d.internal_id)"""

ATTACHMENT_COLUMNS = (
    "content_type, uuid, compressed_size, uncompressed_size, compression, "
    "uncompressed_md5, compressed_md5, revision"
)


def attachment_from_row(row: Sequence[Any]) -> AttachmentInfo:
    """Build an AttachmentInfo from a row of `ATTACHMENT_COLUMNS`."""
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


async def find_internal(tx: Tx, level: Level, public_id: str) -> int | None:
    """Return the internal id of a resource at `level`, or None."""
    value = await tx.fetchval(
        "SELECT internal_id FROM resources WHERE public_id = $1 AND level = $2",
        public_id,
        level.depth,
    )
    return None if value is None else int(value)


async def delete_subtree(
    tx: Tx, internal_id: int, pending: PendingChanges
) -> list[tuple[Level, str]]:
    """Delete a resource and its descendants; queue their blobs and Deleted changes.

    Returns the deleted (level, public_id), top first. Their rows in the changes
    log go too, as Orthanc's Changes table cascades on delete (the Deleted events
    still reach the bus). Mirrors Orthanc: files are removed after the commit (by
    the storage service).
    """
    rows = await tx.fetch(
        f"{DESCENDANTS} SELECT r.level, r.public_id, r.internal_id FROM resources r "
        "JOIN d ON d.internal_id = r.internal_id ORDER BY r.level",
        internal_id,
    )
    await tx.executemany(
        "DELETE FROM changes WHERE public_id = $1 AND resource_type = $2",
        [(r[1], LEVELS[int(r[0])].value) for r in rows],
    )
    await tx.execute(
        f"{DESCENDANTS} INSERT INTO pending_blobs(uuid, since) "
        "SELECT a.uuid, $2 FROM attachments a JOIN d ON d.internal_id = a.internal_id "
        "ON CONFLICT (uuid) DO NOTHING",
        internal_id,
        now_stamp(),
    )
    await tx.execute("DELETE FROM resources WHERE internal_id = $1", internal_id)
    deleted = [(LEVELS[int(r[0])], r[1]) for r in rows]
    for level, public_id in deleted:
        pending.add(ChangeType.DELETED, level, public_id)
    return deleted


async def prune_ancestors(
    tx: Tx,
    parent_internal: int | None,
    level: Level,
    pending: PendingChanges,
    deleted: list[tuple[Level, str]],
) -> RemainingAncestor | None:
    """Delete ancestors left without children; return the nearest survivor.

    Since Orthanc 1.12.1 the LastUpdate of the survivor and of its ancestors
    becomes now, as a store sets it on every parent.
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
            await touch_ancestors(tx, int(current))
            return RemainingAncestor(level=current_level, public_id=row[0])
        deleted.extend(await delete_subtree(tx, int(current), pending))
        current = row[1]
        current_level = current_level.parent
    return None


async def touch_ancestors(tx: Tx, internal_id: int) -> None:
    """Set LastUpdate to now on a surviving resource and each of its ancestors."""
    now = now_stamp()
    current: int | None = internal_id
    while current is not None:
        await set_core_metadata(tx, current, LAST_UPDATE, now)
        parent = await tx.fetchval("SELECT parent_id FROM resources WHERE internal_id = $1", current)
        current = None if parent is None else int(parent)


async def set_core_metadata(tx: Tx, internal_id: int, key: int, value: str) -> None:
    """Upsert one metadata value written by the core (no change logged)."""
    await tx.execute(
        "INSERT INTO metadata(internal_id, key, value, revision) VALUES ($1, $2, $3, 0) "
        "ON CONFLICT (internal_id, key) DO UPDATE SET value = excluded.value, "
        "revision = metadata.revision + 1",
        internal_id,
        key,
        value,
    )


async def insert_attachment(
    tx: Tx, internal_id: int, info: AttachmentInfo, revision: int = 0
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


async def release_blob(tx: Tx, uuid: str) -> None:
    """Queue a blob for deletion once this transaction commits."""
    await tx.execute(
        "INSERT INTO pending_blobs(uuid, since) VALUES ($1, $2) ON CONFLICT (uuid) DO NOTHING",
        uuid,
        now_stamp(),
    )


async def next_recycling_order(tx: Tx) -> int:
    """Return the next position at the end of the recycling order."""
    value = await tx.fetchval(
        "UPDATE counters SET value = value + 1 WHERE name = 'recycling' RETURNING value"
    )
    return int(value)
