"""S3BlobStore: the distributed BlobStore, objects in an S3 bucket via `minio`.

The role of Orthanc's AWS S3 storage plugin. Objects are keyed flat by the blob key
itself (`<bucket>/<uuid>`), not by the `ab/cd/<uuid>` file layout: S3 has no
folders to keep small, and a flat key is what the Orthanc plugin writes by default.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import Any, BinaryIO, Self, TypeVar
from urllib.parse import urlsplit

import urllib3
from dicomkeep.common.retries import retrying
from minio import Minio
from minio.error import MinioException, S3Error, ServerError

_T = TypeVar("_T")
_LIST_BATCH = 1000
#: Multipart part size of `put_file` (S3 minimum: 5 MiB): the memory one upload uses.
_PART_SIZE = 8 * 1024 * 1024
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject"})
_TIMEOUT_SECONDS = 300.0
#: Attempts of one call when S3 is unreachable or answers a server error.
_ATTEMPTS = 6
#: S3 error codes that another try later may not get.
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})


class S3Unavailable(OSError):
    """S3 could not be reached or answered a server error: worth another try."""


def _split_endpoint(endpoint: str, secure: bool | None) -> tuple[str, bool]:
    """Return (host[:port], secure) from `http(s)://host:port` or bare `host:port`.

    A bare endpoint is HTTPS unless `secure=False`, as the minio client assumes.
    """
    if "://" not in endpoint:
        return endpoint.rstrip("/"), True if secure is None else secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ValueError(f"S3 endpoint must be http(s)://host[:port]: {endpoint!r}")
    return parts.netloc, parts.scheme == "https" if secure is None else secure


def _translated(error: Exception) -> OSError:
    if isinstance(error, S3Error):
        kind = S3Unavailable if error.code in _TRANSIENT_CODES else OSError
        return kind(f"S3 {error.code}: {error.message}")
    if isinstance(error, ServerError | urllib3.exceptions.HTTPError):
        return S3Unavailable(f"S3 request failed: {error}")
    return OSError(f"S3 request failed: {error}")


class S3BlobStore:
    """Blobs as objects of one S3 bucket (MinIO, AWS, or any S3 API).

    - Path-style addressing (`<endpoint>/<bucket>/<key>`), as MinIO expects.
    - `open()` checks the endpoint and creates the bucket if it is missing; call it
      before first use. Concurrent `open()`s from several replicas are safe.
    - The minio client blocks: every call runs in `asyncio.to_thread`, at most
      `max_threads` at once (the default executor's size also caps them).
    - `get` with a span sends an HTTP Range request (`range_reads = True`); spans are
      `[start, end)`, clamped to the object's size like a slice; `end < start` or a
      negative start raises ValueError.
    - A missing object raises KeyError; `delete` is idempotent. Other failures (no
      bucket, refused credentials, unreachable endpoint) raise OSError; calls are
      retried (`retries.retrying`, 6 attempts) while S3 is unreachable or answers
      a server error, which then raise S3Unavailable, an OSError.
    - `keys(older_than)` compares the objects' `LastModified` (whole seconds).
    """

    range_reads: bool = True

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        *,
        secure: bool | None = None,
        max_threads: int = 16,
    ) -> None:
        host, is_secure = _split_endpoint(endpoint, secure)
        self.bucket = bucket
        # minio's own pool holds 10 connections; size it to our concurrency instead.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=_TIMEOUT_SECONDS, read=_TIMEOUT_SECONDS),
            maxsize=max_threads,
            cert_reqs="CERT_REQUIRED",  # the system trust store (honours SSL_CERT_FILE)
            retries=False,  # retried per call by the project's policy (`_run`)
        )
        self._client = Minio(
            host,
            access_key=access_key,
            secret_key=secret_key,
            secure=is_secure,
            region=region,
            http_client=self._http,
        )
        self._client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
        self._slots = asyncio.Semaphore(max_threads)

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call in a thread; retry it while S3 is unavailable.

        Every call is idempotent (put overwrites, delete of a missing key succeeds).
        """
        async for attempt in retrying(
            f"S3 {getattr(call, '__name__', 'call').lstrip('_')}",
            attempts=_ATTEMPTS, first=0.2, on=(S3Unavailable,),
        ):
            with attempt:
                async with self._slots:
                    return await asyncio.to_thread(call, *args)
        raise AssertionError("the retry policy neither returned nor raised")

    async def open(self) -> None:
        """Create the bucket if it is missing; raise OSError if S3 is unreachable."""
        await self._run(self._ensure_bucket)

    async def put(self, key: str, data: bytes) -> None:
        """Write the object (multipart above 5 MiB); overwrite any with the same key.

        Durable once S3 acknowledges it; a reader sees the old object or the new one.
        """
        await self._run(self._put, key, data)

    async def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        """Write the object from a file, multipart above 5 MiB (one part in memory at
        a time); a retried attempt reads the file again from its start."""
        start = file.tell()
        await self._run(self._put_file, key, file, size, start)

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        """Return the object, or bytes [start, end) of it; raise KeyError if absent."""
        if span is not None and (span[0] < 0 or span[1] < span[0]):
            raise ValueError(f"invalid span: {span!r}")
        return await self._run(self._get, key, span)

    async def delete(self, key: str) -> None:
        """Remove the object; idempotent (S3 answers 204 for a missing key)."""
        await self._run(self._delete, key)

    async def exists(self, key: str) -> bool:
        """Tell whether the object exists (a HEAD request)."""
        return await self._run(self._exists, key)

    async def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        """Iterate every key of the bucket, optionally only objects older than a time.

        Lists the bucket in pages of 1000, one thread hop per page.
        """
        listing = await self._run(self._list)
        while True:
            batch = await self._run(self._next_batch, listing, older_than)
            if batch is None:
                return
            for key in batch:
                yield key

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: open it; `async with` closes it on exit."""
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drop the pooled HTTP connections."""
        self._http.clear()

    # Blocking halves, run in worker threads.

    def _ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as error:
            # BucketAlreadyOwnedByYou: a replica created it between check and request.
            if error.code != "BucketAlreadyOwnedByYou":
                raise _translated(error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error

    def _put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data))
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error

    def _put_file(self, key: str, file: BinaryIO, size: int, start: int) -> None:
        file.seek(start)
        try:
            self._client.put_object(self.bucket, key, file, size, part_size=_PART_SIZE)
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error

    def _get(self, key: str, span: tuple[int, int] | None) -> bytes:
        try:
            if span is None:
                response = self._client.get_object(self.bucket, key)
            elif span[1] == span[0]:
                self._client.stat_object(self.bucket, key)  # KeyError if absent
                return b""
            else:
                start, end = span
                response = self._client.get_object(
                    self.bucket, key, offset=start, length=end - start
                )
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise KeyError(key) from None
            if error.code == "InvalidRange":
                return b""  # the span starts at or after the end of the object
            raise _translated(error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error

    def _exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                return False
            raise _translated(error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error
        return True

    def _list(self) -> Iterator[Any]:
        return iter(self._client.list_objects(self.bucket, recursive=True))

    def _next_batch(self, listing: Iterator[Any], older_than: float | None) -> list[str] | None:
        try:
            page = list(islice(listing, _LIST_BATCH))
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _translated(error) from error
        if not page:
            return None
        return [
            item.object_name
            for item in page
            if not item.is_dir
            and (
                older_than is None
                or (item.last_modified is not None and item.last_modified.timestamp() < older_than)
            )
        ]
