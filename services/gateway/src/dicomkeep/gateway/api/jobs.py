"""Job routes: `/jobs`, `/jobs/{id}`, cancel/pause/resume/resubmit, outputs (§10).

Jobs live in the index, so every gateway replica lists the same jobs and acts on
them, whichever jobs worker runs them. `job_answer` is how job-creating routes
answer: the job's content once it succeeded (synchronous, the default) or
`{"ID", "Path"}` at once (asynchronous).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dicomkeep.common.archives import OUTPUT_KEY
from dicomkeep.common.errors import ErrorCode, NoAnswer, OrthancError
from dicomkeep.common.index import JobAction, JobRecord, JobState
from dicomkeep.common.jobs import job_path, wait_for_job, wake_workers
from dicomkeep.common.timestamps import job_stamp
from dicomkeep.gateway.args import bool_arg
from dicomkeep.gateway.context import GatewayContext
from dicomkeep.gateway.deps import ContextDep, IndexDep, SettingsDep
from dicomkeep.gateway.responses import OrthancJSONResponse, empty
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

router = APIRouter()
CHUNK = 1024 * 1024

_CODES = {code.status: code for code in ErrorCode}


def error_code(status: int) -> ErrorCode:
    """Return the ErrorCode of an Orthanc status (INTERNAL_ERROR when unknown)."""
    return _CODES.get(status, ErrorCode.INTERNAL_ERROR)


def job_json(job: JobRecord) -> dict[str, Any]:
    """Return `GET /jobs/{id}` for a job (ORTHANC_API.md §10)."""
    body: dict[str, Any] = {
        "ID": job.id,
        "Type": job.type,
        "State": job.state.value,
        "Progress": job.progress,
        "Priority": job.priority,
        "CreationTime": job.created,
        "Timestamp": job_stamp(),
        "EffectiveRuntime": round(job.runtime, 3),
        "ErrorCode": job.error_code,
        "ErrorDescription": (
            "Success" if job.error_code == 0 else error_code(job.error_code).message
        ),
        "ErrorDetails": job.error_details,
        "Content": job.content,
    }
    if job.completed is not None:
        body["CompletionTime"] = job.completed
    return body


async def job_answer(ctx: GatewayContext, job: JobRecord, synchronous: bool) -> Response:
    """Answer a job-creating route: `{"ID","Path"}`, or the content once it succeeded.

    A synchronous job that failed answers Orthanc's error built from its error
    code and details; one dropped from the history (JobsHistorySize 0) answers 500.
    """
    if not synchronous:
        return OrthancJSONResponse({"ID": job.id, "Path": job_path(job.id)})
    done = await wait_for_job(ctx.index.jobs, job.id)
    if done is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Job {job.id} left the history")
    if done.state is JobState.FAILURE:
        raise OrthancError(error_code(done.error_code), done.error_details or None)
    return OrthancJSONResponse(done.content)


@router.get("/jobs")
async def list_jobs(request: Request, index: IndexDep) -> Response:
    """Answer every job ID (all states), or the job objects with `expand`."""
    jobs = await index.jobs.list_jobs()
    if bool_arg(request, "expand"):
        return OrthancJSONResponse([job_json(job) for job in jobs])
    return OrthancJSONResponse([job.id for job in jobs])


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, index: IndexDep) -> Response:
    """Answer one job; unknown -> empty 404."""
    job = await index.jobs.get_job(job_id)
    if job is None:
        raise NoAnswer()
    return OrthancJSONResponse(job_json(job))


@router.delete("/jobs/{job_id}")
async def delete_job(job_id: str, index: IndexDep) -> Response:
    """Remove a completed job from the history; unknown or not completed -> 404 JSON."""
    if not await index.jobs.delete_job(job_id):
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No completed job with ID: {job_id}")
    return empty()


def _action_route(action: JobAction) -> Any:
    async def act(job_id: str, ctx: ContextDep, settings: SettingsDep) -> Response:
        """Apply the action; unknown job or action not allowed here -> empty 400."""
        if not await ctx.index.jobs.control_job(job_id, action, settings.jobs_history_size):
            raise NoAnswer(400)
        if action in (JobAction.RESUME, JobAction.RESUBMIT):
            await wake_workers(ctx.bus, job_id)
        return OrthancJSONResponse({})

    return act


for _action in JobAction:
    router.add_api_route(f"/jobs/{{job_id}}/{_action.value}", _action_route(_action), methods=["POST"])


@router.get("/jobs/{job_id}/{key}")
async def get_output(job_id: str, key: str, ctx: ContextDep) -> Response:
    """Answer a job output: the ZIP of an Archive/Media job (`archive`), read from
    the blob store so that any gateway answers it; missing -> 404 JSON."""
    job = await ctx.index.jobs.get_job(job_id)
    if job is None or key != OUTPUT_KEY or key not in job.output:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No output {key} for job {job_id}")
    size = int(job.output[key].get("Size", 0))
    try:
        first = await ctx.blobs.get(job_id, (0, min(size, CHUNK)) if ctx.blobs.range_reads else None)
    except KeyError as error:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No output {key} for job {job_id}") from error
    headers = {"Content-Disposition": 'filename="archive.zip"', "Content-Length": str(size)}
    if not ctx.blobs.range_reads or size <= CHUNK:
        return Response(first, media_type="application/zip", headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        for start in range(CHUNK, size, CHUNK):
            yield await ctx.blobs.get(job_id, (start, min(size, start + CHUNK)))

    return StreamingResponse(chunks(), media_type="application/zip", headers=headers)


@router.delete("/jobs/{job_id}/{key}")
async def delete_output(job_id: str, key: str, index: IndexDep) -> Response:
    """Delete a job output (Orthanc 1.12.1); its blob goes with it. Missing -> 404 JSON."""
    if key != OUTPUT_KEY or not await index.jobs.delete_output(job_id):
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No output {key} for job {job_id}")
    return empty()
