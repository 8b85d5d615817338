"""Orthanc's "zlib with size" byte format, whole and piece by piece.

Stored format (ORTHANC_API.md §9, Orthanc's ZlibCompressor with its size prefix):
the uncompressed length as an 8-byte little-endian unsigned integer, then a zlib
stream (level 6, so it starts `78 9c`). An empty input is stored as zero bytes.
Only `storage.StorageAccessor` uses this module: every reader and writer of
attachments goes through it.
"""

from __future__ import annotations

import hashlib
import sys
import zlib

SIZE_PREFIX = 8
LEVEL = 6
#: The largest piece `Inflater.step` produces (and the accessor reads at once).
CHUNK_BYTES = 1024 * 1024


class CorruptedBlob(ValueError):
    """A stored blob does not match its index row (size, MD5 or zlib stream)."""


def compress(data: bytes) -> bytes:
    """Compress in Orthanc's format: uint64 LE uncompressed size, then zlib (level 6).

    Empty input gives empty output, as Orthanc stores an empty file.
    """
    if not data:
        return b""
    return len(data).to_bytes(SIZE_PREFIX, "little") + zlib.compress(data, LEVEL)


def decompress(data: bytes) -> bytes:
    """Decompress Orthanc's format; raise CorruptedBlob if the bytes are corrupt.

    Checks that the stream is complete, has nothing after it, and inflates to exactly
    the size in the prefix (never inflating past it). Empty input gives empty output.
    """
    if not data:
        return b""
    if len(data) < SIZE_PREFIX:
        raise CorruptedBlob("corrupt compressed blob: shorter than its size prefix")
    size = int.from_bytes(data[:SIZE_PREFIX], "little")
    inflater = zlib.decompressobj()
    try:
        # Inflate at most size + 1 bytes: a lying prefix cannot exhaust memory.
        result = inflater.decompress(data[SIZE_PREFIX:], min(size + 1, sys.maxsize))
    except zlib.error as error:
        raise CorruptedBlob(f"corrupt compressed blob: {error}") from None
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise CorruptedBlob("corrupt compressed blob: truncated or trailing data")
    if len(result) != size:
        raise CorruptedBlob(
            f"corrupt compressed blob: inflates to {len(result)} bytes, prefix says {size}"
        )
    return result


class Encoder:
    """Hash (MD5) and optionally compress, one piece at a time (not thread-safe).

    `finish()` gives the bytes to store (equal to `compress(body)` when
    compressing), kept in one buffer that goes to the blob store as it is.
    """

    def __init__(self, *, compressed: bool) -> None:
        self.compressed = compressed
        self.md5 = hashlib.md5()
        self.size = 0
        self._compressor = zlib.compressobj(LEVEL) if compressed else None
        # With compression, 8 bytes are reserved for the size prefix.
        self.data = bytearray(SIZE_PREFIX if compressed else 0)

    def feed(self, piece: bytes) -> None:
        """Take the next piece of the body."""
        self.md5.update(piece)
        self.size += len(piece)
        if self._compressor is None:
            self.data += piece
        else:
            self.data += self._compressor.compress(piece)

    def finish(self) -> tuple[bytearray, str, str]:
        """Return (stored bytes, uncompressed MD5, stored MD5)."""
        uncompressed_md5 = self.md5.hexdigest()
        if self._compressor is None:
            return self.data, uncompressed_md5, uncompressed_md5
        self.data += self._compressor.flush()
        if self.size == 0:
            self.data = bytearray()  # Orthanc stores an empty input as an empty file
        else:
            self.data[:SIZE_PREFIX] = self.size.to_bytes(SIZE_PREFIX, "little")
        return self.data, uncompressed_md5, hashlib.md5(self.data).hexdigest()


class Inflater:
    """Inflate Orthanc's format piece by piece, each output at most CHUNK_BYTES."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._prefix = bytearray()
        self._size: int | None = None
        self._inflater = zlib.decompressobj()
        self._chunk = chunk_bytes
        self.produced = 0

    @property
    def has_tail(self) -> bool:
        """Whether input is left that a previous step could not inflate yet."""
        return bool(self._inflater.unconsumed_tail)

    def step(self, data: bytes) -> bytes:
        """Inflate `data` (or, when empty, the pending tail) into at most one chunk."""
        if self._size is None:
            needed = SIZE_PREFIX - len(self._prefix)
            self._prefix += data[:needed]
            data = data[needed:]
            if len(self._prefix) < SIZE_PREFIX:
                return b""
            self._size = int.from_bytes(self._prefix, "little")
        source = data or self._inflater.unconsumed_tail
        if not source:
            return b""
        remaining = self._size - self.produced
        try:
            out = self._inflater.decompress(source, min(self._chunk, remaining + 1))
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
