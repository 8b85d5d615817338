"""Streamed uploads (issue 15): bodies past the spool threshold go through a temporary
file, gzip/deflate bodies are inflated piece by piece, ZIP members are read one at a
time; what is stored and answered is what the in-memory path gives. The threshold is
lowered here so that small files take the streamed path."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.settings import Settings
from dicomkeep.gateway import uploads
from dicomkeep.gateway.api import instances
from dicomkeep.gateway.http_options import RequestTimeoutMiddleware
from dicomkeep.gateway.uploads import PIECE_BYTES, BodyDecoder
from gateway_support import Gateway, dicom_file
from large_dicom import write_large_dicom
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SPOOL = 64 * 1024


@pytest.fixture(autouse=True)
def small_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "SPOOL_BYTES", SPOOL)
    monkeypatch.setattr(instances, "SPOOL_BYTES", SPOOL)


@pytest.fixture
def large(tmp_path: Path) -> bytes:
    """A 1 MiB instance (two frames), well past the lowered threshold."""
    return write_large_dicom(tmp_path / "large.dcm", 2).path.read_bytes()


async def _pieces(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _blob_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]


async def _round_trip(gateway: Gateway, body: bytes, headers: dict[str, str] | None = None) -> str:
    response = await gateway.client.post("/instances", content=_pieces(body), headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["ID"])


async def test_spooled_upload_round_trip(gateway: Gateway, large: bytes) -> None:
    instance = await _round_trip(gateway, large)
    got = await gateway.client.get(f"/instances/{instance}/file")
    assert got.content == large
    md5 = await gateway.client.get(f"/instances/{instance}/attachments/dicom/md5")
    assert md5.text.strip() == hashlib.md5(large).hexdigest()
    tags = (await gateway.client.get(f"/instances/{instance}/simplified-tags")).json()
    assert tags["NumberOfFrames"] == "2"
    metadata = await gateway.client.get(f"/instances/{instance}/metadata/PixelDataOffset")
    assert int(metadata.text) == large.index(b"\xe0\x7f\x10\x00OW")


@pytest.mark.parametrize("settings", [Settings(storage_compression=True)])
async def test_spooled_upload_compressed(gateway: Gateway, tmp_path: Path) -> None:
    data = write_large_dicom(tmp_path / "ramp.dcm", 2, compressible=True).path.read_bytes()
    instance = await _round_trip(gateway, data)
    base = f"/instances/{instance}/attachments"
    assert (await gateway.client.get(f"/instances/{instance}/file")).content == data
    assert (await gateway.client.get(f"{base}/dicom/is-compressed")).text.strip() == "1"
    stored = (await gateway.client.get(f"{base}/dicom/compressed-data")).content
    assert stored[:8] == len(data).to_bytes(8, "little")
    assert zlib.decompress(stored[8:]) == data
    assert (await gateway.client.post(f"{base}/dicom/verify-md5")).json() == {}
    prefix = (await gateway.client.get(f"{base}/dicom-until-pixel-data/data")).content
    assert data.startswith(prefix) and len(prefix) < 4096


async def test_gzip_body_is_inflated_in_pieces(gateway: Gateway, large: bytes) -> None:
    instance = await _round_trip(gateway, gzip.compress(large), {"Content-Encoding": "gzip"})
    assert (await gateway.client.get(f"/instances/{instance}/file")).content == large


async def test_concatenated_gzip_members_are_one_body(gateway: Gateway, large: bytes) -> None:
    body = gzip.compress(large[:300_000]) + gzip.compress(large[300_000:])
    instance = await _round_trip(gateway, body, {"Content-Encoding": "gzip"})
    assert (await gateway.client.get(f"/instances/{instance}/file")).content == large


async def test_deflate_body_is_accepted(gateway: Gateway, large: bytes) -> None:
    instance = await _round_trip(gateway, zlib.compress(large), {"Content-Encoding": "deflate"})
    assert (await gateway.client.get(f"/instances/{instance}/file")).content == large


@pytest.mark.parametrize("cut", [10, 200_000])
async def test_truncated_gzip_is_a_400(
    gateway: Gateway, large: bytes, tmp_path: Path, cut: int
) -> None:
    body = gzip.compress(large)[:-cut]
    response = await gateway.client.post(
        "/instances", content=_pieces(body), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["Details"] == "Cannot decompress the body"
    assert (await gateway.client.get("/instances")).json() == []
    assert _blob_files(tmp_path) == []


async def test_truncated_spooled_file_is_refused_and_leaves_nothing(
    gateway: Gateway, large: bytes, tmp_path: Path
) -> None:
    response = await gateway.client.post("/instances", content=_pieces(large[:-1000]))
    assert response.status_code == 400
    assert response.json()["OrthancError"] == "Bad file format"
    assert (await gateway.client.get("/instances")).json() == []
    assert _blob_files(tmp_path) == []


ONE_MB_LIMIT = Settings.model_validate({"DicomKeep": {"MaximumUploadSize": 1}})


@pytest.mark.parametrize("settings", [ONE_MB_LIMIT])
async def test_body_inflating_past_the_limit_is_a_413(gateway: Gateway) -> None:
    body = gzip.compress(b"\0" * (3 * 1024 * 1024))
    response = await gateway.client.post(
        "/instances", content=_pieces(body), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert (await gateway.client.get("/instances")).json() == []


async def test_spooled_zip_with_a_large_member(gateway: Gateway, large: bytes) -> None:
    small = dicom_file("CT_small.dcm")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/large.dcm", large)
        archive.writestr("a/readme.txt", b"not DICOM" * 10_000)
        archive.writestr("b/small.dcm", small)
    response = await gateway.client.post("/instances", content=_pieces(buffer.getvalue()))
    assert response.status_code == 200, response.text
    answers = response.json()
    assert len(answers) == 2
    files = [
        (await gateway.client.get(f"/instances/{answer['ID']}/file")).content for answer in answers
    ]
    assert files == [large, small]


def test_decoder_bounds_every_piece() -> None:
    bomb = zlib.compress(b"\0" * (20 * PIECE_BYTES))
    decoder = BodyDecoder("deflate")
    pieces = list(decoder.feed(bomb))
    decoder.finish()
    assert max(map(len, pieces)) <= PIECE_BYTES
    assert sum(map(len, pieces)) == 20 * PIECE_BYTES


def test_decoder_accepts_zero_padding_and_refuses_garbage() -> None:
    decoder = BodyDecoder("gzip")
    assert b"".join(decoder.feed(gzip.compress(b"abc") + b"\0\0\0")) == b"abc"
    decoder.finish()
    with pytest.raises(OrthancError):
        list(BodyDecoder("deflate").feed(zlib.compress(b"abc") + b"junk"))
    decoder = BodyDecoder("identity")
    assert list(decoder.feed(b"xyz")) == [b"xyz"]


async def test_a_streamed_answer_outlives_the_request_timeout() -> None:
    # HttpRequestTimeout bounds the reads of the request body, not the time a
    # streamed answer (a large /file download) takes: StreamingResponse listens for
    # the client hanging up all along, and that wait must not time out.
    async def slow() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0.2)
            yield b"x" * 10

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await StreamingResponse(slow())(scope, receive, send)

    timed = RequestTimeoutMiddleware(app, seconds=0.05)
    transport = httpx.ASGITransport(app=timed)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        response = await client.get("/")
    assert (response.status_code, response.content) == (200, b"x" * 30)
