"""The StorageAccessor: attachments over the BlobStore port, as Orthanc has.

Mirrors Orthanc's `StorageAccessor` (OrthancFramework/Sources/FileStorage): the
blob store keeps opaque bytes; this layer decides how an attachment is stored
(Orthanc's "zlib with size" format when StorageCompression is on), computes its
MD5s, and reads it back whole, as a byte range, or in pieces. Every reader and
writer of attachment bytes goes through it: the REST file and attachment routes,
the receivers of C-STORE and POST /instances, the C-MOVE/C-GET senders, the jobs
that store to a modality or a peer, and C-FIND's file reads. The index row says
how each blob was stored (`compression`), so toggling StorageCompression keeps
old attachments readable. Hashing and (de)compression of more than 64 KiB run in
a thread: the event loop never does the heavy work.

Over 400 lines because it is the one place attachment bytes are encoded and
decoded: whole, in ranges, and streamed from and to files, for every caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from dicomkeep.common.compression import (
    CHUNK_BYTES,
    LEVEL,
    SIZE_PREFIX,
    CorruptedBlob,
    Encoder,
    Inflater,
    compress,
    decompress,
)
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.ids import Level
from dicomkeep.common.orthanc import CompressionType, FileContentType
from dicomkeep.common.ports.blobs import BlobStore

if TYPE_CHECKING:  # the index domain is needed for its type only
    from dicomkeep.common.index import Index

__all__ = [
    "CHUNK_BYTES",
    "CorruptedBlob",
    "Encoded",
    "StorageAccessor",
    "TooLarge",
    "encode",
    "file_md5",
    "encode_instance",
    "find_attachment",
    "read_instance_file",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Above this many bytes, hashing and (de)compression leave the event loop.
OFF_LOOP_BYTES = 64 * 1024


class TooLarge(Exception):
    """A body exceeded the accepted size; `limit` is that size in bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


@dataclass
class Encoded:
    """An attachment ready to store: the stored bytes and what describes them."""

    data: bytes | bytearray
    uncompressed_size: int
    uncompressed_md5: str
    compressed_md5: str
    compression: CompressionType

    def info(self, content_type: int, key: str, *, store_md5: bool) -> AttachmentInfo:
        """Describe the blob stored under `key` (MD5s empty unless `store_md5`)."""
        return AttachmentInfo(
            content_type=content_type,
            uuid=key,
            uncompressed_size=self.uncompressed_size,
            uncompressed_md5=self.uncompressed_md5 if store_md5 else "",
            compressed_size=len(self.data),
            compressed_md5=self.compressed_md5 if store_md5 else "",
            compression=int(self.compression),
        )


async def _off_loop(size: int, work: Callable[..., T], *args: object) -> T:
    """Run `work(*args)` in a thread when `size` bytes make it heavy, else inline."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


def _encode_whole(data: bytes, compressed: bool) -> Encoded:
    uncompressed_md5 = hashlib.md5(data).hexdigest()
    if not compressed:
        return Encoded(data, len(data), uncompressed_md5, uncompressed_md5, CompressionType.NONE)
    stored = compress(data)
    return Encoded(
        stored, len(data), uncompressed_md5, hashlib.md5(stored).hexdigest(),
        CompressionType.ZLIB_WITH_SIZE,
    )  # fmt: skip


def file_md5(source: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Return the MD5 of a file from its start, read in pieces (blocking)."""
    source.seek(0)
    digest = hashlib.md5()
    while piece := source.read(chunk_bytes):
        digest.update(piece)
    return digest.hexdigest()


def _compress_file(source: BinaryIO, target: BinaryIO, chunk_bytes: int) -> tuple[int, str, str]:
    """Write `compress(<source>)` to `target` piece by piece (blocking); return the
    source's size, its MD5 and the MD5 of what was written.

    Orthanc's format streams: the size prefix is known before the zlib stream starts.
    """
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    if size == 0:
        return 0, hashlib.md5().hexdigest(), hashlib.md5().hexdigest()
    plain, packed = hashlib.md5(), hashlib.md5()
    compressor = zlib.compressobj(LEVEL)

    def emit(out: bytes) -> None:
        if out:
            packed.update(out)
            target.write(out)

    emit(size.to_bytes(SIZE_PREFIX, "little"))
    read = 0
    while piece := source.read(chunk_bytes):
        read += len(piece)
        plain.update(piece)
        emit(compressor.compress(piece))
    emit(compressor.flush())
    if read != size:
        raise OSError(f"the file changed while it was compressed ({read} of {size} bytes)")
    return size, plain.hexdigest(), packed.hexdigest()
