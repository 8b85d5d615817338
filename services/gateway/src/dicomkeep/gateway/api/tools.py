"""Small tools: `/plugins`, `/tools/dicom-conformance`, `/tools/create-dicom`,
`/instances/{id}/pdf`, `/tools/bulk-delete`, `/tools/bulk-content`, `/tools/reset`,
`/tools/shutdown` (Orthanc 1.12)."""

from __future__ import annotations

import asyncio
from typing import Any

from dicomkeep.common.dicom.receiving import Origin
from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index import Index
from dicomkeep.common.modification import boolean_member as boolean
from dicomkeep.common.resource_modification import read_instance
from dicomkeep.common.transcoding import dataset_bytes, read_dataset
from dicomkeep.gateway.api.instances import store_answer
from dicomkeep.gateway.api.modify import json_body, resources_member
from dicomkeep.gateway.args import TagFormat
from dicomkeep.gateway.conformance import conformance_statement
from dicomkeep.gateway.deps import BlobsDep, IndexDep, ReceiverDep, UsernameDep
from dicomkeep.gateway.dicom_creation import ENCAPSULATED_PDF, build_instance
from dicomkeep.gateway.process_control import ProcessControl
from dicomkeep.gateway.responses import OrthancJSONResponse, plain
from dicomkeep.gateway.views import expand_resource
from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import Response

router = APIRouter()
#: Orthanc always lists its explorer extension first; DicomKeep has no plugins.
PLUGINS = ["explorer.js"]
#: What the instances created from one `Content` array share.
SERIES_IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")


@router.get("/plugins")
async def list_plugins() -> Response:
    """Answer `["explorer.js"]`: Orthanc's list without any plugin loaded."""
    return OrthancJSONResponse(PLUGINS)


@router.get("/plugins/explorer.js")
async def explorer_extensions() -> Response:
    """Answer the JavaScript that plugins add to the explorer: none here."""
    return Response(b"", media_type="application/javascript")


def _control(request: Request) -> ProcessControl:
    control: ProcessControl = request.app.state.control
    return control


@router.post("/tools/reset")
async def reset(request: Request) -> Response:
    """Answer `{}`, then restart the process's services with the configuration read
    again (Orthanc's `ResetOrthanc`; any authenticated user may call it, as in Orthanc)."""
    return OrthancJSONResponse({}, background=BackgroundTask(_control(request).request_reset))


@router.post("/tools/shutdown")
async def shutdown(request: Request) -> Response:
    """Answer `{}`, then stop the process's services and exit (Orthanc's `ShutdownOrthanc`)."""
    return OrthancJSONResponse({}, background=BackgroundTask(_control(request).request_shutdown))


@router.get("/tools/dicom-conformance")
async def dicom_conformance() -> Response:
    """Answer the DICOM conformance statement of DicomKeep's SCP (text)."""
    return plain(conformance_statement())


