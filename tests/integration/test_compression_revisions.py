"""StorageCompression and CheckRevisions on, in both modes (ORTHANC_API.md §4, §5, §9).

Compressed attachments are checked against zlib and hashlib; DICOM files come
back byte for byte after a compressed round trip, with attachment 3 answering
tag requests; the 409 rules of CheckRevisions; and N concurrent clients doing
read-modify-write with If-Match through both gateway replicas lose no update.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import zlib
from io import BytesIO
from typing import Any

import httpx
from dicomfiles import expected_ids, sample_path
from dicomkeep.common.dicom.orthanc_json import tags_json
from pydicom import dcmread
from servers import Server, dcmtk

SERVER_CONFIG = {
    "UserMetadata": {"Reading": 1024, "Counter": 1025},
    "UserContentType": {"report": [1025, "application/pdf"], "raw": 1026},
    "StorageCompression": True,
    "CheckRevisions": True,
}
CLIENTS = 10
WINS_PER_CLIENT = 5
PDF = b"%PDF-1.7\n" + b"4 0 obj << /Length 44 >> stream BT /F1 24 Tf ET endstream\n" * 400


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


def store(client: httpx.Client, name: str = "CT_small.dcm") -> dict[str, Any]:
    answer = client.post("/instances", content=sample_path(name).read_bytes())
    assert answer.status_code == 200, answer.text
    stored: dict[str, Any] = answer.json()
    return stored


def test_compressed_attachment_sizes_and_md5s(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        study = store(client)["ParentStudy"]
        path = f"/studies/{study}/attachments/report"
        assert client.put(path, content=PDF).headers["etag"] == etag(0, PDF)
        stored = other.get(f"{path}/compressed-data").content
        assert stored[:8] == len(PDF).to_bytes(8, "little") and stored[8:10] == b"\x78\x9c"
        assert zlib.decompress(stored[8:]) == PDF
        assert stored == len(PDF).to_bytes(8, "little") + zlib.compress(PDF, 6)
        assert other.get(f"{path}/is-compressed").text == "1"
        assert other.get(f"{path}/compressed-size").text == str(len(stored))
        assert other.get(f"{path}/compressed-md5").text == md5(stored)
        assert other.get(f"{path}/size").text == str(len(PDF))
        assert other.get(f"{path}/md5").text == md5(PDF)
        data = other.get(f"{path}/data")
        assert (data.content, data.headers["content-type"]) == (PDF, "application/pdf")
        assert other.post(f"{path}/verify-md5").json() == {}
        # /uncompress converts the row; the ETag keeps the uncompressed MD5.
        assert client.post(f"{path}/uncompress").json() == {}
        assert other.get(f"{path}/compressed-data").content == PDF
        assert other.get(f"{path}/data").headers["etag"] == etag(1, PDF)


def test_dicom_round_trip_and_attachment_3(clean: Server) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"]
    with http(clean, 0) as client, http(clean, 1) as other:
        for name in names[:3]:
            store(client, name)
        sent = subprocess.run(
            [dcmtk("storescu"), "-aec", clean.aet, "-xw", "127.0.0.1", str(clean.dicom_port),
             str(sample_path(names[3]))],
            capture_output=True, timeout=60, text=True,
        )
        assert sent.returncode == 0, sent.stderr
        for name in names:
            original = sample_path(name).read_bytes()
            instance = expected_ids(sample_path(name))[3]
            base = f"/instances/{instance}/attachments"
            returned = other.get(f"/instances/{instance}/file").content
            if name in names[:3]:
                assert returned == original, name  # uploaded by REST: byte for byte
            else:
                # Received over DICOM: the SCP writes its own file meta group.
                assert dcmread(BytesIO(returned)).PixelData == dcmread(sample_path(name)).PixelData
                original = returned
            dicom = other.get(f"{base}/dicom/info").json()
            assert dicom["CompressedSize"] < dicom["UncompressedSize"], name
            has_pixels = "PixelData" in dcmread(sample_path(name))
            expected = ["dicom", "dicom-until-pixel-data"] if has_pixels else ["dicom"]
            assert other.get(base).json() == expected, name
            if has_pixels:
                prefix = other.get(f"{base}/dicom-until-pixel-data/data").content
                offset = other.get(f"/instances/{instance}/metadata/PixelDataOffset").text
                assert prefix == original[: int(offset)], name
                assert other.get(f"{base}/3/is-compressed").text == "1"
            tags = other.get(f"/instances/{instance}/tags").json()
            assert tags == tags_json(original, "full"), name
            simplified = other.get(f"/instances/{instance}/simplified-tags").json()
            assert simplified == tags_json(original, "simplify"), name
        # The compressed DICOM file converts both ways and stays byte-identical.
        instance = expected_ids(sample_path("CT_small.dcm"))[3]
        original = sample_path("CT_small.dcm").read_bytes()
        dicom = f"/instances/{instance}/attachments/dicom"
        assert client.post(f"{dicom}/uncompress").json() == {}
        assert other.get(f"{dicom}/is-compressed").text == "0"
        assert other.get(f"/instances/{instance}/file").content == original
        assert client.post(f"{dicom}/compress").json() == {}
        assert other.get(f"/instances/{instance}/file").content == original
        stored = other.get(f"{dicom}/compressed-data").content
        assert stored == len(original).to_bytes(8, "little") + zlib.compress(original, 6)


def test_check_revisions_rules(clean: Server) -> None:
    with http(clean, 0) as client, http(clean, 1) as other:
        stored = store(client)
        for path, first, second in (
            (f"/series/{stored['ParentSeries']}/metadata/Reading", b"a", b"b"),
            (f"/series/{stored['ParentSeries']}/attachments/report", PDF, PDF + b"v2"),
        ):
            assert client.put(path, content=first).headers["etag"] == etag(0, first)
            overwrite = other.put(path, content=second)
            assert (overwrite.status_code, overwrite.json()["OrthancStatus"]) == (409, 43)
            assert overwrite.json()["HttpError"] == "Conflict"
            delete = other.delete(path)
            assert delete.status_code == 409
            assert delete.json()["Details"] == (
                'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"'
            )
            stale = other.put(path, content=second, headers={"If-Match": etag(1, first)})
            assert stale.status_code == 409
            wrong_md5 = other.put(path, content=second, headers={"If-Match": etag(0, second)})
            assert wrong_md5.status_code == 409
            malformed = other.put(path, content=second, headers={"If-Match": '"0"'})
            assert (malformed.status_code, malformed.json()["OrthancStatus"]) == (400, 3)
            data_path = path if "metadata" in path else f"{path}/data"
            assert client.get(data_path).content == first
            ok = other.put(path, content=second, headers={"If-Match": etag(0, first)})
            assert ok.headers["etag"] == etag(1, second)
            assert client.get(data_path).headers["etag"] == etag(1, second)
            assert client.delete(path, headers={"If-Match": etag(0, first)}).status_code == 409
            assert client.delete(path, headers={"If-Match": etag(1, second)}).status_code == 200
            gone = client.get(data_path)
            assert gone.status_code == 404


def test_concurrent_read_modify_write_loses_nothing(clean: Server) -> None:
    """N clients increment one counter with If-Match through both replicas."""
    with http(clean, 0) as client:
        study = store(client)["ParentStudy"]
        path = f"/studies/{study}/metadata/Counter"
        assert client.put(path, content=b"0").headers["etag"] == etag(0, b"0")
    start = threading.Barrier(CLIENTS)
    wins: list[tuple[int, int]] = []  # (revision, value written)
    conflicts: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        mine: list[tuple[int, int]] = []
        lost = 0
        try:
            with http(clean, number) as session:
                start.wait(timeout=30)
                while len(mine) < WINS_PER_CLIENT:
                    current = session.get(path)
                    assert current.status_code == 200, current.text
                    value = int(current.text)
                    answer = session.put(path, content=str(value + 1).encode(),
                                      headers={"If-Match": current.headers["etag"]})
                    if answer.status_code == 409:
                        assert answer.json()["OrthancStatus"] == 43
                        lost += 1
                        continue
                    assert answer.status_code == 200, answer.text
                    revision = int(answer.headers["etag"].strip('"').split("-")[0])
                    mine.append((revision, value + 1))
        except Exception as error:  # reported below, on the test's thread
            with lock:
                failures.append(f"client {number}: {error!r}")
        with lock:
            wins.extend(mine)
            conflicts.append(lost)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not failures, failures
    total = CLIENTS * WINS_PER_CLIENT
    assert len(wins) == total
    # Every revision was won exactly once, by the write that set value == revision.
    assert sorted(wins) == [(n, n) for n in range(1, total + 1)]
    assert sum(conflicts) > 0  # the clients did collide, and the losers got 409
    with http(clean, 1) as client:
        final = client.get(path)
        assert final.text == str(total)
        assert final.headers["etag"] == etag(total, str(total).encode())
        changes = client.get("/changes?limit=100000").json()["Changes"]
        updates = [c for c in changes if c["ChangeType"] == "UpdatedMetadata" and c["ID"] == study]
        assert len(updates) == total + 1
