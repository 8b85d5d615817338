"""All-in-one wiring: every service's build() on one set of adapters, in one process.

Holds no logic of its own (STYLE.md): it opens the adapters once on one
AsyncExitStack (embedded by default: SQLite, files under StorageDirectory, the
in-process bus and clock) and hands the same instances to every service; stopping
closes the stack, services first, adapters last.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Protocol

from dicomkeep.common.ops import OpsServer, adapter_checks
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import setup_tracing
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.gateway import main as gateway
from dicomkeep.gateway.http_server import HttpServer
from dicomkeep.gateway.process_control import ProcessControl
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


class AllInOne:
    """Every service in one process, started in dependency order on one set of adapters."""

    #: The adapters opened once and shared by every service.
    NEEDS = ("index", "blobs", "bus", "clock", "public_bus")

    def __init__(self, settings: Settings, control: ProcessControl | None = None) -> None:
        """`control` is set by `/tools/reset` and `/tools/shutdown` (see run_until_signalled)."""
        self.settings = settings
        self.control = control or ProcessControl()
        self.adapters = Adapters()
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        """Open the adapters, then start indexer, storage, stability, jobs, gateway, ingest,
        and the HTTP server last.

        Each service is stopped, and each adapter closed, in reverse order by `stop`
        (or here, if a start fails).
        """
        settings = self.settings
        setup_tracing("dicomkeep")
        async with AsyncExitStack() as stack:
            if settings.dicomkeep.ops_port:
                # First, so that probes answer (not ready) while the rest starts.
                ops = OpsServer(
                    settings.dicomkeep.ops_port,
                    lambda: adapter_checks(self.adapters, ("index", "blobs", "bus", "clock")),
                    host=settings.dicomkeep.ops_host, bus=lambda: self.adapters.bus,
                )
                await _started(stack, ops)
            self.adapters = adapters = await open_adapters(
                stack, settings, needs=self.NEEDS
            )
            api = gateway.build(
                settings, index=adapters.index, blobs=adapters.blobs, bus=adapters.bus,
                control=self.control,
            )
            services: list[Service] = [
                indexer.build(
                    settings, index=adapters.index, bus=adapters.bus,
                    public_bus=adapters.public_bus,
                ),
                storage.build(settings, index=adapters.index, blobs=adapters.blobs, bus=adapters.bus),
                stability.build(settings, index=adapters.index, clock=adapters.clock, bus=adapters.bus),
                jobs.build(settings, index=adapters.index, blobs=adapters.blobs, bus=adapters.bus),
                api,
                ingest.build(settings, blobs=adapters.blobs, bus=adapters.bus, index=adapters.index),
            ]
            if settings.http_server_enabled:  # Orthanc's HttpServerEnabled: DICOM only if false
                http = HttpServer(api.app, settings, http_host(settings), settings.http_port)
                # Last: once /system answers, the DICOM port listens too (clients and
                # scripts wait for the REST API, then send over DICOM).
                services.append(http)
            for service in services:
                await _started(stack, service)
            self._stack = stack.pop_all()
        log.info(
            "DicomKeep all-in-one ready http=%d dicom=%d aet=%s",
            settings.http_port, settings.dicom_port, settings.dicom_aet,
        )

    async def stop(self) -> None:
        """Stop the services in reverse order, then close the adapters."""
        await self._stack.aclose()
        self.adapters = Adapters()


async def _started(stack: AsyncExitStack, service: Service) -> None:
    """Start a service and put its stop on the stack."""
    await service.start()
    stack.push_async_callback(service.stop)


async def run_until_signalled(make: Callable[[ProcessControl], Service]) -> None:
    """Build a service with `make` and start it; stop it on SIGINT/SIGTERM or when
    `/tools/shutdown` sets its control.

    `/tools/reset` stops it too, then builds it again with `make` (which reads the
    configuration again) and starts it: Orthanc's reset, inside the same process.
    """
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    while True:
        control = ProcessControl()
        service = make(control)
        await service.start()
        try:
            waits = {asyncio.ensure_future(signalled.wait()),
                     asyncio.ensure_future(control.requested.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        finally:
            await service.stop()
        if signalled.is_set() or not control.reset:
            return
        log.warning("restarting: the configuration is read again")
