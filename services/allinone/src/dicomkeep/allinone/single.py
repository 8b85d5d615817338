"""`dicomkeep run SERVICE`: one service alone, on the adapters the settings choose,
with its ops port (`/livez`, `/readyz`, `/metrics`)."""

from __future__ import annotations

from typing import Any

from dicomkeep.allinone.app import HttpServer, Service, http_host
from dicomkeep.common.ids import Level
from dicomkeep.common.ops import Check, OpsServer
from dicomkeep.common.settings import Settings
from dicomkeep.gateway import main as gateway
from dicomkeep.indexer import main as indexer
from dicomkeep.ingest import main as ingest
from dicomkeep.jobs import main as jobs
from dicomkeep.stability import main as stability
from dicomkeep.storage import main as storage

OPS_EXCHANGE = "dicomkeep.ops"


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


def dependency_checks(service: Any) -> dict[str, Check]:
    """Readiness checks of the adapters a service holds: one cheap call each."""
    checks: dict[str, Check] = {}
    if getattr(service, "index", None) is not None:
        checks["index"] = lambda: service.index.get_property("readyz")
    if getattr(service, "blobs", None) is not None:
        checks["blobs"] = lambda: service.blobs.exists("readyz")
    if getattr(service, "bus", None) is not None:
        checks["bus"] = lambda: service.bus.publish(OPS_EXCHANGE, "readyz", b"", {})
    if getattr(service, "clock", None) is not None:
        checks["clock"] = lambda: service.clock.is_unstable(Level.PATIENT, "readyz")
    return checks


def build_service(
    name: str, settings: Settings, *, http_port: int | None = None, ops_port: int | None = None
) -> Service:
    """Build one service by name (gateway, ingest, indexer, storage, stability, jobs)."""
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
        parts.append(OpsServer(port, lambda: dependency_checks(target), host="0.0.0.0"))
    return Chain(*parts)
