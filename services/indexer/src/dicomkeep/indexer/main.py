"""The indexer's composition root: serve StoreInstance, relay the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack

from dicomkeep.common.events import STORE_QUEUE
from dicomkeep.common.index import Index
from dicomkeep.common.index.staleness import stale_limit
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, cancel, open_adapters
from dicomkeep.indexer.usecases import GroupCommit, database_identity, relay_outbox, store

log = logging.getLogger(__name__)

RELAY_LOCK = "dicomkeep-outbox-relay"
#: Events published per pass of the relay (one read of the outbox).
RELAY_BATCH = 500
#: How long the relay lets commits gather after a wake-up before reading the
#: outbox: one read and one `outbox_done` then serve every instance stored
#: meanwhile, instead of three index transactions per instance (~15% of the
#: all-in-one server's CPU at one instance per commit). Events leave this much
#: later; nothing waits for them on a request's path.
RELAY_LINGER = 0.05


class IndexerService:
    """Commits the store transactions and publishes committed changes.

    One replica at a time relays the outbox (a cluster-wide lock), so that events
    leave in Seq order; the others take over when it dies.
    """

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "bus", "public_bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        *,
        poll_interval: float = 0.2,
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`.

        `given.public_bus`, when set, also receives every change (all-in-one mirror).
        """
        self.settings = settings
        self.adapters = given or Adapters()
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._stack = AsyncExitStack()
        self.is_relay_leader = False
        self._database_id: str | None = None
        self._group: GroupCommit | None = None

    @property
    def index(self) -> Index:
        assert self.adapters.index is not None, "IndexerService is not started"
        return self.adapters.index

    @property
    def bus(self) -> Bus:
        assert self.adapters.bus is not None, "IndexerService is not started"
        return self.adapters.bus

    async def start(self) -> None:
        """Open what was not given, answer StoreInstance, start the relay.

        On failure whatever was opened is closed again before the error propagates.
        """
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            options = self.settings.dicomkeep
            max_age = stale_limit(options.orphan_grace_period)
            if max_age <= options.store_timeout:
                log.warning(
                    "OrphanGracePeriod=%s leaves %.1f s for a store command, not more than "
                    "StoreTimeout=%s: late stores are refused while senders still wait",
                    options.orphan_grace_period, max_age, options.store_timeout,
                )
            self._group = GroupCommit(self.index, max_age=max_age)
            stack.push_async_callback(self._group.close)
            await self.bus.serve(STORE_QUEUE, self._handle_store, prefetch=64)
            relay = asyncio.create_task(self._relay_loop(), name="outbox-relay")
            stack.push_async_callback(cancel, relay)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop the relay, then close what `start` opened."""
        await self._stack.aclose()

    def wake(self) -> None:
        """Ask the relay to publish now (new changes were committed)."""
        self._wake.set()

    async def _handle_store(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        assert self._group is not None, "IndexerService is not started"
        reply = await store(self._group.store, body, headers)
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
                buses = [self.bus] if self.adapters.public_bus is None else [self.bus, self.adapters.public_bus]
                # Cleared before reading: a commit during this pass wakes the next one.
                self._wake.clear()
                published = await relay_outbox(
                    self.index, buses, batch=RELAY_BATCH, database_id=self._database_id
                )
                if published < RELAY_BATCH:
                    # The outbox was drained: wait for a commit (or the poll, for
                    # another replica's) rather than read it again at once, which
                    # cost an empty read transaction per stored instance.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
                        await asyncio.sleep(RELAY_LINGER)
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
    """Build the indexer; adapters not given are chosen from the settings at start."""
    return IndexerService(settings, Adapters(index=index, bus=bus, public_bus=public_bus))
