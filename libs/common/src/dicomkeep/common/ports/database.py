"""The SQL database port under the index: one index logic over SQLite and PostgreSQL.

Statements use PostgreSQL's `$1` placeholders; the SQLite adapter rewrites them to
`?1`. Rows are tuples (positional access).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Tx(Protocol):
    """One open transaction."""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Run a query and return every row."""

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        """Run a query and return its first row, or None."""

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query and return the first column of its first row, or None."""

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row."""


class Database(Protocol):
    """A transactional SQL database."""

    #: "sqlite" or "postgres": the few places where the SQL differs ask this.
    dialect: str

    async def open(self) -> None:
        """Connect (creating the database if it does not exist yet). The schema is
        the index's business (`dicomkeep.common.index.schema`)."""

    async def close(self) -> None:
        """Close every connection."""

    def transaction(
        self, *, readonly: bool = False, durable: bool = True, point: bool = False
    ) -> AbstractAsyncContextManager[Tx]:
        """Open a transaction: committed when the block ends, rolled back on error.

        With `durable=False` the commit may return before it is on disk (SQLite's
        `synchronous=NORMAL` for that commit, PostgreSQL's `synchronous_commit=off`):
        a crash may then lose it, never tear it, and a later durable commit makes
        it durable too. Only for writes whose loss is harmless (marking outbox
        events published: they are published again, and consumers deduplicate).

        `point` (with `readonly`) declares a read of a few rows by key, never a
        listing: an embedded database may run it on the caller's thread rather
        than hand each statement to its connection's thread.

        Serialization failures and deadlocks surface as `RetryableError`; the
        caller (the index, through its one retry policy) replays the whole
        transaction. Other driver errors propagate unchanged.
        """

    async def try_lock(self, name: str) -> bool:
        """Take a named lock held until close(), without waiting; True when held.

        Calling it again while holding the lock confirms the lock is still ours
        (a database restart loses it).
        """


class RetryableError(Exception):
    """The transaction collided with another one and may be replayed."""


class InvalidTextError(ValueError):
    """A text the database cannot hold (PostgreSQL refuses the NUL character, which
    SQLite keeps): bad input, never an internal error."""
