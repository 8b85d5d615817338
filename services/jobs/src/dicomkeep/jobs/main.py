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
from contextlib import AsyncExitStack

from dicomkeep.common.dicom.receiving import Receiver, bus_submitter
from dicomkeep.common.events import JOBS_QUEUE
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.jobs.usecases import Deps
from dicomkeep.jobs.worker import LEASE_SECONDS, JobWorkers

log = logging.getLogger(__name__)


def concurrency(settings: Settings) -> int:
    """Return the number of workers: `ConcurrentJobs`, 0 meaning one per CPU core."""
    return settings.concurrent_jobs or os.cpu_count() or 1


class JobsService:
    """Runs the queued jobs (store to modality or peer, C-MOVE SCU)."""

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "blobs", "bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        *,
        lease: float = LEASE_SECONDS,
        poll: float = 1.0,
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`."""
        self.settings = settings
        self.adapters = given or Adapters()
        self._lease = lease
        self._poll = poll
        self._stack = AsyncExitStack()
        self.workers: JobWorkers | None = None

    @property
    def index(self) -> Index:
        assert self.adapters.index is not None, "JobsService is not started"
        return self.adapters.index

    @property
    def blobs(self) -> BlobStore:
        assert self.adapters.blobs is not None, "JobsService is not started"
        return self.adapters.blobs

    @property
    def bus(self) -> Bus:
        assert self.adapters.bus is not None, "JobsService is not started"
        return self.adapters.bus

    async def start(self) -> None:
        """Open what was not given, listen for RunJob, start the workers."""
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            workers = JobWorkers(
                self.index.jobs,
                Deps(self.settings, self.index, self.blobs, self._receiver(self.blobs)),
                concurrency=concurrency(self.settings),
                history_size=self.settings.jobs_history_size,
                lease=self._lease,
                poll=self._poll,
            )
            await self.bus.consume(JOBS_QUEUE, [], self._on_run_job, prefetch=16)
            self.workers = workers
            workers.start()
            stack.push_async_callback(self._stop_workers)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop the workers (running jobs go back to the queue), close what `start` opened."""
        await self._stack.aclose()

    async def _stop_workers(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None

    def _receiver(self, blobs: BlobStore) -> Receiver:
        """The store flow of modified copies: the indexer over the bus, as the gateway."""
        return Receiver(
            blobs,
            bus_submitter(self.bus, self.settings.dicomkeep.store_timeout),
            compression=self.settings.storage_compression,
            overwrite=self.settings.overwrite_instances,
        )

    async def _on_run_job(self, body: bytes, headers: Mapping[str, str]) -> None:
        if self.workers is not None:
            self.workers.wake()

def build(
    settings: Settings,
    *,
    index: Index | None = None,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
) -> JobsService:
    """Build the jobs service; adapters not given are chosen from the settings at start."""
    return JobsService(settings, Adapters(index=index, blobs=blobs, bus=bus))
