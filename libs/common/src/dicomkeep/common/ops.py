"""The ops port of a service: `/livez` (`/healthz`), `/readyz` and `/metrics`.

A small Starlette app on uvicorn, in the service's own event loop, so that every
service (not only the gateway) answers orchestrators' probes and Prometheus.
It listens on `DicomKeep.OpsHost` (127.0.0.1 unless configured) and
`DicomKeep.OpsPort`. `/metrics` samples the depth of the queues the service's
bus consumes at each scrape (one cheap broker query per queue).

Readiness checks what the service needs, one cheap real call per adapter
(a database read, a blob lookup, a broker publish with confirm, a clock count):
an adapter the service needs but has not opened yet makes it not ready, so a
process is never "ready" before it can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import uvicorn
from dicomkeep.common.metrics import record_queue_depths
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.wiring import Adapters
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]

#: Readiness probes publish here (an exchange nobody consumes).
OPS_EXCHANGE = "dicomkeep.ops"
#: What each adapter's check calls.
ADAPTERS = ("index", "blobs", "bus", "clock")


def adapter_checks(adapters: Adapters, needs: Iterable[str]) -> dict[str, Check]:
    """Return the readiness check of each adapter named in `needs`: one cheap call each.

    A needed adapter that is not opened yet (None) gets a check that fails.
    """
    checks: dict[str, Check] = {}
    for name in needs:
        adapter = getattr(adapters, name)
        if adapter is None:
            checks[name] = _not_opened(name)
        elif name == "index":
            checks[name] = _calling(adapter.get_property, "readyz")
        elif name == "blobs":
            checks[name] = _calling(adapter.exists, "readyz")
        elif name == "bus":
            checks[name] = _calling(adapter.publish, OPS_EXCHANGE, "readyz", b"", {})
        elif name == "clock":
            checks[name] = _calling(adapter.count)
        else:
            raise ValueError(f"unknown adapter {name!r}; expected one of {ADAPTERS}")
    return checks


def _calling(method: Callable[..., Awaitable[object]], *args: object) -> Check:
    return lambda: method(*args)


def _not_opened(name: str) -> Check:
    async def check() -> None:
        raise RuntimeError(f"{name} is not opened yet")

    return check


async def readiness(checks: Mapping[str, Check], timeout: float) -> dict[str, str]:
    """Run every check; return name -> "ok" or the error (a probe reports, never raises)."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout)
            results[name] = "ok"
        except Exception as error:
            results[name] = f"{type(error).__name__}: {error}"
    return results


async def sample_queue_depths(bus: Bus | None, timeout: float) -> None:
    """Record the depth of the bus's consumed queues (`dicomkeep_queue_depth`).

    Called at each scrape; a bus not opened yet, or one that does not answer
    within `timeout`, reports no queue (rather than stale figures).
    """
    depths: Mapping[str, int] = {}
    if bus is not None:
        try:
            depths = await asyncio.wait_for(bus.queue_depths(), timeout)
        except Exception as error:
            log.warning("queue depths unavailable error=%s: %s", type(error).__name__, error)
    record_queue_depths(depths)


def ops_app(
    checks: Callable[[], Mapping[str, Check]],
    *,
    timeout: float = 3.0,
    bus: Callable[[], Bus | None] = lambda: None,
) -> Starlette:
    """Return the ops ASGI app; `checks` and `bus` are called at each probe or scrape
    (adapters open later)."""

    async def live(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def ready(request: Request) -> Response:
        results = await readiness(checks(), timeout)
        is_ready = bool(results) and all(value == "ok" for value in results.values())
        return JSONResponse({"ready": is_ready, "checks": results}, 200 if is_ready else 503)

    async def metrics(request: Request) -> Response:
        await sample_queue_depths(bus(), timeout)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/livez", live),
            Route("/healthz", live),
            Route("/readyz", ready),
            Route("/metrics", metrics),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's handler stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AsgiServer:
    """Serve an ASGI app with uvicorn inside the caller's event loop.

    `start` returns once listening (`port` then holds the bound port, useful with
    0) and raises OSError when the address cannot be bound; `stop` lets open
    requests finish.
    """

    def __init__(self, app: Any, host: str, port: int, **options: Any) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_level="warning",
            access_log=False, **options,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, self.port), family=family)
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
        # create_server's is 0; accepted sockets inherit the listener's option on
        # Linux. Without it every answer (headers, then body) waits ~40 ms for the
        # client's delayed ACK (Nagle).
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self._socket.getsockname()[1]
        self._task = asyncio.create_task(self.server.serve(sockets=[self._socket]), name="asgi")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the start error
                raise RuntimeError("the HTTP server stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class OpsServer(AsgiServer):
    """Liveness, readiness and metrics on `host:port` (port 0 = an ephemeral port)."""

    def __init__(
        self,
        port: int,
        checks: Callable[[], Mapping[str, Check]],
        *,
        host: str = "127.0.0.1",
        timeout: float = 3.0,
        bus: Callable[[], Bus | None] = lambda: None,
    ) -> None:
        """`checks` is called at each probe and `bus` at each scrape (for the depths of
        its consumed queues); adapters may be opened after this."""
        super().__init__(ops_app(checks, timeout=timeout, bus=bus), host, port)

    async def start(self) -> None:
        await super().start()
        log.info("ops endpoints listening host=%s port=%d", self.host, self.port)
