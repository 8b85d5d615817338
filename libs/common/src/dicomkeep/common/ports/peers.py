"""The PeerStore port: Orthanc peers set or deleted through REST, kept in the index.

Reached through `Index.peers`. The `OrthancPeers` option stays the base; this store
holds the REST overrides so that every replica and worker sees the same peers
(`dicomkeep.common.peers` merges both).
"""

from __future__ import annotations

from typing import Any, Protocol


class PeerStore(Protocol):
    """Peers written through `PUT`/`DELETE /peers/{name}`. Every method is one transaction."""

    async def peer_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return name -> complete object form (passwords included), None = deleted."""

    async def set_peer(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a peer (object form), or its deletion with None. Idempotent."""
