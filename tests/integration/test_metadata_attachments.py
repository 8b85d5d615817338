"""Metadata and attachments through REST, StorageCompression off (ORTHANC_API.md §3-§5, §9).

Every route of issue 4 on both modes: user metadata by name and number, core
metadata read-only, bad input refused without effect, user attachments with
their MIME types, sizes and MD5s checked against hashlib and zlib, compression
toggled per attachment by /compress and /uncompress, large attachments.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import httpx
from dicomfiles import sample_path
from servers import Server, blob_keys, wait_until

SERVER_CONFIG = {
    "UserMetadata": {"Reading": 1024, "AiResult": 1025},
    "UserContentType": {"report": [1025, "application/pdf"], "raw": 1026},
    "StorageCompression": False,
}
PDF = b"%PDF-1.4\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 300 + b"%%EOF\n"
#: The documented limit of a metadata value (docs/metadata.md).
MAX_METADATA_BYTES = 1024 * 1024


def http(server: Server, replica: int = 0) -> httpx.Client:
    """A client on one gateway replica that drops idle connections after 0.5 s.

    The server closes idle keep-alive connections after KeepAliveTimeout (1 s, as
    Orthanc): a client reusing one at that very moment gets a reset, so it must
    expire them first.
    """
    return httpx.Client(
        base_url=server.urls[replica % len(server.urls)], timeout=60.0,
        limits=httpx.Limits(keepalive_expiry=0.5),
    )  # fmt: skip


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def etag(revision: int, data: bytes) -> str:
    return f'"{revision}-{md5(data)}"'


def orthanc_zlib(data: bytes) -> bytes:
    """Orthanc's "zlib with size" format, written out independently of the server."""
    return len(data).to_bytes(8, "little") + zlib.compress(data, 6) if data else b""


def store_ct(client: httpx.Client) -> dict[str, Any]:
    answer = client.post("/instances", content=sample_path("CT_small.dcm").read_bytes())
    assert answer.status_code == 200, answer.text
    stored: dict[str, Any] = answer.json()
    return stored


def change_count(client: httpx.Client, change_type: str, public_id: str) -> int:
    changes = client.get("/changes?limit=100000").json()["Changes"]
    return sum(1 for c in changes if c["ChangeType"] == change_type and c["ID"] == public_id)


def test_metadata_on_every_level(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store_ct(client)
        for plural, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                            ("series", "ParentSeries"), ("instances", "ID")):
            base = f"/{plural}/{stored[key]}/metadata"
            put = client.put(f"{base}/Reading", content="to read · é".encode())
            assert (put.status_code, put.content) == (200, b"")
            assert put.headers["etag"] == etag(0, "to read · é".encode())
            # By number, on the other replica: the same value and ETag.
            value = other.get(f"{base}/1024")
            assert (value.status_code, value.text) == (200, "to read · é")
            assert value.headers["content-type"] == "text/plain"
            assert value.headers["etag"] == put.headers["etag"]
            assert client.put(f"{base}/1025", content=b'{"score": 0.93}').status_code == 200
            assert other.get(f"{base}/AiResult").text == '{"score": 0.93}'
            names = client.get(base).json()
            assert names[-2:] == ["Reading", "AiResult"]
            expanded = client.get(f"{base}?expand").json()
            assert expanded["Reading"] == "to read · é"
            assert client.get(f"{base}?numeric").json()[-2:] == [1024, 1025]
            cached = other.get(f"{base}/Reading", headers={"If-None-Match": put.headers["etag"]})
            assert (cached.status_code, cached.content) == (304, b"")
            second = client.put(f"{base}/Reading", content=b"read")
            assert second.headers["etag"] == etag(1, b"read")
            assert client.delete(f"{base}/AiResult").status_code == 200
            assert client.get(f"{base}/AiResult").status_code == 404
            assert change_count(client, "UpdatedMetadata", stored[key]) == 4
        instance = stored["ID"]
        core = client.get(f"/instances/{instance}/metadata?expand").json()
        assert core["Origin"] == "RestApi" and core["RemoteIP"] == "127.0.0.1"
        assert "PixelDataOffset" in core and "ReceptionDate" in core


