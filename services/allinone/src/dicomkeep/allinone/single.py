"""`dicomkeep run SERVICE`: one service alone, on the adapters the settings choose."""

from __future__ import annotations

from dicomkeep.allinone.app import HttpServer, Service, http_host
from dicomkeep.common.settings import Settings
from dicomkeep.gateway import main as gateway
from dicomkeep.indexer import main as indexer
from dicomkeep.ingest import main as ingest
from dicomkeep.stability import main as stability
from dicomkeep.storage import main as storage


class _Chain:
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
    """Build one service by name (gateway, ingest, indexer, storage, stability)."""
    if name == "gateway":
        api = gateway.build(settings)
        port = http_port if http_port is not None else settings.http_port
        return _Chain(api, HttpServer(api.app, http_host(settings), port))
    if name == "ingest":
        return ingest.build(settings)
    if name == "indexer":
        return indexer.build(settings)
    if name == "storage":
        return storage.build(settings)
    if name == "stability":
        return stability.build(settings)
    raise ValueError(f"unknown service {name}")
