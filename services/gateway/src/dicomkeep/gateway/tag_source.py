"""Which bytes answer a tag request: attachment 3 when it exists, else the file.

Mirrors Orthanc 1.9.1+: with StorageCompression on, each instance with pixel
data also has attachment 3 (`dicom-until-pixel-data`), the file up to the pixel
data element. `/tags` and `/simplified-tags` (without `?whole`) read it instead
of the whole, possibly large, compressed file.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dicomkeep.common.dicom.orthanc_json import Format, tags_json
from dicomkeep.common.errors import ErrorCode, OrthancError, unknown_resource
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.orthanc import FileContentType
from dicomkeep.common.storage import StorageAccessor


async def dicom_for_tags(
    index: Index, storage: StorageAccessor, public_id: str, *, whole: bool
) -> tuple[bytes, bool]:
    """Return (bytes, is_prefix) to build an instance's tags from.

    `is_prefix` is True when the bytes are attachment 3: pass it to `tags_json`
    as `assume_pixel_data`. With `whole`, always the full DICOM file. Raises 404
    *Unknown resource* for an unknown instance, 404 *Accessing an inexistent item*
    when the blob is missing from the storage area.
    """
    attachments = await index.list_attachments(Level.INSTANCE, public_id)
    if attachments is None:
        raise unknown_resource()
    by_type = {info.content_type: info for info in attachments}
    prefix = None if whole else by_type.get(FileContentType.DICOM_UNTIL_PIXEL_DATA)
    source = prefix or by_type.get(FileContentType.DICOM)
    if source is None:
        raise unknown_resource()
    try:
        return await storage.read(source), prefix is not None
    except KeyError as error:
        raise OrthancError(
            ErrorCode.INEXISTENT_ITEM, "The DICOM file is missing from the storage area"
        ) from error


#: Files up to this size are turned into tags on the event loop's thread: parsing
#: an MR or CT header takes ~0.2 ms, less than handing it to a worker thread and
#: back (and pure Python gains no parallelism from threads). Larger files, where
#: a long header is likelier, still go to a thread.
INLINE_TAGS_LIMIT = 256 * 1024


async def render_tags(data: bytes, fmt: Format, **options: Any) -> dict[str, Any]:
    """Return `tags_json(data, fmt, **options)`, off the loop for large files only."""
    if len(data) <= INLINE_TAGS_LIMIT:
        return tags_json(data, fmt, **options)
    return await asyncio.to_thread(tags_json, data, fmt, **options)
