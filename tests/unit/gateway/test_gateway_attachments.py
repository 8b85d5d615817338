"""Attachments, compression and their revisions (ORTHANC_API.md §4, §5, §9)."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from dicomkeep.common.dicom.orthanc_json import tags_json
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import CHUNK_BYTES
from dicomkeep.gateway.api import attachments as attachment_routes
from gateway_support import Gateway, dicom_file

TYPES = {"report": [1025, "application/pdf"], "raw": 1026}
PLAIN = Settings(user_content_type=TYPES)
COMPRESSED = Settings(user_content_type=TYPES, storage_compression=True)
CHECKED = Settings(user_content_type=TYPES, check_revisions=True)
NO_MD5 = Settings(user_content_type=TYPES, store_md5_for_attachments=False)
PDF = b"%PDF-1.4\n" + b"report line\n" * 500


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def orthanc_zlib(data: bytes) -> bytes:
    """Orthanc's stored format, written out independently of the code under test."""
    return len(data).to_bytes(8, "little") + zlib.compress(data, 6) if data else b""


def stored_files(gateway: Gateway) -> list[str]:
    root = Path(gateway.ctx.blobs.root)  # type: ignore[attr-defined]
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def blob_path(gateway: Gateway, key: str) -> Path:
    return Path(gateway.ctx.blobs.root) / key[0:2] / key[2:4] / key  # type: ignore[attr-defined]


async def study_of(gateway: Gateway) -> str:
    return str((await gateway.upload(dicom_file("CT_small.dcm")))["ParentStudy"])


async def info_of(gateway: Gateway, path: str) -> dict[str, Any]:
    answer = await gateway.client.get(f"{path}/info")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.mark.parametrize("settings", [PLAIN])
