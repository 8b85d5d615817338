"""/system, /statistics, /tools/*, and the composition root (build, start, serve)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import httpx
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.main import build, serve
from gateway_support import Gateway, client_for, dicom_file

SYSTEM_KEYS = {
    "ApiVersion", "CheckRevisions", "DatabaseBackendPlugin", "DatabaseServerIdentifier",
    "DatabaseVersion", "DicomAet", "DicomKeepVersion", "DicomPort", "HasLabels", "HttpPort",
    "IngestTranscoding", "IsHttpServerSecure", "MainDicomTags", "MaximumPatientCount",
    "MaximumStorageMode", "MaximumStorageSize", "Name", "OverwriteInstances", "PluginsEnabled",
    "StorageAreaPlugin", "StorageCompression", "UserMetadata", "Version",
}  # fmt: skip


async def test_system(gateway: Gateway) -> None:
    body = (await gateway.client.get("/system")).json()
    assert set(body) == SYSTEM_KEYS
    assert (body["Version"], body["ApiVersion"], body["DatabaseVersion"]) == ("1.12.4", 24, 6)
    assert (body["DicomAet"], body["DicomPort"], body["HttpPort"]) == ("ORTHANC", 4242, 8042)
    assert (body["Name"], body["MaximumStorageMode"], body["UserMetadata"]) == (
        "MyOrthanc", "Recycle", {},
    )  # fmt: skip
    assert body["IsHttpServerSecure"] is True
    assert (body["PluginsEnabled"], body["StorageAreaPlugin"], body["HasLabels"]) == (False, None, True)
    assert body["MainDicomTags"]["Patient"] == "0010,0010;0010,0020;0010,0030;0010,0040;0010,1000"
    assert set(body["MainDicomTags"]) == {"Patient", "Study", "Series", "Instance"}
    assert body["DicomKeepVersion"]


async def test_global_statistics(gateway: Gateway) -> None:
    size = len(dicom_file("CT_small.dcm")) + len(dicom_file("MR_small.dcm"))
    await gateway.upload(dicom_file("CT_small.dcm"))
    await gateway.upload(dicom_file("MR_small.dcm"))
    assert (await gateway.client.get("/statistics")).json() == {
        "CountInstances": 2, "CountPatients": 2, "CountSeries": 2, "CountStudies": 2,
        "TotalDiskSize": str(size), "TotalDiskSizeMB": 0,
        "TotalUncompressedSize": str(size), "TotalUncompressedSizeMB": 0,
    }  # fmt: skip


async def test_lookup(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    found = (await client.post("/tools/lookup", content=b"1CT1")).json()
    patient = stored["ParentPatient"]
    assert found == [{"ID": patient, "Path": f"/patients/{patient}", "Type": "Patient"}]
    series_uid = b"1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322\n"
    found = (await client.post("/tools/lookup", content=series_uid)).json()
    assert [item["Type"] for item in found] == ["Series"]
    assert (await client.post("/tools/lookup", content=b"nothing")).json() == []


async def test_time_and_uid_tools(gateway: Gateway) -> None:
    client = gateway.client
    for path in ("/tools/now", "/tools/now-local"):
        response = await client.get(path)
        assert response.headers["content-type"] == "text/plain"
        assert re.fullmatch(r"\d{8}T\d{6}", response.text)
    uid = await client.get("/tools/generate-uid?level=series")
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", uid.text)
    assert uid.text != (await client.get("/tools/generate-uid?level=series")).text
    for bad in ("/tools/generate-uid", "/tools/generate-uid?level=foo"):
        response = await client.get(bad)
        assert (response.status_code, response.content) == (404, b"")


async def test_build_start_stop_owns_its_adapters(tmp_path: Path) -> None:
    settings = Settings(storage_directory=str(tmp_path / "storage"))
    service = build(settings)
    async with client_for(service.app) as client:
        assert (await client.get("/patients")).status_code == 503
        await service.start()
        try:
            assert (await client.get("/patients")).json() == []
            assert (await client.get("/system")).status_code == 200
        finally:
            await service.stop()
        assert (await client.get("/patients")).status_code == 503
    assert (tmp_path / "storage" / "index").exists()


async def _wait_until_listening(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_serve_answers_over_tcp_and_stops_on_cancel(tmp_path: Path) -> None:
    service = build(Settings(storage_directory=str(tmp_path / "storage")))
    await service.start()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(serve(service, sock=sock))
    try:
        await _wait_until_listening(port, time.monotonic() + 10)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/system")
            assert response.status_code == 200
            assert response.json()["Version"] == "1.12.4"
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        await service.stop()
    assert done == {task} and task.cancelled()
