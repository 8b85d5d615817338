"""The base of every part of the index: its database and the one retry policy.

Every public method of the index is one transaction run through `run`, which
replays the whole transaction when the database reports a serialization failure
(`RetryableError`), as Orthanc does with its PostgreSQL plugin. The replay lives
here, above the `Database` port, because only the index holds the transaction
body (a closure) that must run again; the drivers report, they do not replay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ports.database import Database, InvalidTextError, RetryableError, Tx
from dicomkeep.common.retries import retrying
from tenacity import AsyncRetrying

T = TypeVar("T")

#: The first wait before a replay, doubled each time up to `MAX_WAIT` (seconds).
FIRST_WAIT = 0.005
MAX_WAIT = 0.5


def serialization_retry(max_retries: int) -> AsyncRetrying:
    """Return the policy for transactions that collided: replay up to `max_retries` times.

    The project's one retry policy (dicomkeep.common.retries): waits 5 ms, then
    twice as long each time, at most 0.5 s. Only `RetryableError` is replayed;
    any other error propagates at once; the last `RetryableError` is re-raised
    when the replays are exhausted.
    """
    return retrying(
        "index transaction",
        attempts=max_retries + 1,
        first=FIRST_WAIT,
        longest=MAX_WAIT,
        on=(RetryableError,),
    )


class Transactions:
    """A database and the retrying transaction runner shared by the index's parts."""

    def __init__(self, db: Database, *, max_retries: int = 10) -> None:
        self.db = db
        self.max_retries = max_retries

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgres"."""
        return self.db.dialect

    @property
    def for_update(self) -> str:
        """Row-locking suffix of SELECTs (SQLite has one writer and needs none)."""
        return " FOR UPDATE" if self.db.dialect == "postgres" else ""

    async def _run(self, body: Callable[[Tx], Awaitable[T]], *, readonly: bool = False) -> T:
        """Run `body` in a transaction, replaying it on serialization failures.

        Raises OrthancError DATABASE_CANNOT_SERIALIZE (HTTP 503, OrthancStatus 42)
        when every replay collided too, BAD_REQUEST (400) for a text the database
        cannot hold (a NUL character in a name or ID, on PostgreSQL).
        """
        try:
            async for attempt in serialization_retry(self.max_retries):
                with attempt:
                    async with self.db.transaction(readonly=readonly) as tx:
                        return await body(tx)
        except RetryableError:
            pass
        except InvalidTextError as error:
            raise OrthancError(
                ErrorCode.BAD_REQUEST, "A text with a NUL character cannot be stored or looked up"
            ) from error
        raise OrthancError(ErrorCode.DATABASE_CANNOT_SERIALIZE)
