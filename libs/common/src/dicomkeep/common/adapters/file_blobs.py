"""FileBlobStore: the embedded BlobStore, files in Orthanc's storage layout.

Mirrors Orthanc's FilesystemStorage: the blob with key `<uuid>` lives at
`<root>/<uuid[0:2]>/<uuid[2:4]>/<uuid>` (no extension), so an existing
`OrthancStorage` folder can be read in place and ours can be handed to Orthanc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Self

from dicomkeep.common.retries import retrying_sync

#: Keys are Orthanc attachment UUIDs; anything path-safe of 4+ characters is accepted.
#: No "." in the first four (they name folders), so a key never starts with "." and
#: cannot collide with a temporary file.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{3}[A-Za-z0-9_.-]*")
_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"
_PUT_ATTEMPTS = 20


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid blob key: {key!r}")
    return key


def _check_span(span: tuple[int, int]) -> tuple[int, int]:
    start, end = span
    if start < 0 or end < start:
        raise ValueError(f"invalid span: {span!r}")
    return start, end


class FileBlobStore:
    """Blobs as files under `root`, in Orthanc's two-level layout.

    - `put` is durable: the file and its folder are fsynced before it returns. A
      new key is written in place (created exclusively, as Orthanc's storage does:
      nothing reads a key before the index refers to it, and a put cut short by a
      crash leaves an orphan for the collector). An existing key is replaced
      through a temporary file renamed over it with `os.replace` (atomic: a reader
      sees the old blob or the new one, never a torn one).
    - `get` reads only the requested span (`range_reads = True`); a span is
      `[start, end)`, clamped to the blob's size like a slice; `end < start` or a
      negative start raises ValueError.
    - `delete` is idempotent and, like Orthanc, removes the two levels of folders
      when they become empty.
    - Keys must be 4+ characters of `[A-Za-z0-9_.-]`, starting with a letter or
      digit, with no "." in the first four (UUIDs qualify); others raise ValueError.
    - All file I/O runs in `asyncio.to_thread`; the event loop never blocks
      (`put_blocking` is for callers already in a worker thread).
    """

    range_reads: bool = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        """Return the file of a key: `<root>/<key[0:2]>/<key[2:4]>/<key>`."""
        _check_key(key)
        return self.root / key[0:2] / key[2:4] / key

    async def put(self, key: str, data: bytes) -> None:
        """Write the blob durably; overwrite any blob with the same key."""
        path = self.path_of(key)
        await asyncio.to_thread(_write_durably, path, data)

    def put_blocking(self, key: str, data: bytes) -> None:
        """`put` in the calling (worker) thread."""
        _write_durably(self.path_of(key), data)

    async def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        """Copy the file into the blob durably, 1 MiB at a time (`size` is not needed)."""
        path = self.path_of(key)
        await asyncio.to_thread(_write_durably, path, file)

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        """Return the blob, or bytes [start, end) of it; raise KeyError if absent."""
        path = self.path_of(key)
        if span is not None:
            span = _check_span(span)
        try:
            cached = _read_cached(path, span, INLINE_READ_BYTES)
            if cached is not None:
                return cached
            return await asyncio.to_thread(_read, path, span)
        except FileNotFoundError:
            raise KeyError(key) from None

    async def stream(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        """Yield the blob in pieces of at most `chunk_bytes`, read from one open file;
        raise KeyError if absent."""
        path = self.path_of(key)
        try:
            cached = _read_cached(path, None, min(INLINE_READ_BYTES, chunk_bytes))
            if cached is None:
                handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        if cached is not None:
            if cached:
                yield cached
            return
        try:
            while piece := await asyncio.to_thread(handle.read, chunk_bytes):
                yield piece
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        """Remove the blob and its folders once empty; idempotent."""
        path = self.path_of(key)
        await asyncio.to_thread(_remove, path, self.root)

    async def exists(self, key: str) -> bool:
        """Tell whether the blob exists."""
        path = self.path_of(key)
        return await asyncio.to_thread(path.is_file)

    async def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        """Iterate every key, optionally only files modified before a UNIX time.

        Walks the tree one first-level folder per thread hop; skips temporary files
        and any file not at its layout path. Keys written during the walk may or may
        not be seen.
        """
        tops = await asyncio.to_thread(_subfolders, self.root)
        for top in tops:
            found = await asyncio.to_thread(_keys_under, top, older_than)
            for key in found:
                yield key

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: nothing to open; `async with` closes it on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release nothing: files need no connection. Provided for the port."""


