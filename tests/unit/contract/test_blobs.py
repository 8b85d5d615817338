"""Contract suite of the BlobStore port: every adapter passes the same cases."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.s3_blobs import S3BlobStore
from dicomkeep.common.ports.blobs import BlobStore
from moto.server import ThreadedMotoServer

LARGE = 5 * 1024 * 1024 + 17  # over minio's 5 MiB part size: multipart on S3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An in-memory S3 endpoint (moto) for the whole session."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _s3(endpoint: str) -> S3BlobStore:
    return S3BlobStore(endpoint, f"dk-{uuid.uuid4().hex[:16]}", "test", "test")


@pytest.fixture(
    params=["file", pytest.param("s3", marks=pytest.mark.integration)],
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    blobs: BlobStore
    if request.param == "file":
        blobs = FileBlobStore(tmp_path / "storage")
    else:
        s3 = _s3(request.getfixturevalue("s3_endpoint"))
        await s3.open()
        blobs = s3
    yield blobs
    await blobs.close()


def _key() -> str:
    return str(uuid.uuid4())


def _tree(root: Path) -> list[str]:
    """Every path under `root`, relative and sorted (blocking, for assertions)."""
    assert root.is_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


async def _keys(store: BlobStore, older_than: float | None = None) -> set[str]:
    return {key async for key in store.keys(older_than)}


# --- the port contract ---------------------------------------------------------


async def test_put_then_get_returns_the_bytes(store: BlobStore) -> None:
    key = _key()
    await store.put(key, b"hello DICOM")
    assert await store.get(key) == b"hello DICOM"
    assert await store.exists(key)


async def test_empty_blob_round_trips(store: BlobStore) -> None:
    key = _key()
    await store.put(key, b"")
    assert await store.exists(key)
    assert await store.get(key) == b""


async def test_put_overwrites(store: BlobStore) -> None:
    key = _key()
    await store.put(key, b"first version, longer")
    await store.put(key, b"second")
    assert await store.get(key) == b"second"


async def test_delete_is_idempotent(store: BlobStore) -> None:
    key = _key()
    await store.put(key, b"data")
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)
    await store.delete(_key())
    assert not await store.exists(key)


async def test_missing_key_raises_key_error(store: BlobStore) -> None:
    key = _key()
    assert not await store.exists(key)
    with pytest.raises(KeyError):
        await store.get(key)
    with pytest.raises(KeyError):
        await store.get(key, (0, 10))
    with pytest.raises(KeyError):
        await store.get(key, (3, 3))


async def test_range_reads_return_the_span(store: BlobStore) -> None:
    key = _key()
    data = bytes(range(256)) * 40
    await store.put(key, data)
    assert await store.get(key, (10, 20)) == data[10:20]
    assert await store.get(key, (0, len(data))) == data
    assert await store.get(key, (0, 1)) == data[:1]
    assert await store.get(key, (5, 5)) == b""
    # Past the end, a span is clamped like a slice.
    assert await store.get(key, (len(data) - 5, len(data) + 100)) == data[-5:]
    assert await store.get(key, (len(data), len(data) + 10)) == b""
    assert await store.get(key, (len(data) + 50, len(data) + 60)) == b""


async def test_invalid_span_raises_value_error(store: BlobStore) -> None:
    key = _key()
    await store.put(key, b"0123456789")
    with pytest.raises(ValueError):
        await store.get(key, (5, 2))
    with pytest.raises(ValueError):
        await store.get(key, (-1, 2))


async def test_large_blob_round_trips(store: BlobStore) -> None:
    key = _key()
    data = os.urandom(LARGE)
    await store.put(key, data)
    assert await store.get(key) == data
    assert await store.get(key, (LARGE - 1000, LARGE)) == data[-1000:]


async def test_put_file_streams_a_file_into_a_blob(store: BlobStore, tmp_path: Path) -> None:
    """A large job output (an archive) is written from a file, multipart on S3."""
    key = _key()
    data = os.urandom(12 * 1024 * 1024 + 5)
    source = tmp_path / "archive.zip"
    source.write_bytes(data)
    with source.open("rb") as file:
        await store.put_file(key, file, len(data))
    assert await store.get(key, (0, 100)) == data[:100]
    assert await store.get(key) == data
    with source.open("rb") as file:  # overwrites, as put
        file.seek(len(data) - 10)
        await store.put_file(key, file, 10)
    assert await store.get(key) == data[-10:]


async def test_keys_lists_every_blob_once(store: BlobStore) -> None:
    assert await _keys(store) == set()
    written = {_key() for _ in range(25)}
    for key in written:
        await store.put(key, key.encode())
    listed = [key async for key in store.keys()]
    assert sorted(listed) == sorted(written)
    gone = next(iter(written))
    await store.delete(gone)
    assert await _keys(store) == written - {gone}


async def test_keys_older_than_filters_by_write_time(store: BlobStore) -> None:
    before = time.time() - 60
    written = {_key() for _ in range(3)}
    for key in written:
        await store.put(key, b"x")
    after = time.time() + 60
    assert await _keys(store, older_than=after) == written
    assert await _keys(store, older_than=before) == set()


async def test_concurrent_puts_and_deletes_in_one_folder(store: BlobStore) -> None:
    # Same first four characters: on files, deletes empty the folder that puts fill.
    doomed = [f"abcd{n:04d}-{uuid.uuid4()}" for n in range(20)]
    kept = [f"abcd{n:04d}-{uuid.uuid4()}" for n in range(20, 40)]
    for key in doomed:
        await store.put(key, b"old")
    await asyncio.gather(
        *(store.delete(key) for key in doomed), *(store.put(key, key.encode()) for key in kept)
    )
    for key in kept:
        assert await store.get(key) == key.encode()
    assert await _keys(store) == set(kept)


# --- FileBlobStore: Orthanc's layout on disk ------------------------------------


async def test_file_layout_is_orthancs(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = "abcdef01-2345-6789-abcd-ef0123456789"
    await store.put(key, b"payload")
    assert (tmp_path / "ab" / "cd" / key).read_bytes() == b"payload"
    assert _tree(tmp_path) == ["ab", "ab/cd", f"ab/cd/{key}"]


async def test_file_reads_a_blob_orthanc_wrote(tmp_path: Path) -> None:
    key = str(uuid.uuid4())
    path = tmp_path / key[0:2] / key[2:4] / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"written by Orthanc")
    store = FileBlobStore(tmp_path)
    assert await store.get(key) == b"written by Orthanc"
    assert await _keys(store) == {key}


async def test_file_delete_removes_empty_folders_only(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first = "abcd0000-0000-0000-0000-000000000001"
    second = "abcd0000-0000-0000-0000-000000000002"
    other = "abef0000-0000-0000-0000-000000000003"
    for key in (first, second, other):
        await store.put(key, b"x")
    await store.delete(first)
    assert (tmp_path / "ab" / "cd").is_dir()  # still holds `second`
    await store.delete(second)
    assert not (tmp_path / "ab" / "cd").exists()
    assert (tmp_path / "ab" / "ef").is_dir()
    await store.delete(other)
    assert _tree(tmp_path) == []  # the root itself stays


async def test_file_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = _key()
    for version in range(3):
        await store.put(key, bytes([version]) * 100)
    assert sorted(p.name for p in (tmp_path / key[0:2] / key[2:4]).iterdir()) == [key]


async def test_file_keys_skip_temporary_and_foreign_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = "abcd1111-0000-0000-0000-000000000000"
    await store.put(key, b"x")
    folder = tmp_path / "ab" / "cd"
    (folder / f".{key}.0123456789ab.tmp").write_bytes(b"half written")
    (folder / "efgh-misplaced").write_bytes(b"not at its layout path")
    (tmp_path / "README").write_text("not a blob")
    assert await _keys(store) == {key}


async def test_file_keys_older_than_uses_mtime(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    old, new = _key(), _key()
    await store.put(old, b"old")
    await store.put(new, b"new")
    long_ago = time.time() - 3600
    os.utime(store.path_of(old), (long_ago, long_ago))
    assert await _keys(store, older_than=time.time() - 60) == {old}
    assert await _keys(store, older_than=time.time() + 60) == {old, new}


async def test_file_rejects_keys_that_are_not_path_safe(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    for key in ("", "abc", "../etc/passwd", "ab/cd/ef", ".hidden-key", "ab..cdef"):
        with pytest.raises(ValueError):
            await store.put(key, b"x")
    assert _tree(tmp_path) == []


async def test_file_keys_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert await _keys(FileBlobStore(tmp_path / "never-created")) == set()


# --- S3BlobStore specifics -----------------------------------------------------


@pytest.mark.integration
async def test_s3_open_creates_the_bucket_once(s3_endpoint: str) -> None:
    first, second = _s3(s3_endpoint), None
    try:
        await first.open()
        await first.open()  # already there: no error
        second = S3BlobStore(s3_endpoint, first.bucket, "other", "keys")
        await second.open()
        key = _key()
        await first.put(key, b"shared")
        assert await second.get(key) == b"shared"
    finally:
        await first.close()
        if second is not None:
            await second.close()


@pytest.mark.integration
async def test_s3_missing_bucket_raises_os_error_not_key_error(s3_endpoint: str) -> None:
    store = _s3(s3_endpoint)  # never opened: the bucket does not exist
    try:
        with pytest.raises(OSError, match="NoSuchBucket"):
            await store.put(_key(), b"x")
        with pytest.raises(OSError, match="NoSuchBucket"):
            await store.get(_key())
    finally:
        await store.close()


@pytest.mark.parametrize("size", [0, 1000, LARGE])
async def test_put_file_overwrites_with_the_whole_file(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    key = _key()
    await store.put(key, b"older content")
    with tempfile.TemporaryFile() as source:
        source.write(data)
        source.seek(0)
        await store.put_file(key, source, size)
    assert await store.get(key) == data
    assert await store.exists(key)


async def test_stream_yields_the_blob_in_bounded_pieces(store: BlobStore) -> None:
    data = os.urandom(LARGE)
    key = _key()
    await store.put(key, data)
    pieces = [piece async for piece in store.stream(key, 1024 * 1024)]
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) <= 1024 * 1024
    await store.put(key, b"")
    assert [piece async for piece in store.stream(key, 10)] == []
    with pytest.raises(KeyError):
        await anext(store.stream(_key(), 10))


async def test_file_reads_from_the_page_cache_or_from_a_thread(tmp_path: Path) -> None:
    from dicomkeep.common.adapters import file_blobs

    store = FileBlobStore(tmp_path)
    key = _key()
    data = os.urandom(200_000)
    await store.put(key, data)
    path = store.path_of(key)
    # Just written: in the page cache, read on the loop's thread.
    assert file_blobs._read_cached(path, None, 1 << 20) == data
    assert file_blobs._read_cached(path, (10, 20), 1 << 20) == data[10:20]
    assert file_blobs._read_cached(path, None, 1000) is None  # over the limit
    # Out of the page cache (the blob was fsynced: its pages are clean), the
    # read goes to a thread, with the same answers.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert file_blobs._read_cached(path, None, 1 << 20) is None
    assert await store.get(key) == data
    assert b"".join([piece async for piece in store.stream(key, 64 * 1024)]) == data
    assert b"".join([piece async for piece in store.stream(key, 1 << 20)]) == data
    await store.put(key, b"")
    assert [piece async for piece in store.stream(key, 1 << 20)] == []
    with pytest.raises(FileNotFoundError):
        file_blobs._read_cached(tmp_path / "none", None, 1 << 20)
