"""The process runner behind `dicomkeep serve` and `dicomkeep run`: /tools/reset builds
the services again (configuration read again), /tools/shutdown stops them."""

from __future__ import annotations

import asyncio

from dicomkeep.allinone.app import run_until_signalled
from dicomkeep.gateway.process_control import ProcessControl


class FakeService:
    def __init__(self, log: list[str], control: ProcessControl, act: str) -> None:
        self.log, self.control, self.act = log, control, act

    async def start(self) -> None:
        self.log.append("start")
        loop = asyncio.get_running_loop()
        if self.act == "reset":
            loop.call_soon(self.control.request_reset)
        else:
            loop.call_soon(self.control.request_shutdown)

    async def stop(self) -> None:
        self.log.append("stop")


async def test_reset_restarts_then_shutdown_stops() -> None:
    log: list[str] = []
    acts = iter(["reset", "reset", "shutdown"])
    built: list[ProcessControl] = []

    def make(control: ProcessControl) -> FakeService:
        built.append(control)
        return FakeService(log, control, next(acts))

    await asyncio.wait_for(run_until_signalled(make), 10)
    assert log == ["start", "stop"] * 3
    assert len({id(control) for control in built}) == 3  # a fresh control per start
