"""The BlobStore port: opaque bytes by key (Orthanc's IStorageArea)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    """Opaque bytes by key. Knows nothing of DICOM or compression."""

    #: True when `get(..., span=...)` reads only the requested bytes.
    range_reads: bool

    async def put(self, key: str, data: bytes) -> None:
        """Write the blob durably; overwrite any blob with the same key."""

    def put_blocking(self, key: str, data: bytes) -> None:
        """`put` for a caller already in a worker thread (never the event loop): the
        C-STORE SCP writes from its association thread, saving two thread hops."""

    async def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        """Write the blob from a binary file positioned at its start (`size` bytes),
        reading it piece by piece (large job outputs); same guarantees as `put`."""

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        """Return the blob, or bytes [start, end) of it; raise KeyError if absent."""

    def stream(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        """Yield the whole blob in order, in pieces of at most `chunk_bytes`, from one
        read of the store (not one request per piece); raise KeyError if absent."""

    async def delete(self, key: str) -> None:
        """Remove the blob; idempotent (no error when absent)."""

    async def exists(self, key: str) -> bool:
        """Tell whether the blob exists."""

    def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        """Iterate every key, optionally only blobs last written before a UNIX time."""

    async def close(self) -> None:
        """Release connections."""
