"""`dicomkeep run SERVICE`: one service alone, on the adapters the settings choose,
with its ops port (`/livez`, `/readyz`, `/metrics`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from dicomkeep.allinone.app import Service, http_host
from dicomkeep.common.ops import ADAPTERS, Check, OpsServer, adapter_checks
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import setup_tracing
from dicomkeep.gateway import main as gateway
from dicomkeep.gateway.http_server import HttpServer
from dicomkeep.gateway.process_control import ProcessControl
from dicomkeep.indexer import main as indexer
from dicomkeep.ingest import main as ingest
from dicomkeep.jobs import main as jobs
from dicomkeep.stability import main as stability
from dicomkeep.storage import main as storage


class Chain:
    """Start services in order, stop them in reverse (also when a start fails)."""

    def __init__(self, *services: Service) -> None:
        self.services = services
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        async with AsyncExitStack() as stack:
            for service in self.services:
                await service.start()
                stack.push_async_callback(service.stop)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        await self._stack.aclose()


def build_service(
    name: str,
    settings: Settings,
    *,
    http_port: int | None = None,
    ops_port: int | None = None,
    control: ProcessControl | None = None,
) -> Service:
    """Build one service by name (gateway, ingest, indexer, storage, stability, jobs).

    `control` goes to the gateway, whose `/tools/reset` and `/tools/shutdown` set it.

    With an ops port, its `/readyz` checks each adapter the service needs
    (`NEEDS`); the ops server starts first, so probes answer during a slow start.
    """
    setup_tracing(f"dicomkeep-{name}")
    parts: list[Service] = []
    extra_checks: dict[str, Check] = {}
    if name == "gateway":
        core: Any = gateway.build(settings, control=control)
        port = http_port if http_port is not None else settings.http_port
        http = HttpServer(core.app, settings, http_host(settings), port)
        parts = [core, http]
        extra_checks["http"] = http.listening  # ready once the REST API listens
    elif name == "ingest":
        core = ingest.build(settings)
    elif name == "indexer":
        core = indexer.build(settings)
    elif name == "storage":
        core = storage.build(settings)
    elif name == "stability":
        core = stability.build(settings)
    elif name == "jobs":
        core = jobs.build(settings)
    else:
        raise ValueError(f"unknown service {name}")
    parts = parts or [core]
    port = ops_port if ops_port is not None else settings.dicomkeep.ops_port
    if port:
        needs = [need for need in core.NEEDS if need in ADAPTERS]
        ops = OpsServer(
            port, lambda: {**adapter_checks(core.adapters, needs), **extra_checks},
            host=settings.dicomkeep.ops_host, bus=lambda: core.adapters.bus,
        )
        parts.insert(0, ops)
    return Chain(*parts)
