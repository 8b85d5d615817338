"""The indexer's composition root: serve StoreInstance, relay the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from dicomkeep.common.events import STORE_QUEUE
from dicomkeep.common.index import Index
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index
from dicomkeep.indexer.usecases import database_identity, relay_outbox, store

log = logging.getLogger(__name__)

RELAY_LOCK = "dicomkeep-outbox-relay"


class IndexerService:
    """Commits the store transactions and publishes committed changes.

    One replica at a time relays the outbox (a cluster-wide lock), so that events
    leave in Seq order; the others take over when it dies.
    """

    def __init__(
        self,
        settings: Settings,
        index: Index,
        bus: Bus,
        *,
        owns: tuple[bool, bool] = (False, False),
        poll_interval: float = 0.2,
        public_bus: Bus | None = None,
    ) -> None:
        """`public_bus`, when given, also receives every change (all-in-one mirror)."""
        self.settings = settings
        self.index = index
        self.bus = bus
        self._owns_index, self._owns_bus = owns
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._buses = [bus] if public_bus is None else [bus, public_bus]
        self.is_relay_leader = False
        self._database_id: str | None = None

    async def start(self) -> None:
        """Open what it owns, answer StoreInstance, start the relay."""
        if self._owns_index:
            await self.index.open()
        if self._owns_bus:
            await self.bus.start()
        await self.bus.serve(STORE_QUEUE, self._handle_store, prefetch=64)
        self._relay_task = asyncio.create_task(self._relay_loop(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the relay, then close what it owns."""
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        if self._owns_bus:
            await self.bus.close()
        if self._owns_index:
            await self.index.close()

    def wake(self) -> None:
        """Ask the relay to publish now (new changes were committed)."""
        self._wake.set()

    async def _handle_store(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        reply = await store(self.index, body)
        self.wake()
        return reply

    async def _relay_loop(self) -> None:
        while True:
            try:
                # Confirmed before every batch: a database restart drops the lock,
                # and two relays at once would publish out of Seq order.
                was_leader = self.is_relay_leader
                self.is_relay_leader = await self.index.try_lock(RELAY_LOCK)
                if not self.is_relay_leader:
                    if was_leader:
                        log.warning("outbox relay leadership lost")
                    await asyncio.sleep(2.0)
                    continue
                if not was_leader:
                    log.info("outbox relay leadership taken")
                    self._database_id = await database_identity(self.index)
                published = await relay_outbox(
                    self.index, self._buses, database_id=self._database_id
                )
                if published == 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1.0)


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    bus: Bus | None = None,
    public_bus: Bus | None = None,
) -> IndexerService:
    """Build the indexer; adapters not given are chosen from the settings and owned."""
    return IndexerService(
        settings,
        index or make_index(settings),
        bus or make_bus(settings),
        owns=(index is None, bus is None),
        public_bus=public_bus,
    )
