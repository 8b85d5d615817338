"""The SQLite writer takes its write lock without a thread hand-off when it is free,
and waits for it (off the event loop) when another process holds it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from dicomkeep.common.adapters.sqlite_db import SqliteDatabase


async def test_a_write_waits_for_another_connections_lock(tmp_path: Path) -> None:
    path = tmp_path / "index"
    async with SqliteDatabase(path, readers=1) as db:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE t (v INTEGER)")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # as another process writing the same file
        other.execute("INSERT INTO t VALUES (1)")
        release = threading.Timer(0.3, other.execute, ("COMMIT",))
        release.start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (2)")
        finally:
            ticker.cancel()
            release.join()
            other.close()
        # The loop kept running while the writer waited for the lock.
        assert ticks > 0
        async with db.transaction(readonly=True) as tx:
            assert [row[0] for row in await tx.fetch("SELECT v FROM t ORDER BY v")] == [1, 2]
        # The busy timeout is back after the lock-free attempt.
        async with db.transaction() as tx:
            assert await tx.fetchval("PRAGMA busy_timeout") == 30000