def encode_instance(
    data: bytes, prefix: bytes | None, *, compressed: bool
) -> list[tuple[int, Encoded]]:
    """Hash (and compress) an instance's attachments, as `write_instance` stores them:
    (content type, Encoded) for the DICOM file and, with compression, the file up to
    its pixel data. Blocking CPU work: call it from a worker thread (the receivers
    do it with the parsing, in one thread hop)."""
    encoded = [(int(FileContentType.DICOM), _encode_whole(data, compressed))]
    if compressed and prefix is not None:
        encoded.append((int(FileContentType.DICOM_UNTIL_PIXEL_DATA), _encode_whole(prefix, True)))
    return encoded


async def encode(
    chunks: AsyncIterable[bytes], *, compressed: bool, limit: int | None = None
) -> Encoded:
    """Consume `chunks` into the bytes to store, hashing (and compressing) on the way.

    The output equals `compression.compress(body)` when `compressed`, else the
    body. Work on large pieces runs in a thread. Raises TooLarge as soon as more
    than `limit` bytes arrived (the rest of `chunks` is left unread).
    """
    encoder = Encoder(compressed=compressed)
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
        await _off_loop(batched, encoder.feed, b"".join(batch))
    data, uncompressed_md5, stored_md5 = encoder.finish()
    kind = CompressionType.ZLIB_WITH_SIZE if compressed else CompressionType.NONE
    return Encoded(data, encoder.size, uncompressed_md5, stored_md5, kind)


