"""Attachment blobs: write with optional zlib, read back uncompressed.

Mirrors Orthanc's StorageAccessor: the index row says how the blob was stored
(`compression`), so toggling StorageCompression keeps old attachments readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from dicomkeep.common.adapters.zlib_blobs import compress, decompress
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.ports.blobs import BlobStore

DICOM = 1
DICOM_AS_JSON = 2
DICOM_UNTIL_PIXEL_DATA = 3
NO_COMPRESSION = 0
ZLIB = 1

async def write_attachment(
    blobs: BlobStore, content_type: int, data: bytes, *, compressed: bool
) -> AttachmentInfo:
    """Write one attachment under a fresh UUID and describe it.

    With `compressed`, the blob holds Orthanc's "zlib with size" format and the
    compressed size and MD5 describe the stored bytes.
    """
    key = str(uuid.uuid4())
    uncompressed_md5 = hashlib.md5(data).hexdigest()
    stored = await asyncio.to_thread(compress, data) if compressed else data
    await blobs.put(key, stored)
    return AttachmentInfo(
        content_type=content_type,
        uuid=key,
        uncompressed_size=len(data),
        uncompressed_md5=uncompressed_md5,
        compressed_size=len(stored),
        compressed_md5=hashlib.md5(stored).hexdigest() if compressed else uncompressed_md5,
        compression=ZLIB if compressed else 0,
    )


async def read_attachment(
    blobs: BlobStore, info: AttachmentInfo, span: tuple[int, int] | None = None
) -> bytes:
    """Return the uncompressed bytes of an attachment (or bytes [start, end) of them).

    Raises KeyError when the blob is missing from the store.
    """
    if info.compression == NO_COMPRESSION:
        return await blobs.get(info.uuid, span)
    data = await asyncio.to_thread(decompress, await blobs.get(info.uuid))
    return data if span is None else data[span[0] : span[1]]


async def read_stored(blobs: BlobStore, info: AttachmentInfo) -> bytes:
    """Return the attachment's bytes exactly as stored (`compressed-data`)."""
    return await blobs.get(info.uuid)
