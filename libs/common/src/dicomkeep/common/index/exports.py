"""The exports log of the index (Orthanc's ExportedResources): `GET /exports`.

With `LogExportedResources`, every resource sent by `/modalities/{name}/store`
or `/peers/{name}/store` is logged with the identifiers of it and its
ancestors; the table is in the index, so every replica sees the same log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index.transactions import Transactions
from dicomkeep.common.ports.database import Tx
from dicomkeep.common.timestamps import now_stamp

_LEVELS = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]
#: The identifier of each level, in the order Orthanc writes them.
_UID_KEYS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
_COLUMNS = "seq, resource_type, public_id, remote, patient_id, study_uid, series_uid, sop_uid, date"


@dataclass(frozen=True)
class ExportsPage:
    """An answer of `GET /exports`: `{"Exports": [...], "Done", "Last"}`."""

    exports: list[dict[str, Any]]
    done: bool
    last: int

    def to_json(self) -> dict[str, Any]:
        return {"Done": self.done, "Exports": self.exports, "Last": self.last}


def _export_json(row: Any) -> dict[str, Any]:
    """Render a row as Orthanc's ExportedResource::Format."""
    level = Level(row[1])
    item: dict[str, Any] = {
        "Seq": int(row[0]),
        "ResourceType": level.value,
        "ID": row[2],
        "Path": resource_path(level, row[2]),
        "RemoteModality": row[3],
        "Date": row[8],
    }
    values = [row[4], row[5], row[6], row[7]]
    for depth in range(level.depth, -1, -1):
        item[_UID_KEYS[depth]] = values[depth]
    return item


class ExportLog(Transactions):
    """Write, page and clear the exports log, as methods of the index."""

    async def log_exports(self, public_ids: list[str], remote: str) -> None:
        """Log each resource (any level) as exported to `remote`; unknown IDs are skipped."""

        async def body(tx: Tx) -> None:
            date = now_stamp()
            for public_id in public_ids:
                row = await tx.fetchrow(
                    "SELECT internal_id, level, parent_id, dicom_uid FROM resources "
                    "WHERE public_id = $1",
                    public_id,
                )
                if row is None:
                    continue
                level = _LEVELS[int(row[1])]
                uids = ["", "", "", ""]
                uids[level.depth] = row[3]
                parent = row[2]
                depth = level.depth
                while parent is not None and depth > 0:
                    depth -= 1
                    up = await tx.fetchrow(
                        "SELECT parent_id, dicom_uid FROM resources WHERE internal_id = $1", parent
                    )
                    if up is None:
                        break
                    uids[depth] = up[1]
                    parent = up[0]
                await tx.execute(
                    "INSERT INTO exports(resource_type, public_id, remote, patient_id, "
                    "study_uid, series_uid, sop_uid, date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    level.value, public_id, remote, *uids, date,
                )

        await self._run(body)

    async def get_exports(self, since: int, limit: int) -> ExportsPage:
        """Return exports with Seq > since, ascending, at most `limit`; `Last` is the
        Seq of the last one returned, else `since` (Orthanc's FormatLog)."""

        async def body(tx: Tx) -> ExportsPage:
            rows = await tx.fetch(
                f"SELECT {_COLUMNS} FROM exports WHERE seq > $1 ORDER BY seq LIMIT $2",
                since,
                limit + 1,
            )
            exports = [_export_json(r) for r in rows[:limit]]
            last = exports[-1]["Seq"] if exports else since
            return ExportsPage(exports=exports, done=len(rows) <= limit, last=last)

        return await self._run(body, readonly=True)

    async def last_export(self) -> ExportsPage:
        """Return the latest export (if any), `Done` true."""

        async def body(tx: Tx) -> ExportsPage:
            row = await tx.fetchrow(f"SELECT {_COLUMNS} FROM exports ORDER BY seq DESC LIMIT 1")
            exports = [_export_json(row)] if row is not None else []
            return ExportsPage(exports=exports, done=True, last=exports[0]["Seq"] if exports else 0)

        return await self._run(body, readonly=True)

    async def clear_exports(self) -> None:
        """Empty the exports log (`DELETE /exports`); Seq is not reset."""

        async def body(tx: Tx) -> None:
            await tx.execute("DELETE FROM exports")

        await self._run(body)
