"""The storage service's composition root: purge released blobs, collect orphans."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack

from dicomkeep.common.events import CHANGES_EXCHANGE
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, cancel, open_adapters
from dicomkeep.storage.usecases import collect_orphans, purge_released

log = logging.getLogger(__name__)

QUEUE = "dicomkeep.storage.deleted"


class StorageService:
    """Removes blobs after deletions (woken by Deleted events) and collects orphans."""

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "blobs", "bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`."""
        self.settings = settings
        self.adapters = given or Adapters()
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._stack = AsyncExitStack()

    @property
    def index(self) -> Index:
        assert self.adapters.index is not None, "StorageService is not started"
        return self.adapters.index

    @property
    def blobs(self) -> BlobStore:
        assert self.adapters.blobs is not None, "StorageService is not started"
        return self.adapters.blobs

    @property
    def bus(self) -> Bus:
        assert self.adapters.bus is not None, "StorageService is not started"
        return self.adapters.bus

    async def start(self) -> None:
        """Open what was not given, listen for deletions, start the loop."""
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            await self.bus.consume(QUEUE, [(CHANGES_EXCHANGE, "*.Deleted")], self._on_deleted)
            stack.push_async_callback(cancel, asyncio.create_task(self._loop(), name="storage-purge"))
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop the loop, close what `start` opened."""
        await self._stack.aclose()

    async def _on_deleted(self, body: bytes, headers: Mapping[str, str]) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        grace = self.settings.dicomkeep.orphan_grace_period
        sweep_every = max(grace / 2, 0.5)
        last_sweep = time.monotonic()
        while True:
            try:
                while await purge_released(self.index, self.blobs) > 0:
                    pass
                if time.monotonic() - last_sweep >= sweep_every:
                    await collect_orphans(self.index, self.blobs, grace_period=grace)
                    last_sweep = time.monotonic()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("blob purge failed; retrying")
                await asyncio.sleep(1.0)


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
) -> StorageService:
    """Build the storage service; adapters not given are chosen from the settings at start."""
    return StorageService(settings, Adapters(index=index, blobs=blobs, bus=bus))