#: MainDicomTagsSignature as Orthanc 1.11+ writes it with the default main tags.
SIGNATURES = {
    "patients": "0010,0010;0010,0020;0010,0030;0010,0040;0010,1000",
    "studies": "0008,0020;0008,0030;0008,0050;0008,0080;0008,0090;0008,1030;0020,000d;"
    "0020,0010;0032,1032;0032,1060",
    "series": "0008,0021;0008,0031;0008,0060;0008,0070;0008,1010;0008,103e;0008,1070;"
    "0018,0010;0018,0015;0018,0024;0018,1030;0018,1090;0018,1400;0020,000e;0020,0011;"
    "0020,0037;0020,0105;0020,1002;0040,0254;0054,0081;0054,0101;0054,1000",
    "instances": "0008,0012;0008,0013;0008,0018;0020,0012;0020,0013;0020,0032;0020,0037;"
    "0020,0100;0020,4000;0028,0008;0054,1330",
}


def test_main_dicom_tags_signature_on_every_level(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store_ct(client)
        for plural, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                            ("series", "ParentSeries"), ("instances", "ID")):
            base = f"/{plural}/{stored[key]}/metadata"
            assert "MainDicomTagsSignature" in client.get(base).json()
            assert 15 in client.get(f"{base}?numeric").json()
            assert other.get(f"{base}?expand").json()["MainDicomTagsSignature"] == SIGNATURES[plural]
            for name in ("MainDicomTagsSignature", "15"):
                value = other.get(f"{base}/{name}")
                assert (value.status_code, value.text) == (200, SIGNATURES[plural])
                # Core metadata: read-only over REST, unchanged by the refused writes.
                put = client.put(f"{base}/{name}", content=b"forged")
                assert (put.status_code, put.content) == (403, b"")
                assert client.delete(f"{base}/{name}").status_code == 403
            assert client.get(f"{base}/MainDicomTagsSignature").text == SIGNATURES[plural]


