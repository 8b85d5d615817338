"""`dicomkeep run SERVICE`: one service alone, on the adapters the settings choose,
with its ops port (`/livez`, `/readyz`, `/metrics`)."""

from __future__ import annotations

from typing import Any

from dicomkeep.allinone.app import HttpServer, Service, http_host
from dicomkeep.common.ops import OpsServer, adapter_checks
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import setup_tracing
from dicomkeep.gateway import main as gateway
from dicomkeep.indexer import main as indexer
from dicomkeep.ingest import main as ingest
from dicomkeep.jobs import main as jobs
from dicomkeep.stability import main as stability
from dicomkeep.storage import main as storage


class Chain:
    """Start services in order, stop them in reverse."""

    def __init__(self, *services: Service) -> None:
        self.services = services

    async def start(self) -> None:
        for service in self.services:
            await service.start()

    async def stop(self) -> None:
        for service in reversed(self.services):
            await service.stop()


def build_service(
    name: str, settings: Settings, *, http_port: int | None = None, ops_port: int | None = None
) -> Service:
    """Build one service by name (gateway, ingest, indexer, storage, stability, jobs)."""
    setup_tracing(f"dicomkeep-{name}")
    parts: list[Service] = []
    if name == "gateway":
        core: Any = gateway.build(settings)
        port = http_port if http_port is not None else settings.http_port
        parts = [core, HttpServer(core.app, http_host(settings), port)]
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
        target = getattr(core, "context", None) or core
        parts.append(OpsServer(port, lambda: adapter_checks(
            index=getattr(target, "index", None),
            blobs=getattr(target, "blobs", None),
            bus=getattr(target, "bus", None),
            clock=getattr(target, "clock", None),
        ), host="0.0.0.0"))
    return Chain(*parts)
