"""Attachment bytes in pieces: encode while receiving, decode while answering.

Mirrors Orthanc's StorageAccessor, without holding a large attachment whole in
memory twice:
- `encode` hashes (MD5) and, with StorageCompression, zlib-compresses a body as
  its chunks arrive; only the bytes to store are kept (compressed ones when
  compressing), in one buffer that goes to the blob store as it is.
- `iter_stored` reads a blob in 1 MiB spans when the store reads byte ranges,
  and `iter_uncompressed` inflates Orthanc's "zlib with size" format piece by
  piece (ORTHANC_API.md §9), so `/data` and `/compressed-data` stream.
- `verify_md5` and `recompress` (for `/compress`, `/uncompress`) are built on them.
The index row says how each blob was stored, so toggling StorageCompression
keeps old attachments readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from dicomkeep.common.attachments import NO_COMPRESSION, ZLIB
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.ports.blobs import BlobStore

#: Size of the pieces read from the store and sent to clients.
CHUNK_BYTES = 1024 * 1024
#: Largest attachment a PUT accepts (1 GiB): the body is held once in memory
#: (compressed when StorageCompression is on) before it goes to the blob store.
MAX_ATTACHMENT_BYTES = 1024 * 1024 * 1024
_SIZE_PREFIX = 8
_LEVEL = 6
#: Above this many bytes, hashing and (de)compression leave the event loop.
_OFF_LOOP_BYTES = 64 * 1024


class CorruptedBlob(ValueError):
    """A stored blob does not match its index row (size, MD5 or zlib stream)."""


class TooLarge(Exception):
    """A body exceeded the accepted size; `limit` is that size in bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


@dataclass
class Encoded:
    """An attachment ready to store: the stored bytes and what describes them."""

    data: bytearray
    uncompressed_size: int
    uncompressed_md5: str
    compressed_md5: str
    compression: int

    def info(self, content_type: int, key: str, *, store_md5: bool) -> AttachmentInfo:
        """Describe the blob stored under `key` (MD5s empty unless `store_md5`)."""
        return AttachmentInfo(
            content_type=content_type,
            uuid=key,
            uncompressed_size=self.uncompressed_size,
            uncompressed_md5=self.uncompressed_md5 if store_md5 else "",
            compressed_size=len(self.data),
            compressed_md5=self.compressed_md5 if store_md5 else "",
            compression=self.compression,
        )


class _Encoder:
    """Hash and optionally compress, one piece at a time (not thread-safe)."""

    def __init__(self, *, compressed: bool) -> None:
        self.md5 = hashlib.md5()
        self.size = 0
        self._compressor = zlib.compressobj(_LEVEL) if compressed else None
        # With compression, 8 bytes are reserved for the size prefix.
        self.data = bytearray(_SIZE_PREFIX if compressed else 0)

    def feed(self, piece: bytes) -> None:
        self.md5.update(piece)
        self.size += len(piece)
        if self._compressor is None:
            self.data += piece
        else:
            self.data += self._compressor.compress(piece)

    def finish(self) -> Encoded:
        uncompressed_md5 = self.md5.hexdigest()
        if self._compressor is None:
            return Encoded(self.data, self.size, uncompressed_md5, uncompressed_md5, NO_COMPRESSION)
        self.data += self._compressor.flush()
        if self.size == 0:
            self.data = bytearray()  # Orthanc stores an empty input as an empty file
        else:
            self.data[:_SIZE_PREFIX] = self.size.to_bytes(_SIZE_PREFIX, "little")
        return Encoded(
            self.data, self.size, uncompressed_md5, hashlib.md5(self.data).hexdigest(), ZLIB
        )


async def encode(
    chunks: AsyncIterable[bytes], *, compressed: bool, limit: int | None = None
) -> Encoded:
    """Consume `chunks` into the bytes to store, hashing (and compressing) on the way.

    The output equals `zlib_blobs.compress(body)` when `compressed`, else the body.
    Work on large pieces runs in a thread. Raises TooLarge as soon as more than
    `limit` bytes arrived (the rest of `chunks` is left unread).
    """
    encoder = _Encoder(compressed=compressed)
    batch: list[bytes] = []
    batched = 0
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if limit is not None and received > limit:
            raise TooLarge(limit)
        batch.append(chunk)
        batched += len(chunk)
        if batched >= CHUNK_BYTES:
            await asyncio.to_thread(encoder.feed, b"".join(batch))
            batch, batched = [], 0
    if batch:
        piece = b"".join(batch)
        if batched > _OFF_LOOP_BYTES:
            await asyncio.to_thread(encoder.feed, piece)
        else:
            encoder.feed(piece)
    return encoder.finish()


async def store_encoded(
    blobs: BlobStore, encoded: Encoded, content_type: int, *, store_md5: bool
) -> AttachmentInfo:
    """Write the encoded bytes under a fresh UUID and return the attachment's row."""
    key = str(uuid.uuid4())
    await blobs.put(key, encoded.data)  # a bytearray: no copy on the way to the store
    return encoded.info(content_type, key, store_md5=store_md5)


async def iter_stored(blobs: BlobStore, info: AttachmentInfo) -> AsyncIterator[bytes]:
    """Yield the blob exactly as stored, in pieces of at most CHUNK_BYTES when the
    store reads byte ranges (else in one piece).

    Raises KeyError when the blob is missing, CorruptedBlob when its length is
    not the recorded compressed size.
    """
    size = info.compressed_size
    if not blobs.range_reads or size <= CHUNK_BYTES:
        data = await blobs.get(info.uuid)
        if len(data) != size:
            raise CorruptedBlob(f"blob {info.uuid} holds {len(data)} bytes, {size} recorded")
        if data:
            yield data
        return
    for start in range(0, size, CHUNK_BYTES):
        end = min(start + CHUNK_BYTES, size)
        data = await blobs.get(info.uuid, (start, end))
        if len(data) != end - start:
            raise CorruptedBlob(f"blob {info.uuid} is shorter than {size} bytes")
        yield data
    if await blobs.get(info.uuid, (size, size + 1)):
        raise CorruptedBlob(f"blob {info.uuid} is longer than {size} bytes")


