"""Resource routes: lists, objects, deletes, children, parents, statistics (§2.2-§2.4, §2.7).

Every route exists once per level (`/patients`, `/studies`, `/series`,
`/instances`), so an ID of another level is simply unknown there (empty 404), and
a wrong method on a known path answers 405 with that path's methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dicomkeep.common.errors import NoAnswer, unknown_resource
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Statistics
from dicomkeep.gateway.args import bool_arg, paging, tag_format
from dicomkeep.gateway.deps import IndexDep
from dicomkeep.gateway.responses import OrthancJSONResponse
from dicomkeep.gateway.views import expand_many, expand_resource, reference, require_resource
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()
Handler = Callable[..., Awaitable[Response]]
MEGABYTE = 1024 * 1024


def _list_route(level: Level) -> Handler:
    async def list_resources(request: Request, index: IndexDep) -> Response:
        """List IDs in index order; `expand` for objects; `since`+`limit` page together."""
        since, limit = paging(request, level.plural)
        expand = bool_arg(request, "expand")
        fmt = tag_format(request, "simplify")
        ids = await index.list_resources(level, since, limit)
        if not expand:
            return OrthancJSONResponse(ids)
        return OrthancJSONResponse(await expand_many(index, level, ids, fmt))

    return list_resources


def _get_route(level: Level) -> Handler:
    async def get_resource(
        public_id: str, request: Request, index: IndexDep
    ) -> Response:
        """Answer the resource object, or an empty 404 if unknown at this level."""
        fmt = tag_format(request, "simplify")
        resource = await require_resource(index, level, public_id)
        return OrthancJSONResponse(await expand_resource(index, resource, fmt))

    return get_resource


def _delete_route(level: Level) -> Handler:
    async def delete_resource(public_id: str, index: IndexDep) -> Response:
        """Delete the resource, its descendants and emptied ancestors (§2.4).

        Answers `{"RemainingAncestor": {"ID","Path","Type"} | null}`; unknown -> empty
        404. Deleted resources leave the stability clock through their Deleted
        changes, which the stability service consumes (no Stable* event for them).
        """
        outcome = await index.delete_resource(level, public_id)
        if outcome is None:
            raise NoAnswer()
        remaining = outcome.remaining
        ancestor = None if remaining is None else reference(remaining.level, remaining.public_id)
        return OrthancJSONResponse({"RemainingAncestor": ancestor})

    return delete_resource


def _children_route(level: Level, target: Level) -> Handler:
    async def children(
        public_id: str, request: Request, index: IndexDep
    ) -> Response:
        """List the descendants at one level, expanded unless `expand=false`.

        Unknown resource -> 404 *Unknown resource* (JSON), as Orthanc's GetChildren.
        """
        expand = bool_arg(request, "expand", default=True)
        fmt = tag_format(request, "simplify")
        resource = await index.get_resource(level, public_id)
        if resource is None:
            raise unknown_resource()
        if target.depth == level.depth + 1:
            ids = list(resource.children)
        else:
            ids = await index.descendants(level, public_id, target)
        if not expand:
            return OrthancJSONResponse(ids)
        return OrthancJSONResponse(await expand_many(index, target, ids, fmt))

    return children


def _parent_route(level: Level, target: Level) -> Handler:
    async def parent(public_id: str, request: Request, index: IndexDep) -> Response:
        """Answer the expanded ancestor at one level; unknown resource -> empty 404."""
        fmt = tag_format(request, "simplify")
        resource = await require_resource(index, level, public_id)
        while resource.level is not target:
            if resource.parent_id is None or resource.level.parent is None:
                raise NoAnswer()
            resource = await require_resource(index, resource.level.parent, resource.parent_id)
        return OrthancJSONResponse(await expand_resource(index, resource, fmt))

    return parent


def statistics_json(level: Level, stats: Statistics) -> dict[str, Any]:
    """Render `/{level}/{id}/statistics` (§2.7): sizes as strings, `*MB` integers."""
    result: dict[str, Any] = {}
    if level is Level.PATIENT:
        result["CountStudies"] = stats.count_studies
    if level in (Level.PATIENT, Level.STUDY):
        result["CountSeries"] = stats.count_series
    if level is not Level.INSTANCE:
        result["CountInstances"] = stats.count_instances
    for name, size in (
        ("DiskSize", stats.disk_size),
        ("UncompressedSize", stats.uncompressed_size),
        ("DicomDiskSize", stats.dicom_disk_size),
        ("DicomUncompressedSize", stats.dicom_uncompressed_size),
    ):
        result[name] = str(size)
        result[f"{name}MB"] = size // MEGABYTE
    return result


def _statistics_route(level: Level) -> Handler:
    async def resource_statistics(public_id: str, index: IndexDep) -> Response:
        """Answer the counts and sizes below one resource; unknown -> 404 JSON."""
        stats = await index.statistics(level, public_id)
        return OrthancJSONResponse(statistics_json(level, stats))

    return resource_statistics


def _register() -> None:
    for level in Level:
        base = f"/{level.plural}"
        item = base + "/{public_id}"
        router.add_api_route(base, _list_route(level), methods=["GET"])
        router.add_api_route(item, _get_route(level), methods=["GET"])
        router.add_api_route(item, _delete_route(level), methods=["DELETE"])
        router.add_api_route(item + "/statistics", _statistics_route(level), methods=["GET"])
        target = level.child
        while target is not None:
            router.add_api_route(
                f"{item}/{target.plural}", _children_route(level, target), methods=["GET"]
            )
            target = target.child
        ancestor = level.parent
        while ancestor is not None:
            router.add_api_route(
                f"{item}/{ancestor.value.lower()}", _parent_route(level, ancestor), methods=["GET"]
            )
            ancestor = ancestor.parent


_register()
