"""Query/retrieve routes: `/queries/...` (ORTHANC_API.md §11.6).

`POST /modalities/{name}/query` runs the C-FIND here (`run_query`) and keeps the
query with its answers in the index, so any gateway replica serves
`/queries/{id}/answers...` and the retrieve (a DicomMoveScu job). At most
`QueryRetrieveSize` queries are kept, the oldest dropped first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from dicomkeep.common import scp_options
from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.instance import MAIN_DICOM_TAGS
from dicomkeep.common.dicom.orthanc_json import parse_tag, tag_name, tags_json
from dicomkeep.common.dicom.scu import DicomNetworkError, Peer
from dicomkeep.common.encodings import character_set
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.find import COMPUTED_TAGS
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index, QueryRecord
from dicomkeep.common.jobs import DICOM_MOVE_SCU, move_job, submit
from dicomkeep.common.modalities import get_modality
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.api.jobs import job_answer
from dicomkeep.gateway.args import bool_arg, tag_format
from dicomkeep.gateway.bodies import parse_json
from dicomkeep.gateway.deps import ContextDep, IndexDep
from dicomkeep.gateway.modality_bodies import field, peer_for, synchronous
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

#: QueryRetrieveLevel of each REST level.
QR_LEVEL = {Level.PATIENT: "PATIENT", Level.STUDY: "STUDY", Level.SERIES: "SERIES", Level.INSTANCE: "IMAGE"}
#: The tags identifying a resource of each level in a C-MOVE (Orthanc's MoveInternal).
MOVE_KEYS = {
    Level.PATIENT: ("PatientID",),
    Level.STUDY: ("StudyInstanceUID",),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID"),
    Level.INSTANCE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def allowed_keywords(level: Level) -> set[str]:
    """Return what `Normalize` keeps: main tags of the level and above, its computed
    tags and SpecificCharacterSet (Orthanc's NormalizeFindQuery)."""
    allowed = {"SpecificCharacterSet"}
    current: Level | None = level
    while current is not None:
        allowed.update(keyword for keyword, _ in MAIN_DICOM_TAGS[current])
        current = current.parent
    allowed.update(COMPUTED_TAGS.get(level, ()))
    return allowed


def build_query(body: dict[str, Any]) -> tuple[Level, dict[str, str]]:
    """Return (level, identifier by keyword) of a `/query` body; 400 when malformed.

    The identifier holds QueryRetrieveLevel and the level's identifying tags (empty
    when not constrained), so every answer can be retrieved.
    """
    level_text = body.get("Level")
    if not isinstance(level_text, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "Level" is missing, or should be a string')
    level = Level.parse(level_text)
    query = body.get("Query", {})
    if not isinstance(query, dict) or not all(isinstance(v, str) for v in query.values()):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "Query" must be an object of strings')
    normalize = body.get("Normalize", True)
    if not isinstance(normalize, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "Normalize" must be a Boolean')
    allowed = allowed_keywords(level)
    fields: dict[str, str] = {}
    for key, value in query.items():
        try:
            keyword = tag_name(parse_tag(key))
        except KeyError:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Unknown DICOM tag: {key}") from None
        if normalize and keyword not in allowed:
            continue
        fields[keyword if keyword in allowed or not keyword.startswith("Unknown") else key] = value
    for keyword in MOVE_KEYS[level]:
        fields.setdefault(keyword, "")
    return level, {"QueryRetrieveLevel": QR_LEVEL[level], **fields}


def timeout_field(body: dict[str, Any]) -> int | None:
    """Return the body's `Timeout` (seconds), None when absent; 400 as Orthanc's
    ReadUnsignedInteger when it is not an unsigned integer."""
    if "Timeout" not in body:
        return None
    value = body["Timeout"]
    if not isinstance(value, int) or isinstance(value, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Integer value expected in field: Timeout")
    if value < 0:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Unsigned integer value expected in field: Timeout")
    return value


async def run_query(
    settings: Settings, index: Index, modality_name: str, peer: Peer, body: dict[str, Any]
) -> QueryRecord:
    """Send the C-FIND of a `/query` body and keep it with its answers.

    The identifier carries the SpecificCharacterSet of the current `DefaultEncoding`
    unless the query names one, as Orthanc's C-FIND SCU does (its ParsedDicomFile
    built with GetDefaultDicomEncoding()). Raises 400 for a malformed body, 500
    *Error in the network protocol* when the C-FIND fails (nothing is kept then).
    """
    level, fields = build_query(body)
    encoding = (await scp_options.current(settings, index)).default_encoding
    sent = {"SpecificCharacterSet": character_set(encoding), **fields}
    try:
        identifier = dicom_scu.identifier(sent)
    except (KeyError, ValueError) as error:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Bad query: {error}") from None
    try:
        answers = await asyncio.to_thread(dicom_scu.find, peer, identifier)
    except DicomNetworkError as error:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, str(error)) from error
    record = QueryRecord(
        id=str(uuid.uuid4()),
        modality=modality_name,
        level=level.value,
        query={k: v for k, v in fields.items() if k != "QueryRetrieveLevel"},
        answers=[dicom_scu.encode_answer(answer) for answer in answers],
        normalize=body.get("Normalize", True),
        timeout=timeout_field(body),
    )
    await index.jobs.save_query(record, settings.query_retrieve_size)
    return record


async def _query(index: Any, query_id: str) -> QueryRecord:
    """Return a kept query; unknown -> 404 *Unknown resource* (Orthanc's QueryAccessor)."""
    record: QueryRecord | None = await index.jobs.get_query(query_id)
    if record is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    return record


def _position(record: QueryRecord, position: str) -> int:
    """Return an answer's index: not a number -> 400 *Bad type for a parameter*, beyond
    the answers -> 400 *Parameter out of range* (Orthanc's lexical_cast, GetAnswer)."""
    if not position.isdigit():
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    if int(position) >= len(record.answers):
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
    return int(position)


def _answer(record: QueryRecord, position: str) -> bytes:
    return record.answers[_position(record, position)]


@router.get("/queries")
async def list_queries(index: IndexDep) -> Response:
    """Answer the IDs of the kept queries."""
    return OrthancJSONResponse(await index.jobs.list_queries())


@router.get("/queries/{query_id}")
async def query_routes(query_id: str, index: IndexDep) -> Response:
    """Answer the sub-routes of a query; unknown -> 404 *Unknown resource*."""
    await _query(index, query_id)
    return OrthancJSONResponse(["answers", "level", "modality", "query", "retrieve"])


@router.delete("/queries/{query_id}")
async def delete_query(query_id: str, index: IndexDep) -> Response:
    """Forget a query; an unknown one is no error (Orthanc's SharedArchive::Remove)."""
    await index.jobs.delete_query(query_id)
    return empty()


@router.get("/queries/{query_id}/level")
async def query_level(query_id: str, index: IndexDep) -> Response:
    """Answer the level of the query (`Study`)."""
    return OrthancJSONResponse((await _query(index, query_id)).level)


@router.get("/queries/{query_id}/modality")
async def query_modality(query_id: str, index: IndexDep) -> Response:
    """Answer the symbolic name of the queried modality."""
    return OrthancJSONResponse((await _query(index, query_id)).modality)


@router.get("/queries/{query_id}/query")
async def query_fields(query_id: str, index: IndexDep) -> Response:
    """Answer the query sent, by tag name."""
    return OrthancJSONResponse((await _query(index, query_id)).query)


@router.get("/queries/{query_id}/answers")
async def answers(query_id: str, request: Request, index: IndexDep) -> Response:
    """Answer `["0", "1", ...]`, or the contents with `expand` (full format by default)."""
    record = await _query(index, query_id)
    if bool_arg(request, "expand"):
        fmt = tag_format(request, "full")
        return OrthancJSONResponse([tags_json(a, fmt) for a in record.answers])
    return OrthancJSONResponse([str(n) for n in range(len(record.answers))])


@router.get("/queries/{query_id}/answers/{position}")
async def answer_routes(query_id: str, position: str, index: IndexDep) -> Response:
    """Answer the sub-routes of one answer; unknown -> empty 404."""
    record = await _query(index, query_id)
    _answer(record, position)
    # Orthanc's ListQueryAnswerOperations: the drill-downs the level allows (Orthanc
    # spells the patient one "query-study"; DicomKeep names the route that exists).
    children = {Level.PATIENT: ["query-studies", "query-series", "query-instances"],
                Level.STUDY: ["query-series", "query-instances"],
                Level.SERIES: ["query-instances"]}  # fmt: skip
    return OrthancJSONResponse(["content", "retrieve", *children.get(Level(record.level), [])])


@router.get("/queries/{query_id}/answers/{position}/content")
async def answer_content(query_id: str, position: str, request: Request, index: IndexDep) -> Response:
    """Answer the tags of one answer (full format; `simplify`, `short`)."""
    data = _answer(await _query(index, query_id), position)
    return OrthancJSONResponse(tags_json(data, tag_format(request, "full")))


def _move_query(level: Level, answer: bytes) -> dict[str, str]:
    tags = tags_json(answer, "simplify")
    return {key: str(tags.get(key) or "") for key in MOVE_KEYS[level]}


#: The parent levels from which each drill-down is allowed (Orthanc's QueryAnswerChildren).
_PARENT_LEVELS = {
    Level.STUDY: {Level.PATIENT},
    Level.SERIES: {Level.PATIENT, Level.STUDY},
    Level.INSTANCE: {Level.PATIENT, Level.STUDY, Level.SERIES},
}
_BAD_QUERY = "Associative array of DICOM tags to strings expected in field: Query"


def _child_body(raw: bytes) -> dict[str, Any]:
    """Parse the body of a drill-down: a JSON object, else 400 *Bad file format*.

    An empty or non-JSON body is refused as Orthanc does; a JSON value that is not an
    object makes Orthanc fail with a 500 (an unhandled JsonCpp exception): 400 here.
    """
    try:
        body = parse_json(raw.decode("utf-8", errors="replace")) if raw.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    return body


def _child_query(record: QueryRecord, child: Level, answer: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """Return the `/query` body of a drill-down (Orthanc's QueryAnswerChildren): the body's
    `Query`, then the identifiers of the answer (as a C-MOVE of it would send) over it;
    `Normalize` is the parent query's, the body's `LocalAet` and `Normalize` are ignored."""
    query: dict[str, str] = {}
    extra = body.get("Query", {})
    if not isinstance(extra, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, _BAD_QUERY)
    for key, value in extra.items():
        if not isinstance(value, str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, _BAD_QUERY)
        try:
            keyword = tag_name(parse_tag(key))
        except KeyError:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, _BAD_QUERY) from None
        query[keyword if not keyword.startswith("Unknown") else key] = value
    query.update(_move_query(Level(record.level), answer))
    return {"Level": child.value, "Query": query, "Normalize": record.normalize}


async def _query_children(query_id: str, position: str, child: Level, request: Request, ctx: Any) -> Response:
    """Run a drill-down C-FIND and keep it as a new query -> `{"ID", "Path"}`.

    Errors as Orthanc: unknown query 404, bad answer index 400, a drill-down the
    parent's level does not allow 404 *Unknown resource*, a body that is not a JSON
    object or a bad `Query`/`Timeout` 400 *Bad file format*. The C-FIND uses the
    modality's LocalAet (else DicomAet) and the body's `Timeout`, else the parent's.
    """
    record = await _query(ctx.index, query_id)
    index = _position(record, position)
    if Level(record.level) not in _PARENT_LEVELS[child]:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    body = _child_body(await request.body())
    timeout = timeout_field(body)
    if timeout is None:
        timeout = record.timeout
    query = _child_query(record, child, record.answers[index], body)
    if timeout is not None:
        query["Timeout"] = timeout
    settings = ctx.settings
    modality = await get_modality(settings, ctx.index.jobs, record.modality)
    peer = peer_for(settings, modality, {} if timeout is None else {"Timeout": timeout})
    child_record = await run_query(settings, ctx.index, record.modality, peer, query)
    return OrthancJSONResponse({"ID": child_record.id, "Path": f"/queries/{child_record.id}"})


@router.post("/queries/{query_id}/answers/{position}/query-studies")
async def query_studies(query_id: str, position: str, request: Request, ctx: ContextDep) -> Response:
    """C-FIND the studies of one answer (body: optional `{"Query": {tag: value}}`)."""
    return await _query_children(query_id, position, Level.STUDY, request, ctx)


@router.post("/queries/{query_id}/answers/{position}/query-series")
async def query_series(query_id: str, position: str, request: Request, ctx: ContextDep) -> Response:
    """C-FIND the series of one answer (body: optional `{"Query": {tag: value}}`)."""
    return await _query_children(query_id, position, Level.SERIES, request, ctx)


@router.post("/queries/{query_id}/answers/{position}/query-instances")
async def query_instances(query_id: str, position: str, request: Request, ctx: ContextDep) -> Response:
    """C-FIND the instances of one answer (body: optional `{"Query": {tag: value}}`)."""
    return await _query_children(query_id, position, Level.INSTANCE, request, ctx)


def _retrieve_body(raw: bytes, default_aet: str) -> tuple[str, dict[str, Any]]:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return default_aet, {}
    try:
        body = parse_json(text)
    except ValueError:
        return text, {}  # the target AET as plain text
    if isinstance(body, str):
        return body or default_aet, {}
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object or an AET")
    target = body.get("TargetAet", default_aet)
    if not isinstance(target, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "TargetAet" must be a string')
    return target or default_aet, body


async def _retrieve(ctx: Any, record: QueryRecord, answers: list[bytes], raw: bytes) -> Response:
    settings = ctx.settings
    target, body = _retrieve_body(raw, settings.dicom_aet)
    modality = await get_modality(settings, ctx.index.jobs, record.modality)
    level = Level(record.level)
    peer = peer_for(settings, modality, body)
    content, payload = move_job(
        modality, QR_LEVEL[level], [_move_query(level, a) for a in answers], target,
        local_aet=peer.local_aet, timeout=peer.timeout,
    )
    job = await submit(
        ctx.index.jobs, ctx.bus, DICOM_MOVE_SCU, content, payload, field(body, "Priority", int, 0)
    )
    return await job_answer(ctx, job, synchronous(body))


@router.post("/queries/{query_id}/retrieve")
async def retrieve_all(query_id: str, request: Request, ctx: ContextDep) -> Response:
    """C-MOVE every answer to `TargetAet` (body: the AET as text, or an object)."""
    record = await _query(ctx.index, query_id)
    return await _retrieve(ctx, record, record.answers, await request.body())


@router.post("/queries/{query_id}/answers/{position}/retrieve")
async def retrieve_one(query_id: str, position: str, request: Request, ctx: ContextDep) -> Response:
    """C-MOVE one answer to `TargetAet`."""
    record = await _query(ctx.index, query_id)
    answer = _answer(record, position)
    return await _retrieve(ctx, record, [answer], await request.body())
