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

from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.instance import MAIN_DICOM_TAGS
from dicomkeep.common.dicom.orthanc_json import parse_tag, tag_name, tags_json
from dicomkeep.common.dicom.scu import DicomNetworkError, Peer
from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.find import COMPUTED_TAGS
from dicomkeep.common.ids import Level
from dicomkeep.common.index import JobStore, QueryRecord
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


async def run_query(
    settings: Settings, store: JobStore, modality_name: str, peer: Peer, body: dict[str, Any]
) -> QueryRecord:
    """Send the C-FIND of a `/query` body and keep it with its answers.

    Raises 400 for a malformed body, 500 *Error in the network protocol* when the
    C-FIND fails (nothing is kept then).
    """
    level, fields = build_query(body)
    try:
        identifier = dicom_scu.identifier(fields)
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
    )
    await store.save_query(record, settings.query_retrieve_size)
    return record


async def _query(index: Any, query_id: str) -> QueryRecord:
    record: QueryRecord | None = await index.jobs.get_query(query_id)
    if record is None:
        raise NoAnswer()
    return record


def _answer(record: QueryRecord, position: str) -> bytes:
    if not position.isdigit() or int(position) >= len(record.answers):
        raise NoAnswer()
    answer: bytes = record.answers[int(position)]
    return answer


@router.get("/queries")
async def list_queries(index: IndexDep) -> Response:
    """Answer the IDs of the kept queries."""
    return OrthancJSONResponse(await index.jobs.list_queries())


@router.get("/queries/{query_id}")
async def query_routes(query_id: str, index: IndexDep) -> Response:
    """Answer the sub-routes of a query; unknown -> empty 404."""
    await _query(index, query_id)
    return OrthancJSONResponse(["answers", "level", "modality", "query", "retrieve"])


@router.delete("/queries/{query_id}")
async def delete_query(query_id: str, index: IndexDep) -> Response:
    """Forget a query; unknown -> empty 404."""
    if not await index.jobs.delete_query(query_id):
        raise NoAnswer()
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
    _answer(await _query(index, query_id), position)
    return OrthancJSONResponse(["content", "query-instances", "query-series", "query-studies", "retrieve"])


@router.get("/queries/{query_id}/answers/{position}/content")
async def answer_content(query_id: str, position: str, request: Request, index: IndexDep) -> Response:
    """Answer the tags of one answer (full format; `simplify`, `short`)."""
    data = _answer(await _query(index, query_id), position)
    return OrthancJSONResponse(tags_json(data, tag_format(request, "full")))


def _move_query(level: Level, answer: bytes) -> dict[str, str]:
    tags = tags_json(answer, "simplify")
    return {key: str(tags.get(key) or "") for key in MOVE_KEYS[level]}


def _child_query(level: Level, child: Level, answer: bytes, raw: bytes) -> dict[str, Any]:
    """Return the `/query` body of a drill-down (Orthanc's QueryAnswerChildren): the
    identifiers of the answer (as a C-MOVE of it would send) then the body's `Query`."""
    query: dict[str, str] = {key: value for key, value in _move_query(level, answer).items() if value}
    text = raw.decode("utf-8", errors="replace").strip()
    body: Any = None
    if text:
        try:
            body = parse_json(text)
        except ValueError:
            body = None  # Orthanc ignores a body that is not JSON
    if isinstance(body, dict) and "Query" in body:
        extra = body["Query"]
        if not isinstance(extra, dict):
            raise OrthancError(ErrorCode.BAD_REQUEST, 'The field "Query" must be a JSON object')
        for key, value in extra.items():
            if not isinstance(value, str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Field "Query" must be an object of strings')
            try:
                keyword = tag_name(parse_tag(key))
            except KeyError:
                raise OrthancError(ErrorCode.BAD_REQUEST, f"Unknown DICOM tag: {key}") from None
            query[keyword if not keyword.startswith("Unknown") else key] = value
    return {"Level": child.value, "Query": query}


async def _query_children(query_id: str, position: str, child: Level, request: Request, ctx: Any) -> Response:
    record = await _query(ctx.index, query_id)
    answer = _answer(record, position)
    body = _child_query(Level(record.level), child, answer, await request.body())
    settings = ctx.settings
    modality = await get_modality(settings, ctx.index.jobs, record.modality)
    child_record = await run_query(settings, ctx.index.jobs, record.modality, peer_for(settings, modality, {}), body)
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