class StorageAccessor:
    """Read and write attachments over one BlobStore (Orthanc's StorageAccessor).

    Stateless above the store: build one per store and share it. `chunk_bytes`
    bounds the pieces read from the store and produced by inflating.
    """

    def __init__(self, blobs: BlobStore, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.blobs = blobs
        self.chunk_bytes = chunk_bytes

    # -- writing ------------------------------------------------------------------------
    async def write(
        self, content_type: int, data: bytes, *, compressed: bool, store_md5: bool = True
    ) -> AttachmentInfo:
        """Write one attachment under a fresh UUID and describe it.

        With `compressed`, the blob holds Orthanc's "zlib with size" format and the
        compressed size and MD5 describe the stored bytes.
        """
        encoded = await _off_loop(len(data), _encode_whole, data, compressed)
        return await self.write_encoded(encoded, content_type, store_md5=store_md5)

    async def write_encoded(
        self, encoded: Encoded, content_type: int, *, store_md5: bool
    ) -> AttachmentInfo:
        """Write bytes from `encode` under a fresh UUID and return the attachment's row."""
        key = str(uuid.uuid4())
        await self.blobs.put(key, encoded.data)  # no copy on the way
        return encoded.info(content_type, key, store_md5=store_md5)

    async def write_instance(
        self, data: bytes, prefix: bytes | None, *, compressed: bool
    ) -> list[AttachmentInfo]:
        """Write an instance's attachments: the DICOM file, and with compression the
        file up to its pixel data (`prefix`), as Orthanc 1.9.1+ does.

        On failure nothing written here is left behind (best effort).
        """
        size = len(data) + (len(prefix) if prefix is not None else 0)
        encoded = await _off_loop(size, partial(encode_instance, compressed=compressed), data, prefix)
        return await self.write_encoded_instance(encoded)

    def write_encoded_instance_blocking(
        self, encoded: list[tuple[int, Encoded]]
    ) -> list[AttachmentInfo]:
        """`write_encoded_instance` for a caller in a worker thread (`put_blocking`).

        A failure after a first blob was written (with compression, the second
        one) leaves that blob to the orphan collector: the delete is async.
        """
        written: list[AttachmentInfo] = []
        try:
            for content_type, one in encoded:
                key = str(uuid.uuid4())
                self.blobs.put_blocking(key, one.data)
                written.append(one.info(content_type, key, store_md5=True))
        except BaseException:
            if written:
                log.warning(
                    "blob write failed; left to the orphan collector: %s",
                    ", ".join(info.uuid for info in written),
                )
            raise
        return written

    async def write_encoded_instance(
        self, encoded: list[tuple[int, Encoded]]
    ) -> list[AttachmentInfo]:
        """Write attachments from `encode_instance` (each under a fresh UUID, with
        its MD5s); on failure nothing written here is left behind (best effort)."""
        written: list[AttachmentInfo] = []
        try:
            for content_type, one in encoded:
                written.append(await self.write_encoded(one, content_type, store_md5=True))
        except BaseException:
            await self.discard([info.uuid for info in written])
            raise
        return written

    async def write_file(
        self,
        content_type: int,
        source: BinaryIO,
        *,
        compressed: bool,
        store_md5: bool = True,
        md5: str | None = None,
    ) -> AttachmentInfo:
        """Write one attachment from a local file under a fresh UUID and describe it,
        reading it in pieces: memory stays a few chunks whatever the file's size.

        `md5`, when the caller already hashed the file, saves a read. With
        `compressed`, the file is compressed into an anonymous temporary file first
        (Orthanc's "zlib with size" format, the same bytes as `write`).
        """
        chunk = self.chunk_bytes
        key = str(uuid.uuid4())
        if not compressed:
            size = source.seek(0, io.SEEK_END)
            plain_md5 = md5 or await asyncio.to_thread(file_md5, source, chunk)
            source.seek(0)
            await self.blobs.put_file(key, source, size)
            stored_size, packed_md5, kind = size, plain_md5, CompressionType.NONE
        else:
            with tempfile.TemporaryFile() as packed:
                size, plain_md5, packed_md5 = await asyncio.to_thread(
                    _compress_file, source, packed, chunk
                )
                stored_size = packed.tell()
                packed.seek(0)
                await self.blobs.put_file(key, packed, stored_size)
            kind = CompressionType.ZLIB_WITH_SIZE
        return AttachmentInfo(
            content_type=content_type,
            uuid=key,
            uncompressed_size=size,
            uncompressed_md5=plain_md5 if store_md5 else "",
            compressed_size=stored_size,
            compressed_md5=packed_md5 if store_md5 else "",
            compression=int(kind),
        )

    async def write_instance_file(
        self, source: BinaryIO, prefix: bytes | None, *, compressed: bool, md5: str | None = None
    ) -> list[AttachmentInfo]:
        """Write an instance's attachments as `write_instance` does, the DICOM file
        read from a local file in pieces (`md5`: its MD5 if known)."""
        written = [
            await self.write_file(FileContentType.DICOM, source, compressed=compressed, md5=md5)
        ]
        if compressed and prefix is not None:
            try:
                written.append(
                    await self.write(
                        FileContentType.DICOM_UNTIL_PIXEL_DATA, prefix, compressed=True
                    )
                )
            except BaseException:
                await self.discard([info.uuid for info in written])
                raise
        return written

    async def discard(self, keys: Iterable[str]) -> None:
        """Delete blobs that nothing refers to; failures are logged (the orphan
        collector gets them later)."""
        for key in list(keys):
            try:
                await self.blobs.delete(key)
            except Exception:
                log.exception("could not remove blob %s", key)

    # -- reading ------------------------------------------------------------------------
    async def read(self, info: AttachmentInfo, span: tuple[int, int] | None = None) -> bytes:
        """Return the attachment's original bytes, or bytes [start, end) of them.

        An uncompressed blob is read with one (ranged) store read; a compressed
        one is read whole and inflated. Raises KeyError when the blob is missing,
        CorruptedBlob when it does not decode or its compression is unknown.
        """
        if info.compression == CompressionType.NONE:
            return await self.blobs.get(info.uuid, span)
        if info.compression != CompressionType.ZLIB_WITH_SIZE:
            raise CorruptedBlob(f"unknown compression type {info.compression}")
        stored = await self.blobs.get(info.uuid)
        data = await _off_loop(info.uncompressed_size, decompress, stored)
        return data if span is None else data[span[0] : span[1]]

    async def read_stored(self, info: AttachmentInfo) -> bytes:
        """Return the attachment's bytes exactly as stored (`compressed-data`)."""
        return await self.blobs.get(info.uuid)

    async def iter_stored(self, info: AttachmentInfo) -> AsyncIterator[bytes]:
        """Yield the blob exactly as stored, in pieces of at most `chunk_bytes`, from
        one streamed read of the store (`BlobStore.stream`).

        Raises KeyError when the blob is missing, CorruptedBlob when its length is
        not the recorded compressed size (when longer, before yielding the excess).
        """
        size = info.compressed_size
        received = 0
        async for data in self.blobs.stream(info.uuid, self.chunk_bytes):
            received += len(data)
            if received > size:
                raise CorruptedBlob(f"blob {info.uuid} is longer than {size} bytes")
            yield data
        if received != size:
            raise CorruptedBlob(f"blob {info.uuid} holds {received} bytes, {size} recorded")

    async def iter_uncompressed(self, info: AttachmentInfo) -> AsyncIterator[bytes]:
        """Yield the attachment's original bytes, inflating piece by piece if compressed.

        Raises KeyError when the blob is missing, CorruptedBlob when it does not
        decode to the recorded size (or its compression is unknown).
        """
        if info.compression == CompressionType.NONE:
            async for piece in self.iter_stored(info):
                yield piece
            return
        if info.compression != CompressionType.ZLIB_WITH_SIZE:
            raise CorruptedBlob(f"unknown compression type {info.compression}")
        inflater = Inflater(self.chunk_bytes)
        size = info.uncompressed_size
        async for piece in self.iter_stored(info):
            out = await _off_loop(size, inflater.step, piece)
            while True:
                if out:
                    yield out
                if not inflater.has_tail:
                    break
                out = await _off_loop(size, inflater.step, b"")
        inflater.finish()
        if inflater.produced != size:
            raise CorruptedBlob(
                f"blob {info.uuid} inflates to {inflater.produced} bytes, {size} recorded"
            )

    # -- checking and converting -----------------------------------------------------------
    async def verify_md5(self, info: AttachmentInfo) -> bool:
        """Re-read an attachment and tell whether both stored MD5s still match.

        Mirrors Orthanc's verify-md5: False when no MD5 is stored, when the stored
        bytes differ from the compressed MD5, or when they inflate to other bytes
        than the uncompressed MD5 says. Raises KeyError when the blob is missing.
        """
        if not info.compressed_md5 or not info.uncompressed_md5:
            return False
        try:
            if await self._md5(self.iter_stored(info)) != info.compressed_md5:
                return False
            if info.compression == CompressionType.NONE:
                return True
            return await self._md5(self.iter_uncompressed(info)) == info.uncompressed_md5
        except CorruptedBlob:
            return False

    @staticmethod
    async def _md5(pieces: AsyncIterator[bytes]) -> str:
        digest = hashlib.md5()
        async for piece in pieces:
            await _off_loop(len(piece), digest.update, piece)
        return digest.hexdigest()

    async def recompress(
        self, info: AttachmentInfo, *, compressed: bool, store_md5: bool
    ) -> AttachmentInfo:
        """Store the attachment again, with or without zlib, under a fresh UUID.

        The old blob is left alone (the caller swaps the index row, which releases
        it). Raises KeyError if the blob is missing, CorruptedBlob if its content
        no longer matches the recorded MD5.
        """
        encoded = await encode(self.iter_uncompressed(info), compressed=compressed)
        if info.uncompressed_md5 and encoded.uncompressed_md5 != info.uncompressed_md5:
            raise CorruptedBlob(f"blob {info.uuid} no longer matches its MD5")
        return await self.write_encoded(encoded, info.content_type, store_md5=store_md5)


async def find_attachment(
    index: Index, level: Level, public_id: str, content_type: int
) -> AttachmentInfo | None:
    """Return the row of one attachment of a resource; None if either is unknown.

    The one place the readers look an attachment up in the index: one query
    (`Index.attachment`), so a reader costs one index lookup and one blob read.
    """
    return await index.attachment(level, public_id, content_type)


async def read_instance_file(
    index: Index, storage: StorageAccessor, public_id: str
) -> bytes | None:
    """Return an instance's DICOM file: one index lookup, one blob read.

    None when the instance (or its DICOM attachment) is unknown; raises KeyError
    when the blob is missing from the store, CorruptedBlob when it does not decode.
    """
    info = await find_attachment(index, Level.INSTANCE, public_id, FileContentType.DICOM)
    if info is None:
        return None
    return await storage.read(info)
