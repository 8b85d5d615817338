"""Metadata routes (ORTHANC_API.md §3, revisions §5) and patient protection (§8).

Values are UTF-8 text without NUL characters, at most MAX_METADATA_BYTES
(1 MiB) long: a binary or larger body is refused before anything changes.
Only user keys (1024..65535) can be written or deleted; core keys answer an
empty 403.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from dicomkeep.common.errors import ErrorCode, Forbidden, NoAnswer, OrthancError, unknown_resource
from dicomkeep.common.ids import Level
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.bodies import read_limited
from dicomkeep.gateway.deps import IndexDep, SettingsDep
from dicomkeep.gateway.metadata_names import is_user_metadata, metadata_key, metadata_name
from dicomkeep.gateway.responses import OrthancJSONResponse, empty, plain
from dicomkeep.gateway.revisions import (
    etag,
    expected_revision,
    is_not_modified,
    require_if_match,
)
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()
Handler = Callable[..., Awaitable[Response]]
_BOOLEAN_BODIES = {"0": False, "false": False, "1": True, "true": True}
#: Largest metadata value accepted by PUT, in bytes of UTF-8 (1 MiB).
MAX_METADATA_BYTES = 1024 * 1024


def value_md5(value: str) -> str:
    """Return the hex MD5 of a metadata value's UTF-8 bytes."""
    return hashlib.md5(value.encode("utf-8")).hexdigest()


def metadata_etag(revision: int, value: str) -> str:
    """Return the ETag of a metadata value: `"<revision>-<md5 of the value>"`."""
    return etag(revision, value_md5(value))


def decode_value(body: bytes) -> str:
    """Return a PUT body as a metadata value; 400 *Bad request* unless UTF-8 text.

    NUL characters are refused too: PostgreSQL text cannot hold them.
    """
    try:
        value = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OrthancError(
            ErrorCode.BAD_REQUEST,
            f"A metadata value must be UTF-8 text; invalid byte at offset {error.start}",
        ) from None
    if "\x00" in value:
        raise OrthancError(
            ErrorCode.BAD_REQUEST, "A metadata value cannot contain NUL characters"
        )
    return value


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
        md5 = value_md5(item.value)
        headers = {"ETag": etag(item.revision, md5)}
        if is_not_modified(request, item.revision, md5):
            return empty(304, headers=headers)
        return plain(item.value, headers=headers)

    return get_metadata


def _put_route(level: Level) -> Handler:
    async def put_metadata(
        public_id: str, name: str, request: Request, index: IndexDep, settings: SettingsDep
    ) -> Response:
        """Create or replace a user metadata value; 200 empty with the new ETag.

        Core key -> empty 403; malformed If-Match -> 400; body not UTF-8 or with
        NUL -> 400; over 1 MiB -> 413; unknown resource -> 404; stale If-Match, or
        no If-Match over an existing value with CheckRevisions -> 409. Appends an
        UpdatedMetadata change.
        """
        key = metadata_key(name, settings.user_metadata)
        if not is_user_metadata(key):
            raise Forbidden()
        expected = expected_revision(request)
        value = decode_value(await read_limited(request, "A metadata value", MAX_METADATA_BYTES))
        revision = await index.set_metadata(
            level, public_id, key, value, expected, check_revisions=settings.check_revisions
        )
        return plain("", headers={"ETag": metadata_etag(revision, value)})

    return put_metadata


def _delete_route(level: Level) -> Handler:
    async def delete_metadata(
        public_id: str, name: str, request: Request, index: IndexDep, settings: SettingsDep
    ) -> Response:
        """Delete a user metadata value; 200 empty.

        Core key -> empty 403; no If-Match with CheckRevisions -> 409; absent
        value or unknown resource -> 404 *Unknown resource*; stale If-Match -> 409.
        Appends an UpdatedMetadata change.
        """
        key = metadata_key(name, settings.user_metadata)
        if not is_user_metadata(key):
            raise Forbidden()
        expected = expected_revision(request)
        require_if_match(expected, check_revisions=settings.check_revisions)
        await index.delete_metadata(
            level, public_id, key, expected, check_revisions=settings.check_revisions
        )
        return plain("")

    return delete_metadata


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
        router.add_api_route(item + "/metadata/{name}", _put_route(level), methods=["PUT"])
        router.add_api_route(
            item + "/metadata/{name}", _delete_route(level), methods=["DELETE"]
        )


_register()
