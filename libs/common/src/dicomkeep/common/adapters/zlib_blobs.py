"""Orthanc's "zlib with size" compression, and a BlobStore wrapper applying it.

Stored format (ORTHANC_API.md §9, Orthanc's ZlibCompressor with its size prefix):
the uncompressed length as an 8-byte little-endian unsigned integer, then a zlib
stream (level 6, so it starts `78 9c`). An empty input is stored as zero bytes.
The store layer decides per attachment whether to compress, with `compress` and
`decompress`; `ZlibBlobStore` is a convenience for stores that compress everything.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import AsyncIterator

from dicomkeep.common.ports.blobs import BlobStore

_SIZE_BYTES = 8
_LEVEL = 6
#: Above this many bytes, (de)compression leaves the event loop (zlib drops the GIL).
_OFF_LOOP_BYTES = 64 * 1024


def compress(data: bytes) -> bytes:
    """Compress in Orthanc's format: uint64 LE uncompressed size, then zlib (level 6).

    Empty input gives empty output, as Orthanc stores an empty file.
    """
    if not data:
        return b""
    return len(data).to_bytes(_SIZE_BYTES, "little") + zlib.compress(data, _LEVEL)


def decompress(data: bytes) -> bytes:
    """Decompress Orthanc's format; raise ValueError if the bytes are corrupt.

    Checks that the stream is complete, has nothing after it, and inflates to exactly
    the size in the prefix (never inflating past it). Empty input gives empty output.
    """
    if not data:
        return b""
    if len(data) < _SIZE_BYTES:
        raise ValueError("corrupt compressed blob: shorter than its size prefix")
    size = int.from_bytes(data[:_SIZE_BYTES], "little")
    inflater = zlib.decompressobj()
    try:
        # Inflate at most size + 1 bytes: a lying prefix cannot exhaust memory.
        result = inflater.decompress(data[_SIZE_BYTES:], min(size + 1, sys.maxsize))
    except zlib.error as error:
        raise ValueError(f"corrupt compressed blob: {error}") from None
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise ValueError("corrupt compressed blob: truncated or trailing data")
    if len(result) != size:
        raise ValueError(
            f"corrupt compressed blob: inflates to {len(result)} bytes, prefix says {size}"
        )
    return result


async def compress_async(data: bytes) -> bytes:
    """`compress`, off the event loop for large inputs."""
    if len(data) > _OFF_LOOP_BYTES:
        return await asyncio.to_thread(compress, data)
    return compress(data)


async def decompress_async(data: bytes) -> bytes:
    """`decompress`, off the event loop for large inputs; raise ValueError if corrupt."""
    if len(data) > _OFF_LOOP_BYTES:
        return await asyncio.to_thread(decompress, data)
    return decompress(data)


class ZlibBlobStore:
    """A BlobStore that stores every blob compressed in `inner`.

    `get` returns the uncompressed bytes; a span applies to them, so the whole blob
    is read and inflated (`range_reads = False`). A corrupt stored blob raises
    ValueError. `keys`, `exists` and `delete` pass through; `close` closes `inner`
    (the wrapper owns it).
    """

    range_reads: bool = False

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner

    async def put(self, key: str, data: bytes) -> None:
        """Compress and write the blob durably; overwrite any blob with the same key."""
        await self.inner.put(key, await compress_async(data))

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        """Return the uncompressed blob, or bytes [start, end) of it; KeyError if absent."""
        if span is not None and (span[0] < 0 or span[1] < span[0]):
            raise ValueError(f"invalid span: {span!r}")
        data = await decompress_async(await self.inner.get(key))
        return data if span is None else data[span[0] : span[1]]

    async def delete(self, key: str) -> None:
        """Remove the blob; idempotent."""
        await self.inner.delete(key)

    async def exists(self, key: str) -> bool:
        """Tell whether the blob exists."""
        found: bool = await self.inner.exists(key)
        return found

    async def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        """Iterate the inner store's keys (see its `keys`)."""
        async for key in self.inner.keys(older_than):
            yield key

    async def close(self) -> None:
        """Close the inner store."""
        await self.inner.close()
