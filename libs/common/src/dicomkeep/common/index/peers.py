"""Peers set through REST, over the `Database` port: the `peers` table.

Written once for SQLite and PostgreSQL, like `Index` (which hands it its
database and its retrying transaction runner). The table is created with the
rest of the index schema (`PEERS_SCHEMA`, listed in `schema`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from dicomkeep.common.ports.database import Database, Tx

Runner = Callable[..., Awaitable[Any]]

#: One row per peer set (value = object form as JSON) or deleted (value NULL) through REST.
PEERS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS peers (
        name TEXT PRIMARY KEY,
        value TEXT)""",
]


class PeerStore:
    """Peers set or deleted through REST, in the index database (merged with OrthancPeers by common/peers.py)."""

    def __init__(self, db: Database, run: Runner) -> None:
        self.db = db
        self._run = run

    async def peer_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return name -> complete object form (passwords included), None = deleted."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            rows = await tx.fetch("SELECT name, value FROM peers ORDER BY name")
            return {r[0]: (json.loads(r[1]) if r[1] is not None else None) for r in rows}

        result: dict[str, dict[str, Any] | None] = await self._run(body, readonly=True)
        return result

    async def set_peer(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a peer (object form), or its deletion with None. Idempotent."""

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO peers(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                None if value is None else json.dumps(value),
            )

        await self._run(body)
