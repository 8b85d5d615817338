"""Peers and modalities set or deleted through REST, kept in the index.

The `OrthancPeers` and `DicomModalities` options stay the base; the `peers` and
`modalities` tables hold the REST overrides, so that every replica and worker
sees the same ones (`dicomkeep.common.peers` and `dicomkeep.common.modalities`
merge both). One row per name: the object form as JSON, or NULL once deleted.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx

#: The tables of REST overrides (a fixed set: their names are written into SQL).
OverrideTable = Literal["peers", "modalities"]


async def read_overrides(tx: Tx, table: OverrideTable) -> dict[str, dict[str, Any] | None]:
    """Return name -> object form, None for a deleted entry, by name."""
    rows = await tx.fetch(f"SELECT name, value FROM {table} ORDER BY name")
    return {r[0]: (json.loads(r[1]) if r[1] is not None else None) for r in rows}


async def write_override(
    tx: Tx, table: OverrideTable, name: str, value: dict[str, Any] | None
) -> None:
    """Record an entry (object form), or its deletion with None; the last write wins."""
    await tx.execute(
        f"INSERT INTO {table}(name, value) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        name,
        None if value is None else json.dumps(value),
    )


class PeerStore(Transactions):
    """Peers written through `PUT`/`DELETE /peers/{name}`. Every method is one transaction."""

    async def peer_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return name -> complete object form (passwords included), None = deleted."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            return await read_overrides(tx, "peers")

        return await self._run(body, readonly=True)

    async def set_peer(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a peer (object form), or its deletion with None. Idempotent."""

        async def body(tx: Tx) -> None:
            await write_override(tx, "peers", name, value)

        await self._run(body)
