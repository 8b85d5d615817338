"""`POST /tools/find`: local search (ORTHANC_API.md §13), the engine of the C-FIND SCP.

Matching follows §11.4 (`dicomkeep.common.find`) with `CaseSensitive` (default
false) applied to every tag; main tags are answered by the index, other tags by
the stored files (StorageAccessOnFind). `Limit` and LimitFindResults /
LimitFindInstances cap the answer; `Since` skips matches. With `Expand`, each
answer is the §2.3 object, plus `RequestedTags` (main, file or computed tags).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomkeep.common.dicom.orthanc_json import UNKNOWN_TAG_NAME, tag_name
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.find import Constraint, format_tag, parse_rest_query, tag_of
from dicomkeep.common.ids import Level
from dicomkeep.common.index.labels import check_label
from dicomkeep.common.search import NEVER, FileReader, effective_limit, find_resources, tag_values
from dicomkeep.gateway import openapi_bodies
from dicomkeep.gateway.args import TagFormat
from dicomkeep.gateway.bodies import parse_json
from dicomkeep.gateway.deps import BlobsDep, IndexDep, SettingsDep
from dicomkeep.gateway.responses import OrthancJSONResponse
from dicomkeep.gateway.views import expand_many
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

_LABELS_CONSTRAINTS = ("All", "Any", "None")


@dataclass(frozen=True)
class FindBody:
    """A validated `/tools/find` body."""

    level: Level
    constraints: list[Constraint]
    expand: bool
    requested_tags: list[int]
    since: int
    limit: int
    fmt: TagFormat
    labels: list[str]
    labels_constraint: str


#: Longest constraint accepted in a `/tools/find` query (characters).
MAX_QUERY_VALUE = 4096


def _bad(details: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, details)


def _flag(body: dict[str, Any], name: str) -> bool:
    """A boolean field (absent = false); numbers count as Orthanc's asBool does."""
    value = body.get(name, False)
    if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
        return bool(value)
    raise _bad(f'Field "{name}" should be a Boolean')


def _count(body: dict[str, Any], name: str) -> int:
    """A non-negative integer field (absent = 0)."""
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f'Field "{name}" should be an integer')
    if value < 0:
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE, f'Field "{name}" should be a positive integer'
        )
    return value


def _labels(body: dict[str, Any]) -> tuple[list[str], str]:
    labels = body.get("Labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise _bad('Field "Labels" should be an array of strings')
    for label in labels:
        check_label(label)
    mode = body.get("LabelsConstraint", "All")
    if mode not in _LABELS_CONSTRAINTS:
        raise _bad('Field "LabelsConstraint" should be "All", "Any" or "None"')
    return labels, mode


def parse_find_body(raw: bytes) -> FindBody:
    """Validate a `/tools/find` body as Orthanc does; raise 400 with its Details.

    Not a JSON object -> "The body must contain a JSON object"; `Level` missing or
    not a string; `Query` missing or not an object; a non-string query value; a
    wrong type for CaseSensitive, Expand, Limit, Since, RequestedTags, Labels;
    negative Limit/Since; unknown level or tag; misplaced wildcard.
    """
    try:
        body = parse_json(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _bad("The body must contain a JSON object")
    if not isinstance(body.get("Level"), str):
        raise _bad('Field "Level" is missing, or should be a string')
    query = body.get("Query")
    if not isinstance(query, dict):
        raise _bad('Field "Query" is missing, or should be a JSON object')
    for key, value in query.items():
        if isinstance(value, str) and len(value) > MAX_QUERY_VALUE:
            # A DICOM value is at most a few hundred characters; a longer pattern
            # only costs the database (SQLite refuses it as "too complex").
            raise _bad(f"The constraint on {key} is longer than {MAX_QUERY_VALUE} characters")
    case_sensitive = _flag(body, "CaseSensitive")
    level = Level.parse(body["Level"])
    requested = body.get("RequestedTags", [])
    if not isinstance(requested, list) or not all(isinstance(x, str) for x in requested):
        raise _bad('Field "RequestedTags" should be an array of strings')
    labels, labels_constraint = _labels(body)
    fmt: TagFormat = "simplify"
    formats: tuple[tuple[str, TagFormat], ...] = (
        ("Simplify", "simplify"), ("Short", "short"), ("Full", "full")
    )
    for name, candidate in formats:
        if _flag(body, name):
            fmt = candidate
            break
    return FindBody(
        level=level,
        constraints=parse_rest_query(level, query, case_sensitive=case_sensitive),
        expand=_flag(body, "Expand"),
        requested_tags=list(dict.fromkeys(tag_of(name) for name in requested)),
        since=_count(body, "Since"),
        limit=_count(body, "Limit"),
        fmt=fmt,
        labels=labels,
        labels_constraint=labels_constraint,
    )


def format_requested(values: dict[int, str], tags: list[int], fmt: TagFormat) -> dict[str, Any]:
    """Render `RequestedTags`: the tags found, keyed by name (`simplify`, `gggg,eeee`
    for unknown tags) or `gggg,eeee` (`short`, `full` with Name/Type/Value)."""
    result: dict[str, Any] = {}
    for tag in tags:
        if tag not in values:
            continue
        name = tag_name(tag)
        if fmt == "simplify":
            result[format_tag(tag) if name == UNKNOWN_TAG_NAME else name] = values[tag]
        elif fmt == "short":
            result[format_tag(tag)] = values[tag]
        else:
            result[format_tag(tag)] = {"Name": name, "Type": "String", "Value": values[tag]}
    return result


@router.post("/tools/find", openapi_extra=openapi_bodies.FIND)
async def tools_find(
    request: Request, index: IndexDep, blobs: BlobsDep, settings: SettingsDep
) -> Response:
    """Answer the IDs (or expanded objects) of the matching resources, in index order."""
    body = parse_find_body(await request.body())
    limit = effective_limit(
        body.level, body.limit, settings.limit_find_results, settings.limit_find_instances
    )
    outcome = await find_resources(
        index, blobs, body.level, body.constraints, since=body.since, limit=limit,
        storage_access=settings.storage_access_on_find,
        labels=body.labels, labels_constraint=body.labels_constraint,
    )
    if not body.expand:
        return OrthancJSONResponse(outcome.ids)
    expanded = await expand_many(index, body.level, outcome.ids, body.fmt)
    if body.requested_tags:
        reader = None if settings.storage_access_on_find == NEVER else FileReader(index, blobs)
        values = await tag_values(
            index, body.level, [item["ID"] for item in expanded], body.requested_tags,
            reader=reader,
        )
        for item in expanded:
            item["RequestedTags"] = format_requested(
                values.get(item["ID"], {}), body.requested_tags, body.fmt
            )
    return OrthancJSONResponse(expanded)


@router.post("/tools/count-resources", openapi_extra=openapi_bodies.FIND)
async def count_resources(
    request: Request, index: IndexDep, blobs: BlobsDep, settings: SettingsDep
) -> Response:
    """Answer `{"Count": n}`: how many resources `/tools/find` would match (1.12.5).

    The body is a `/tools/find` body, validated the same way (same 400 answers).
    `Since` and `Limit` of the body apply; `LimitFindResults` and
    `LimitFindInstances` do not, since nothing is listed.
    """
    body = parse_find_body(await request.body())
    outcome = await find_resources(
        index, blobs, body.level, body.constraints, since=body.since, limit=body.limit,
        storage_access=settings.storage_access_on_find,
        labels=body.labels, labels_constraint=body.labels_constraint,
    )
    return OrthancJSONResponse({"Count": len(outcome.ids)})
