"""Upload bodies of any size with bounded memory: decoded and spooled as they arrive.

A `POST /instances` body is read chunk by chunk; `Content-Encoding: gzip` (or
deflate) is undone on the way, in pieces of at most 1 MiB whatever the
compression ratio. A body up to SPOOL_BYTES stays in memory (the fast path of
ordinary instances); a larger one goes to an anonymous temporary file
(`tempfile.TemporaryFile`, in TMPDIR: it has no name, so it disappears with its
descriptor, even when the process is killed), hashed (MD5) on the way. The
server's memory then stays a few MiB per upload, whatever its size.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.gateway.bodies import refuse_declared_excess, too_large
from starlette.requests import Request

#: Bodies up to this many (decoded) bytes are kept in memory; larger ones are spooled.
SPOOL_BYTES = 8 * 1024 * 1024
#: The largest piece inflated at once, and the batch written to the spool at once.
PIECE_BYTES = 1024 * 1024


def _bad_encoding() -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot decompress the body")


class BodyDecoder:
    """Undo a `Content-Encoding` piece by piece (gzip, x-gzip, deflate; others pass).

    Mirrors `gzip.decompress` / `zlib.decompress`: concatenated gzip members are
    all inflated, zero padding after the last one is ignored; a corrupt or
    truncated stream raises 400 *Bad file format* "Cannot decompress the body".
    """

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "").strip().lower()
        self._gzip = encoding in ("gzip", "x-gzip")
        self._wbits = 16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS
        self.active = self._gzip or encoding == "deflate"
        self._inflater = zlib.decompressobj(self._wbits)
        self._fed = False
        self._padding = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield the decoded pieces of the next chunk of the body."""
        if not self.active:
            if data:
                yield data
            return
        while data:
            self._fed = True
            if self._inflater.eof:
                data = self._next_member(data)
                if not data:
                    return
            try:
                out = self._inflater.decompress(data, PIECE_BYTES)
                if out:
                    yield out
                while self._inflater.unconsumed_tail:
                    out = self._inflater.decompress(self._inflater.unconsumed_tail, PIECE_BYTES)
                    if out:
                        yield out
            except zlib.error as error:
                raise _bad_encoding() from error
            data = self._inflater.unused_data if self._inflater.eof else b""

    def _next_member(self, data: bytes) -> bytes:
        """After a complete stream: start the next gzip member, or accept zero padding."""
        if self._padding or not data.strip(b"\0"):
            if data.strip(b"\0"):
                raise _bad_encoding()
            self._padding = True
            return b""
        if not self._gzip:
            raise _bad_encoding()  # deflate: one stream only
        self._inflater = zlib.decompressobj(self._wbits)
        return data

    def finish(self) -> None:
        """Check that the body ended with a complete stream (an empty body is empty)."""
        if self.active and self._fed and not self._inflater.eof:
            raise _bad_encoding()


class Upload:
    """A received, decoded body: `data` in memory, or `file` (spooled) with its `md5`."""

    def __init__(self) -> None:
        self.size = 0
        self.data = b""
        self.file: BinaryIO | None = None
        self.md5 = ""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._digest = hashlib.md5()

    def head(self, count: int) -> bytes:
        """Return the first `count` bytes of the body (blocking when spooled)."""
        if self.file is None:
            return self.data[:count]
        self.file.seek(0)
        return self.file.read(count)

    def close(self) -> None:
        """Drop the body (the spooled file disappears with its descriptor)."""
        if self.file is not None:
            self.file.close()

    async def append(self, piece: bytes) -> None:
        """Take the next decoded piece; spool once the body passes SPOOL_BYTES."""
        self._pending.append(piece)
        self._pending_size += len(piece)
        self.size += len(piece)
        if self.file is None and self.size > SPOOL_BYTES:
            self.file = await asyncio.to_thread(tempfile.TemporaryFile)
        if self.file is not None and self._pending_size >= PIECE_BYTES:
            await self._flush(self.file)

    async def complete(self) -> None:
        """Mark the end of the body: join it in memory, or flush the spool and hash."""
        if self.file is None:
            self.data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            return
        await self._flush(self.file)
        await asyncio.to_thread(self.file.flush)
        self.md5 = self._digest.hexdigest()

    async def _flush(self, file: BinaryIO) -> None:
        pending = self._pending
        self._pending, self._pending_size = [], 0
        if pending:
            await asyncio.to_thread(self._write, file, pending)

    def _write(self, file: BinaryIO, pieces: list[bytes]) -> None:
        for piece in pieces:  # no join: the first flush holds SPOOL_BYTES
            self._digest.update(piece)
        file.writelines(pieces)


async def _chunks(request: Request, what: str, limit: int) -> AsyncIterator[bytes]:
    """Yield the raw body; 413 as soon as more than `limit` bytes arrived (0 = none)."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if limit and received > limit:
            raise await too_large(request, what, limit)
        yield chunk


async def receive_upload(request: Request, what: str, limit: int) -> Upload:
    """Read the request body, decoded, into an Upload; the caller closes it.

    413 (Orthanc's *Parameter out of range*) when the body, or what it inflates
    to, exceeds `limit` bytes (0 = no limit), before reading anything when
    Content-Length declares it; 400 when a compressed body does not decode. On
    any error (the client hanging up included) nothing is left behind.
    """
    if limit:
        await refuse_declared_excess(request, what, limit)
    decoder = BodyDecoder(request.headers.get("content-encoding"))
    upload = Upload()
    try:
        async for chunk in _chunks(request, what, limit):
            for piece in decoder.feed(chunk):
                await upload.append(piece)
                if limit and upload.size > limit:
                    raise await too_large(request, what, limit)
        decoder.finish()
        await upload.complete()
    except BaseException:
        upload.close()
        raise
    return upload
