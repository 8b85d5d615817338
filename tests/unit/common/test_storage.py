"""The StorageAccessor and Orthanc's "zlib with size" format: writing, whole and
ranged reads, streaming, MD5s, recompression, and Orthanc's bytes on disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import pytest
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.compression import compress, decompress
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.ids import Level
from dicomkeep.common.orthanc import CompressionType, FileContentType
from dicomkeep.common.storage import (
    CorruptedBlob,
    StorageAccessor,
    TooLarge,
    encode,
    find_attachment,
    read_instance_file,
)

BODY = os.urandom(5000) + b"A" * 20000 + os.urandom(777)


class MemoryBlobs:
    """A BlobStore in a dict that records every read span."""

    range_reads = True

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.reads: list[tuple[int, int] | str | None] = []

    async def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = bytes(data)

    async def put_file(self, key: str, source: BinaryIO, size: int) -> None:
        self.blobs[key] = source.read(size)

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        self.reads.append(span)
        data = self.blobs[key]
        return data if span is None else data[span[0] : span[1]]

    async def stream(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        data = self.blobs[key]
        self.reads.append("stream")
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    async def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    async def exists(self, key: str) -> bool:
        return key in self.blobs

    async def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        for key in list(self.blobs):
            yield key

    async def close(self) -> None:
        return None


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


def small(blobs: MemoryBlobs) -> StorageAccessor:
    """An accessor with tiny read and inflate pieces, so every loop runs many times."""
    return StorageAccessor(blobs, chunk_bytes=1000)


# --- Orthanc's "zlib with size" format ------------------------------------------


def test_compress_writes_orthancs_prefix_and_zlib_header() -> None:
    stored = compress(b"x" * 76660)
    assert stored[:8] == (76660).to_bytes(8, "little")
    assert stored[:8] == bytes.fromhex("742b010000000000")
    assert stored[8:10] == b"\x78\x9c"
    assert len(stored) < 1000


def test_compress_round_trips() -> None:
    for data in (b"a", b"DICM" * 1000, os.urandom(100_000), bytes(range(256))):
        assert decompress(compress(data)) == data


def test_empty_input_is_empty_output() -> None:
    assert compress(b"") == b""
    assert decompress(b"") == b""


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda s: s[:5], id="shorter-than-prefix"),
        pytest.param(lambda s: s[:-4], id="truncated-stream"),
        pytest.param(lambda s: s + b"trailing", id="trailing-bytes"),
        pytest.param(lambda s: (1234).to_bytes(8, "little") + s[8:], id="wrong-size"),
        pytest.param(lambda s: s[:8] + b"not zlib at all", id="not-zlib"),
        pytest.param(lambda s: s[:20] + bytes([s[20] ^ 0xFF]) + s[21:], id="flipped-byte"),
        pytest.param(lambda s: (2**64 - 1).to_bytes(8, "little") + s[8:], id="huge-size"),
    ],
)
def test_corrupt_data_raises_corrupted_blob(corrupt: object) -> None:
    stored = compress(b"The quick brown fox jumps over the lazy dog. " * 50)
    assert callable(corrupt)
    with pytest.raises(CorruptedBlob):
        decompress(corrupt(stored))


# --- writing and reading whole attachments --------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
async def test_write_describes_the_stored_bytes(compressed: bool) -> None:
    blobs = MemoryBlobs()
    storage = StorageAccessor(blobs)
    info = await storage.write(1026, BODY, compressed=compressed)
    stored = blobs.blobs[info.uuid]
    uuid.UUID(info.uuid)  # a fresh UUID key, as Orthanc names its files
    assert stored == (compress(BODY) if compressed else BODY)
    assert info.content_type == 1026
    assert info.uncompressed_size == len(BODY)
    assert info.compressed_size == len(stored)
    assert info.uncompressed_md5 == hashlib.md5(BODY).hexdigest()
    assert info.compressed_md5 == hashlib.md5(stored).hexdigest()
    assert info.compression == (
        CompressionType.ZLIB_WITH_SIZE if compressed else CompressionType.NONE
    )
    assert await storage.read(info) == BODY
    assert await storage.read_stored(info) == stored
    assert await storage.verify_md5(info)


async def test_write_without_md5_leaves_them_empty() -> None:
    storage = StorageAccessor(MemoryBlobs())
    info = await storage.write(1026, b"abc", compressed=True, store_md5=False)
    assert (info.uncompressed_md5, info.compressed_md5) == ("", "")
    assert not await storage.verify_md5(info)  # Orthanc: nothing to verify against


@pytest.mark.parametrize("compressed", [False, True])
async def test_range_reads(compressed: bool) -> None:
    blobs = MemoryBlobs()
    storage = StorageAccessor(blobs)
    info = await storage.write(1, BODY, compressed=compressed)
    blobs.reads.clear()
    assert await storage.read(info, (100, 110)) == BODY[100:110]
    assert await storage.read(info, (len(BODY) - 3, len(BODY) + 50)) == BODY[-3:]
    assert await storage.read(info, (7, 7)) == b""
    # Uncompressed: the store reads only the span; compressed: whole blob, then inflate.
    assert blobs.reads == ([None] * 3 if compressed else [(100, 110), (len(BODY) - 3, len(BODY) + 50), (7, 7)])


async def test_write_instance_adds_the_prefix_only_when_compressing() -> None:
    blobs = MemoryBlobs()
    storage = StorageAccessor(blobs)
    prefix = BODY[:1000]
    plain = await storage.write_instance(BODY, prefix, compressed=False)
    assert [a.content_type for a in plain] == [FileContentType.DICOM]
    packed = await storage.write_instance(BODY, prefix, compressed=True)
    assert [a.content_type for a in packed] == [
        FileContentType.DICOM,
        FileContentType.DICOM_UNTIL_PIXEL_DATA,
    ]
    assert await storage.read(packed[1]) == prefix
    assert all(a.compression == CompressionType.ZLIB_WITH_SIZE for a in packed)
    no_pixels = await storage.write_instance(BODY, None, compressed=True)
    assert len(no_pixels) == 1


async def test_write_instance_removes_the_file_when_the_prefix_fails() -> None:
    class FailingSecondPut(MemoryBlobs):
        async def put(self, key: str, data: bytes) -> None:
            if self.blobs:
                raise OSError("disk full")
            await super().put(key, data)

    blobs = FailingSecondPut()
    with pytest.raises(OSError):
        await StorageAccessor(blobs).write_instance(BODY, BODY[:10], compressed=True)
    assert blobs.blobs == {}


async def test_missing_blob_and_unknown_compression() -> None:
    blobs = MemoryBlobs()
    storage = StorageAccessor(blobs)
    info = await storage.write(1, BODY, compressed=True)
    del blobs.blobs[info.uuid]
    with pytest.raises(KeyError):
        await storage.read(info)
    odd = info.model_copy(update={"compression": 2})
    with pytest.raises(CorruptedBlob):
        await storage.read(odd)
    with pytest.raises(CorruptedBlob):
        await collect(storage.iter_uncompressed(odd))


# --- Orthanc's storage folder ------------------------------------------------------


async def test_reads_a_file_in_orthancs_layout_and_format(tmp_path: Path) -> None:
    """A blob as Orthanc 1.x writes it with StorageCompression: the file
    `<root>/<uuid[0:2]>/<uuid[2:4]>/<uuid>` holding the uint64 LE size and a zlib
    stream, described by its AttachmentInfo row (compression type 1)."""
    key = "5f5e3c1a-2b8e-4d3a-9c7e-0a1b2c3d4e5f"
    original = b"DICM" + bytes(range(256)) * 40
    orthanc_bytes = len(original).to_bytes(8, "little") + zlib.compress(original, 6)
    path = tmp_path / key[0:2] / key[2:4] / key
    path.parent.mkdir(parents=True)
    path.write_bytes(orthanc_bytes)
    info = AttachmentInfo(
        content_type=FileContentType.DICOM, uuid=key, uncompressed_size=len(original),
        uncompressed_md5=hashlib.md5(original).hexdigest(), compressed_size=len(orthanc_bytes),
        compressed_md5=hashlib.md5(orthanc_bytes).hexdigest(), compression=1,
    )  # fmt: skip
    storage = StorageAccessor(FileBlobStore(tmp_path), chunk_bytes=500)
    assert await storage.read(info) == original
    assert await storage.read(info, (4, 8)) == bytes(range(4))
    assert await collect(storage.iter_uncompressed(info)) == original
    assert await collect(storage.iter_stored(info)) == orthanc_bytes
    assert await storage.verify_md5(info)
    # And what DicomKeep writes there is byte for byte what Orthanc would have written.
    ours = await storage.write(FileContentType.DICOM, original, compressed=True)
    path_of = tmp_path / ours.uuid[0:2] / ours.uuid[2:4] / ours.uuid
    assert path_of.read_bytes() == orthanc_bytes


# --- the index side: one lookup ------------------------------------------------------


class OneLookupIndex:
    """An index that answers `attachment` (one query) and counts the calls."""

    def __init__(self, attachments: dict[str, list[AttachmentInfo]]) -> None:
        self.attachments = attachments
        self.calls = 0

    async def attachment(
        self, level: Level, public_id: str, content_type: int
    ) -> AttachmentInfo | None:
        self.calls += 1
        found = self.attachments.get(public_id) or []
        return next((a for a in found if a.content_type == content_type), None)


async def test_read_instance_file_costs_one_lookup_and_one_read() -> None:
    blobs = MemoryBlobs()
    storage = StorageAccessor(blobs)
    dicom = await storage.write(FileContentType.DICOM, BODY, compressed=True)
    prefix = await storage.write(FileContentType.DICOM_UNTIL_PIXEL_DATA, BODY[:9], compressed=True)
    index = OneLookupIndex({"i1": [dicom, prefix], "i2": [prefix]})
    blobs.reads.clear()
    assert await read_instance_file(index, storage, "i1") == BODY  # type: ignore[arg-type]
    assert (index.calls, blobs.reads) == (1, [None])
    assert await read_instance_file(index, storage, "i2") is None  # type: ignore[arg-type]
    assert await read_instance_file(index, storage, "unknown") is None  # type: ignore[arg-type]
    found = await find_attachment(index, Level.INSTANCE, "i1", 3)  # type: ignore[arg-type]
    assert found == prefix


# --- pieces: encoding while receiving, streaming while answering ---------------------


@pytest.mark.parametrize("piece", [1, 7, 4096, 10**6])
async def test_encode_matches_orthanc_format_whatever_the_chunking(piece: int) -> None:
    data = BODY[:3000] if piece == 1 else BODY
    compressed = await encode(pieces(data, piece), compressed=True)
    assert bytes(compressed.data) == compress(data)
    assert compressed.uncompressed_size == len(data)
    assert compressed.uncompressed_md5 == hashlib.md5(data).hexdigest()
    assert compressed.compressed_md5 == hashlib.md5(compress(data)).hexdigest()
    plain = await encode(pieces(data, piece), compressed=False)
    assert bytes(plain.data) == data
    assert plain.compressed_md5 == plain.uncompressed_md5


async def test_encode_empty_and_limit() -> None:
    empty = await encode(pieces(b"", 1), compressed=True)
    assert (bytes(empty.data), empty.uncompressed_size) == (b"", 0)
    with pytest.raises(TooLarge):
        await encode(pieces(b"x" * 101, 10), compressed=False, limit=100)
    assert (await encode(pieces(b"x" * 100, 10), compressed=False, limit=100)).uncompressed_size == 100


@pytest.mark.parametrize("compressed", [False, True])
async def test_round_trip_in_small_pieces(compressed: bool) -> None:
    blobs = MemoryBlobs()
    storage = small(blobs)
    encoded = await encode(pieces(BODY, 333), compressed=compressed)
    info = await storage.write_encoded(encoded, 1026, store_md5=True)
    blobs.reads.clear()
    stored = [piece async for piece in storage.iter_stored(info)]
    assert b"".join(stored) == blobs.blobs[info.uuid]
    assert max(len(piece) for piece in stored) <= 1000
    assert blobs.reads == ["stream"]  # one streamed read, never the whole blob at once
    out = [piece async for piece in storage.iter_uncompressed(info)]
    assert b"".join(out) == BODY
    assert max(len(piece) for piece in out) <= 1000
    assert await storage.verify_md5(info)


async def test_recompress_both_ways() -> None:
    blobs = MemoryBlobs()
    storage = small(blobs)
    plain = await storage.write_encoded(
        await encode(pieces(BODY, 999), compressed=False), 1026, store_md5=True
    )
    packed = await storage.recompress(plain, compressed=True, store_md5=True)
    assert packed.uuid != plain.uuid and packed.compression == 1
    assert blobs.blobs[packed.uuid] == compress(BODY)
    assert packed.uncompressed_md5 == plain.uncompressed_md5
    unpacked = await storage.recompress(packed, compressed=False, store_md5=True)
    assert blobs.blobs[unpacked.uuid] == BODY


def corrupt_variants(data: bytes) -> list[bytes]:
    body = zlib.compress(data, 6)
    prefix = len(data).to_bytes(8, "little")
    return [
        prefix + body[:-5],                                   # truncated stream
        prefix + body + b"trailing",                          # data after the stream
        (len(data) - 1).to_bytes(8, "little") + body,         # prefix too small
        (len(data) + 1).to_bytes(8, "little") + body,         # prefix too large
        prefix + body[:100] + bytes([body[100] ^ 0xFF]) + body[101:],  # flipped byte
        prefix[:5],                                           # shorter than the prefix
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(6))
async def test_corrupt_compressed_blobs_are_detected(case: int) -> None:
    blobs = MemoryBlobs()
    storage = small(blobs)
    stored = corrupt_variants(BODY)[case]
    blobs.blobs["k"] = stored
    info = AttachmentInfo(
        content_type=1026, uuid="k", uncompressed_size=len(BODY),
        uncompressed_md5=hashlib.md5(BODY).hexdigest(), compressed_size=len(stored),
        compressed_md5=hashlib.md5(stored).hexdigest(), compression=1,
    )  # fmt: skip
    with pytest.raises(CorruptedBlob):
        await collect(storage.iter_uncompressed(info))
    with pytest.raises(CorruptedBlob):
        await storage.read(info)
    assert not await storage.verify_md5(info)


async def test_size_and_md5_mismatches() -> None:
    blobs = MemoryBlobs()
    storage = small(blobs)
    info = await storage.write_encoded(
        await encode(pieces(BODY, 500), compressed=False), 1026, store_md5=True
    )
    blobs.blobs[info.uuid] = BODY + b"!"
    with pytest.raises(CorruptedBlob):
        await collect(storage.iter_stored(info))
    blobs.blobs[info.uuid] = BODY[:-1] + b"?"
    assert not await storage.verify_md5(info)
    with pytest.raises(CorruptedBlob):
        await storage.recompress(info, compressed=True, store_md5=True)
    del blobs.blobs[info.uuid]
    with pytest.raises(KeyError):
        await collect(storage.iter_uncompressed(info))
    no_md5 = info.model_copy(update={"uncompressed_md5": "", "compressed_md5": ""})
    assert not await storage.verify_md5(no_md5)


async def test_discard_is_best_effort() -> None:
    class Stubborn(MemoryBlobs):
        async def delete(self, key: str) -> None:
            if key == "stuck":
                raise OSError("busy")
            await super().delete(key)

    blobs = Stubborn()
    blobs.blobs.update({"a": b"1", "stuck": b"2", "b": b"3"})
    await StorageAccessor(blobs).discard(["a", "stuck", "b"])
    assert list(blobs.blobs) == ["stuck"]


# --- writing from a file ----------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("body", [b"", BODY])
async def test_write_file_stores_what_write_stores(compressed: bool, body: bytes) -> None:
    blobs = MemoryBlobs()
    accessor = small(blobs)
    expected = await accessor.write(FileContentType.DICOM, body, compressed=compressed)
    with tempfile.TemporaryFile() as source:
        source.write(body)
        info = await accessor.write_file(FileContentType.DICOM, source, compressed=compressed)
    assert blobs.blobs[info.uuid] == blobs.blobs[expected.uuid]
    assert info.model_dump(exclude={"uuid"}) == expected.model_dump(exclude={"uuid"})
    assert await accessor.read(info) == body


async def test_write_file_trusts_a_given_md5_and_can_omit_md5s() -> None:
    accessor = small(MemoryBlobs())
    with tempfile.TemporaryFile() as source:
        source.write(BODY)
        info = await accessor.write_file(
            FileContentType.DICOM, source, compressed=False, md5="0" * 32
        )
        assert info.uncompressed_md5 == info.compressed_md5 == "0" * 32
        bare = await accessor.write_file(
            FileContentType.DICOM, source, compressed=True, store_md5=False
        )
    assert (bare.uncompressed_md5, bare.compressed_md5) == ("", "")
    assert bare.uncompressed_size == len(BODY)
