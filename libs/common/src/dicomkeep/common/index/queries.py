"""REST queries kept in the index (`/queries/{id}`): the C-FIND sent and its answers.

`QueryStore` is the part of `JobStore` (jobs.py) that keeps them, shared by
every gateway replica; answers are stored as base64 DICOM files.
"""

from __future__ import annotations

import base64
import json
import time

from dicomkeep.common.index.job_records import QueryRecord
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx


class QueryStore(Transactions):
    """REST queries in the index. Every method is one transaction."""

    async def save_query(self, query: QueryRecord, keep: int) -> None:
        """Store a query with its answers, dropping the oldest beyond `keep` (LRU)."""

        async def body(tx: Tx) -> None:
            answers = [base64.b64encode(a).decode("ascii") for a in query.answers]
            await tx.execute(
                "INSERT INTO queries(id, created_at, modality, level, query, answers, options) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                query.id,
                time.time(),
                query.modality,
                query.level,
                json.dumps(query.query),
                json.dumps(answers),
                json.dumps({"Normalize": query.normalize, "Timeout": query.timeout}),
            )
            rows = await tx.fetch("SELECT id FROM queries ORDER BY created_at DESC, id DESC")
            stale = [(r[0],) for r in rows[max(keep, 1) :]]
            if stale:
                await tx.executemany("DELETE FROM queries WHERE id = $1", stale)

        await self._run(body)

    async def get_query(self, query_id: str) -> QueryRecord | None:
        """Return one query, or None if unknown."""

        async def body(tx: Tx) -> QueryRecord | None:
            row = await tx.fetchrow(
                "SELECT id, modality, level, query, answers, options FROM queries WHERE id = $1",
                query_id,
            )
            if row is None:
                return None
            options = json.loads(row[5])
            return QueryRecord(
                id=row[0],
                modality=row[1],
                level=row[2],
                query=json.loads(row[3]),
                answers=[base64.b64decode(a) for a in json.loads(row[4])],
                normalize=bool(options.get("Normalize", True)),
                timeout=options.get("Timeout"),
            )

        result: QueryRecord | None = await self._run(body, readonly=True)
        return result

    async def list_queries(self) -> list[str]:
        """Return the query IDs, oldest first."""

        async def body(tx: Tx) -> list[str]:
            rows = await tx.fetch("SELECT id FROM queries ORDER BY created_at, id")
            return [r[0] for r in rows]

        result: list[str] = await self._run(body, readonly=True)
        return result

    async def delete_query(self, query_id: str) -> bool:
        """Forget a query; False if unknown."""

        async def body(tx: Tx) -> bool:
            found = await tx.fetchval("SELECT id FROM queries WHERE id = $1", query_id)
            if found is None:
                return False
            await tx.execute("DELETE FROM queries WHERE id = $1", query_id)
            return True

        result: bool = await self._run(body)
        return result
