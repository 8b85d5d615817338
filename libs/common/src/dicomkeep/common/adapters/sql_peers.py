"""The PeerStore port over the `Database` seam: the `peers` table.

Written once for SQLite and PostgreSQL, like `SqlIndex` (which hands it its
database and its retrying transaction runner). The table is created with the
rest of the index schema (`PEERS_SCHEMA`, listed in `sql_schema`).
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


class SqlPeerStore:
    """Peers set or deleted through REST, in the index database (see ports/peers.py)."""

    def __init__(self, db: Database, run: Runner) -> None:
        self.db = db
        self._run = run

    async def peer_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return name -> object form, None for a deleted peer."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            rows = await tx.fetch("SELECT name, value FROM peers ORDER BY name")
            return {r[0]: (json.loads(r[1]) if r[1] is not None else None) for r in rows}

        result: dict[str, dict[str, Any] | None] = await self._run(body, readonly=True)
        return result

    async def set_peer(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a peer, or its deletion (None); the last write wins."""

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO peers(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                None if value is None else json.dumps(value),
            )

        await self._run(body)
