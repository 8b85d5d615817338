"""Modification and anonymization routes, single and bulk (Orthanc 1.12's REST API).

- `POST /instances/{id}/modify|anonymize` answers the modified file and stores
  nothing;
- `POST /{patients|studies|series}/{id}/modify|anonymize` stores modified copies
  through the store flow and answers Orthanc's job content (`ID`, `Path`,
  `PatientID`, `Type`, counts);
- `POST /tools/bulk-modify|bulk-anonymize` do the same for a list of resources
  of any levels and answer the copies at every level (`Resources`).
The resource and bulk routes queue a `ResourceModification` job, run by the jobs
service, as Orthanc's `SubmitModificationJob` does: synchronous (the default) waits
for it and answers its content, so the job shows in `/jobs` either way;
`"Asynchronous": true` answers `{"ID", "Path"}` at once.
Bad bodies are refused before anything is read or stored (common/modification.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dicomkeep.common.dicom.receiving import Origin
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.jobs import submit
from dicomkeep.common.modification import (
    Modification,
    parse_anonymize_request,
    parse_modify_request,
)
from dicomkeep.common.resource_modification import (
    JOB_TYPE,
    ModificationOptions,
    ModificationOutcome,
    anonymized_patient_name,
    instances_of,
    job_content,
    job_payload,
    modify_bytes,
    parse_options,
    read_instance,
)
from dicomkeep.gateway.api.jobs import job_answer
from dicomkeep.gateway.bodies import parse_json
from dicomkeep.gateway.context import GatewayContext
from dicomkeep.gateway.deps import (
    BlobsDep,
    ContextDep,
    IndexDep,
    UsernameDep,
)
from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter()
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E


async def json_body(request: Request) -> Any:
    """Return the JSON body ({} when empty); 400 *Bad file format* if it does not parse."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return parse_json(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from error


async def _modification(
    index: Index, body: Any, level: Level, anonymize: bool
) -> Modification:
    if not anonymize:
        return parse_modify_request(body, level)
    modification, name_overridden = parse_anonymize_request(body)
    if not name_overridden:
        modification.replace_tag(PATIENT_NAME, await anonymized_patient_name(index))
    return modification


def _origin(request: Request, username: str) -> Origin:
    client = request.client
    return Origin(protocol="RestApi", remote_ip=client.host if client else "", http_username=username)


async def _submit(
    ctx: GatewayContext,
    body: dict[str, Any],
    modification: Modification,
    instances: list[str],
    options: ModificationOptions,
    resource: tuple[Level, str] | None,
    origin: Origin,
) -> Response:
    """Queue the modification as a job for the jobs service; answer `{"ID", "Path"}`
    (asynchronous) or, once the job succeeded, its content (Orthanc's SubmitAndWait)."""
    level, public_id = resource if resource is not None else (None, None)
    payload = job_payload(body, modification, instances, level, public_id, origin)
    content = job_content(ModificationOutcome(modification.is_anonymization), level, public_id)
    job = await submit(ctx.index.jobs, ctx.bus, JOB_TYPE, content, payload, options.priority)
    return await job_answer(ctx, job, synchronous=not options.asynchronous)


def _instance_route(anonymize: bool):  # type: ignore[no-untyped-def]
    async def modify_instance(
        public_id: str, request: Request, index: IndexDep, blobs: BlobsDep
    ) -> Response:
        """Answer the modified (or anonymized) DICOM file; nothing is stored."""
        body = await json_body(request)
        modification = await _modification(index, body, Level.INSTANCE, anonymize)
        options = parse_options(body) if isinstance(body, dict) else ModificationOptions()
        data, _ = await read_instance(index, blobs, public_id)
        modified = await asyncio.to_thread(modify_bytes, data, modification, options.transcode)
        return Response(modified, media_type="application/dicom")

    return modify_instance


def _resource_route(level: Level, anonymize: bool):  # type: ignore[no-untyped-def]
    async def modify_resource(
        public_id: str,
        request: Request,
        ctx: ContextDep,
        index: IndexDep,
        username: UsernameDep,
    ) -> Response:
        """Store modified copies of every instance of the resource; answer the new resource."""
        body = await json_body(request)
        modification = await _modification(index, body, level, anonymize)
        options = parse_options(body)
        instances = await instances_of(index, level, public_id)
        return await _submit(
            ctx, body, modification, instances, options, (level, public_id),
            _origin(request, username),
        )  # fmt: skip

    return modify_resource


async def _level_of(index: Index, public_id: str) -> Level | None:
    for level in Level:
        if await index.get_resource(level, public_id) is not None:
            return level
    return None


def _bulk_level(body: dict[str, Any], modification: Modification) -> Level:
    """Orthanc 1.9.7+: `Level`, else Patient/Study/Series when that identifier is
    replaced, else Instance."""
    if "Level" in body:
        if not isinstance(body["Level"], str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "Level" should be a string')
        return Level.parse(body["Level"])
    for tag, level in (
        (PATIENT_ID, Level.PATIENT),
        (STUDY_INSTANCE_UID, Level.STUDY),
        (SERIES_INSTANCE_UID, Level.SERIES),
    ):
        if tag in modification.replacements:
            return level
    return Level.INSTANCE


def resources_member(body: Any) -> list[str]:
    """Return `Resources`, a list of strings; 400 *Bad file format* otherwise (Orthanc)."""
    resources = body.get("Resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or not all(isinstance(item, str) for item in resources):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "List of strings expected in field: Resources")
    return resources


def _bulk_route(anonymize: bool):  # type: ignore[no-untyped-def]
    async def bulk(
        request: Request,
        ctx: ContextDep,
        index: IndexDep,
        username: UsernameDep,
    ) -> Response:
        """Modify (anonymize) resources of any levels; answer the copies at every level."""
        body = await json_body(request)
        resources = resources_member(body)
        if anonymize:
            modification = await _modification(index, body, Level.PATIENT, True)
        else:
            probe = parse_modify_request({**body, "Force": True}, Level.INSTANCE)
            modification = parse_modify_request(body, _bulk_level(body, probe))
        options = parse_options(body)
        instances: list[str] = []
        for public_id in resources:
            level = await _level_of(index, public_id)
            if level is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {public_id}")
            for instance_id in await instances_of(index, level, public_id):
                if instance_id not in instances:
                    instances.append(instance_id)
        return await _submit(
            ctx, body, modification, instances, options, None, _origin(request, username)
        )

    return bulk


def _register() -> None:
    for anonymize, verb in ((False, "modify"), (True, "anonymize")):
        router.add_api_route(
            f"/instances/{{public_id}}/{verb}", _instance_route(anonymize), methods=["POST"]
        )
        for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
            router.add_api_route(
                f"/{level.plural}/{{public_id}}/{verb}",
                _resource_route(level, anonymize),
                methods=["POST"],
            )
        router.add_api_route(f"/tools/bulk-{verb}", _bulk_route(anonymize), methods=["POST"])


_register()
