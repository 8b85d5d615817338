"""One lifecycle: open_adapters opens what is needed and not given, on the caller's stack."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.memory_clock import MemoryClock
from dicomkeep.common.ids import Level
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.indexer.main import IndexerService


def settings(tmp_path: Path) -> Settings:
    return Settings(storage_directory=str(tmp_path / "storage"))


async def test_opens_what_is_needed_and_closes_it_with_the_stack(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        adapters = await open_adapters(
            stack, settings(tmp_path), needs=("index", "blobs", "bus", "clock")
        )
        assert adapters.index and adapters.blobs and adapters.bus and adapters.clock
        assert adapters.public_bus is None  # only with RabbitMQ.PublishChanges, all-in-one
        assert await adapters.index.get_changes(0, 10) is not None
        await adapters.bus.publish("x", "y", b"", {})
        index, bus = adapters.index, adapters.bus
    with pytest.raises(Exception):  # noqa: B017 - closed: any driver error will do
        await index.get_changes(0, 10)
    with pytest.raises(Exception):  # noqa: B017
        await bus.publish("x", "y", b"", {})


async def test_given_adapters_are_used_and_left_open(tmp_path: Path) -> None:
    async with LocalBus() as bus:
        clock = MemoryClock()
        async with AsyncExitStack() as stack:
            adapters = await open_adapters(
                stack, settings(tmp_path), Adapters(bus=bus, clock=clock), needs=("bus", "clock")
            )
            assert adapters.bus is bus and adapters.clock is clock and adapters.index is None
        await bus.publish("x", "y", b"", {})  # still open
        await clock.touch([(Level.STUDY, "s")], 1.0)


async def test_unknown_needs_are_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        with pytest.raises(ValueError, match="database"):
            await open_adapters(stack, settings(tmp_path), needs=("database",))


async def test_a_service_closes_what_it_opened_and_keeps_what_it_was_given(tmp_path: Path) -> None:
    async with LocalBus() as bus:
        service = IndexerService(settings(tmp_path), Adapters(bus=bus))
        await service.start()
        index = service.index
        assert await index.get_changes(0, 10) is not None
        await service.stop()
        with pytest.raises(Exception):  # noqa: B017 - the index it opened is closed
            await index.get_changes(0, 10)
        await bus.publish("x", "y", b"", {})  # the given bus is not
