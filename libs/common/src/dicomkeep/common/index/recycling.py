"""Recycling: MaximumStorageSize, MaximumPatientCount and MaximumStorageMode (ORTHANC_API.md §8).

Mirrors Orthanc's `IsRecyclingNeeded` and `Recycle`
(OrthancServer/Sources/Database/StatelessDatabaseOperations.cpp): inside the
transaction that adds data, while the stored bytes plus the incoming ones exceed
the size limit, or the patients exceed the count limit, delete the oldest
unprotected patient in recycling order, never the one receiving the data; when
none is left, or in Reject mode, fail with *The file storage is full* so that the
transaction rolls back and nothing is written.

Concurrency: several indexers may store at once on PostgreSQL. Every transaction
that decides on recycling first takes one transaction-level advisory lock, so
their decisions are serialised and see each other's commits (READ COMMITTED
reads the latest committed data at each statement): the limits hold after every
commit. SQLite has a single writer and needs no lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index.changes import PendingChanges
from dicomkeep.common.index.hierarchy import delete_subtree, find_internal, next_recycling_order
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Database, Tx

if TYPE_CHECKING:
    from dicomkeep.common.settings import Settings

log = logging.getLogger(__name__)

#: Orthanc's MB: MaximumStorageSize is multiplied by this many bytes.
MEGABYTE = 1024 * 1024
#: The advisory lock that serialises recycling decisions and Stable* emission ("DCKR").
WRITERS_LOCK = 0x44434B52


@dataclass(frozen=True)
class StorageLimits:
    """The storage quota. Zero means no limit; `reject` is MaximumStorageMode "Reject"."""

    maximum_size: int = 0  # bytes of stored (compressed) attachments
    maximum_patients: int = 0
    reject: bool = False

    @property
    def is_active(self) -> bool:
        """True when at least one limit is set."""
        return self.maximum_size > 0 or self.maximum_patients > 0

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageLimits:
        """Read MaximumStorageSize (MB), MaximumPatientCount and MaximumStorageMode."""
        return cls(
            maximum_size=settings.maximum_storage_size * MEGABYTE,
            maximum_patients=settings.maximum_patient_count,
            reject=settings.maximum_storage_mode == "Reject",
        )


async def hold_writers_lock(tx: Tx, dialect: str) -> None:
    """Take the writers' advisory lock until the end of `tx` (PostgreSQL only).

    Taken as the first statement of a transaction, it never waits while holding
    row locks, so it cannot deadlock with them.
    """
    if dialect == "postgres":
        await tx.execute("SELECT pg_advisory_xact_lock($1)", WRITERS_LOCK)


class Recycler:
    """The recycling decisions of one index, run inside its transactions."""

    def __init__(self, db: Database, limits: StorageLimits | None) -> None:
        self.db = db
        self.limits = limits or StorageLimits()

    @property
    def is_active(self) -> bool:
        """True when a limit is set (otherwise every method is a no-op)."""
        return self.limits.is_active

    async def lock(self, tx: Tx) -> None:
        """Serialise this transaction's recycling decision with the other writers'.

        Call it first in the transaction; does nothing when no limit is set.
        """
        if self.is_active:
            await hold_writers_lock(tx, self.db.dialect)

    async def make_room(
        self, tx: Tx, pending: PendingChanges, *, incoming: int, keep: int | None
    ) -> list[tuple[Level, str]]:
        """Make room for `incoming` bytes, the new data of patient `keep` (internal id).

        Call it after the receiving patient exists (it is then counted) and before
        the new attachments are inserted. Recycle mode deletes the oldest
        unprotected patients other than `keep` (their blobs become pending
        deletions, a Deleted event is queued per resource) and returns what it
        deleted. Raises OrthancError FULL_STORAGE when the data alone exceeds the
        size limit, when nothing is left to recycle, or in Reject mode when a limit
        would be exceeded.
        """
        limits = self.limits
        if not limits.is_active:
            return []
        if limits.maximum_size and incoming > limits.maximum_size:
            raise OrthancError(
                ErrorCode.FULL_STORAGE,
                f"Cannot store an item of size {incoming} bytes in a storage area limited "
                f"to {limits.maximum_size} bytes",
            )
        if not await self._is_needed(tx, incoming):
            return []
        if limits.reject:
            raise OrthancError(ErrorCode.FULL_STORAGE, "The storage area is full")
        deleted: list[tuple[Level, str]] = []
        while True:
            victim = await self._oldest_unprotected(tx, keep)
            if victim is None:
                raise OrthancError(ErrorCode.FULL_STORAGE, "Cannot recycle more patients")
            deleted.extend(await self._recycle(tx, victim, pending))
            if not await self._is_needed(tx, incoming):
                return deleted

    async def enforce(self, tx: Tx, pending: PendingChanges) -> list[tuple[Level, str]]:
        """Recycle until the limits hold, as Orthanc does at start-up (Recycle mode only).

        Stops without error when only protected patients are left. Returns what it
        deleted (Deleted events queued, blobs pending).
        """
        if not self.is_active or self.limits.reject:
            return []
        deleted: list[tuple[Level, str]] = []
        while await self._is_needed(tx, 0):
            victim = await self._oldest_unprotected(tx, None)
            if victim is None:
                log.warning("storage limits exceeded, but every patient is protected")
                break
            deleted.extend(await self._recycle(tx, victim, pending))
        return deleted

    async def _recycle(
        self, tx: Tx, patient: int, pending: PendingChanges
    ) -> list[tuple[Level, str]]:
        """Delete one patient's subtree (empty if a concurrent delete took it first)."""
        removed = await delete_subtree(tx, patient, pending)
        if removed:
            log.info("recycled patient=%s resources=%d", removed[0][1], len(removed))
        return removed

    async def owning_patient(self, tx: Tx, internal_id: int) -> int:
        """Return the internal id of the patient above (or equal to) a resource."""
        current = internal_id
        while True:
            parent = await tx.fetchval(
                "SELECT parent_id FROM resources WHERE internal_id = $1", current
            )
            if parent is None:
                return current
            current = int(parent)

    async def _is_needed(self, tx: Tx, incoming: int) -> bool:
        """Orthanc's IsRecyclingNeeded: size + incoming > max, or patients > max."""
        limits = self.limits
        if limits.maximum_size:
            stored = await tx.fetchval("SELECT COALESCE(SUM(compressed_size), 0) FROM attachments")
            if int(stored) + incoming > limits.maximum_size:
                return True
        if limits.maximum_patients:
            patients = await tx.fetchval("SELECT COUNT(*) FROM resources WHERE level = 0")
            if int(patients) > limits.maximum_patients:
                return True
        return False

    async def _oldest_unprotected(self, tx: Tx, keep: int | None) -> int | None:
        """Return the least recently received unprotected patient other than `keep`."""
        value = await tx.fetchval(
            "SELECT internal_id FROM resources WHERE level = 0 AND is_protected = 0 "
            "AND internal_id <> $1 ORDER BY recycling_order, internal_id LIMIT 1",
            -1 if keep is None else keep,
        )
        return None if value is None else int(value)


class Recycling(Transactions):
    """Protection and recycling at start-up, as methods of the index."""

    recycler: Recycler

    async def set_protected(self, patient_id: str, protected: bool) -> None:
        """Protect a patient from recycling, or unprotect it (moved to the end).

        Raises OrthancError UNKNOWN_RESOURCE for an unknown patient.
        """

        async def body(tx: Tx) -> None:
            internal_id = await find_internal(tx, Level.PATIENT, patient_id)
            if internal_id is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if protected:
                await tx.execute(
                    "UPDATE resources SET is_protected = 1 WHERE internal_id = $1", internal_id
                )
                return
            order = await next_recycling_order(tx)
            await tx.execute(
                "UPDATE resources SET is_protected = 0, recycling_order = $2 "
                "WHERE internal_id = $1 AND is_protected = 1",
                internal_id,
                order,
            )

        await self._run(body)

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
