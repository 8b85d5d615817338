"""The gateway's composition root: build(settings) -> GatewayService, and serve().

`build` picks the adapters the settings ask for unless they are given (tests and
the all-in-one root pass theirs); `start` opens the others on one AsyncExitStack
(`wiring.open_adapters`) and `stop` closes that stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack

from dicomkeep.common.dicom.receiving import Receiver, bus_submitter
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.gateway.app import attach_context, create_app
from dicomkeep.gateway.context import GatewayContext
from dicomkeep.gateway.http_server import HttpServer
from dicomkeep.gateway.process_control import ProcessControl
from fastapi import FastAPI

log = logging.getLogger(__name__)


class GatewayService:
    """The REST API and the adapters behind it (the gateway needs no stability clock).

    `app` exists from construction (it answers 503 until `start()` attached the
    context), so an HTTP server can be set up before the service starts.
    """

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "blobs", "bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        control: ProcessControl | None = None,
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`.

        `control` is what `/tools/reset` and `/tools/shutdown` set: the process's
        runner watches it (a new one is made when none is given).
        """
        self.settings = settings
        self.adapters = given or Adapters()
        self.context: GatewayContext | None = None
        self.control = control or ProcessControl()
        self.app: FastAPI = create_app(settings=settings)
        self.app.state.control = self.control
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        """Open the adapters not given to `build`, then attach the context to the app.

        On failure, whatever was opened is closed again before re-raising.
        """
        settings = self.settings
        async with AsyncExitStack() as stack:
            adapters = await open_adapters(
                stack, settings, self.adapters, needs=self.NEEDS
            )
            assert adapters.index and adapters.blobs and adapters.bus
            receiver = Receiver(
                adapters.blobs,
                bus_submitter(adapters.bus, settings.dicomkeep.store_timeout),
                compression=settings.storage_compression,
                overwrite=settings.overwrite_instances,
            )
            self.adapters = adapters
            self.context = GatewayContext(
                settings, adapters.index, adapters.blobs, adapters.bus, receiver
            )
            attach_context(self.app, self.context)
            stack.callback(self._detach)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Detach the context (routes answer 503), then close what `start` opened."""
        await self._stack.aclose()

    def _detach(self) -> None:
        attach_context(self.app, None)
        self.context = None


def build(
    settings: Settings,
    *,
    index: Index | None = None,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
    control: ProcessControl | None = None,
) -> GatewayService:
    """Build the gateway; adapters not given are chosen from the settings at start."""
    return GatewayService(settings, Adapters(index=index, blobs=blobs, bus=bus), control)


def http_host(settings: Settings) -> str:
    """Listen on every interface only when remote access is allowed (as Orthanc)."""
    return "0.0.0.0" if settings.remote_access_allowed else "127.0.0.1"


async def serve(
    service: GatewayService,
    host: str | None = None,
    port: int | None = None,
    *,
    sock: socket.socket | None = None,
) -> None:
    """Serve `service.app` with uvicorn in the running loop until cancelled.

    Host defaults to `http_host(settings)`, port to `HttpPort`; a bound `sock`
    overrides both. The server follows the HTTP options (`http_server.py`: TLS,
    keep-alive). Cancelling the caller's task shuts the server down gracefully
    (open connections finish) before the cancellation propagates. Raises OSError
    when the address cannot be bound, ConfigError for an unusable certificate.
    """
    settings = service.settings
    host = host or http_host(settings)
    port = settings.http_port if port is None else port
    server = HttpServer(service.app, settings, host, port)
    if sock is None:
        sock = socket.create_server((host, port), family=_family(host))
    # Inherited by accepted sockets on Linux; asyncio skips it for proto-0 sockets
    # and answers would wait ~40 ms for delayed ACKs (see common.ops.AsgiServer).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    task = asyncio.ensure_future(server.server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.server.should_exit = True
        await task
        raise
    finally:
        sock.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def run(settings: Settings, reload: Callable[[], Settings] | None = None) -> None:
    """Run the gateway alone until cancelled or `/tools/shutdown`: start, serve, stop.

    `/tools/reset` stops it and starts it again on `reload()`'s settings (the
    configuration read again; the same settings without `reload`).
    """
    while True:
        service = build(settings)
        await service.start()
        try:
            serving = asyncio.ensure_future(serve(service))
            requested = asyncio.ensure_future(service.control.requested.wait())
            try:
                await asyncio.wait({serving, requested}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                requested.cancel()
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
        finally:
            await service.stop()
        if not service.control.reset:
            return
        settings = reload() if reload is not None else settings
