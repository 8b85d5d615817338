"""All-in-one wiring: every service's build() on one set of adapters, in one process.

Holds no logic of its own (STYLE.md): it picks the adapters once (embedded by
default: SQLite, files under StorageDirectory, the in-process bus and clock) and
hands the same instances to every service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import uvicorn
from dicomkeep.common.ops import OpsServer, adapter_checks
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import setup_tracing
from dicomkeep.common.wiring import (
    is_distributed,
    make_bus,
    make_index,
    make_public_bus,
    open_blobs,
    open_clock,
)
from dicomkeep.gateway import main as gateway
from dicomkeep.indexer import main as indexer
from dicomkeep.ingest import main as ingest
from dicomkeep.jobs import main as jobs
from dicomkeep.stability import main as stability
from dicomkeep.storage import main as storage

log = logging.getLogger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def http_host(settings: Settings) -> str:
    """Listen on every interface only when remote access is allowed (as Orthanc)."""
    return "0.0.0.0" if settings.remote_access_allowed else "127.0.0.1"


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's handler stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn inside the caller's event loop (no signal handlers of its own)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_level="warning",
            access_log=False, timeout_keep_alive=1,
        )
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="http")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


class AllInOne:
    """Every service in one process, started in dependency order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: list[Service] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        """Open the adapters, then start indexer, storage, stability, gateway, ingest."""
        settings = self.settings
        setup_tracing("dicomkeep")
        index = make_index(settings)
        await index.open()
        self._closers.append(index.close)
        blobs = await open_blobs(settings)
        self._closers.append(blobs.close)
        bus = make_bus(settings)
        await bus.start()
        self._closers.append(bus.close)
        public_bus = None
        if settings.rabbitmq.publish_changes and not is_distributed(settings):
            public_bus = make_public_bus(settings)
            await public_bus.start()
            self._closers.append(public_bus.close)
        clock = await open_clock(settings)
        self._closers.append(clock.close)
        api = gateway.build(settings, index=index, blobs=blobs, bus=bus, clock=clock)
        self.services = [
            indexer.build(settings, index=index, bus=bus, public_bus=public_bus),
            storage.build(settings, index=index, blobs=blobs, bus=bus),
            stability.build(settings, index=index, clock=clock, bus=bus),
            jobs.build(settings, index=index, blobs=blobs, bus=bus),
            api,
            HttpServer(api.app, http_host(settings), settings.http_port),
            ingest.build(settings, blobs=blobs, bus=bus, index=index),
        ]
        if settings.dicomkeep.ops_port:
            checks = adapter_checks(index=index, blobs=blobs, bus=bus, clock=clock)
            self.services.append(
                OpsServer(settings.dicomkeep.ops_port, lambda: checks, host="0.0.0.0")
            )
        started: list[Service] = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
        except BaseException:
            self.services = started
            await self.stop()
            raise
        log.info(
            "DicomKeep all-in-one ready http=%d dicom=%d aet=%s",
            settings.http_port, settings.dicom_port, settings.dicom_aet,
        )

    async def stop(self) -> None:
        """Stop the services in reverse order, then close the adapters."""
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("error while stopping %s", type(service).__name__)
        self.services = []
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()
        self._closers = []


async def run_until_signalled(service: Service) -> None:
    """Start a service, wait for SIGINT/SIGTERM, stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
