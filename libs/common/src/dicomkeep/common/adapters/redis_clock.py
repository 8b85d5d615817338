"""RedisClock: the distributed StabilityClock, one Redis sorted set for the cluster."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Self

from dicomkeep.common.ids import Level
from redis.asyncio import Redis
from redis.exceptions import RedisError

# Pop atomically: Redis runs a script alone, so two replicas never get the same
# member. ZREM goes in chunks to stay within Lua's unpack() stack limit.
_POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for i = 1, #due, 1000 do
    redis.call('ZREM', KEYS[1], unpack(due, i, math.min(i + 999, #due)))
end
return due
"""


def _member(level: Level, public_id: str) -> str:
    return f"{level.value}:{public_id}"


def _resource(member: str) -> tuple[Level, str]:
    level, _, public_id = member.partition(":")
    return Level(level), public_id


@contextmanager
def _translating() -> Iterator[None]:
    try:
        yield
    except RedisError as error:
        raise OSError(f"Redis: {error}") from error


class RedisClock:
    """Unstable resources in a Redis sorted set shared by every replica.

    - Members are `"<Level>:<public_id>"` (`"Study:b9c08539-..."`), scores the UNIX
      time of the last touch.
    - `touch` is a plain ZADD: the latest touch wins, even with an earlier `at`
      (not ZADD GT), so the set always holds what the last writer saw.
    - `pop_due` is exactly once across replicas: a Lua script selects the due
      members (oldest first) and removes them in one atomic step.
    - Redis may lose the set (restart without persistence): `count()` lets the
      stability service notice an empty clock and rebuild it from the index.
    - Redis failures raise OSError.
    """

    def __init__(self, url: str, *, key: str = "dicomkeep:unstable") -> None:
        self.key = key
        self._redis: Redis = Redis.from_url(url, decode_responses=True)
        self._pop_due = self._redis.register_script(_POP_DUE)

    async def open(self) -> None:
        """Check that Redis answers (PING); raise OSError if not."""
        with _translating():
            await self._redis.ping()

    async def touch(self, resources: Sequence[tuple[Level, str]], at: float) -> None:
        """Mark resources unstable as of `at` (UNIX seconds), moving their deadline."""
        if not resources:
            return
        mapping = {_member(level, public_id): at for level, public_id in resources}
        with _translating():
            await self._redis.zadd(self.key, mapping)

    async def pop_due(self, not_after: float, limit: int = 100) -> list[tuple[Level, str]]:
        """Remove and return up to `limit` resources touched at or before `not_after`.

        Oldest first. Exactly once: each resource goes to one caller, whichever
        replica it runs in.
        """
        if limit <= 0:
            return []
        with _translating():
            members = await self._pop_due(keys=[self.key], args=[repr(float(not_after)), limit])
        return [_resource(member) for member in members]

    async def is_unstable(self, level: Level, public_id: str) -> bool:
        """Tell whether the resource is waiting to become stable."""
        with _translating():
            score = await self._redis.zscore(self.key, _member(level, public_id))
        return score is not None

    async def forget(self, resources: Sequence[tuple[Level, str]]) -> None:
        """Drop resources (deleted ones) without making them stable; idempotent."""
        if not resources:
            return
        members = [_member(level, public_id) for level, public_id in resources]
        with _translating():
            await self._redis.zrem(self.key, *members)

    async def count(self) -> int:
        """Return how many resources are waiting to become stable."""
        with _translating():
            return int(await self._redis.zcard(self.key))

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: open it; `async with` closes it on exit."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
