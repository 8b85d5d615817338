"""Request bodies with a size limit: refuse early, answer cleanly.

A body over the limit answers 413 with Orthanc's error body (*Parameter out of
range*, the limit in `Details`). The rest of the body is read and dropped, up to
DRAIN_BYTES, so that the client, still sending, receives the answer instead of
a reset connection; beyond that the server closes the connection.
"""

from __future__ import annotations

from dicomkeep.common.errors import ErrorCode, OrthancError
from starlette.requests import ClientDisconnect, Request

#: How much of an oversized body is read and dropped before answering 413.
DRAIN_BYTES = 8 * 1024 * 1024
PAYLOAD_TOO_LARGE = 413


def declared_length(request: Request) -> int | None:
    """Return Content-Length as an integer, None if absent or malformed."""
    value = request.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def drain(request: Request) -> None:
    """Read and drop what is left of the body, at most DRAIN_BYTES."""
    dropped = 0
    try:
        while dropped <= DRAIN_BYTES:
            message = await request.receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except ClientDisconnect:
        return


async def too_large(request: Request, what: str, limit: int) -> OrthancError:
    """Drain the body and return the 413 error to raise."""
    await drain(request)
    return OrthancError(
        ErrorCode.PARAMETER_OUT_OF_RANGE,
        f"{what} is larger than the limit of {limit} bytes",
        http_status=PAYLOAD_TOO_LARGE,
    )


async def refuse_declared_excess(request: Request, what: str, limit: int) -> None:
    """Raise 413 before reading anything when Content-Length already exceeds `limit`."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise await too_large(request, what, limit)


async def read_limited(request: Request, what: str, limit: int) -> bytes:
    """Return the whole body; raise 413 as soon as it exceeds `limit` bytes."""
    await refuse_declared_excess(request, what, limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise await too_large(request, what, limit)
        chunks.append(chunk)
    return b"".join(chunks)