async def test_user_attachment_round_trip(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    base = f"/studies/{study}/attachments"
    put = await client.put(f"{base}/report", content=PDF)
    assert (put.status_code, put.json()) == (200, {})
    assert put.headers["etag"] == f'"0-{md5(PDF)}"'
    data = await client.get(f"{base}/report/data")
    assert data.content == PDF
    assert data.headers["content-type"] == "application/pdf"
    assert data.headers["etag"] == f'"0-{md5(PDF)}"'
    by_number = await client.get(f"{base}/1025/data")
    assert by_number.content == PDF
    assert (await client.put(f"{base}/raw", content=b"\x00\x01")).status_code == 200
    assert (await client.get(f"{base}/raw/data")).headers["content-type"] == "application/octet-stream"
    assert (await client.put(f"{base}/3000", content=b"unnamed")).status_code == 200
    assert (await client.get(base)).json() == ["report", "raw", "3000"]
    assert (await client.get(f"{base}?full")).json() == {"report": 1025, "raw": 1026, "3000": 3000}
    assert (await client.get(f"{base}/report")).json() == [
        "compress", "compressed-data", "compressed-md5", "compressed-size", "data", "info",
        "is-compressed", "md5", "size", "uncompress", "verify-md5",
    ]  # fmt: skip
    for route, expected in (("size", str(len(PDF))), ("compressed-size", str(len(PDF))),
                            ("md5", md5(PDF)), ("compressed-md5", md5(PDF)),
                            ("is-compressed", "0")):
        answer = await client.get(f"{base}/report/{route}")
        assert (answer.text, answer.headers["content-type"]) == (expected, "text/plain"), route
        assert answer.headers["etag"] == f'"0-{md5(PDF)}"'
    info = await info_of(gateway, f"{base}/report")
    assert info == {
        "Uuid": info["Uuid"], "ContentType": 1025, "UncompressedSize": len(PDF),
        "CompressedSize": len(PDF), "UncompressedMD5": md5(PDF), "CompressedMD5": md5(PDF),
    }  # fmt: skip
    assert blob_path(gateway, info["Uuid"]).read_bytes() == PDF
    cached = await client.get(f"{base}/report/data", headers={"If-None-Match": f'"0-{md5(PDF)}"'})
    assert (cached.status_code, cached.content) == (304, b"")
    replaced = await client.put(f"{base}/report", content=b"v2")
    assert replaced.headers["etag"] == f'"1-{md5(b"v2")}"'
    assert (await client.get(f"{base}/report/data")).content == b"v2"
    deleted = await client.delete(f"{base}/report")
    assert (deleted.status_code, deleted.content) == (200, b"")
    absent = await client.get(f"{base}/report/data")
    assert (absent.status_code, absent.json()["OrthancError"]) == (404, "Unknown resource")
    assert (await client.delete(f"{base}/report")).status_code == 404
    changes = [c["ChangeType"] for c in (await client.get("/changes")).json()["Changes"]]
    assert changes.count("UpdatedAttachment") == 5  # 4 PUTs and 1 DELETE


@pytest.mark.parametrize("settings", [PLAIN])
async def test_core_types_are_read_only(gateway: Gateway) -> None:
    instance = (await gateway.upload(dicom_file("CT_small.dcm")))["ID"]
    client = gateway.client
    base = f"/instances/{instance}/attachments"
    assert (await client.get(base)).json() == ["dicom"]
    for name in ("dicom", "1", "dicom-as-json", "dicom-until-pixel-data", "1023"):
        put = await client.put(f"{base}/{name}", content=b"x")
        assert (put.status_code, put.content) == (403, b""), name
    for name in ("dicom", "dicom-until-pixel-data"):
        delete = await client.delete(f"{base}/{name}")
        assert (delete.status_code, delete.content) == (403, b""), name
    # dicom-as-json is never generated; deleting it is allowed (StoreDicom) but absent.
    legacy = await client.delete(f"{base}/dicom-as-json")
    assert (legacy.status_code, legacy.json()["OrthancError"]) == (404, "Unknown resource")
    assert (await client.get(f"{base}/dicom-as-json/data")).status_code == 404
    unknown = await client.get(f"{base}/nope/data")
    assert (unknown.status_code, unknown.json()["OrthancStatus"]) == (404, 7)
    assert (await client.get(f"{base}/65536/data")).status_code == 400
    assert (await client.get("/instances/nope/attachments")).status_code == 404
    dicom = await client.get(f"{base}/dicom/data")
    assert dicom.content == dicom_file("CT_small.dcm")
    assert dicom.headers["content-type"] == "application/dicom"


@pytest.mark.parametrize("settings", [Settings(store_dicom=False)])
async def test_dicom_as_json_delete_needs_store_dicom(gateway: Gateway) -> None:
    study = await study_of(gateway)
    answer = await gateway.client.delete(f"/studies/{study}/attachments/dicom-as-json")
    assert (answer.status_code, answer.content) == (403, b"")


@pytest.mark.parametrize("settings", [COMPRESSED])
async def test_compressed_storage_and_conversions(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    path = f"/studies/{study}/attachments/report"
    await client.put(path, content=PDF)
    stored = orthanc_zlib(PDF)
    assert (await client.get(f"{path}/is-compressed")).text == "1"
    assert (await client.get(f"{path}/compressed-data")).content == stored
    assert (await client.get(f"{path}/compressed-size")).text == str(len(stored))
    assert (await client.get(f"{path}/compressed-md5")).text == md5(stored)
    assert (await client.get(f"{path}/size")).text == str(len(PDF))
    assert (await client.get(f"{path}/md5")).text == md5(PDF)
    assert (await client.get(f"{path}/data")).content == PDF
    first = await info_of(gateway, path)
    assert blob_path(gateway, first["Uuid"]).read_bytes() == stored
    assert (await client.post(f"{path}/verify-md5")).json() == {}
    assert (await client.post(f"{path}/uncompress")).json() == {}
    plain = await info_of(gateway, path)
    assert plain["Uuid"] != first["Uuid"]
    assert (plain["CompressedSize"], plain["CompressedMD5"]) == (len(PDF), md5(PDF))
    assert (await client.get(f"{path}/is-compressed")).text == "0"
    assert (await client.get(f"{path}/data")).content == PDF
    assert (await client.post(f"{path}/uncompress")).json() == {}  # no-op
    assert (await info_of(gateway, path))["Uuid"] == plain["Uuid"]
    assert (await client.post(f"{path}/compress")).json() == {}
    again = await info_of(gateway, path)
    assert (again["CompressedSize"], again["CompressedMD5"]) == (len(stored), md5(stored))
    # The ETag keeps the uncompressed MD5; each conversion is a new revision.
    assert (await client.get(f"{path}/data")).headers["etag"] == f'"2-{md5(PDF)}"'
    empty = await client.put(f"/studies/{study}/attachments/raw", content=b"")
    assert empty.status_code == 200
    assert (await client.get(f"/studies/{study}/attachments/raw/compressed-size")).text == "0"
    assert (await client.get(f"/studies/{study}/attachments/raw/data")).content == b""


@pytest.mark.parametrize("settings", [COMPRESSED])
async def test_dicom_compressed_round_trip_and_tags_from_attachment_3(gateway: Gateway) -> None:
    data = dicom_file("CT_small.dcm")
    instance = (await gateway.upload(data))["ID"]
    client = gateway.client
    base = f"/instances/{instance}/attachments"
    assert (await client.get(base)).json() == ["dicom", "dicom-until-pixel-data"]
    assert (await client.get(f"{base}/dicom/is-compressed")).text == "1"
    prefix = (await client.get(f"{base}/dicom-until-pixel-data/data")).content
    assert data.startswith(prefix) and len(prefix) < len(data)
    tags = (await client.get(f"/instances/{instance}/tags")).json()
    assert tags == tags_json(data, "full")
    simplified = (await client.get(f"/instances/{instance}/simplified-tags")).json()
    assert simplified == tags_json(data, "simplify")
    # Tags come from attachment 3: they survive the loss of the DICOM file's blob.
    dicom_uuid = (await info_of(gateway, f"{base}/dicom"))["Uuid"]
    saved = blob_path(gateway, dicom_uuid).read_bytes()
    blob_path(gateway, dicom_uuid).unlink()
    assert (await client.get(f"/instances/{instance}/tags")).json() == tags
    assert (await client.get(f"/instances/{instance}/tags?whole")).status_code == 404
    blob_path(gateway, dicom_uuid).write_bytes(saved)
    assert (await client.post(f"{base}/dicom/uncompress")).json() == {}
    assert (await client.get(f"/instances/{instance}/file")).content == data
    assert (await client.post(f"{base}/dicom/compress")).json() == {}
    assert (await client.get(f"/instances/{instance}/file")).content == data
    assert (await client.get(f"{base}/dicom/data")).content == data


@pytest.mark.parametrize("settings", [PLAIN, COMPRESSED])
async def test_large_attachment_streams(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    body = os.urandom(CHUNK_BYTES) + b"\x00" * (2 * CHUNK_BYTES) + os.urandom(12345)
    path = f"/studies/{study}/attachments/raw"
    assert (await client.put(path, content=body)).status_code == 200
    answer = await client.get(f"{path}/data")
    assert answer.headers["content-length"] == str(len(body))
    assert answer.content == body
    stored = (await client.get(f"{path}/compressed-data")).content
    info = await info_of(gateway, path)
    assert (len(stored), md5(stored)) == (info["CompressedSize"], info["CompressedMD5"])
    if gateway.ctx.settings.storage_compression:
        assert stored == orthanc_zlib(body)
    assert (await client.post(f"{path}/verify-md5")).json() == {}


@pytest.mark.parametrize("settings", [PLAIN, COMPRESSED])
async def test_verify_md5_detects_corruption(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    path = f"/studies/{study}/attachments/report"
    await client.put(path, content=PDF)
    blob = blob_path(gateway, (await info_of(gateway, path))["Uuid"])
    original = blob.read_bytes()
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    bad = await client.post(f"{path}/verify-md5")
    assert (bad.status_code, bad.content) == (400, b"")
    blob.unlink()
    missing = await client.get(f"{path}/data")
    assert missing.status_code == 404
    absent = await client.post(f"/studies/{study}/attachments/raw/verify-md5")
    assert (absent.status_code, absent.content) == (400, b"")


@pytest.mark.parametrize("settings", [NO_MD5])
async def test_without_stored_md5(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    path = f"/studies/{study}/attachments/report"
    put = await client.put(path, content=PDF)
    assert put.headers["etag"] == f'"0-{md5(PDF)}"'
    assert (await client.get(path)).json() == [
        "compress", "compressed-data", "compressed-size", "data", "info", "is-compressed",
        "size", "uncompress",
    ]  # fmt: skip
    md5_answer = await client.get(f"{path}/md5")
    assert (md5_answer.status_code, md5_answer.content) == (404, b"")
    assert (await client.post(f"{path}/verify-md5")).status_code == 400


@pytest.mark.parametrize("settings", [CHECKED])
async def test_revisions(gateway: Gateway) -> None:
    study = await study_of(gateway)
    client = gateway.client
    path = f"/studies/{study}/attachments/report"
    assert (await client.put(path, content=b"a")).status_code == 200
    assert (await client.put(path, content=b"b")).status_code == 409
    stale = await client.put(path, content=b"b", headers={"If-Match": f'"1-{md5(b"a")}"'})
    assert (stale.status_code, stale.json()["OrthancStatus"]) == (409, 43)
    missing = await client.delete(path)
    assert missing.status_code == 409
    bad = await client.put(path, content=b"b", headers={"If-Match": "1"})
    assert bad.status_code == 400
    assert (await client.get(f"{path}/data")).content == b"a"
    ok = await client.put(path, content=b"b", headers={"If-Match": f'"0-{md5(b"a")}"'})
    assert ok.headers["etag"] == f'"1-{md5(b"b")}"'
    assert (await client.delete(path, headers={"If-Match": f'"1-{md5(b"b")}"'})).status_code == 200


@pytest.mark.parametrize("settings", [PLAIN])
async def test_oversized_attachment_is_refused(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attachment_routes, "MAX_ATTACHMENT_BYTES", 1000)
    study = await study_of(gateway)
    client = gateway.client
    before = stored_files(gateway)

    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 300

    for content in (b"x" * 1001, chunks()):
        answer = await client.put(f"/studies/{study}/attachments/raw", content=content)
        assert answer.status_code == 413
        assert answer.json()["OrthancStatus"] == 3
        assert "1000 bytes" in answer.json()["Details"]
    assert (await client.get(f"/studies/{study}/attachments")).json() == []
    assert stored_files(gateway) == before


async def test_allowed_methods_of_an_attachment(gateway: Gateway) -> None:
    answer = await gateway.client.post("/studies/x/attachments/report")
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET,DELETE,PUT")
    answer = await gateway.client.get("/studies/x/attachments/1025/compress")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
