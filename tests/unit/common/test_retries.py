"""The one retry policy: retries what it is told to, stops in time, re-raises the last error."""

from __future__ import annotations

import pytest
from dicomkeep.common.retries import retrying, retrying_sync


class Flaky(Exception):
    pass


async def test_retries_until_success_then_returns() -> None:
    calls = []

    async def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky("not yet")
        return "done"

    async for attempt in retrying("test", attempts=5, first=0.0, on=(Flaky,)):
        with attempt:
            result = await action()
    assert result == "done" and len(calls) == 3


async def test_stops_after_the_attempts_and_raises_the_last_error() -> None:
    calls = []
    with pytest.raises(Flaky, match="3"):
        async for attempt in retrying("test", attempts=3, first=0.0, on=(Flaky,)):
            with attempt:
                calls.append(1)
                raise Flaky(str(len(calls)))
    assert len(calls) == 3


async def test_other_errors_and_refused_ones_are_raised_at_once() -> None:
    calls = []
    with pytest.raises(KeyError):
        async for attempt in retrying("test", attempts=3, first=0.0, on=(Flaky,)):
            with attempt:
                calls.append(1)
                raise KeyError("x")
    with pytest.raises(Flaky):
        async for attempt in retrying(
            "test", attempts=3, first=0.0, on=(Flaky,), when=lambda e: "again" in str(e)
        ):
            with attempt:
                calls.append(1)
                raise Flaky("refused")
    assert len(calls) == 2


async def test_within_bounds_the_time_and_sleep_is_replaceable() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with pytest.raises(Flaky):
        async for attempt in retrying("test", attempts=4, first=0.5, longest=1.0, on=(Flaky,), sleep=sleep):
            with attempt:
                raise Flaky("down")
    assert waits == [0.5, 1.0, 1.0]  # exponential from `first`, capped at `longest`


def test_the_blocking_variant_follows_the_same_policy() -> None:
    calls = []
    for attempt in retrying_sync("test", attempts=4, first=0.0, on=(FileNotFoundError,)):
        with attempt:
            calls.append(1)
            if len(calls) < 2:
                raise FileNotFoundError("raced")
    assert len(calls) == 2
