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

    async def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        """Write the blob from a binary file positioned at its start (`size` bytes),
        reading it piece by piece (large job outputs); same guarantees as `put`."""

    async def get(self, key: str, span: tuple[int, int] | None = None) -> bytes:
        """Return the blob, or bytes [start, end) of it; raise KeyError if absent."""

    async def delete(self, key: str) -> None:
        """Remove the blob; idempotent (no error when absent)."""

    async def exists(self, key: str) -> bool:
        """Tell whether the blob exists."""

    def keys(self, older_than: float | None = None) -> AsyncIterator[str]:
        """Iterate every key, optionally only blobs last written before a UNIX time."""

    async def close(self) -> None:
        """Release connections."""
