"""The jobs service's composition root: `ConcurrentJobs` workers on the shared index.

`build(settings, *, index=None, blobs=None, bus=None)` picks the adapters the
settings ask for unless given (the all-in-one root passes its own) and owns only
what it created. Any number of jobs processes may run: they share the work
through the index (ORTHANC_API.md §10, ARCHITECTURE.md "jobs").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from dicomkeep.common.events import JOBS_QUEUE
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index, open_blobs
from dicomkeep.jobs.usecases import Deps
from dicomkeep.jobs.worker import LEASE_SECONDS, JobWorkers

log = logging.getLogger(__name__)


def concurrency(settings: Settings) -> int:
    """Return the number of workers: `ConcurrentJobs`, 0 meaning one per CPU core."""
    return settings.concurrent_jobs or os.cpu_count() or 1


class JobsService:
    """Runs the queued jobs (store to modality or peer, C-MOVE SCU)."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        blobs: BlobStore | None,
        bus: Bus,
        *,
        owns: tuple[bool, bool, bool] = (False, False, False),
        lease: float = LEASE_SECONDS,
        poll: float = 1.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.bus = bus
        self._owns = owns
        self._lease = lease
        self._poll = poll
        self.workers: JobWorkers | None = None

    async def start(self) -> None:
        """Open what it owns, listen for RunJob, start the workers."""
        owns_index, owns_blobs, owns_bus = self._owns
        if owns_index:
            await self.index.open()
        if owns_blobs or self.blobs is None:
            self.blobs = await open_blobs(self.settings)
        if owns_bus:
            await self.bus.start()
        self.workers = JobWorkers(
            self.index.jobs,
            Deps(self.settings, self.index, self.blobs),
            concurrency=concurrency(self.settings),
            history_size=self.settings.jobs_history_size,
            lease=self._lease,
            poll=self._poll,
        )
        await self.bus.consume(JOBS_QUEUE, [], self._on_run_job, prefetch=16)
        self.workers.start()

    async def _on_run_job(self, body: bytes, headers: Mapping[str, str]) -> None:
        if self.workers is not None:
            self.workers.wake()

    async def stop(self) -> None:
        """Stop the workers (running jobs go back to the queue), close what it owns."""
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        owns_index, owns_blobs, owns_bus = self._owns
        if owns_bus:
            await self.bus.close()
        if owns_blobs and self.blobs is not None:
            await self.blobs.close()
        if owns_index:
            await self.index.close()


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
) -> JobsService:
    """Build the jobs service; adapters not given are chosen from the settings and owned."""
    return JobsService(
        settings,
        index or make_index(settings),
        blobs,
        bus or make_bus(settings),
        owns=(index is None, blobs is None, bus is None),
    )
