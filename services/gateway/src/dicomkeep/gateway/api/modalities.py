"""Modality routes (ORTHANC_API.md §11.6): registry, echo, store, query, move.

Modalities are the configuration's `DicomModalities` overlaid by what REST
clients PUT or DELETE, which the index keeps so that every replica agrees (as
Orthanc's DicomModalitiesInDatabase, always on). C-ECHO and C-FIND run here,
in a worker thread; C-STORE and C-MOVE run as jobs (`/jobs`), waited for when
synchronous.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.scu import DicomNetworkError, StoreSession
from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.jobs import DICOM_MODALITY_STORE, DICOM_MOVE_SCU, move_job, store_job, submit
from dicomkeep.common.modalities import (
    Modality,
    check_name,
    get_modality,
    load_modalities,
    parse_modality,
)
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.peer_transfer import expand_instances, parse_store_body
from dicomkeep.common.settings import Settings
from dicomkeep.gateway import openapi_bodies
from dicomkeep.gateway.api.jobs import job_answer
from dicomkeep.gateway.api.queries import run_query
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.deps import ContextDep, IndexDep, SettingsDep
from dicomkeep.gateway.modality_bodies import (
    bad_body,
    field,
    json_body,
    json_object,
    move_identifiers,
    network_error,
    peer_for,
    synchronous,
)
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()

SUB_ROUTES = [
    "configuration", "echo", "find", "find-instance", "find-patient", "find-series",
    "find-study", "find-worklist", "move", "query", "storage-commitment", "store",
    "store-straight",
]  # fmt: skip


@router.get("/modalities")
async def list_modalities(request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the modality names; `expand` for `{name: object form}`."""
    modalities = await load_modalities(settings, index.jobs)
    if bool_arg(request, "expand"):
        return OrthancJSONResponse({n: m.to_json() for n, m in modalities.items()})
    return OrthancJSONResponse(list(modalities))


