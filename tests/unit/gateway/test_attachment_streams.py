"""Attachment bytes in pieces: encoding, ranged reads, inflating, verifying."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import AsyncIterator

import pytest
from dicomkeep.common.adapters.zlib_blobs import compress
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.gateway import attachment_streams
from dicomkeep.gateway.attachment_streams import (
    CorruptedBlob,
    TooLarge,
    encode,
    iter_stored,
    iter_uncompressed,
    recompress,
    store_encoded,
    verify_md5,
)

BODY = os.urandom(5000) + b"A" * 20000 + os.urandom(777)


class MemoryBlobs:
    """A BlobStore in a dict that records every read span."""

    range_reads = True

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.reads: list[tuple[int, int] | None] = []

    async def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = bytes(data)

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        self.reads.append(span)
        data = self.blobs[key]
        return data if span is None else data[span[0] : span[1]]

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


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the read and inflate pieces tiny, so every loop runs many times."""
    monkeypatch.setattr(attachment_streams, "CHUNK_BYTES", 1000)
    return 1000


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
async def test_round_trip_in_small_pieces(small_chunks: int, compressed: bool) -> None:
    blobs = MemoryBlobs()
    encoded = await encode(pieces(BODY, 333), compressed=compressed)
    info = await store_encoded(blobs, encoded, 1026, store_md5=True)
    blobs.reads.clear()
    stored = [piece async for piece in iter_stored(blobs, info)]
    assert b"".join(stored) == blobs.blobs[info.uuid]
    assert max(len(piece) for piece in stored) <= small_chunks
    assert all(span is not None for span in blobs.reads)  # never one whole read
    out = [piece async for piece in iter_uncompressed(blobs, info)]
    assert b"".join(out) == BODY
    assert max(len(piece) for piece in out) <= small_chunks
    assert await verify_md5(blobs, info)


async def test_recompress_both_ways(small_chunks: int) -> None:
    blobs = MemoryBlobs()
    plain = await store_encoded(blobs, await encode(pieces(BODY, 999), compressed=False), 1026,
                                store_md5=True)  # fmt: skip
    packed = await recompress(blobs, plain, compressed=True, store_md5=True)
    assert packed.uuid != plain.uuid and packed.compression == 1
    assert blobs.blobs[packed.uuid] == compress(BODY)
    assert packed.uncompressed_md5 == plain.uncompressed_md5
    unpacked = await recompress(blobs, packed, compressed=False, store_md5=True)
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
    ]


@pytest.mark.parametrize("case", range(6))
async def test_corrupt_compressed_blobs_are_detected(small_chunks: int, case: int) -> None:
    blobs = MemoryBlobs()
    stored = corrupt_variants(BODY)[case]
    blobs.blobs["k"] = stored
    info = AttachmentInfo(
        content_type=1026, uuid="k", uncompressed_size=len(BODY),
        uncompressed_md5=hashlib.md5(BODY).hexdigest(), compressed_size=len(stored),
        compressed_md5=hashlib.md5(stored).hexdigest(), compression=1,
    )  # fmt: skip
    with pytest.raises(CorruptedBlob):
        await collect(iter_uncompressed(blobs, info))
    assert not await verify_md5(blobs, info)


async def test_size_and_md5_mismatches(small_chunks: int) -> None:
    blobs = MemoryBlobs()
    info = await store_encoded(blobs, await encode(pieces(BODY, 500), compressed=False), 1026,
                               store_md5=True)  # fmt: skip
    blobs.blobs[info.uuid] = BODY + b"!"
    with pytest.raises(CorruptedBlob):
        await collect(iter_stored(blobs, info))
    blobs.blobs[info.uuid] = BODY[:-1] + b"?"
    assert not await verify_md5(blobs, info)
    with pytest.raises(CorruptedBlob):
        await recompress(blobs, info, compressed=True, store_md5=True)
    del blobs.blobs[info.uuid]
    with pytest.raises(KeyError):
        await collect(iter_uncompressed(blobs, info))
    no_md5 = info.model_copy(update={"uncompressed_md5": "", "compressed_md5": ""})
    assert not await verify_md5(blobs, no_md5)
