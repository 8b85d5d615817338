"""The stability service's composition root.

On start it enforces the storage limits (Orthanc recycles at start-up, which also
applies limits lowered in the configuration) and rebuilds the clock from the
index; then it listens to NewInstance/Deleted and runs the monitor: every `tick`
it emits what the clock finds due, every `reconcile_every` it repairs what the
clock lost (usecases.reconcile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack

from dicomkeep.common.errors import unavailability
from dicomkeep.common.events import CHANGES_EXCHANGE
from dicomkeep.common.index import Index
from dicomkeep.common.metrics import STABILITY_BACKLOG
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.ports.clock import StabilityClock
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, cancel, open_adapters
from dicomkeep.stability.usecases import emit_due, on_change, rebuild_clock, reconcile

log = logging.getLogger(__name__)

QUEUE = "dicomkeep.stability.changes"


class StabilityService:
    """Tracks unstable resources and emits StableSeries/StableStudy/StablePatient."""

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "clock", "bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        *,
        tick: float = 0.1,
        reconcile_every: float = 1.0,
        grace: float = 1.0,
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`."""
        self.settings = settings
        self.adapters = given or Adapters()
        self._tick = tick
        self._reconcile_every = reconcile_every
        self._grace = grace
        self._stack = AsyncExitStack()

    @property
    def index(self) -> Index:
        assert self.adapters.index is not None, "StabilityService is not started"
        return self.adapters.index

    @property
    def clock(self) -> StabilityClock:
        assert self.adapters.clock is not None, "StabilityService is not started"
        return self.adapters.clock

    @property
    def bus(self) -> Bus:
        assert self.adapters.bus is not None, "StabilityService is not started"
        return self.adapters.bus

    async def start(self) -> None:
        """Open what was not given, enforce the limits, rebuild the clock, listen, monitor."""
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            recycled = await self.index.enforce_limits()
            if recycled:
                log.info("storage limits enforced at start recycled=%d", len(recycled))
            await rebuild_clock(self.index, self.clock)
            await self.bus.consume(
                QUEUE,
                [(CHANGES_EXCHANGE, "Instance.NewInstance"), (CHANGES_EXCHANGE, "*.Deleted")],
                self._on_change,
            )
            monitor = asyncio.create_task(self._monitor(), name="stability-monitor")
            stack.push_async_callback(cancel, monitor)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop the monitor, close what `start` opened."""
        await self._stack.aclose()

    async def _on_change(self, body: bytes, headers: Mapping[str, str]) -> None:
        await on_change(self.clock, body, headers, time.time())

    async def _monitor(self) -> None:
        stable_age = float(self.settings.stable_age)
        next_reconcile = time.monotonic() + self._reconcile_every
        while True:
            try:
                await emit_due(self.index, self.clock, now=time.time(), stable_age=stable_age)
                STABILITY_BACKLOG.set(await self.clock.count())
            except Exception as exc:
                _report("stability monitor failed; retrying", exc)
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self._reconcile_every
                try:
                    await reconcile(
                        self.index, self.clock, now=time.time(), stable_age=stable_age,
                        grace=self._grace,
                    )
                except Exception as exc:
                    _report("stability reconciliation failed; retrying", exc)
            await asyncio.sleep(self._tick)


def _report(what: str, exc: Exception) -> None:
    """Log a failed round: one warning line when a backend is unreachable (an
    outage is expected and the next round retries), a traceback otherwise."""
    unavailable = unavailability(exc)
    if unavailable is not None:
        log.warning("%s error=%s", what, unavailable.details)
    else:
        log.error(what, exc_info=exc)


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    clock: StabilityClock | None = None,
    bus: Bus | None = None,
) -> StabilityService:
    """Build the stability service; adapters not given are chosen from the settings at start."""
    return StabilityService(settings, Adapters(index=index, clock=clock, bus=bus))