@router.get("/modalities/{name}")
async def modality_routes(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the list of sub-routes; unknown modality -> empty 404."""
    if name not in await load_modalities(settings, index.jobs):
        raise NoAnswer()
    return OrthancJSONResponse(SUB_ROUTES)


@router.get("/modalities/{name}/configuration")
async def modality_configuration(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Answer the object form of a modality; unknown -> 404."""
    return OrthancJSONResponse((await get_modality(settings, index.jobs, name)).to_json())


@router.put("/modalities/{name}", openapi_extra=openapi_bodies.MODALITY)
async def put_modality(name: str, request: Request, index: IndexDep) -> Response:
    """Create or replace a modality (array or object form); bad name or body -> 400."""
    check_name(name)
    modality = parse_modality(json_body(await request.body(), allow_empty=False))
    await index.jobs.set_modality(name, modality.to_json())
    return empty()


@router.delete("/modalities/{name}")
async def delete_modality(name: str, settings: SettingsDep, index: IndexDep) -> Response:
    """Forget a modality; unknown -> 404."""
    await get_modality(settings, index.jobs, name)
    await index.jobs.set_modality(name, None)
    return empty()


async def _echo(settings: Settings, modality: Modality, body: dict[str, Any]) -> Response:
    peer = peer_for(settings, modality, body)
    check_find = field(body, "CheckFind", bool, settings.dicom_echo_checks_find)
    try:
        await asyncio.to_thread(dicom_scu.echo, peer)
        if check_find:
            query = dicom_scu.identifier({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"})
            await asyncio.to_thread(dicom_scu.find, peer, query)
    except DicomNetworkError as error:
        raise network_error(error) from error
    return OrthancJSONResponse({})


@router.post("/modalities/{name}/echo")
async def echo(name: str, request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """C-ECHO a modality (`Timeout`, `CheckFind` optional) -> `{}`; failure -> 500."""
    modality = await get_modality(settings, index.jobs, name)
    return await _echo(settings, modality, json_body(await request.body()))


@router.post("/tools/dicom-echo")
async def dicom_echo(request: Request, settings: SettingsDep) -> Response:
    """C-ECHO an unregistered modality -> `{}`; failure -> 500.

    The body is a modality as `DicomModalities` takes it: the object form (with
    `Timeout` and `CheckFind` too) or the array form `["AET", "host", port]`
    (with an optional 4th element, the manufacturer), as Orthanc accepts both.
    """
    body = json_body(await request.body(), allow_empty=False)
    if isinstance(body, list):
        return await _echo(settings, parse_modality(body), {})
    if not isinstance(body, dict):
        raise bad_body("Must provide a JSON object or array")
    modality = parse_modality({k: v for k, v in body.items() if k not in ("CheckFind",)})
    return await _echo(settings, modality, body)


@router.post("/modalities/{name}/store")
async def store(name: str, request: Request, ctx: ContextDep) -> Response:
    """C-STORE resources (any level) to a modality as a DicomModalityStore job.

    Body: an ID, a JSON string or array of IDs, or an object with `Resources` and
    `LocalAet`, `CalledAet`, `Host`, `Port`, `MoveOriginatorAet`, `MoveOriginatorID`,
    `Timeout`, `Synchronous`/`Asynchronous`, `Priority`, `Permissive`. Invalid ID
    -> 400; unknown resource or modality -> 404. One association for the job.
    """
    settings = ctx.settings
    modality = await get_modality(settings, ctx.index.jobs, name)
    raw = await request.body()
    request_body = parse_store_body(raw)
    body = json_body(raw) if raw.strip().startswith(b"{") else {}
    overrides = {
        "aet": field(body, "CalledAet", str, None),
        "host": field(body, "Host", str, None),
        "port": field(body, "Port", int, None),
    }
    modality = replace(modality, **{k: v for k, v in overrides.items() if v is not None})
    peer = peer_for(settings, modality, body)
    originator_aet = field(body, "MoveOriginatorAet", str, "")
    originator_id = field(body, "MoveOriginatorID", int, 0)
    instances = await expand_instances(ctx.index, request_body.resources)
    if settings.log_exported_resources:
        await ctx.index.log_exports(request_body.resources, name)
    content, payload = store_job(
        modality, instances, request_body.resources, local_aet=peer.local_aet,
        timeout=peer.timeout, permissive=request_body.permissive,
        originator=(originator_aet, originator_id) if originator_aet else None,
    )
    job = await submit(
        ctx.index.jobs, ctx.bus, DICOM_MODALITY_STORE, content, payload, request_body.priority
    )
    return await job_answer(ctx, job, request_body.synchronous)


@router.post("/modalities/{name}/store-straight")
async def store_straight(name: str, request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """C-STORE the DICOM file of the body without storing it -> its SOP class and instance UIDs."""
    modality = await get_modality(settings, index.jobs, name)
    data: bytes = await request.body()
    try:
        dataset = await asyncio.to_thread(dicom_scu.read_dataset, data)
    except Exception as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot parse the DICOM file") from error
    sop_class, sop_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
    syntax = str(dataset.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in dataset.file_meta else ""

    def send() -> int:
        with StoreSession(peer_for(settings, modality, {}), [(sop_class, syntax)]) as session:
            status: int = session.send(data)
            return status

    try:
        status = await asyncio.to_thread(send)
    except DicomNetworkError as error:
        raise network_error(error) from error
    if not DimseStatus.is_stored(status):
        raise OrthancError(
            ErrorCode.NETWORK_PROTOCOL,
            f"C-STORE SCU to AET \"{modality.aet}\" has failed with DIMSE status 0x{status:04X}",
        )
    return OrthancJSONResponse({"SOPClassUID": sop_class, "SOPInstanceUID": sop_instance})


@router.post("/modalities/{name}/query", openapi_extra=openapi_bodies.QUERY)
async def query(name: str, request: Request, settings: SettingsDep, index: IndexDep) -> Response:
    """C-FIND a modality now; answers kept under `/queries/{id}` -> `{"ID", "Path"}`.

    Body: `{"Level", "Query": {tag: value}, "Normalize" (true), "LocalAet", "Timeout"}`.
    """
    modality = await get_modality(settings, index.jobs, name)
    body = json_object(await request.body())
    record = await run_query(settings, index, name, peer_for(settings, modality, body), body)
    return OrthancJSONResponse({"ID": record.id, "Path": f"/queries/{record.id}"})


@router.post("/modalities/{name}/move")
async def move(name: str, request: Request, ctx: ContextDep) -> Response:
    """C-MOVE from a modality as a DicomMoveScu job (`TargetAet` default DicomAet)."""
    settings = ctx.settings
    modality = await get_modality(settings, ctx.index.jobs, name)
    body = json_object(await request.body())
    level, identifiers = move_identifiers(body)
    target = field(body, "TargetAet", str, "") or settings.dicom_aet
    peer = peer_for(settings, modality, body)
    content, payload = move_job(
        modality, level, identifiers, target, local_aet=peer.local_aet, timeout=peer.timeout
    )
    job = await submit(
        ctx.index.jobs, ctx.bus, DICOM_MOVE_SCU, content, payload,
        field(body, "Priority", int, 0),
    )
    return await job_answer(ctx, job, synchronous(body))
