"""Labels (Orthanc 1.12): `/{level}/{id}/labels[/{label}]` and `/tools/labels`.

- `GET /{level}/{id}/labels` -> the resource's labels, sorted;
- `GET /{level}/{id}/labels/{label}` -> 200 empty if set, else empty 404;
- `PUT` / `DELETE /{level}/{id}/labels/{label}` -> 200 empty (idempotent);
- `GET /tools/labels` -> every label in use.
Unknown resource -> 404 *Unknown resource*; a label Orthanc refuses -> 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dicomkeep.common.errors import NoAnswer
from dicomkeep.common.ids import Level
from dicomkeep.gateway.deps import IndexDep
from dicomkeep.gateway.responses import OrthancJSONResponse, plain
from fastapi import APIRouter
from starlette.responses import Response

router = APIRouter()
Handler = Callable[..., Awaitable[Response]]


@router.get("/tools/labels")
async def all_labels(index: IndexDep) -> Response:
    """Answer every label used by any resource, sorted."""
    return OrthancJSONResponse(await index.labels.all())


def _list_route(level: Level) -> Handler:
    async def list_labels(public_id: str, index: IndexDep) -> Response:
        """Answer the labels of one resource, sorted."""
        return OrthancJSONResponse(await index.labels.of(level, public_id))

    return list_labels


def _get_route(level: Level) -> Handler:
    async def test_label(public_id: str, label: str, index: IndexDep) -> Response:
        """Answer 200 (empty) when the resource has the label, an empty 404 otherwise."""
        if label not in await index.labels.of(level, public_id):
            raise NoAnswer(404)
        return plain("")

    return test_label


def _put_route(level: Level) -> Handler:
    async def put_label(public_id: str, label: str, index: IndexDep) -> Response:
        """Add the label (idempotent)."""
        await index.labels.add(level, public_id, label)
        return plain("")

    return put_label


def _delete_route(level: Level) -> Handler:
    async def delete_label(public_id: str, label: str, index: IndexDep) -> Response:
        """Remove the label (idempotent)."""
        await index.labels.remove(level, public_id, label)
        return plain("")

    return delete_label


def _register() -> None:
    for level in Level:
        base = f"/{level.plural}/{{public_id}}/labels"
        router.add_api_route(base, _list_route(level), methods=["GET"])
        router.add_api_route(base + "/{label}", _get_route(level), methods=["GET"])
        router.add_api_route(base + "/{label}", _put_route(level), methods=["PUT"])
        router.add_api_route(base + "/{label}", _delete_route(level), methods=["DELETE"])


_register()
