"""The stability service's composition root.

On start it enforces the storage limits (Orthanc recycles at start-up, which also
applies limits lowered in the configuration) and rebuilds the clock from the
index; then it listens to NewInstance/Deleted and runs the monitor: every `tick`
it emits what the clock finds due, every `reconcile_every` it repairs what the
clock lost (usecases.reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from dicomkeep.common.events import CHANGES_EXCHANGE
from dicomkeep.common.index import Index
from dicomkeep.common.metrics import STABILITY_BACKLOG
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.ports.clock import StabilityClock
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index, open_clock
from dicomkeep.stability.usecases import emit_due, on_change, rebuild_clock, reconcile

log = logging.getLogger(__name__)

QUEUE = "dicomkeep.stability.changes"


class StabilityService:
    """Tracks unstable resources and emits StableSeries/StableStudy/StablePatient."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        clock: StabilityClock | None,
        bus: Bus,
        *,
        owns: tuple[bool, bool, bool] = (False, False, False),
        tick: float = 0.1,
        reconcile_every: float = 1.0,
        grace: float = 1.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.clock = clock
        self.bus = bus
        self._owns = owns
        self._tick = tick
        self._reconcile_every = reconcile_every
        self._grace = grace
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open what it owns, enforce the limits, rebuild the clock, listen, monitor."""
        owns_index, owns_clock, owns_bus = self._owns
        if owns_index:
            await self.index.open()
        if owns_clock or self.clock is None:
            self.clock = await open_clock(self.settings)
        if owns_bus:
            await self.bus.start()
        recycled = await self.index.enforce_limits()
        if recycled:
            log.info("storage limits enforced at start recycled=%d", len(recycled))
        await rebuild_clock(self.index, self.clock)
        await self.bus.consume(
            QUEUE,
            [(CHANGES_EXCHANGE, "Instance.NewInstance"), (CHANGES_EXCHANGE, "*.Deleted")],
            self._on_change,
        )
        self._task = asyncio.create_task(self._monitor(), name="stability-monitor")

    async def stop(self) -> None:
        """Stop the monitor, close what it owns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        owns_index, owns_clock, owns_bus = self._owns
        if owns_bus:
            await self.bus.close()
        if owns_clock and self.clock is not None:
            await self.clock.close()
        if owns_index:
            await self.index.close()

    async def _on_change(self, body: bytes, headers: Mapping[str, str]) -> None:
        assert self.clock is not None
        await on_change(self.clock, body, headers, time.time())

    async def _monitor(self) -> None:
        assert self.clock is not None
        stable_age = float(self.settings.stable_age)
        next_reconcile = time.monotonic() + self._reconcile_every
        while True:
            try:
                await emit_due(self.index, self.clock, now=time.time(), stable_age=stable_age)
                STABILITY_BACKLOG.set(await self.clock.count())
            except Exception:
                log.exception("stability monitor failed; retrying")
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self._reconcile_every
                try:
                    await reconcile(
                        self.index, self.clock, now=time.time(), stable_age=stable_age,
                        grace=self._grace,
                    )
                except Exception:
                    log.exception("stability reconciliation failed; retrying")
            await asyncio.sleep(self._tick)


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    clock: StabilityClock | None = None,
    bus: Bus | None = None,
) -> StabilityService:
    """Build the stability service; adapters not given are chosen and owned."""
    return StabilityService(
        settings,
        index or make_index(settings),
        clock,
        bus or make_bus(settings),
        owns=(index is None, clock is None, bus is None),
    )