class _Inflater:
    """Inflate Orthanc's "zlib with size" format piece by piece, bounded output."""

    def __init__(self) -> None:
        self._prefix = bytearray()
        self._size: int | None = None
        self._inflater = zlib.decompressobj()
        self.produced = 0

    @property
    def has_tail(self) -> bool:
        """Whether input is left that a previous step could not inflate yet."""
        return bool(self._inflater.unconsumed_tail)

    def step(self, data: bytes) -> bytes:
        """Inflate `data` (or, when empty, the pending tail) into <= CHUNK_BYTES."""
        if self._size is None:
            needed = _SIZE_PREFIX - len(self._prefix)
            self._prefix += data[:needed]
            data = data[needed:]
            if len(self._prefix) < _SIZE_PREFIX:
                return b""
            self._size = int.from_bytes(self._prefix, "little")
        source = data or self._inflater.unconsumed_tail
        if not source:
            return b""
        remaining = self._size - self.produced
        try:
            out = self._inflater.decompress(source, min(CHUNK_BYTES, remaining + 1))
        except zlib.error as error:
            raise CorruptedBlob(f"corrupt zlib stream: {error}") from None
        self.produced += len(out)
        if self.produced > self._size:
            raise CorruptedBlob("the zlib stream inflates beyond its size prefix")
        if not out and self._inflater.unconsumed_tail == source:
            raise CorruptedBlob("the zlib stream makes no progress")
        return out

    def finish(self) -> None:
        """Check that the stream ended exactly at the announced size."""
        if self._size is None:
            if self._prefix:
                raise CorruptedBlob("the blob is shorter than its size prefix")
            return  # an empty blob is an empty attachment
        inflater = self._inflater
        if not inflater.eof or inflater.unused_data or self.produced != self._size:
            raise CorruptedBlob("truncated zlib stream, trailing data or wrong size")


async def _inflate(inflater: _Inflater, data: bytes, off_loop: bool) -> bytes:
    if off_loop:
        return await asyncio.to_thread(inflater.step, data)
    return inflater.step(data)


async def iter_uncompressed(blobs: BlobStore, info: AttachmentInfo) -> AsyncIterator[bytes]:
    """Yield the attachment's original bytes, inflating piece by piece if compressed.

    Raises KeyError when the blob is missing, CorruptedBlob when it does not
    decode to the recorded size (or its compression is unknown).
    """
    if info.compression == NO_COMPRESSION:
        async for piece in iter_stored(blobs, info):
            yield piece
        return
    if info.compression != ZLIB:
        raise CorruptedBlob(f"unknown compression type {info.compression}")
    inflater = _Inflater()
    off_loop = info.uncompressed_size > _OFF_LOOP_BYTES
    async for piece in iter_stored(blobs, info):
        out = await _inflate(inflater, piece, off_loop)
        while True:
            if out:
                yield out
            if not inflater.has_tail:
                break
            out = await _inflate(inflater, b"", off_loop)
    inflater.finish()
    if inflater.produced != info.uncompressed_size:
        raise CorruptedBlob(
            f"blob {info.uuid} inflates to {inflater.produced} bytes, "
            f"{info.uncompressed_size} recorded"
        )


async def verify_md5(blobs: BlobStore, info: AttachmentInfo) -> bool:
    """Re-read an attachment and tell whether both stored MD5s still match.

    Mirrors Orthanc's verify-md5: False when no MD5 is stored, when the stored
    bytes differ from the compressed MD5, or when they inflate to other bytes
    than the uncompressed MD5 says. Raises KeyError when the blob is missing.
    """
    if not info.compressed_md5 or not info.uncompressed_md5:
        return False
    stored = hashlib.md5()
    try:
        async for piece in iter_stored(blobs, info):
            await _hash(stored, piece)
    except CorruptedBlob:
        return False
    if stored.hexdigest() != info.compressed_md5:
        return False
    if info.compression == NO_COMPRESSION:
        return True
    original = hashlib.md5()
    try:
        async for piece in iter_uncompressed(blobs, info):
            await _hash(original, piece)
    except CorruptedBlob:
        return False
    return original.hexdigest() == info.uncompressed_md5


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


async def _hash(digest: _Digest, piece: bytes) -> None:
    if len(piece) > _OFF_LOOP_BYTES:
        await asyncio.to_thread(digest.update, piece)
    else:
        digest.update(piece)


async def recompress(
    blobs: BlobStore, info: AttachmentInfo, *, compressed: bool, store_md5: bool
) -> AttachmentInfo:
    """Store the attachment again, with or without zlib, under a fresh UUID.

    The old blob is left alone (the caller swaps the index row, which releases
    it). Raises KeyError if the blob is missing, CorruptedBlob if its content no
    longer matches the recorded MD5.
    """
    encoded = await encode(iter_uncompressed(blobs, info), compressed=compressed)
    if info.uncompressed_md5 and encoded.uncompressed_md5 != info.uncompressed_md5:
        raise CorruptedBlob(f"blob {info.uuid} no longer matches its MD5")
    return await store_encoded(blobs, encoded, info.content_type, store_md5=store_md5)
