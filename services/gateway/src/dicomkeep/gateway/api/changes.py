"""The changes log: `GET /changes`, `DELETE /changes` (ORTHANC_API.md §6), and the
exports log `GET /exports`, `DELETE /exports`."""

from __future__ import annotations

import re

from dicomkeep.common.index import ChangesPage
from dicomkeep.gateway.deps import IndexDep
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

DEFAULT_LIMIT = 100
#: Orthanc caps `limit` at 10000.
MAXIMUM_LIMIT = 10000
_SIGNED = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"\+?[0-9]+")


def since_and_limit(since: str | None, limit: str | None) -> tuple[int, int]:
    """Parse `since`/`limit` as Orthanc's GetSinceAndLimit.

    Defaults 0 and 100; a non-numeric value resets both to the defaults; `limit`
    is capped at 10000.
    """
    since_text = "0" if since is None else since
    limit_text = str(DEFAULT_LIMIT) if limit is None else limit
    if not (_SIGNED.fullmatch(since_text) and _UNSIGNED.fullmatch(limit_text)):
        return 0, DEFAULT_LIMIT
    return int(since_text), min(int(limit_text), MAXIMUM_LIMIT)


def page_json(page: ChangesPage) -> dict[str, object]:
    """Render `{"Changes": [...], "Done": bool, "Last": seq}`."""
    return {
        "Changes": [change.to_json() for change in page.changes],
        "Done": page.done,
        "Last": page.last,
    }


@router.get("/changes")
async def get_changes(request: Request, index: IndexDep) -> Response:
    """Answer changes with Seq > since, ascending, at most `limit`; `?last` for the latest.

    `Last` is the Seq of the last change returned, or the current last Seq when
    none is returned; `Done` tells that nothing follows.
    """
    if "last" in request.query_params:
        return OrthancJSONResponse(page_json(await index.last_change()))
    since, limit = since_and_limit(
        request.query_params.get("since"), request.query_params.get("limit")
    )
    return OrthancJSONResponse(page_json(await index.get_changes(since, limit)))


@router.delete("/changes")
async def delete_changes(index: IndexDep) -> Response:
    """Empty the changes log (Seq is not reset); 200 with an empty body."""
    await index.clear_changes()
    return empty()


@router.get("/exports")
async def get_exports(request: Request, index: IndexDep) -> Response:
    """Answer the exports log `{"Done", "Exports": [...], "Last"}` (Orthanc's shape):
    exports with Seq > since, ascending, at most `limit`; `?last` for the latest.

    Written only with `LogExportedResources` (by `/modalities/{name}/store` and
    `/peers/{name}/store`); kept in the index, so shared by every replica.
    """
    if "last" in request.query_params:
        return OrthancJSONResponse((await index.last_export()).to_json())
    since, limit = since_and_limit(
        request.query_params.get("since"), request.query_params.get("limit")
    )
    return OrthancJSONResponse((await index.get_exports(since, limit)).to_json())


@router.delete("/exports")
async def delete_exports(index: IndexDep) -> Response:
    """Clear the exports log (Seq is not reset): 200, empty text/plain, as Orthanc."""
    await index.clear_exports()
    return empty()
