"""PostgreSQL under the index (asyncpg, a connection pool).

Transactions run at READ COMMITTED: the store transaction relies on
`INSERT ... ON CONFLICT DO NOTHING` (which waits for a concurrent inserter and
then sees its row) and on row locks (`SELECT ... FOR UPDATE`, the Seq counter).
Serialization failures, deadlocks and the unique/foreign-key violations that a
concurrent delete can cause are raised as `RetryableError`, and the index
replays the transaction (index/transactions.py), as Orthanc's PostgreSQL plugin does.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from dicomkeep.common.ports.database import InvalidTextError, RetryableError, Tx

#: SQLSTATEs worth a replay: serialization failure, deadlock, unique and FK violations.
_RETRYABLE = {"40001", "40P01", "23505", "23503"}
#: SQLSTATEs of a text parameter PostgreSQL cannot hold (a NUL character).
_INVALID_TEXT = {"22021", "22P05"}


class _OneLine(logging.Filter):
    """Turn asyncpg's pool warnings into one line: while the server is down, the pool
    retries restoring its connection floor (backoff 1 s to 60 s) and would log a
    traceback each time (issue 15)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} error={type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_pool_log() -> None:
    """Install `_OneLine` on asyncpg's pool logger (once per process)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_log.filters):
        pool_log.addFilter(_OneLine())


class _PgTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)


class PostgresDatabase:
    """The distributed database: a pool of `size` connections to `dsn`."""

    dialect = "postgres"

    def __init__(self, dsn: str, *, size: int = 10) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self._locks: dict[str, asyncpg.Connection] = {}

    async def open(self) -> None:
        """Create the database if missing, then the pool."""
        try:
            self._pool = await self._create_pool()
        except asyncpg.InvalidCatalogNameError:
            await self._create_database()
            self._pool = await self._create_pool()

    async def _create_pool(self) -> asyncpg.Pool:
        _quiet_pool_log()
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._size, statement_cache_size=256
        )
        return pool

    async def _create_database(self) -> None:
        """Create the configured database, connecting to the `postgres` one."""
        name = urlsplit(self._dsn).path.lstrip("/") or "postgres"
        admin = await asyncpg.connect(self._dsn, database="postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # Another replica created it at the same moment.
            pass
        finally:
            await admin.close()

    async def close(self) -> None:
        """Close the pool and the lock connections."""
        for conn in self._locks.values():
            await conn.close()
        self._locks.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> PostgresDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(
        self, *, readonly: bool = False, durable: bool = True, point: bool = False
    ) -> AsyncIterator[Tx]:
        """Open a READ COMMITTED transaction on a pooled connection.

        A read-only one sends no BEGIN and COMMIT: under READ COMMITTED each
        statement sees what was committed when it began, in or out of a
        transaction, so the two round trips would buy nothing. `point` changes
        nothing here (asyncpg never blocks the loop). A write that is not
        `durable` commits without waiting for the WAL flush.
        """
        assert self._pool is not None, "open() first"
        try:
            if readonly:
                async with self._pool.acquire() as conn:
                    yield _PgTx(conn)
                return
            async with self._pool.acquire() as conn, conn.transaction():
                if not durable:
                    await conn.execute("SET LOCAL synchronous_commit TO OFF")
                yield _PgTx(conn)
        except asyncpg.PostgresError as error:
            if getattr(error, "sqlstate", None) in _RETRYABLE:
                raise RetryableError(str(error)) from error
            if getattr(error, "sqlstate", None) in _INVALID_TEXT:
                raise InvalidTextError(str(error)) from error
            raise

    async def try_lock(self, name: str) -> bool:
        """Take, or confirm that this process still holds, a session advisory lock.

        The lock lives on a dedicated connection kept until close(). A call while
        holding it checks that connection: if the server restarted, the lock (and
        the connection) are gone, and another process may hold it now.
        """
        held = self._locks.get(name)
        if held is not None:
            try:
                await held.fetchval("SELECT 1", timeout=5)
                return True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                self._locks.pop(name, None)
                held.terminate()
        key = zlib.crc32(name.encode()) & 0x7FFFFFFF
        conn = await asyncpg.connect(self._dsn)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            self._locks[name] = conn
            return True
        await conn.close()
        return False
