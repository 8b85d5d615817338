"""What the attachment routes answer: lookups, errors, streamed bytes, row views.

Mirrors Orthanc's attachment handlers (ORTHANC_API.md §4): an unknown resource
or absent attachment is 404 *Unknown resource*; the text and JSON sub-routes
are answered from the index row alone; bytes are streamed from the blob store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError, unknown_resource
from dicomkeep.common.events import AttachmentInfo
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.orthanc import CompressionType
from dicomkeep.common.storage import CHUNK_BYTES, CorruptedBlob, find_attachment
from dicomkeep.gateway.responses import OrthancJSONResponse, plain
from starlette.responses import Response, StreamingResponse

#: Renders one sub-route from an attachment's row.
Render = Callable[[AttachmentInfo], Response]


async def attachments_of(index: Index, level: Level, public_id: str) -> list[AttachmentInfo]:
    """Return a resource's attachments; 404 *Unknown resource* if it is unknown."""
    found = await index.list_attachments(level, public_id)
    if found is None:
        raise unknown_resource()
    return found


def pick(attachments: list[AttachmentInfo], content_type: int) -> AttachmentInfo | None:
    """Return the attachment of that type, None if absent."""
    return next((a for a in attachments if a.content_type == content_type), None)


async def lookup(index: Index, level: Level, public_id: str, content_type: int) -> AttachmentInfo:
    """Return one attachment; 404 *Unknown resource* if it or its resource is absent."""
    info = await find_attachment(index, level, public_id, content_type)
    if info is None:
        raise unknown_resource()
    return info


def missing_blob(what: str = "The attachment") -> OrthancError:
    """Return the error of an attachment whose blob is missing from the store (404)."""
    return OrthancError(ErrorCode.INEXISTENT_ITEM, f"{what} is missing from the storage area")


def corrupted(error: CorruptedBlob) -> OrthancError:
    """Return the 500 *Corrupted file* error of a blob not matching its row."""
    return OrthancError(ErrorCode.CORRUPTED_FILE, str(error))


async def stream_answer(
    pieces: AsyncIterator[bytes],
    size: int,
    media_type: str,
    headers: dict[str, str],
    *,
    what: str = "The attachment",
) -> Response:
    """Answer bytes from `pieces`: whole when small, streamed otherwise.

    The first piece is read before answering, so a missing or corrupt blob is
    still a clean error (`what` names the missing bytes); a failure later cuts the connection (as any server
    streaming a file it cannot finish).
    """
    try:
        first = await anext(pieces, b"")
        if size <= CHUNK_BYTES:
            rest = [piece async for piece in pieces]
            return Response(b"".join([first, *rest]), media_type=media_type, headers=headers)
    except KeyError as error:
        raise missing_blob(what) from error
    except CorruptedBlob as error:
        raise corrupted(error) from error

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for piece in pieces:
            yield piece

    return StreamingResponse(
        body(), media_type=media_type, headers={**headers, "Content-Length": str(size)}
    )


def _operations(info: AttachmentInfo) -> Response:
    """The sub-routes of one attachment, md5 ones only when MD5s are stored."""
    operations = ["compress", "compressed-data"]
    if info.compressed_md5:
        operations.append("compressed-md5")
    operations += ["compressed-size", "data", "info", "is-compressed"]
    if info.uncompressed_md5:
        operations.append("md5")
    operations += ["size", "uncompress"]
    if info.compressed_md5 and info.uncompressed_md5:
        operations.append("verify-md5")
    return OrthancJSONResponse(operations)


def _info(info: AttachmentInfo) -> Response:
    """The attachment's row as Orthanc's `/info` object."""
    return OrthancJSONResponse(
        {
            "Uuid": info.uuid,
            "ContentType": info.content_type,
            "UncompressedSize": info.uncompressed_size,
            "CompressedSize": info.compressed_size,
            "UncompressedMD5": info.uncompressed_md5,
            "CompressedMD5": info.compressed_md5,
        }
    )


def _md5(value: str) -> Response:
    """An MD5 as text; empty 404 when none is stored (StoreMD5ForAttachments false)."""
    if not value:
        raise NoAnswer()  # StoreMD5ForAttachments was false: empty 404, as Orthanc
    return plain(value)


#: The text/JSON sub-routes answered from the index row alone.
RENDERERS: dict[str, Render] = {
    "": _operations,
    "/info": _info,
    "/size": lambda info: plain(str(info.uncompressed_size)),
    "/compressed-size": lambda info: plain(str(info.compressed_size)),
    "/md5": lambda info: _md5(info.uncompressed_md5),
    "/compressed-md5": lambda info: _md5(info.compressed_md5),
    "/is-compressed": lambda info: plain("0" if info.compression == CompressionType.NONE else "1"),
}