def _write_durably(path: Path, data: bytes | BinaryIO) -> None:
    """Write a blob, then fsync it and its folder.

    A new key is created in place: one file, one data flush, and the folder's
    fsync then finds the new entry already in the journal (ext4 commits it with
    the file), where a rename after the file's flush cost a second journal commit
    (~2 ms per instance here). An existing key goes through a temporary file and
    `os.replace`, so that readers never see it torn.
    """
    folder = path.parent
    try:
        fd, target = _create(path)  # the folders exist: no retry policy to build
    except FileNotFoundError:
        # A concurrent delete may remove a (then empty) folder between our mkdir
        # of it and the next step: create it again, at once.
        for attempt in retrying_sync(
            f"blob folder {folder}", attempts=_PUT_ATTEMPTS, first=0.0, on=(FileNotFoundError,)
        ):
            with attempt:
                _make_folders(folder)
                fd, target = _create(path)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        # The folder holds our file now, so no delete can remove it.
        if target != path:
            os.replace(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    # Make the new entry (or the rename) durable. A concurrent delete of the same
    # key may already have removed the folder: then there is nothing left to make durable.
    with contextlib.suppress(FileNotFoundError):
        _fsync_folder(folder)


def _create(path: Path) -> tuple[int, Path]:
    """Open `path` as a new file, or a temporary file beside it when it exists:
    (file descriptor, the path opened). FileNotFoundError when its folder is missing."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), path
    except FileExistsError:
        target = path.parent / f"{_TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), target


def _make_folders(folder: Path) -> None:
    """Create `<root>/ab/cd`, tolerating concurrent creation (but not removal)."""
    os.makedirs(folder.parent.parent, exist_ok=True)  # the root, never removed
    for path in (folder.parent, folder):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Blobs up to this size are read on the event loop's thread when the page cache
#: holds them whole (see `_read_cached`).
INLINE_READ_BYTES = 1024 * 1024
_NOWAIT = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+


def _read_cached(path: Path, span: tuple[int, int] | None, limit: int) -> bytes | None:
    """The blob (or bytes [start, end) of it) if it is at most `limit` bytes and
    the page cache holds all of it; None when the disk would have to be read.

    `preadv2(RWF_NOWAIT)` copies from the page cache and answers EAGAIN rather
    than wait for the disk, so a recent blob (the usual read: just stored, or
    read again) costs no hand-off to a thread (two for a streamed answer), and a
    cold one still goes to a thread. The open itself runs here: a path lookup in
    the dentry cache. Raises FileNotFoundError when the blob is absent.
    """
    if _NOWAIT is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        start, end = span if span is not None else (0, size)
        length = max(0, min(end, size) - start)
        if length > limit:
            return None
        buffer = bytearray(length)
        if length and os.preadv(fd, [buffer], start, _NOWAIT) != length:
            return None
        return bytes(buffer)
    except OSError:  # EAGAIN (not cached), EOPNOTSUPP (a file system without it)
        return None
    finally:
        os.close(fd)


def _read(path: Path, span: tuple[int, int] | None) -> bytes:
    with open(path, "rb") as blob:
        if span is None:
            return blob.read()
        start, end = span
        blob.seek(start)
        return blob.read(end - start)


def _remove(path: Path, root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    # Like Orthanc: drop <root>/ab/cd then <root>/ab when they are empty. A folder a
    # concurrent put is filling is not empty, and rmdir refuses it.
    for folder in (path.parent, path.parent.parent):
        if folder == root:
            break
        try:
            os.rmdir(folder)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                break
            if error.errno != errno.ENOENT:
                raise


def _subfolders(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            return sorted(
                Path(entry.path)
                for entry in entries
                if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


def _keys_under(top: Path, older_than: float | None) -> list[str]:
    found: list[str] = []
    for middle in _subfolders(top):
        try:
            entries = list(os.scandir(middle))
        except FileNotFoundError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if not _KEY.fullmatch(name) or name[0:2] != top.name or name[2:4] != middle.name:
                continue  # temporary files start with "."; foreign files are skipped
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if older_than is not None and entry.stat().st_mtime >= older_than:
                    continue
            except FileNotFoundError:
                continue  # deleted while we walked
            found.append(name)
    return found
