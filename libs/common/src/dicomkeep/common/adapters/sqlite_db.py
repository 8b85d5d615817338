"""SQLite under the index (the `Database` port): one writer connection, a pool of readers, WAL mode.

sqlite3 blocks, so each connection lives on its own thread (a one-worker
executor) and the event loop only awaits it. Writers are serialised by an
asyncio lock: SQLite has a single writer anyway, and this keeps
`SQLITE_BUSY` out of the picture.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from dicomkeep.common.ports.database import Tx
from dicomkeep.common.retries import retrying_sync

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\$(\d+)")
#: The busy timeout (ms): how long a statement waits for another process's write
#: lock (a second process on the same file) before SQLITE_BUSY.
BUSY_TIMEOUT_MS = 30000


@functools.lru_cache(maxsize=1024)
def _rewrite(sql: str) -> str:
    """Turn PostgreSQL's `$1` placeholders into SQLite's `?1`."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class _Connection:
    """A sqlite3 connection pinned to its own thread."""

    def __init__(self, path: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._path = path
        self.conn: sqlite3.Connection | None = None

    async def run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Switching a new file to WAL can still answer "database is locked" at
            # once (SQLite skips the busy handler there) while another process
            # switches it: try again until that one is done.
            for attempt in retrying_sync(
                "switching the SQLite index to WAL", within=30.0, first=0.02, longest=0.5,
                on=(sqlite3.OperationalError,), when=lambda e: "locked" in str(e),
            ):
                with attempt:
                    conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        self.conn = await self.run(connect)

    async def close(self) -> None:
        if self.conn is not None:
            await self.run(self.conn.close)
            self.conn = None
        self._executor.shutdown(wait=True)


class _SqliteTx:
    """Statements of one transaction.

    Inside a write transaction and a point read (`inline`), statements run on
    the event loop's thread: each is a few B-tree operations on pages already in memory, and a
    hop to the connection's thread per statement cost more than the statement
    (a store runs ~20 of them). What can block (COMMIT and its fsync, ROLLBACK,
    a BEGIN IMMEDIATE that must wait for another process's lock) still runs on
    the connection's thread, and the write lock
    guarantees the two threads never use the connection at once. Other read
    transactions run a statement on the loop only within a budget of steps
    (`_within_budget`): a listing can be large.
    """

    def __init__(self, connection: _Connection, *, inline: bool = False, budget: bool = False) -> None:
        self._c = connection
        self._inline = inline
        self._budget = budget and not inline

    def _conn(self) -> sqlite3.Connection:
        assert self._c.conn is not None
        return self._c.conn

    async def _call(self, fn: Any) -> Any:
        if self._inline:
            return fn()
        if self._budget:
            done, result = _within_budget(self._conn(), fn)
            if done:
                return result
            self._budget = False  # a heavy read: the rest of it goes to the thread
        return await self._c.run(fn)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        conn = self._conn()
        return await self._call(lambda: conn.execute(_rewrite(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        conn = self._conn()
        return await self._call(lambda: conn.execute(_rewrite(sql), args).fetchone())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> None:
        conn = self._conn()
        await self._call(lambda: conn.execute(_rewrite(sql), args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self._conn()
        await self._call(lambda: conn.executemany(_rewrite(sql), rows))


#: A statement of a read transaction first runs on the loop's thread for at most
#: this many SQLite virtual-machine steps (a few tenths of a millisecond: a find
#: that seeks an index, a resource's rows); one that needs more is interrupted,
#: and it and the rest of its transaction run again on the reader's thread.
INLINE_READ_STEPS = 20_000
_STEPS_PER_CHECK = 1_000


def _within_budget(conn: sqlite3.Connection, fn: Any) -> tuple[bool, Any]:
    """Run `fn` (a read) on this thread within INLINE_READ_STEPS; (False, None) if
    it was interrupted. Side-effect free: the read runs again elsewhere."""
    checks = [INLINE_READ_STEPS // _STEPS_PER_CHECK]

    def progress() -> int:
        checks[0] -= 1
        return 1 if checks[0] < 0 else 0

    conn.set_progress_handler(progress, _STEPS_PER_CHECK)
    try:
        return True, fn()
    except sqlite3.OperationalError as error:
        if checks[0] < 0 and "interrupt" in str(error):
            return False, None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _begin(conn: sqlite3.Connection, durable: bool) -> None:
    """BEGIN IMMEDIATE; a commit that need not wait for the disk is chosen here
    (SQLite refuses to change `synchronous` inside a transaction)."""
    if not durable:
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException:
        _end(conn, "ROLLBACK", durable, began=False)
        raise


def _begin_now(conn: sqlite3.Connection, durable: bool) -> bool:
    """BEGIN IMMEDIATE without waiting: True when the write lock was free.

    Run on the event loop: the lock is free unless another process writes to
    the same file, and taking a free lock in WAL mode touches only the shared
    memory index, no disk flush. A thread hand-off for it cost ~5% of the
    server's CPU during ingest. When the lock is held, the caller waits for it
    on the connection's thread (`_begin`, with the busy timeout).
    """
    conn.execute("PRAGMA busy_timeout=0")
    try:
        _begin(conn, durable)
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            return False
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return True


def _end(conn: sqlite3.Connection, statement: str, durable: bool, *, began: bool = True) -> None:
    """COMMIT or ROLLBACK, then back to durable commits."""
    try:
        if began:
            conn.execute(statement)
    finally:
        if not durable:
            conn.execute("PRAGMA synchronous=FULL")


class SqliteDatabase:
    """The embedded database: a file `index` in the index directory (or `:memory:`)."""

    dialect = "sqlite"

    def __init__(self, path: Path | str, *, readers: int = 4) -> None:
        self._path = str(path)
        self._readers_count = readers if self._path != ":memory:" else 0
        self._writer = _Connection(self._path)
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[_Connection] = asyncio.Queue()
        self._all_readers: list[_Connection] = []

    async def open(self) -> None:
        """Create the file (and its directory) if needed, open the writer and the readers."""
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        await self._writer.open()
        for _ in range(self._readers_count):
            reader = _Connection(self._path)
            await reader.open()
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)

    async def close(self) -> None:
        """Close every connection."""
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
        await self._writer.close()

    async def __aenter__(self) -> SqliteDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(
        self, *, readonly: bool = False, durable: bool = True, point: bool = False
    ) -> AsyncIterator[Tx]:
        """Open a transaction; readers use the pool and see the last commit (WAL).

        A write transaction that is not `durable` commits with `synchronous=NORMAL`:
        WAL frames are written but not fsynced; the next durable commit (FULL)
        fsyncs them along with its own.

        A `point` read (a few rows by key) runs its statements on the loop's
        thread, as the writer does: a B-tree lookup in WAL mode never waits for
        a lock, and costs less than the thread hand-off it would need. Other
        reads try the loop's thread too, within INLINE_READ_STEPS, and go to the
        reader's thread from their first statement that needs more.
        """
        if readonly and self._all_readers:
            reader = await self._readers.get()
            try:
                conn = reader.conn
                assert conn is not None
                # BEGIN (deferred) and the ROLLBACK of a read transaction take no
                # lock that anyone else holds: they never wait, so they run on the
                # loop's thread rather than costing two thread hand-offs per read.
                # The reader is checked out of the pool: no other thread uses it.
                conn.execute("BEGIN")
                try:
                    yield _SqliteTx(reader, inline=point, budget=True)
                finally:
                    conn.execute("ROLLBACK")
            finally:
                self._readers.put_nowait(reader)
            return
        async with self._write_lock:
            conn = self._writer.conn
            assert conn is not None
            if not _begin_now(conn, durable):
                await self._writer.run(_begin, conn, durable)
            try:
                yield _SqliteTx(self._writer, inline=True)
            except BaseException:
                await self._writer.run(_end, conn, "ROLLBACK", durable)
                raise
            else:
                await self._writer.run(_end, conn, "COMMIT", durable)

    async def try_lock(self, name: str) -> bool:
        """One process owns the SQLite file: every lock is granted."""
        return True
