"""Peers and modalities set or deleted through REST, kept in the index.

The `OrthancPeers` and `DicomModalities` options stay the base; the `peers` and
`modalities` tables hold the REST overrides, so that every replica and worker
sees the same ones (`dicomkeep.common.peers` and `dicomkeep.common.modalities`
merge both). One row per name: the object form as JSON, or NULL once deleted.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Database, Tx
from dicomkeep.common.secrets import SecretBox, has_secret, is_sealed, open_peer, seal_peer

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
    """Peers written through `PUT`/`DELETE /peers/{name}`. Every method is one transaction.

    Their secrets are sealed in the rows with `secrets` (dicomkeep.common.secrets):
    the index never holds a REST-set password in clear.
    """

    def __init__(
        self, db: Database, *, max_retries: int = 10, secrets: SecretBox | None = None
    ) -> None:
        super().__init__(db, max_retries=max_retries)
        self.secrets = secrets

    async def peer_overrides(self) -> dict[str, dict[str, Any] | None]:
        """Return name -> complete object form (passwords in clear), None = deleted."""

        async def body(tx: Tx) -> dict[str, dict[str, Any] | None]:
            return await read_overrides(tx, "peers")

        rows = await self._run(body, readonly=True)
        return {
            name: None if value is None else open_peer(self.secrets, value)
            for name, value in rows.items()
        }

    async def set_peer(self, name: str, value: dict[str, Any] | None) -> None:
        """Record a peer (object form, secrets sealed), or its deletion with None.
        Idempotent. Raises 400 for a peer with a secret when no key is configured
        (distributed mode without `DicomKeep.SecretKey`): never stored in clear."""
        if value is not None and has_secret(value):
            if self.secrets is None:
                raise OrthancError(
                    ErrorCode.BAD_REQUEST,
                    "A peer with a password or HTTP headers needs DicomKeep.SecretKey "
                    "(or SecretKeyFile) in the distributed mode, to be stored encrypted; "
                    "or declare it in the OrthancPeers option",
                )
            value = seal_peer(self.secrets, value)

        async def body(tx: Tx) -> None:
            await write_override(tx, "peers", name, value)

        await self._run(body)

    async def seal_clear_rows(self) -> int:
        """Seal the secrets of rows written in clear (by a DicomKeep before issue 15);
        return how many rows changed. Idempotent; needs `secrets`."""
        assert self.secrets is not None
        box = self.secrets

        async def body(tx: Tx) -> int:
            changed = 0
            for name, value in (await read_overrides(tx, "peers")).items():
                if value is not None and not is_sealed(value):
                    await write_override(tx, "peers", name, seal_peer(box, value))
                    changed += 1
            return changed

        return await self._run(body)
