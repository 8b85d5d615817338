"""The storage service's composition root: purge released blobs, collect orphans."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from dicomkeep.common.events import CHANGES_EXCHANGE
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index, open_blobs
from dicomkeep.storage.usecases import collect_orphans, purge_released

log = logging.getLogger(__name__)

QUEUE = "dicomkeep.storage.deleted"


class StorageService:
    """Removes blobs after deletions (woken by Deleted events) and collects orphans."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        blobs: BlobStore | None,
        bus: Bus,
        *,
        owns: tuple[bool, bool, bool] = (False, False, False),
        poll_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.bus = bus
        self._owns = owns
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open what it owns, listen for deletions, start the loop."""
        owns_index, owns_blobs, owns_bus = self._owns
        if owns_index:
            await self.index.open()
        if owns_blobs or self.blobs is None:
            self.blobs = await open_blobs(self.settings)
        if owns_bus:
            await self.bus.start()
        await self.bus.consume(QUEUE, [(CHANGES_EXCHANGE, "*.Deleted")], self._on_deleted)
        self._task = asyncio.create_task(self._loop(), name="storage-purge")

    async def stop(self) -> None:
        """Stop the loop, close what it owns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        owns_index, owns_blobs, owns_bus = self._owns
        if owns_bus:
            await self.bus.close()
        if owns_blobs and self.blobs is not None:
            await self.blobs.close()
        if owns_index:
            await self.index.close()

    async def _on_deleted(self, body: bytes, headers: Mapping[str, str]) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        grace = self.settings.dicomkeep.orphan_grace_period
        sweep_every = max(grace / 2, 0.5)
        last_sweep = time.monotonic()
        assert self.blobs is not None
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
    """Build the storage service; adapters not given are chosen and owned."""
    return StorageService(
        settings,
        index or make_index(settings),
        blobs,
        bus or make_bus(settings),
        owns=(index is None, blobs is None, bus is None),
    )
