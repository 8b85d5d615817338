"""Labels of resources (Orthanc 1.12): add, remove, test, list.

Part of the index (reached as `index.labels`): every method is one transaction
through the index's retry policy. Labels go with their resource (ON DELETE
CASCADE); like Orthanc, setting or removing a label logs no change.
"""

from __future__ import annotations

import re

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index.hierarchy import find_internal
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx

_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_label(label: str) -> str:
    """Return the label if Orthanc accepts it; else 400 *Parameter out of range*.

    Mirrors ServerToolbox::CheckValidLabel: 1-64 characters of [A-Za-z0-9_-].
    """
    if not _LABEL.fullmatch(label):
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            "A label must be a non-empty, alphanumeric string, possibly with '_' and '-' "
            f'characters, with maximum 64 characters: "{label}"',
        )
    return label


class Labels(Transactions):
    """Labels over the index's database."""

    async def _resource(self, tx: Tx, level: Level, public_id: str) -> int:
        internal_id = await find_internal(tx, level, public_id)
        if internal_id is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return internal_id

    async def add(self, level: Level, public_id: str, label: str) -> None:
        """Label a resource (idempotent); 404 *Unknown resource*, 400 for a bad label."""
        check_label(label)

        async def body(tx: Tx) -> None:
            internal_id = await self._resource(tx, level, public_id)
            await tx.execute(
                "INSERT INTO labels(internal_id, label) VALUES ($1, $2) "
                "ON CONFLICT (internal_id, label) DO NOTHING",
                internal_id,
                label,
            )

        await self._run(body)

    async def remove(self, level: Level, public_id: str, label: str) -> None:
        """Remove a label (idempotent); 404 *Unknown resource*, 400 for a bad label."""
        check_label(label)

        async def body(tx: Tx) -> None:
            internal_id = await self._resource(tx, level, public_id)
            await tx.execute(
                "DELETE FROM labels WHERE internal_id = $1 AND label = $2", internal_id, label
            )

        await self._run(body)

    async def of(self, level: Level, public_id: str) -> list[str]:
        """Return a resource's labels, sorted; 404 *Unknown resource*."""

        async def body(tx: Tx) -> list[str]:
            internal_id = await self._resource(tx, level, public_id)
            rows = await tx.fetch(
                "SELECT label FROM labels WHERE internal_id = $1 ORDER BY label", internal_id
            )
            return [str(row[0]) for row in rows]

        return await self._run(body, readonly=True)

    async def all(self) -> list[str]:
        """Return every label in use, sorted (`GET /tools/labels`)."""

        async def body(tx: Tx) -> list[str]:
            rows = await tx.fetch("SELECT DISTINCT label FROM labels ORDER BY label")
            return [str(row[0]) for row in rows]

        return await self._run(body, readonly=True)
