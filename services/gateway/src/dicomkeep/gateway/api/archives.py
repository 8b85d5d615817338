"""ZIP archive and DICOMDIR media routes (Orthanc 1.12's OrthancRestArchive).

- `GET|POST /{patients|studies|series}/{id}/archive|media`;
- `GET|POST /tools/create-archive`, `/tools/create-media`, `/tools/create-media-extended`
  (`Resources` of any levels; GET: `resources=id1,id2`, 1.12.2).
Synchronous (the default) answers the ZIP, streamed file by file as it is built
(`SynchronousZipStream`, default true), or built whole in a temporary file and
sent with its `Content-Length` when that option is false. `"Asynchronous": true`
queues an `Archive`/`Media` job for the jobs service and answers `{"ID", "Path"}`;
its ZIP is then `GET /jobs/{id}/archive` (api/jobs.py). Unknown resources (404)
and transfer syntaxes DicomKeep cannot write (400) are refused before anything
is sent. Layout and options: common/archives.py.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from dicomkeep.common import archives
from dicomkeep.common.archives import ArchiveOptions
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.jobs import submit
from dicomkeep.common.transcoding import check_target
from dicomkeep.gateway.api.jobs import job_answer
from dicomkeep.gateway.api.modify import json_body
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.context import GatewayContext
from dicomkeep.gateway.deps import ContextDep
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

router = APIRouter()
ZIP_MEDIA_TYPE = "application/zip"
CHUNK = 1024 * 1024


def _disposition(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'filename="{filename}"'}


async def _spooled(chunks: AsyncIterator[bytes]) -> tuple[Any, int]:
    """Write the whole ZIP to a temporary file; return it (at offset 0) and its size."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _file_chunks
    size = 0
    try:
        async for chunk in chunks:
            await asyncio.to_thread(spool.write, chunk)
            size += len(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


async def _file_chunks(spool: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spool.read, CHUNK):
            yield chunk
    finally:
        spool.close()


async def _answer(
    ctx: GatewayContext,
    resources: list[str],
    options: ArchiveOptions,
    *,
    media: bool,
    filename: str,
) -> Response:
    """Answer the ZIP (synchronous) or queue the job (asynchronous)."""
    plan = await archives.plan(ctx.index, resources, media=media)
    if not options.synchronous:
        content = archives.job_content(plan, options.transcode)
        payload = archives.job_payload(resources, options, media=media)
        job_type = archives.MEDIA_JOB if media else archives.ARCHIVE_JOB
        job = await submit(ctx.index.jobs, ctx.bus, job_type, content, payload, options.priority)
        return await job_answer(ctx, job, synchronous=False)
    chunks = archives.stream_zip(
        ctx.index, ctx.blobs, plan, media=media, target=options.transcode,
        extended=options.extended,
    )  # fmt: skip
    headers = _disposition(archives.attachment_filename(options.filename, filename))
    if ctx.settings.synchronous_zip_stream:
        return StreamingResponse(chunks, media_type=ZIP_MEDIA_TYPE, headers=headers)
    spool, size = await _spooled(chunks)
    headers["Content-Length"] = str(size)
    return StreamingResponse(_file_chunks(spool), media_type=ZIP_MEDIA_TYPE, headers=headers)


def _query_options(request: Request, *, default_extended: bool = False) -> ArchiveOptions:
    """Options of the GET flavours: `transcode`, `filename`, `extended` (media)."""
    target = request.query_params.get("transcode")
    return ArchiveOptions(
        transcode=str(check_target(target)) if target is not None else None,
        extended=default_extended or ("extended" in request.query_params and bool_arg(
            request, "extended", True
        )),
        filename=request.query_params.get("filename"),
    )


def _single_get(media: bool):  # type: ignore[no-untyped-def]
    async def create_single(public_id: str, request: Request, ctx: ContextDep) -> Response:
        """Answer the ZIP of one resource (always synchronous)."""
        options = _query_options(request)
        return await _answer(ctx, [public_id], options, media=media, filename=f"{public_id}.zip")

    return create_single


def _single_post(media: bool):  # type: ignore[no-untyped-def]
    async def create_single(public_id: str, request: Request, ctx: ContextDep) -> Response:
        """Answer the ZIP of one resource, or queue it as a job (`Asynchronous`)."""
        options = archives.parse_options(await json_body(request))
        return await _answer(ctx, [public_id], options, media=media, filename=f"{public_id}.zip")

    return create_single


def _batch_post(media: bool, extended: bool):  # type: ignore[no-untyped-def]
    async def create_batch(request: Request, ctx: ContextDep) -> Response:
        """Answer the ZIP of `Resources` (any levels), or queue it as a job."""
        raw = await request.body()
        if not raw.strip():
            raise OrthancError(
                ErrorCode.BAD_FILE_FORMAT, "Expected a list of resources to archive in the body"
            )
        body = await json_body(request)
        resources = archives.resources_of(body)
        options = archives.parse_options(body, default_extended=extended)
        return await _answer(ctx, resources, options, media=media, filename="Archive.zip")

    return create_batch


def _batch_get(media: bool, extended: bool):  # type: ignore[no-untyped-def]
    async def create_batch(request: Request, ctx: ContextDep) -> Response:
        """Answer the ZIP of `resources=id1,id2` (Orthanc 1.12.2)."""
        listed = request.query_params.get("resources", "")
        resources = [item.strip() for item in listed.split(",") if item.strip()]
        if not resources:
            raise OrthancError(ErrorCode.BAD_REQUEST, 'Missing "resources" argument')
        options = _query_options(request, default_extended=extended)
        return await _answer(ctx, resources, options, media=media, filename="Archive.zip")

    return create_batch


def _register() -> None:
    for media, verb in ((False, "archive"), (True, "media")):
        for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
            path = f"/{level.plural}/{{public_id}}/{verb}"
            router.add_api_route(path, _single_get(media), methods=["GET"])
            router.add_api_route(path, _single_post(media), methods=["POST"])
    for name, media, extended in (
        ("create-archive", False, False),
        ("create-media", True, False),
        ("create-media-extended", True, True),
    ):
        router.add_api_route(f"/tools/{name}", _batch_post(media, extended), methods=["POST"])
        router.add_api_route(f"/tools/{name}", _batch_get(media, extended), methods=["GET"])


_register()