async def _parent_tags(index: Index, parent: Any) -> dict[str, str]:
    """Return the main tags the new instance inherits from `Parent` and its ancestors."""
    if not isinstance(parent, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "Parent" should be a string')
    for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
        resource = await index.get_resource(level, parent)
        if resource is None:
            continue
        inherited: dict[str, str] = {}
        while True:
            inherited.update(resource.main_tags)
            if resource.patient_main_tags:
                inherited.update(resource.patient_main_tags)
            if resource.parent_id is None or resource.level.parent is None:
                return inherited
            found = await index.get_resource(resource.level.parent, resource.parent_id)
            if found is None:
                return inherited
            resource = found
    if await index.get_resource(Level.INSTANCE, parent) is not None:
        raise OrthancError(ErrorCode.CREATE_DICOM_PARENT_IS_INSTANCE)
    raise OrthancError(ErrorCode.CREATE_DICOM_BAD_PARENT)


@router.post("/tools/create-dicom")
async def create_dicom(
    request: Request, index: IndexDep, receiver: ReceiverDep, username: UsernameDep
) -> Response:
    """Create and store one instance from `Tags`, `Content` (data URI) and `Parent`.

    Answers as `POST /instances`; with a `Content` array (data URIs, or objects
    with `Content` and `Tags`), one series of instances and `{"ID", "Path"}` of it. Errors as Orthanc: unknown tag 500 *Unknown
    DICOM tag*; unknown parent 400 (2024); instance parent 400 (2025);
    content not a data URI 400 (2023).
    """
    body = await json_body(request)
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    tags = body.get("Tags", {})
    if not isinstance(tags, dict):
        raise OrthancError(ErrorCode.BAD_REQUEST, 'Member "Tags" should be an object')
    creator = body.get("PrivateCreator", "")
    if not isinstance(creator, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "PrivateCreator" should be a string')
    force = boolean(body, "Force", False)
    inherited = await _parent_tags(index, body["Parent"]) if "Parent" in body else {}
    client = request.client
    origin = Origin(
        protocol="RestApi", remote_ip=client.host if client else "", http_username=username
    )
    content = body.get("Content")
    if not isinstance(content, list):
        ds = await asyncio.to_thread(
            build_instance, tags, content, inherited, private_creator=creator, force=force
        )
        received = await receiver.receive(await asyncio.to_thread(dataset_bytes, ds), origin)
        return OrthancJSONResponse(store_answer(received))
    # A list of contents: one series, one instance per item (Orthanc's CreateSeries).
    if not content:
        raise OrthancError(ErrorCode.CREATE_DICOM_NO_PAYLOAD)
    shared = dict(inherited)
    series_id = ""
    for number, item in enumerate(content, start=1):
        item_tags = dict(tags)
        payload = item
        if isinstance(item, dict):
            payload = item.get("Content")
            extra = item.get("Tags", {})
            if not isinstance(extra, dict):
                raise OrthancError(ErrorCode.BAD_REQUEST, 'Member "Tags" should be an object')
            item_tags.update(extra)
        if payload is None:
            raise OrthancError(ErrorCode.CREATE_DICOM_NO_PAYLOAD)
        item_tags.setdefault("InstanceNumber", str(number))
        if number > 1:  # the identifiers of the first instance hold for the series
            for keyword in SERIES_IDENTIFIERS:
                item_tags.pop(keyword, None)
        ds = await asyncio.to_thread(
            build_instance, item_tags, payload, shared, private_creator=creator, force=force
        )
        if number == 1:
            for keyword in SERIES_IDENTIFIERS:
                shared[keyword] = str(ds.get(keyword, ""))
        received = await receiver.receive(await asyncio.to_thread(dataset_bytes, ds), origin)
        series_id = received.parsed.ids[2]
    return OrthancJSONResponse({"ID": series_id, "Path": resource_path(Level.SERIES, series_id)})


@router.get("/instances/{public_id}/pdf")
async def get_pdf(public_id: str, index: IndexDep, blobs: BlobsDep) -> Response:
    """Answer the PDF of an Encapsulated PDF instance; empty 404 for any other instance."""
    resource = await index.get_resource(Level.INSTANCE, public_id)
    if resource is None:
        raise NoAnswer()
    data, _ = await read_instance(index, blobs, public_id)
    ds = await asyncio.to_thread(read_dataset, data)
    if str(ds.get("SOPClassUID", "")) != ENCAPSULATED_PDF or "EncapsulatedDocument" not in ds:
        raise NoAnswer()
    content = bytes(ds.EncapsulatedDocument)
    end = content.rfind(b"%%EOF")
    if end >= 0:
        content = content[: end + 5] + content[end + 5 :].rstrip(b"\x00")
    return Response(content, media_type="application/pdf")


async def _find_level(index: Index, public_id: str) -> Level | None:
    for level in Level:
        if await index.get_resource(level, public_id) is not None:
            return level
    return None


@router.post("/tools/bulk-delete")
async def bulk_delete(request: Request, index: IndexDep) -> Response:
    """Delete resources of any levels; unknown IDs are skipped (Orthanc 1.9.4+). Empty answer."""
    resources = resources_member(await json_body(request))
    for public_id in resources:
        level = await _find_level(index, public_id)
        if level is None:
            continue
        # Deleted changes take the resources out of the stability clock (stability service).
        await index.delete_resource(level, public_id)
    return plain("")


async def _related(index: Index, level: Level, public_id: str, target: Level) -> list[str]:
    """Return the resources at `target` related to one resource (itself, below or above)."""
    if target is level:
        return [public_id]
    if target.depth > level.depth:
        return await index.descendants(level, public_id, target)
    resource = await index.get_resource(level, public_id)
    while resource is not None and resource.level is not target:
        if resource.parent_id is None or resource.level.parent is None:
            return []
        resource = await index.get_resource(resource.level.parent, resource.parent_id)
    return [resource.public_id] if resource is not None else []


@router.post("/tools/bulk-content")
async def bulk_content(request: Request, index: IndexDep) -> Response:
    """Answer the expanded objects of resources of any levels (or, with `Level`,
    of the resources of that level related to them). Unknown IDs are skipped."""
    body = await json_body(request)
    resources = resources_member(body)
    target: Level | None = None
    if "Level" in body:
        if not isinstance(body["Level"], str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "Level" should be a string')
        target = Level.parse(body["Level"])
    fmt: TagFormat = "simplify"
    if boolean(body, "Full", False):
        fmt = "full"
    elif boolean(body, "Short", False):
        fmt = "short"
    answer: list[dict[str, Any]] = []
    seen: set[str] = set()
    for public_id in resources:
        level = await _find_level(index, public_id)
        if level is None:
            continue
        for related in await _related(index, level, public_id, target or level):
            if related in seen:
                continue
            seen.add(related)
            resource = await index.get_resource(target or level, related)
            if resource is not None:
                answer.append(await expand_resource(index, resource, fmt))
    return OrthancJSONResponse(answer)
