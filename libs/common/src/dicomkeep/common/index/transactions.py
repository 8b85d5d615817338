"""The base of every part of the index: its database and the one retry policy.

Every public method of the index is one transaction run through `run`, which
replays the whole transaction when the database reports a serialization failure
(`RetryableError`), as Orthanc does with its PostgreSQL plugin. The replay lives
here, above the `Database` port, because only the index holds the transaction
body (a closure) that must run again; the drivers report, they do not replay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ports.database import Database, InvalidTextError, RetryableError, Tx
from dicomkeep.common.retries import retrying
from tenacity import AsyncRetrying

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The first wait before a replay, doubled each time up to `MAX_WAIT` (seconds).
FIRST_WAIT = 0.005
MAX_WAIT = 0.5


def serialization_retry(max_retries: int, *, first: float = FIRST_WAIT) -> AsyncRetrying:
    """Return the policy for transactions that collided: replay up to `max_retries` times.

    The project's one retry policy (dicomkeep.common.retries): waits `first` (5 ms),
    then twice as long each time, at most 0.5 s. Only `RetryableError` is replayed;
    any other error propagates at once; the last `RetryableError` is re-raised
    when the replays are exhausted.
    """
    return retrying(
        "index transaction",
        attempts=max_retries + 1,
        first=first,
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

    async def _run(
        self,
        body: Callable[[Tx], Awaitable[T]],
        *,
        readonly: bool = False,
        durable: bool = True,
        point: bool = False,
    ) -> T:
        """Run `body` in a transaction, replaying it on serialization failures.

        `durable=False` lets the commit return before it reaches the disk (see
        `Database.transaction`): only for writes that may be lost in a crash.

        `point`: a read-only body that reads a few rows by key (see
        `Database.transaction`), never a listing.

        Raises OrthancError DATABASE_CANNOT_SERIALIZE (HTTP 503, OrthancStatus 42)
        when every replay collided too, BAD_REQUEST (400) for a text the database
        cannot hold (a NUL character in a name or ID, on PostgreSQL).

        The first attempt runs without the retry policy: building tenacity's
        machinery cost ~120 us per transaction, as much as a small transaction
        itself, and almost every transaction succeeds at once. After a collision
        the policy takes over with the same schedule (5 ms, 10 ms, 20 ms...).
        """
        try:
            return await self._attempts(body, readonly=readonly, durable=durable, point=point)
        except InvalidTextError as error:
            raise OrthancError(
                ErrorCode.BAD_REQUEST, "A text with a NUL character cannot be stored or looked up"
            ) from error

    async def _attempts(
        self, body: Callable[[Tx], Awaitable[T]], *, readonly: bool, durable: bool, point: bool
    ) -> T:
        options = {"readonly": readonly, "durable": durable, "point": point}
        try:
            async with self.db.transaction(**options) as tx:
                return await body(tx)
        except RetryableError as error:
            if self.max_retries < 1:
                raise OrthancError(ErrorCode.DATABASE_CANNOT_SERIALIZE) from error
            log.warning(
                "retrying index transaction attempt=1 wait=%.2fs error=%s: %s",
                FIRST_WAIT, type(error).__name__, error,
            )
        await asyncio.sleep(FIRST_WAIT)
        try:
            async for attempt in serialization_retry(self.max_retries - 1, first=2 * FIRST_WAIT):
                with attempt:
                    async with self.db.transaction(**options) as tx:
                        return await body(tx)
        except RetryableError:
            pass
        raise OrthancError(ErrorCode.DATABASE_CANNOT_SERIALIZE)
