"""GET arguments parsed as Orthanc's REST layer does (ORTHANC_API.md §0)."""

from __future__ import annotations

import re
from typing import Literal

from dicomkeep.common.errors import ErrorCode, OrthancError
from starlette.requests import Request

TagFormat = Literal["full", "short", "simplify"]

_UNSIGNED = re.compile(r"\+?[0-9]+")
_FORMATS: tuple[TagFormat, ...] = ("simplify", "short", "full")


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean argument: "" (present without value), `true`, `1`, `false`, `0`.

    Raises 400 *Parameter out of range* for anything else.
    """
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise OrthancError(
        ErrorCode.PARAMETER_OUT_OF_RANGE,
        f'Expected a Boolean for GET argument "{name}", found: {value}',
    )


def bool_arg(request: Request, name: str, default: bool = False) -> bool:
    """Return a boolean GET argument, `default` when absent."""
    value = request.query_params.get(name)
    return default if value is None else parse_bool(name, value)


def tag_format(request: Request, default: TagFormat) -> TagFormat:
    """Return the tag format asked by `simplify`, `short` or `full` (first one set wins)."""
    for name in _FORMATS:
        if bool_arg(request, name):
            return name
    return default


def unsigned_arg(name: str, value: str) -> int:
    """Parse a non-negative integer argument; 400 *Bad request* otherwise."""
    if not _UNSIGNED.fullmatch(value):
        raise OrthancError(
            ErrorCode.BAD_REQUEST, f'Expected an unsigned integer for "{name}", found: {value}'
        )
    return int(value)


def paging(request: Request, plural: str) -> tuple[int | None, int | None]:
    """Return (`since`, `limit`) of a list route: both or none, else 400 *Bad request*."""
    since = request.query_params.get("since")
    limit = request.query_params.get("limit")
    if since is None and limit is None:
        return None, None
    if limit is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f'Missing "limit" argument for /{plural}')
    if since is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f'Missing "since" argument for /{plural}')
    return unsigned_arg("since", since), unsigned_arg("limit", limit)
