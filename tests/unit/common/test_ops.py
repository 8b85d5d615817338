"""The ops port: liveness, readiness per dependency, Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
from dicomkeep.common import metrics  # noqa: F401 - registers DicomKeep's metrics
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.memory_clock import MemoryClock
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.index import Index
from dicomkeep.common.ops import OpsServer, adapter_checks


async def test_ops_endpoints_report_each_dependency(tmp_path: Path) -> None:
    index = Index(SqliteDatabase(tmp_path / "index"))
    await index.open()
    bus = LocalBus()
    await bus.start()
    checks = adapter_checks(
        index=index, blobs=FileBlobStore(tmp_path / "s"), bus=bus, clock=MemoryClock()
    )
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
