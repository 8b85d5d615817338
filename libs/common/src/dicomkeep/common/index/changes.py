"""The changes log, the outbox and the blob-deletion queue of the index.

Every committed change is written to `changes` (when Orthanc logs it) and to
`outbox` in the same transaction, so a crash between commit and publication
loses nothing: the relay publishes the outbox later (ARCHITECTURE.md step 5).
`ChangeLog` holds the methods of the index that read and trim them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from dicomkeep.common.events import Change, ChangeType, OutboxEvent
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index.records import ChangesPage
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx
from dicomkeep.common.timestamps import now_stamp


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


class ChangeLog(Transactions):
    """Changes, outbox and pending blob deletions, as methods of the index."""

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
        """Return the latest logged change (if any)."""

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
        """Empty the changes log (`DELETE /changes`); Seq is not reset."""

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
        """Append one change (Stable*, job events) to the log and the outbox."""

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
        """Mark events as published."""
        if not seqs:
            return

        async def body(tx: Tx) -> None:
            await tx.executemany("DELETE FROM outbox WHERE seq = $1", [(s,) for s in seqs])

        await self._run(body)

    # -- blob garbage --------------------------------------------------------------
    async def pending_blobs(self, limit: int) -> list[str]:
        """Return blob keys that no row refers to any more and must be deleted."""

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
        """Return the subset of keys that an attachment row, or a job output (an
        archive, keyed by its job's ID), refers to."""
        if not keys:
            return set()

        async def body(tx: Tx) -> set[str]:
            found: set[str] = set()
            for key in keys:
                if await tx.fetchval("SELECT 1 FROM attachments WHERE uuid = $1", key):
                    found.add(key)
                elif await tx.fetchval(
                    "SELECT 1 FROM jobs WHERE id = $1 AND output <> '{}'", key
                ):
                    found.add(key)
            return found

        return await self._run(body, readonly=True)


def _change(row: Sequence[Any]) -> Change:
    return Change(
        Seq=int(row[0]),
        ChangeType=ChangeType(row[1]),
        ResourceType=row[2],
        ID=row[3],
        Path=row[4],
        Date=row[5],
    )
