"""The index's one retry policy: a transaction that hits a serialization failure
is replayed whole; when every replay collides, the caller gets Orthanc's 503."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import Index
from dicomkeep.common.ports.database import RetryableError, Tx


class CollidingDatabase(SqliteDatabase):
    """SQLite whose next `collisions` write transactions fail as serialization failures."""

    collisions = 0
    attempts = 0

    @asynccontextmanager
    async def transaction(
        self, *, readonly: bool = False, durable: bool = True, point: bool = False
    ) -> AsyncIterator[Tx]:
        async with super().transaction(readonly=readonly, durable=durable, point=point) as tx:
            if not readonly:
                self.attempts += 1
                if self.collisions > 0:
                    self.collisions -= 1
                    raise RetryableError("could not serialize access")
            yield tx


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[tuple[Index, CollidingDatabase]]:
    db = CollidingDatabase(tmp_path / "index")
    async with Index(db, max_retries=3) as opened:
        yield opened, db


async def test_a_collided_transaction_is_replayed(
    index: tuple[Index, CollidingDatabase],
) -> None:
    idx, db = index
    db.collisions, db.attempts = 2, 0
    await idx.set_property("Name", "value")
    assert db.attempts == 3
    assert await idx.get_property("Name") == "value"


async def test_exhausted_replays_answer_cannot_serialize(
    index: tuple[Index, CollidingDatabase],
) -> None:
    idx, db = index
    db.collisions, db.attempts = 10, 0
    with pytest.raises(OrthancError) as raised:
        await idx.set_property("Name", "value")
    assert raised.value.code is ErrorCode.DATABASE_CANNOT_SERIALIZE
    assert db.attempts == 4  # the first attempt and max_retries=3 replays
    db.collisions = 0
    assert await idx.get_property("Name") is None
