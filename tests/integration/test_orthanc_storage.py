"""An Orthanc storage folder, read through DicomKeep's StorageAccessor.

A real Orthanc (Debian's 1.10.1) with StorageCompression stores instances; the
files it wrote (`<root>/<uuid[0:2]>/<uuid[2:4]>/<uuid>`, "zlib with size") are read
through the StorageAccessor over both blob adapters: the folder in place, and the
same bytes in an S3 bucket. What DicomKeep writes for the same input is byte for
byte what Orthanc wrote. Fails (never skips) where Orthanc cannot run.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.s3_blobs import S3BlobStore
from dicomkeep.common.compression import compress
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.orthanc import CompressionType, FileContentType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.storage import StorageAccessor
from moto.server import ThreadedMotoServer
from orthanc_peer import orthanc_available, orthanc_peer
from servers import free_port
from synthetic import generate_study

UUID_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def orthanc_files(root: Path) -> dict[str, bytes]:
    """Every attachment file Orthanc wrote under `root`, by UUID (its index is skipped)."""
    found: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file() and UUID_NAME.fullmatch(path.name):
            assert path.parent.name == path.name[2:4] and path.parent.parent.name == path.name[0:2]
            found[path.name] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def orthanc_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict]]]:
    """Orthanc's storage folder after it stored two instances, with what REST says of them."""
    reason = orthanc_available()
    assert reason is None, reason
    tmp = tmp_path_factory.mktemp("orthanc")
    study = generate_study(series=1, instances_per_series=2, seed=12)
    stored: list[dict] = []
    with orthanc_peer(tmp, extra={"StorageCompression": True}) as peer, peer.client() as client:
        for instance in study:
            answer = client.post("/instances", content=instance.data)
            assert answer.status_code == 200, answer.text
            base = f"/instances/{answer.json()['ID']}/attachments/dicom"
            stored.append({
                "data": instance.data,
                "is-compressed": client.get(f"{base}/is-compressed").text,
                "size": int(client.get(f"{base}/size").text),
                "compressed-size": int(client.get(f"{base}/compressed-size").text),
                "md5": client.get(f"{base}/md5").text,
                "compressed-md5": client.get(f"{base}/compressed-md5").text,
            })  # fmt: skip
        assert peer.storage is not None
        yield peer.storage, stored


def rows(root: Path, stored: list[dict]) -> list[AttachmentInfo]:
    """The AttachmentInfo rows of the DICOM files, as Orthanc's REST API describes them."""
    files = orthanc_files(root)
    found = []
    for item in stored:
        assert item["is-compressed"] == "1"
        assert item["size"] == len(item["data"]) and item["md5"] == hashlib.md5(item["data"]).hexdigest()
        matches = [
            key for key, data in files.items()
            if hashlib.md5(data).hexdigest() == item["compressed-md5"]
        ]  # fmt: skip
        assert len(matches) == 1
        found.append(AttachmentInfo(
            content_type=FileContentType.DICOM, uuid=matches[0],
            uncompressed_size=item["size"], uncompressed_md5=item["md5"],
            compressed_size=item["compressed-size"], compressed_md5=item["compressed-md5"],
            compression=CompressionType.ZLIB_WITH_SIZE,
        ))  # fmt: skip
    return found


@pytest.fixture(params=["file", "s3"])
async def blobs(
    request: pytest.FixtureRequest, orthanc_storage: tuple[Path, list[dict]]
) -> AsyncIterator[BlobStore]:
    """Orthanc's files behind each BlobStore adapter: in place, or copied to S3."""
    root, _ = orthanc_storage
    if request.param == "file":
        store = FileBlobStore(root)
        yield store
        await store.close()
        return
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3BlobStore(f"http://127.0.0.1:{port}", f"dk-{uuid.uuid4().hex[:16]}", "test", "test")
        await s3.open()
        for key, data in orthanc_files(root).items():
            await s3.put(key, data)
        yield s3
        await s3.close()
    finally:
        server.stop()


async def test_orthanc_written_files_read_back(
    blobs: BlobStore, orthanc_storage: tuple[Path, list[dict]]
) -> None:
    root, stored = orthanc_storage
    storage = StorageAccessor(blobs, chunk_bytes=4096)
    for info, item in zip(rows(root, stored), stored, strict=True):
        assert await storage.read(info) == item["data"]
        assert await storage.read(info, (128, 132)) == b"DICM"
        streamed = b"".join([piece async for piece in storage.iter_uncompressed(info)])
        assert streamed == item["data"]
        assert await storage.verify_md5(info)


def test_dicomkeep_writes_orthancs_bytes(orthanc_storage: tuple[Path, list[dict]]) -> None:
    root, stored = orthanc_storage
    files = orthanc_files(root)
    for info, item in zip(rows(root, stored), stored, strict=True):
        assert compress(item["data"]) == files[info.uuid]
