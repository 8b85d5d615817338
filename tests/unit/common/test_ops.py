"""The ops port: liveness, readiness per dependency, Prometheus metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from dicomkeep.common import metrics  # registers DicomKeep's metrics
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.memory_clock import MemoryClock
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.index import Index
from dicomkeep.common.ops import OpsServer, adapter_checks
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters
from dicomkeep.indexer.main import IndexerService


async def test_ops_endpoints_report_each_dependency(tmp_path: Path) -> None:
    index = Index(SqliteDatabase(tmp_path / "index"))
    await index.open()
    bus = LocalBus()
    await bus.start()
    adapters = Adapters(index=index, blobs=FileBlobStore(tmp_path / "s"), bus=bus, clock=MemoryClock())
    checks = adapter_checks(adapters, ("index", "blobs", "bus", "clock"))
    server = OpsServer(0, lambda: checks)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/livez")).text == "ok\n"
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {
                "ready": True,
                "checks": {"index": "ok", "blobs": "ok", "bus": "ok", "clock": "ok"},
            }
            metrics = await client.get("/metrics")
            assert "dicomkeep_receive_seconds_count" in metrics.text
            assert (await client.get("/nope")).status_code == 404
            await index.close()  # a dependency going away makes the process not ready
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["checks"]["index"] != "ok"
    finally:
        await server.stop()
        await bus.close()


async def test_a_needed_adapter_not_opened_yet_is_not_ready() -> None:
    server = OpsServer(0, lambda: adapter_checks(Adapters(), ("index", "bus")))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).text == "ok\n"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "ready": False,
                "checks": {
                    "index": "RuntimeError: index is not opened yet",
                    "bus": "RuntimeError: bus is not opened yet",
                },
            }
    finally:
        await server.stop()


async def test_nothing_to_check_is_not_ready() -> None:
    server = OpsServer(0, lambda: {})
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/readyz")).status_code == 503
    finally:
        await server.stop()


async def test_a_service_readiness_follows_its_life_cycle(tmp_path: Path) -> None:
    settings = Settings(storage_directory=str(tmp_path / "storage"))
    service = IndexerService(settings)
    server = OpsServer(0, lambda: adapter_checks(service.adapters, ("index", "bus")))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/readyz")).status_code == 503
            await service.start()
            try:
                ready = await client.get("/readyz")
                assert ready.json() == {"ready": True, "checks": {"index": "ok", "bus": "ok"}}
            finally:
                await service.stop()
            assert (await client.get("/readyz")).status_code == 503  # closed adapters
    finally:
        await server.stop()


def test_the_ops_port_binds_to_loopback_unless_configured() -> None:
    assert Settings().dicomkeep.ops_host == "127.0.0.1"
    assert Settings.model_validate({"DicomKeep": {"OpsHost": "0.0.0.0"}}).dicomkeep.ops_host == "0.0.0.0"


async def test_metrics_sample_the_depth_of_the_consumed_queues() -> None:
    bus = LocalBus()
    await bus.start()
    idle = LocalBus()  # consumes nothing

    async def never(body: bytes, headers: object) -> None:
        await asyncio.Event().wait()

    await bus.consume("ops.test.work", [("ops.test", "x")], never, prefetch=1)
    for _ in range(3):
        await bus.publish("ops.test", "x", b"m", {})
    current: list[LocalBus] = [bus]
    server = OpsServer(0, lambda: {}, bus=lambda: current[0])
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            # One message is with the handler, two wait.
            expected = 'dicomkeep_queue_depth{queue="ops.test.work"} 2.0'
            for _ in range(100):
                text = (await client.get("/metrics")).text
                if expected in text:
                    break
            assert expected in text
            current[0] = idle
            text = (await client.get("/metrics")).text
            assert "dicomkeep_queue_depth{" not in text  # no stale figure
    finally:
        await server.stop()
        await bus.close()


async def test_http_answers_leave_with_tcp_nodelay() -> None:
    """The listener carries TCP_NODELAY, so accepted connections do (Linux inherits
    it): without it an answer's body waits for the client's delayed ACK (~40 ms)."""
    import socket

    from dicomkeep.common.ops import AsgiServer

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    server = AsgiServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        for listener in server.server.servers[0].sockets:
            assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
    finally:
        await server.stop()


def test_durations_show_the_maximum_of_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "time", lambda: clock[0])
    recorder = metrics.OrthancMetrics(window=10.0)

    def shown() -> float:
        return recorder._values["d"][0]

    for moment, value, expected in [
        (0, 5.0, 5.0), (1, 3.0, 5.0), (2, 4.0, 5.0), (10, 1.0, 5.0),
        (10.5, 1.0, 4.0),  # 5 (t=0) left the window; 4 (t=2) is the largest left
        (12.5, 0.5, 1.0), (30, 2.0, 2.0), (30, 2.0, 2.0), (41, 0.0, 0.0),
    ]:
        clock[0] = 1000.0 + moment
        recorder.set_max("d", value)
        assert shown() == expected, (moment, value)
