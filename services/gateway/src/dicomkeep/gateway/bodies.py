"""Request bodies with a size limit: refuse early, answer cleanly.

A body over the limit answers 413 with Orthanc's error body (*Parameter out of
range*, the limit in `Details`). The rest of the body is read and dropped, up to
DRAIN_BYTES, so that the client, still sending, receives the answer instead of
a reset connection; beyond that the server closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from starlette.requests import ClientDisconnect, Request

#: How much of an oversized body is read and dropped before answering 413.
DRAIN_BYTES = 8 * 1024 * 1024
#: How long draining waits for the next chunk of an oversized body.
DRAIN_PAUSE = 1.0
PAYLOAD_TOO_LARGE = 413


def declared_length(request: Request) -> int | None:
    """Return Content-Length as an integer, None if absent or malformed."""
    value = request.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def drain(request: Request) -> None:
    """Read and drop what is left of the body, at most DRAIN_BYTES, waiting at most
    DRAIN_PAUSE seconds for each chunk; nothing when Content-Length already
    declares more than DRAIN_BYTES (the connection is closed after the answer)."""
    length = declared_length(request)
    if length is not None and length > DRAIN_BYTES:
        return
    dropped = 0
    try:
        while dropped <= DRAIN_BYTES:
            async with asyncio.timeout(DRAIN_PAUSE):
                message = await request.receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except (ClientDisconnect, TimeoutError):
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
    """Return the whole body; raise 413 as soon as it exceeds `limit` bytes (0 =
    no limit). A stalled body is `HttpRequestTimeout`'s business (http_options.py)."""
    if limit:
        await refuse_declared_excess(request, what, limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if limit and received > limit:
            raise await too_large(request, what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


#: Deepest nesting of arrays and objects accepted in a JSON body. Orthanc's
#: parser (jsoncpp) stops at 1000; no Orthanc request needs more than a few, and
#: a deeper document would exhaust Python's recursion limit further down.
MAX_JSON_DEPTH = 100


def parse_json(raw: bytes | str) -> Any:
    """Parse a JSON body; raise ValueError if it is not JSON (the caller picks the
    error), and 400 *Cannot parse a JSON document* if it nests deeper than
    MAX_JSON_DEPTH (instead of a RecursionError further down)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_JSON_DEPTH:
                    raise _too_deep()
                pending.append((child, depth + 1))
    return value


def _too_deep() -> OrthancError:
    return OrthancError(
        ErrorCode.BAD_JSON, f"The JSON document nests deeper than {MAX_JSON_DEPTH} levels"
    )