def alter_index(server: Server, statement: str) -> None:
    """Run one SQL statement on the server's index behind its back (SQLite or PostgreSQL)."""
    if server.mode == "allinone":
        with sqlite3.connect(Path(server.config["IndexDirectory"]) / "index") as conn:
            conn.execute(statement)
        return
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(server.config["PostgreSQL"]["ConnectionUri"])
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def test_invalidate_tags_rebuilds_main_tags_from_the_files(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store_ct(client)
        study = f"/studies/{stored['ParentStudy']}"
        series = f"/series/{stored['ParentSeries']}"
        instance = f"/instances/{stored['ID']}"
        patient = f"/patients/{stored['ParentPatient']}"
        paths = (patient, study, series, instance)
        before = {path: client.get(path).json()["MainDicomTags"] for path in paths}
        patient_before = client.get(study).json()["PatientMainDicomTags"]
        alter_index(clean, "UPDATE main_tags SET value = 'FORGED' WHERE name IN "
                    "('StudyDescription', 'Modality', 'InstanceNumber', 'PatientName')")
        alter_index(clean, "DELETE FROM main_tags WHERE name = 'SeriesNumber'")
        alter_index(clean, "UPDATE metadata SET value = 'stale' WHERE key = 15")
        assert client.get(series).json()["MainDicomTags"]["Modality"] == "FORGED"
        answer = other.post("/tools/invalidate-tags")
        assert (answer.status_code, answer.content) == (200, b"")
        assert answer.headers["content-type"] == "text/plain"
        for path, tags in before.items():
            assert client.get(path).json()["MainDicomTags"] == tags
        assert client.get(study).json()["PatientMainDicomTags"] == patient_before
        assert patient_before["PatientName"] != "FORGED"
        for path, plural in zip(paths, ("patients", "studies", "series", "instances"), strict=True):
            value = client.get(f"{path}/metadata/MainDicomTagsSignature").text
            assert value == SIGNATURES[plural]
        # An empty index is fine too.
        client.delete(instance)
        assert client.post("/tools/invalidate-tags").status_code == 200


def test_core_metadata_is_read_only_and_bad_input_changes_nothing(clean: Server) -> None:
    with http(clean, 0) as client:
        instance = store_ct(client)["ID"]
        base = f"/instances/{instance}/metadata"
        client.put(f"{base}/Reading", content=b"kept")
        before = change_count(client, "UpdatedMetadata", instance)
        origin = client.get(f"{base}/Origin").text
        for name in ("Origin", "8", "ReceptionDate", "LastUpdate", "PixelDataOffset"):
            put = client.put(f"{base}/{name}", content=b"forged")
            assert (put.status_code, put.content) == (403, b""), name
            assert client.delete(f"{base}/{name}").status_code == 403, name
        assert client.get(f"{base}/Origin").text == origin
        refused = [
            ("NoSuchName", b"v", {}, 404, 7),            # unknown name
            ("65536", b"v", {}, 400, 3),                 # key out of range
            ("Reading", b"\xc3\x28 not utf-8", {}, 400, 8),
            ("Reading", b"nul\x00inside", {}, 400, 8),
            ("Reading", b"h" * (MAX_METADATA_BYTES + 1), {}, 413, 3),
            ("Reading", b"v", {"If-Match": "0"}, 400, 3),          # 1.9.2 format
            ("Reading", b"v", {"If-Match": "latest-abc"}, 400, 3),
        ]
        for name, body, headers, status, orthanc_status in refused:
            answer = client.put(f"{base}/{name}", content=body, headers=headers)
            assert answer.status_code == status, (name, headers)
            error = answer.json()
            assert error["OrthancStatus"] == orthanc_status and error["Details"], error
            assert error["Method"] == "PUT" and error["Uri"] == f"{base}/{name}"
        # Exactly at the limit is accepted.
        assert client.put(f"{base}/2000", content=b"h" * MAX_METADATA_BYTES).status_code == 200
        assert client.delete(f"{base}/2000").status_code == 200
        assert client.get(f"{base}/Reading").text == "kept"
        assert change_count(client, "UpdatedMetadata", instance) == before + 2
        unknown = client.put("/instances/unknown/metadata/Reading", content=b"v")
        assert (unknown.status_code, unknown.json()["OrthancError"]) == (404, "Unknown resource")


def test_if_match_is_honoured_without_check_revisions(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        study = store_ct(client)["ParentStudy"]
        path = f"/studies/{study}/metadata/Reading"
        assert client.put(path, content=b"one").headers["etag"] == etag(0, b"one")
        stale = other.put(path, content=b"two", headers={"If-Match": etag(0, b"other")})
        assert (stale.status_code, stale.json()["OrthancStatus"]) == (409, 43)
        fresh = other.put(path, content=b"two", headers={"If-Match": etag(0, b"one")})
        assert fresh.headers["etag"] == etag(1, b"two")
        assert client.put(path, content=b"three").status_code == 200  # unconditional
        assert client.delete(path, headers={"If-Match": etag(1, b"two")}).status_code == 409
        assert client.delete(path, headers={"If-Match": etag(2, b"three")}).status_code == 200


def test_user_attachments(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store_ct(client)
        base = f"/studies/{stored['ParentStudy']}/attachments"
        put = client.put(f"{base}/report", content=PDF)
        assert (put.status_code, put.json()) == (200, {})
        assert put.headers["etag"] == etag(0, PDF)
        data = other.get(f"{base}/report/data")
        assert data.content == PDF
        assert data.headers["content-type"] == "application/pdf"
        assert data.headers["etag"] == etag(0, PDF)
        assert other.get(f"{base}/1025/data").content == PDF
        raw = bytes(range(256)) * 10
        assert client.put(f"{base}/raw", content=raw).status_code == 200
        raw_data = other.get(f"{base}/1026/data")
        assert raw_data.content == raw
        assert raw_data.headers["content-type"] == "application/octet-stream"
        assert client.get(base).json() == ["report", "raw"]
        assert client.get(f"{base}?full").json() == {"report": 1025, "raw": 1026}
        assert "verify-md5" in client.get(f"{base}/report").json()
        expected = {"size": str(len(PDF)), "compressed-size": str(len(PDF)),
                    "md5": md5(PDF), "compressed-md5": md5(PDF), "is-compressed": "0"}
        for route, text in expected.items():
            answer = other.get(f"{base}/report/{route}")
            assert (answer.status_code, answer.text) == (200, text), route
        info = client.get(f"{base}/report/info").json()
        assert info["ContentType"] == 1025 and info["UncompressedMD5"] == md5(PDF)
        assert info["Uuid"] in blob_keys(clean)
        assert client.post(f"{base}/report/verify-md5").json() == {}
        cached = client.get(f"{base}/report/size", headers={"If-None-Match": etag(0, PDF)})
        assert cached.status_code == 304
        for core in ("dicom", "1", "dicom-until-pixel-data"):
            assert client.put(f"{base}/{core}", content=b"x").status_code == 403
        instance_base = f"/instances/{stored['ID']}/attachments"
        assert client.get(instance_base).json() == ["dicom"]  # no attachment 3 uncompressed
        assert client.delete(f"{instance_base}/dicom").status_code == 403
        assert client.get(f"{instance_base}/dicom/data").content == sample_path(
            "CT_small.dcm"
        ).read_bytes()
        assert client.delete(f"{base}/raw").status_code == 200
        assert client.get(f"{base}/raw/data").status_code == 404
        assert change_count(client, "UpdatedAttachment", stored["ParentStudy"]) == 3
        wait_until(lambda: info["Uuid"] in blob_keys(clean) and len(blob_keys(clean)) == 2,
                   what="the deleted attachment's blob to go")


def test_compression_is_toggled_per_attachment(clean: Server) -> None:
    """Old uncompressed rows stay readable next to compressed ones, both ways."""
    original = sample_path("CT_small.dcm").read_bytes()
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store_ct(client)
        dicom = f"/instances/{stored['ID']}/attachments/dicom"
        report = f"/studies/{stored['ParentStudy']}/attachments/report"
        client.put(report, content=PDF)
        for path, content in ((dicom, original), (report, PDF)):
            before = client.get(f"{path}/info").json()
            assert client.post(f"{path}/compress").json() == {}
            after = other.get(f"{path}/info").json()
            stored_bytes = other.get(f"{path}/compressed-data").content
            assert stored_bytes == orthanc_zlib(content)
            assert after["Uuid"] != before["Uuid"]
            assert after["CompressedSize"] == len(stored_bytes)
            assert after["CompressedMD5"] == md5(stored_bytes)
            assert after["UncompressedMD5"] == md5(content)
            assert other.get(f"{path}/is-compressed").text == "1"
            assert other.get(f"{path}/data").content == content
            assert other.post(f"{path}/verify-md5").json() == {}
            wait_until(lambda b=before: b["Uuid"] not in blob_keys(clean),
                       what="the replaced blob to be deleted")
        assert client.get(f"/instances/{stored['ID']}/file").content == original
        assert client.get(f"/instances/{stored['ID']}/tags?simplify").json()["PatientID"] == "1CT1"
        assert client.post(f"{dicom}/uncompress").json() == {}
        assert other.get(f"{dicom}/is-compressed").text == "0"
        assert other.get(f"/instances/{stored['ID']}/file").content == original
        statistics = client.get(f"/instances/{stored['ID']}/statistics").json()
        assert int(statistics["DiskSize"]) == len(original)


def test_large_attachment(clean: Server) -> None:
    body = os.urandom(3 * 1024 * 1024) + b"\x00" * (4 * 1024 * 1024) + b"end"
    with http(clean, 0) as client, http(clean, 1) as other:
        study = store_ct(client)["ParentStudy"]
        path = f"/studies/{study}/attachments/raw"
        put = client.put(path, content=body)
        assert put.headers["etag"] == etag(0, body)
        answer = other.get(f"{path}/data")
        assert answer.headers["content-length"] == str(len(body))
        assert answer.content == body
        assert other.get(f"{path}/md5").text == md5(body)
        assert client.post(f"{path}/compress").json() == {}
        assert other.get(f"{path}/compressed-data").content == orthanc_zlib(body)
        assert other.get(f"{path}/data").content == body
