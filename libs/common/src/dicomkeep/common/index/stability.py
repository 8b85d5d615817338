"""Stability in the index: which resources wait for their Stable* change (ORTHANC_API.md §7).

The `stability` table is the ledger of the cluster: a row per patient, study or
series that received a new instance and has not had its Stable* change yet, with
the UNIX time of its last new instance. The store transaction writes the row
(`touch_unstable`), so every gateway replica reads the same `IsStable` right after
a store; the row goes in the same transaction that appends the Stable* change
(`emit_stable`), so a crash loses nothing and a quiet period yields exactly one
change; a deleted resource loses its row with it (ON DELETE CASCADE), hence no
event. The StabilityClock only schedules when to look.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dicomkeep.common.events import STABLE_CHANGE, Change
from dicomkeep.common.ids import Level
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.index.hierarchy import LEVELS
from dicomkeep.common.index.records import UnstableResource
from dicomkeep.common.index.recycling import hold_writers_lock
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx


async def touch_unstable(
    tx: Tx, resources: Sequence[tuple[int, Level, str]], at: float
) -> None:
    """Mark (internal_id, level, public_id) resources unstable as of `at` (UNIX seconds).

    Call with patient, study, series in this order: the store transaction and
    `emit_stable` lock rows in the same order, so they never deadlock.
    """
    await tx.executemany(
        "INSERT INTO stability(internal_id, level, public_id, touched_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (internal_id) "
        "DO UPDATE SET touched_at = excluded.touched_at",
        [(internal_id, level.depth, public_id, at) for internal_id, level, public_id in resources],
    )


async def emit_stable(
    tx: Tx, dialect: str, pending: PendingChanges, cutoff: float, limit: int
) -> None:
    """Queue the Stable* change of up to `limit` resources last touched before `cutoff`.

    Each row is removed with a re-check of its time, so a new instance committed
    meanwhile keeps its resource unstable; the removal and the change commit
    together. Changes are queued series first, then studies, then patients
    (Orthanc's order for one burst). The table is created by schema.py.
    """
    # One emitter at a time: concurrent replicas then never split one burst.
    await hold_writers_lock(tx, dialect)
    # A resource's due descendants sort before it (earlier or equal time, deeper
    # level), so a batch never holds a study without its due series.
    rows = await tx.fetch(
        "SELECT internal_id, level, public_id, touched_at FROM stability "
        "WHERE touched_at < $1 ORDER BY touched_at, level DESC, internal_id LIMIT $2",
        cutoff,
        limit,
    )
    # Lock (delete) in the store's order, patients first, to avoid deadlocks.
    removed: list[Sequence[Any]] = []
    for row in sorted(rows, key=lambda r: (int(r[1]), int(r[0]))):
        gone = await tx.fetchval(
            "DELETE FROM stability WHERE internal_id = $1 AND touched_at < $2 "
            "RETURNING internal_id",
            row[0],
            cutoff,
        )
        if gone is not None:
            removed.append(row)
    for _, level_depth, public_id, _ in sorted(
        removed, key=lambda r: (-int(r[1]), float(r[3]), int(r[0]))
    ):
        level = LEVELS[int(level_depth)]
        pending.add(STABLE_CHANGE[level], level, public_id)


async def unstable_resources(tx: Tx, limit: int) -> list[UnstableResource]:
    """Return up to `limit` resources waiting for their Stable* change, oldest first."""
    rows = await tx.fetch(
        "SELECT level, public_id, touched_at FROM stability "
        "ORDER BY touched_at, internal_id LIMIT $1",
        limit,
    )
    return [
        UnstableResource(level=LEVELS[int(r[0])], public_id=r[1], touched_at=float(r[2]))
        for r in rows
    ]


class StabilityLedger(Transactions):
    """The Stable* changes, as methods of the index."""

    async def emit_stable(self, cutoff: float, limit: int = 500) -> list[Change]:
        """Append the Stable* change of resources whose last new instance is before
        `cutoff` (UNIX time), at most `limit`, series then studies then patients.

        Exactly once per quiet period, whichever replicas call it concurrently.
        """

        async def body(tx: Tx) -> list[Change]:
            pending = PendingChanges()
            await emit_stable(tx, self.dialect, pending, cutoff, limit)
            return await pending.flush(tx)

        return await self._run(body)

    async def unstable_resources(self, limit: int = 100_000) -> list[UnstableResource]:
        """Return the resources waiting for their Stable* change, oldest first."""

        async def body(tx: Tx) -> list[UnstableResource]:
            return await unstable_resources(tx, limit)

        return await self._run(body, readonly=True)
