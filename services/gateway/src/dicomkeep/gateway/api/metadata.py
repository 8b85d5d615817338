"""Metadata reads (§3) and patient protection (§8)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError, unknown_resource
from dicomkeep.common.ids import Level
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.deps import IndexDep, SettingsDep
from dicomkeep.gateway.metadata_names import metadata_key, metadata_name
from dicomkeep.gateway.responses import OrthancJSONResponse, empty, plain
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()
Handler = Callable[..., Awaitable[Response]]
_BOOLEAN_BODIES = {"0": False, "false": False, "1": True, "true": True}


def metadata_etag(revision: int, value: str) -> str:
    """Return the ETag of a metadata value: `"<revision>-<md5 of the value>"`."""
    return f'"{revision}-{hashlib.md5(value.encode("utf-8")).hexdigest()}"'


def _list_route(level: Level) -> Handler:
    async def list_metadata(
        public_id: str, request: Request, index: IndexDep, settings: SettingsDep
    ) -> Response:
        """List metadata names; `expand` -> name -> value; `numeric` -> integer keys.

        Unknown resource -> 404 *Unknown resource* (JSON).
        """
        expand = bool_arg(request, "expand")
        numeric = bool_arg(request, "numeric")
        values = await index.get_metadata(level, public_id)
        if values is None:
            raise unknown_resource()
        names: dict[int, str] = {
            key: str(key) if numeric else metadata_name(key, settings.user_metadata)
            for key in values
        }
        if expand:
            return OrthancJSONResponse({names[key]: item.value for key, item in values.items()})
        if numeric:
            return OrthancJSONResponse(sorted(values))
        return OrthancJSONResponse([names[key] for key in sorted(values)])

    return list_metadata


def _get_route(level: Level) -> Handler:
    async def get_metadata(
        public_id: str, name: str, request: Request, index: IndexDep, settings: SettingsDep
    ) -> Response:
        """Answer one value as text/plain with its ETag; 304 on a matching If-None-Match.

        Absent value -> empty 404; unknown resource -> 404 JSON; unregistered name
        -> 404 *Accessing an inexistent item*.
        """
        key = metadata_key(name, settings.user_metadata)
        values = await index.get_metadata(level, public_id)
        if values is None:
            raise unknown_resource()
        item = values.get(key)
        if item is None:
            raise NoAnswer()
        etag = metadata_etag(item.revision, item.value)
        if _matches(request.headers.get("if-none-match"), etag):
            return empty(304, headers={"ETag": etag})
        return plain(item.value, headers={"ETag": etag})

    return get_metadata


def _matches(header: str | None, etag: str) -> bool:
    """Tell whether an If-None-Match header names `etag` (quotes optional)."""
    if header is None:
        return False
    candidates = {part.strip() for part in header.split(",")}
    return etag in candidates or etag.strip('"') in candidates or "*" in candidates


@router.get("/patients/{public_id}/protected")
async def get_protected(public_id: str, index: IndexDep) -> Response:
    """Answer `1` if the patient is protected from recycling, else `0` (text/plain)."""
    resource = await index.get_resource(Level.PATIENT, public_id)
    if resource is None:
        raise unknown_resource()
    return plain("1" if resource.is_protected else "0")


@router.put("/patients/{public_id}/protected")
async def put_protected(public_id: str, request: Request, index: IndexDep) -> Response:
    """Protect (`1`/`true`) or unprotect (`0`/`false`) a patient; 200 empty.

    The body is trimmed; anything else -> 400 *Bad file format*. Unknown patient ->
    404 *Unknown resource*. Unprotecting moves the patient to the end of the
    recycling order (§8).
    """
    body = (await request.body()).decode("utf-8", errors="replace").strip()
    protected = _BOOLEAN_BODIES.get(body)
    if protected is None:
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT, f"Expected 0, 1, false or true, found: {body[:64]}"
        )
    await index.set_protected(public_id, protected)
    return empty()


def _register() -> None:
    for level in Level:
        item = f"/{level.plural}/{{public_id}}"
        router.add_api_route(item + "/metadata", _list_route(level), methods=["GET"])
        router.add_api_route(item + "/metadata/{name}", _get_route(level), methods=["GET"])


_register()
