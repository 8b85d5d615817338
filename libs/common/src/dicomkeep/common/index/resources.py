"""Reads of the hierarchy: one resource, listings, lookups, find, statistics.

`Resources` holds these methods of the index; each is one read-only
transaction. Find's SQL is written in find.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.find import Constraint
from dicomkeep.common.ids import Level
from dicomkeep.common.index.find import find_ids, find_tags
from dicomkeep.common.index.hierarchy import (
    ATTACHMENT_COLUMNS,
    DESCENDANTS,
    DICOM,
    LEVELS,
    attachment_from_row,
    find_internal,
)
from dicomkeep.common.index.records import InstanceFile, Resource, Statistics
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.orthanc import MetadataType
from dicomkeep.common.ports.database import Tx

#: How many IDs one `IN (...)` list holds (SQLite allows 32,766 parameters).
_CHUNK = 500
#: The DICOM attachment's columns, from the alias `a`.
_ATTACHMENT_OF_A = ", ".join(f"a.{column.strip()}" for column in ATTACHMENT_COLUMNS.split(","))
#: Everything of a resource but its own row, as (kind, number, text, value) rows:
#: 0 children (internal id, public id), 1 main tags (tag level, name, value),
#: 2 metadata (key, value), 3 labels (-, label).
_DETAILS = (
    "SELECT 0, internal_id, public_id, NULL FROM resources WHERE parent_id = $1 "
    "UNION ALL SELECT 1, tag_level, name, value FROM main_tags WHERE internal_id = $1 "
    "UNION ALL SELECT 2, key, value, NULL FROM metadata WHERE internal_id = $1 "
    "UNION ALL SELECT 3, 0, label, NULL FROM labels WHERE internal_id = $1"
)


class Resources(Transactions):
    """The reads of the hierarchy, as methods of the index."""

    async def get_resource(self, level: Level, public_id: str) -> Resource | None:
        """Return one resource, or None if unknown at this level.

        Two statements whatever the level (the resource with its parent, stability
        and DICOM attachment; then its children, main tags, metadata and labels in
        one UNION ALL): each statement of a read is a round trip to the database
        (a thread hand-off on SQLite), and `/tools/find` with `Expand` runs this
        once per match.
        """

        async def body(tx: Tx) -> Resource | None:
            row = await tx.fetchrow(
                "SELECT r.internal_id, p.public_id, r.is_protected, "
                "(SELECT COUNT(*) FROM stability s WHERE s.internal_id = r.internal_id), "
                f"{_ATTACHMENT_OF_A} "
                "FROM resources r LEFT JOIN resources p ON p.internal_id = r.parent_id "
                "LEFT JOIN attachments a ON a.internal_id = r.internal_id AND a.content_type = $3 "
                "WHERE r.public_id = $1 AND r.level = $2",
                public_id,
                level.depth,
                DICOM if level is Level.INSTANCE else -1,
            )
            if row is None:
                return None
            children_rows: list[tuple[int, str]] = []
            tags: dict[int, dict[str, str]] = {}
            metadata: dict[int, str] = {}
            labels: list[str] = []
            for kind, number, text, value in await tx.fetch(_DETAILS, int(row[0])):
                if kind == 0:
                    children_rows.append((int(number), text))
                elif kind == 1:
                    tags.setdefault(int(number), {})[text] = value
                elif kind == 2:
                    metadata[int(number)] = text
                else:
                    labels.append(text)
            children_rows.sort()
            labels.sort()
            return Resource(
                level=level,
                public_id=public_id,
                parent_id=row[1],
                children=[child for _, child in children_rows],
                main_tags=dict(sorted(tags.get(level.depth, {}).items())),
                metadata=metadata,
                is_protected=bool(row[2]),
                labels=labels,
                patient_main_tags=(
                    dict(sorted(tags.get(Level.PATIENT.depth, {}).items()))
                    if level is Level.STUDY
                    else None
                ),
                dicom=attachment_from_row(row[4:]) if row[4] is not None else None,
                is_stable=int(row[3]) == 0,
            )

        # Without children, a resource is a few rows: a point read.
        return await self._run(body, readonly=True, point=level is Level.INSTANCE)

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
                sql += " LIMIT -1 OFFSET $2" if self.dialect == "sqlite" else " OFFSET $2"
                args.append(since)
            return [r[0] for r in await tx.fetch(sql, *args)]

        return await self._run(body, readonly=True)

    async def lookup(self, identifier: str) -> list[tuple[Level, str]]:
        """Find resources whose PatientID or Study/Series/SOP Instance UID equals this,
        ignoring case and surrounding spaces (Orthanc compares normalized identifiers)."""

        async def body(tx: Tx) -> list[tuple[Level, str]]:
            rows = await tx.fetch(
                "SELECT level, public_id FROM resources WHERE UPPER(dicom_uid) = $1 "
                "ORDER BY level, internal_id",
                # ASCII only, as SQLite's UPPER (and DICOM identifiers)
                identifier.strip().translate(_ASCII_UPPER),
            )
            return [(LEVELS[int(r[0])], r[1]) for r in rows]

        return await self._run(body, readonly=True)

    async def descendants(self, level: Level, public_id: str, target: Level) -> list[str]:
        """Return the IDs of all descendants at `target` level (itself if same level)."""

        async def body(tx: Tx) -> list[str]:
            internal_id = await find_internal(tx, level, public_id)
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

    async def instance_files(self, level: Level, public_ids: Sequence[str]) -> list[InstanceFile]:
        """Return the instances under resources of `level` with what a sender needs,
        in one read-only transaction: each instance once, in index order (in the
        order given for instance IDs); unknown IDs are skipped. One query per
        resource, or per 500 instances, instead of several per instance (C-MOVE,
        C-GET, store jobs)."""
        columns = ", ".join(f"a.{column.strip()}" for column in ATTACHMENT_COLUMNS.split(","))

        select = (
            "SELECT r.public_id, r.dicom_uid, "
            "(SELECT value FROM metadata m WHERE m.internal_id = r.internal_id AND m.key = $1), "
            "(SELECT value FROM metadata m WHERE m.internal_id = r.internal_id AND m.key = $2), "
            f"{columns} FROM resources r "
            "LEFT JOIN attachments a ON a.internal_id = r.internal_id AND a.content_type = $3 "
        )
        keys = (int(MetadataType.SOP_CLASS_UID), int(MetadataType.TRANSFER_SYNTAX), DICOM)

        def record(row: Any) -> InstanceFile:
            return InstanceFile(
                public_id=row[0], sop_instance_uid=row[1] or "", sop_class_uid=row[2] or "",
                transfer_syntax=row[3] or "",
                dicom=attachment_from_row(row[4:]) if row[5] is not None else None,
            )  # fmt: skip

        async def instances(tx: Tx) -> list[InstanceFile]:
            found: dict[str, InstanceFile] = {}
            for start in range(0, len(public_ids), _CHUNK):
                chunk = list(public_ids[start : start + _CHUNK])
                marks = ", ".join(f"${n}" for n in range(5, 5 + len(chunk)))
                rows = await tx.fetch(
                    f"{select} WHERE r.level = $4 AND r.public_id IN ({marks})",
                    *keys, Level.INSTANCE.depth, *chunk,
                )
                found.update((row[0], record(row)) for row in rows)
            return [found[pid] for pid in dict.fromkeys(public_ids) if pid in found]

        async def below(tx: Tx) -> list[InstanceFile]:
            found: dict[str, InstanceFile] = {}
            for public_id in public_ids:
                internal_id = await find_internal(tx, level, public_id)
                if internal_id is None:
                    continue
                rows = await tx.fetch(
                    DESCENDANTS.replace("$1", "$5")
                    + f" {select} JOIN d ON d.internal_id = r.internal_id "
                    "WHERE r.level = $4 ORDER BY r.internal_id",
                    *keys, Level.INSTANCE.depth, internal_id,
                )
                for row in rows:
                    found.setdefault(row[0], record(row))
            return list(found.values())

        body = instances if level is Level.INSTANCE else below
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
            return await find_ids(
                tx, self.dialect, level, constraints, since=since, limit=limit,
                labels=labels, labels_constraint=labels_constraint,
            )

        return await self._run(body, readonly=True)

    async def find_tags(
        self, level: Level, public_ids: Sequence[str], computed: Collection[str] = ()
    ) -> dict[str, dict[str, str]]:
        """Return per known resource its and its ancestors' main tags by keyword, plus
        the asked computed tags of its level (`find.COMPUTED_TAGS`)."""

        async def body(tx: Tx) -> dict[str, dict[str, str]]:
            return await find_tags(tx, self.dialect, level, public_ids, computed)

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
                internal_id = await find_internal(tx, level, public_id)
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


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
