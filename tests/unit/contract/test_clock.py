"""Contract suite of the StabilityClock port: every adapter passes the same cases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from backends import REDIS_URL
from dicomkeep.common.adapters.memory_clock import MemoryClock
from dicomkeep.common.adapters.redis_clock import RedisClock
from dicomkeep.common.ids import Level
from dicomkeep.common.ports.clock import StabilityClock

T0 = 1_700_000_000.0

#: Makes another handle on the same clock state: a replica for Redis, the same
#: object for memory (a replica cannot share a process's memory).
ReplicaFactory = Callable[[], MemoryClock | RedisClock]


def _id(n: int) -> str:
    return f"{n:08x}-00000000-00000000-00000000-00000000"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def clocks(request: pytest.FixtureRequest) -> AsyncIterator[ReplicaFactory]:
    opened: list[MemoryClock | RedisClock] = []
    key = f"dicomkeep:test:unstable:{uuid.uuid4().hex}"
    memory = MemoryClock()

    def replica() -> MemoryClock | RedisClock:
        if request.param == "memory":
            return memory
        clock = RedisClock(REDIS_URL, key=key)
        opened.append(clock)
        return clock

    if request.param == "redis":
        first = replica()
        assert isinstance(first, RedisClock)
        await first.open()
    yield replica
    if opened:
        # Redis deletes a sorted set when its last member goes: popping all deletes the key.
        await opened[0].pop_due(float("inf"), limit=1_000_000)
        assert await opened[0].count() == 0
    for clock in opened:
        await clock.close()


@pytest.fixture
def clock(clocks: ReplicaFactory) -> StabilityClock:
    made: StabilityClock = clocks()
    return made


async def test_pop_due_respects_not_after(clock: StabilityClock) -> None:
    study, series = (Level.STUDY, _id(1)), (Level.SERIES, _id(2))
    await clock.touch([study], T0)
    await clock.touch([series], T0 + 10)
    assert await clock.pop_due(T0 - 1) == []
    assert await clock.pop_due(T0) == [study]  # "at or before"
    assert await clock.pop_due(T0 + 9.5) == []
    assert await clock.pop_due(T0 + 100) == [series]
    assert await clock.pop_due(T0 + 100) == []


async def test_pop_due_returns_oldest_first_within_limit(clock: StabilityClock) -> None:
    resources = [(Level.PATIENT, _id(n)) for n in range(10)]
    for n, resource in enumerate(reversed(resources)):
        await clock.touch([resource], T0 + n)
    first = await clock.pop_due(T0 + 100, limit=3)
    assert first == list(reversed(resources))[:3]
    rest = await clock.pop_due(T0 + 100, limit=100)
    assert rest == list(reversed(resources))[3:]
    assert await clock.pop_due(T0 + 100, limit=0) == []


async def test_retouch_moves_the_deadline(clock: StabilityClock) -> None:
    study = (Level.STUDY, _id(1))
    await clock.touch([study], T0)
    await clock.touch([study], T0 + 60)
    assert await clock.pop_due(T0 + 30) == []
    assert await clock.is_unstable(*study)
    assert await clock.pop_due(T0 + 60) == [study]
    assert not await clock.is_unstable(*study)


async def test_latest_touch_wins_even_when_earlier(clock: StabilityClock) -> None:
    study = (Level.STUDY, _id(1))
    await clock.touch([study], T0 + 60)
    await clock.touch([study], T0)
    assert await clock.pop_due(T0 + 1) == [study]


async def test_touch_after_pop_makes_it_unstable_again(clock: StabilityClock) -> None:
    series = (Level.SERIES, _id(7))
    await clock.touch([series], T0)
    assert await clock.pop_due(T0) == [series]
    await clock.touch([series], T0)
    assert await clock.is_unstable(*series)
    assert await clock.pop_due(T0) == [series]


async def test_levels_are_distinct_resources(clock: StabilityClock) -> None:
    same_id = _id(3)
    await clock.touch([(Level.PATIENT, same_id), (Level.STUDY, same_id)], T0)
    assert await clock.is_unstable(Level.PATIENT, same_id)
    assert not await clock.is_unstable(Level.SERIES, same_id)
    popped = await clock.pop_due(T0)
    assert sorted(popped) == sorted([(Level.PATIENT, same_id), (Level.STUDY, same_id)])
    assert all(isinstance(level, Level) for level, _ in popped)


async def test_forget_drops_without_popping(clock: StabilityClock) -> None:
    kept, dropped = (Level.STUDY, _id(1)), (Level.STUDY, _id(2))
    await clock.touch([kept, dropped], T0)
    await clock.forget([dropped])
    await clock.forget([dropped, (Level.SERIES, _id(99))])  # idempotent
    await clock.forget([])
    assert not await clock.is_unstable(*dropped)
    assert await clock.pop_due(T0 + 1) == [kept]


async def test_is_unstable_and_count(clock: StabilityClock) -> None:
    assert isinstance(clock, MemoryClock | RedisClock)
    assert await clock.count() == 0
    assert not await clock.is_unstable(Level.STUDY, _id(1))
    await clock.touch([(Level.STUDY, _id(1)), (Level.SERIES, _id(2))], T0)
    await clock.touch([], T0)
    assert await clock.is_unstable(Level.STUDY, _id(1))
    assert await clock.count() == 2
    await clock.pop_due(T0, limit=1)
    assert await clock.count() == 1


async def test_concurrent_poppers_get_each_resource_exactly_once(
    clocks: ReplicaFactory,
) -> None:
    writer = clocks()
    levels = list(Level)
    resources = [(levels[n % 4], _id(n)) for n in range(1000)]
    for start in range(0, 1000, 100):
        await writer.touch(resources[start : start + 100], T0 + start)

    async def popper(replica: StabilityClock) -> list[tuple[Level, str]]:
        mine: list[tuple[Level, str]] = []
        while batch := await replica.pop_due(T0 + 10_000, limit=7):
            mine.extend(batch)
            await asyncio.sleep(0)  # let the other poppers interleave
        return mine

    results = await asyncio.gather(*(popper(clocks()) for _ in range(8)))
    popped = [resource for result in results for resource in result]
    assert len(popped) == len(resources)
    assert set(popped) == set(resources)
    assert await writer.count() == 0


async def test_not_after_at_infinity_pops_everything(clock: StabilityClock) -> None:
    await clock.touch([(Level.INSTANCE, _id(n)) for n in range(5)], T0)
    assert len(await clock.pop_due(float("inf"))) == 5
