"""SQLite reads: on the loop's thread within a budget of steps, else on the reader's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dicomkeep.common.adapters import sqlite_db
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase


async def test_light_reads_stay_on_the_loop_heavy_ones_go_to_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteDatabase(tmp_path / "index") as db:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")
            await tx.executemany("INSERT INTO t VALUES ($1, $2)", [(i, f"v{i}") for i in range(50_000)])
        handed: list[Any] = []
        run = sqlite_db._Connection.run

        async def counted(self: Any, fn: Any, *args: Any) -> Any:
            handed.append(fn)
            return await run(self, fn, *args)

        monkeypatch.setattr(sqlite_db._Connection, "run", counted)
        async with db.transaction(readonly=True) as tx:
            assert await tx.fetchval("SELECT v FROM t WHERE n = $1", 7) == "v7"
            assert handed == []  # a seek: on the loop
            # A scan over the budget: interrupted, then run on the reader's thread,
            # with the whole answer; the rest of the transaction follows it there.
            assert await tx.fetchval("SELECT count(*) FROM t WHERE v LIKE '%9%'") == sum("9" in str(i) for i in range(50_000))
            assert len(handed) == 1
            assert await tx.fetchval("SELECT v FROM t WHERE n = $1", 8) == "v8"
            assert len(handed) == 2
        handed.clear()
        async with db.transaction(readonly=True) as tx:  # a new transaction tries again
            assert len(await tx.fetch("SELECT n FROM t WHERE n < 10")) == 10
            assert handed == []
            with pytest.raises(Exception, match="no such table"):
                await tx.fetch("SELECT * FROM missing")  # errors are not budget overruns
