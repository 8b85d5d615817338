"""Monitoring routes as Orthanc has them: `/tools/metrics-prometheus`, `/tools/metrics`
and `/tools/log-level`.

`/tools/metrics-prometheus` answers Orthanc's metric names in Orthanc's text
format (`name value timestamp_ms`). Counts, sizes, jobs and the last change come
from the index, so in the distributed mode every gateway answers the cluster-wide
figures; durations and active requests are this process's (the DICOM store
durations are the ingest's: see each service's `/metrics`).
"""

from __future__ import annotations

import time
from collections import Counter

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import JobState
from dicomkeep.common.logs import LOG_LEVELS, get_log_level, set_log_level
from dicomkeep.common.metrics import ORTHANC_METRICS
from dicomkeep.gateway.deps import IndexDep
from dicomkeep.gateway.responses import plain
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

router = APIRouter()

MEGABYTE = 1024 * 1024
#: Orthanc's content type for Prometheus text.
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
_STARTED = time.time()


@router.get("/tools/metrics-prometheus")
async def get_metrics_prometheus(index: IndexDep) -> Response:
    """Refresh the index figures, then answer every metric recorded (empty when off)."""
    metrics = ORTHANC_METRICS
    if metrics.enabled:
        stats = await index.statistics()
        jobs = Counter(job.state for job in await index.jobs.list_jobs())
        last = (await index.last_change()).last
        success, failure = jobs[JobState.SUCCESS], jobs[JobState.FAILURE]
        for name, value in (
            ("orthanc_disk_size_mb", stats.disk_size / MEGABYTE),
            ("orthanc_uncompressed_size_mb", stats.uncompressed_size / MEGABYTE),
            ("orthanc_count_patients", stats.count_patients),
            ("orthanc_count_studies", stats.count_studies),
            ("orthanc_count_series", stats.count_series),
            ("orthanc_count_instances", stats.count_instances),
            ("orthanc_jobs_pending", jobs[JobState.PENDING] + jobs[JobState.RETRY]),
            ("orthanc_jobs_running", jobs[JobState.RUNNING]),
            ("orthanc_jobs_completed", success + failure),
            ("orthanc_jobs_success", success),
            ("orthanc_jobs_failed", failure),
            ("orthanc_last_change", last),
            ("orthanc_up_time_s", int(time.time() - _STARTED)),
        ):
            metrics.set_value(name, value)
    return Response(metrics.export(), media_type=PROMETHEUS_TEXT)


@router.get("/tools/metrics")
async def get_metrics_enabled() -> Response:
    """Answer "1" when metrics are collected, else "0"."""
    return plain("1" if ORTHANC_METRICS.enabled else "0")


@router.put("/tools/metrics")
async def put_metrics_enabled(request: Request) -> Response:
    """Switch metrics on ("1") or off ("0"); anything else is ParameterOutOfRange."""
    body = (await request.body()).decode("utf-8", "replace")
    if body not in ("0", "1"):
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE, f"The HTTP body must be 0 or 1, but found: {body}"
        )
    ORTHANC_METRICS.enabled = body == "1"
    return plain("")


@router.get("/tools/log-level")
async def get_log_level_route() -> Response:
    """Answer the log level of this process: "default", "verbose" or "trace"."""
    return plain(get_log_level())


@router.put("/tools/log-level")
async def put_log_level(request: Request) -> Response:
    """Change this process's log level at run time, as Orthanc does."""
    body = (await request.body()).decode("utf-8", "replace")
    if body not in LOG_LEVELS:
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            'The log level must be one of the following values: "default", "verbose", '
            'of "trace"',
        )
    set_log_level(body)
    return plain("")


class RequestMetrics:
    """ASGI middleware: Orthanc's `orthanc_rest_api_active_requests` and
    `orthanc_rest_api_duration_ms` for every HTTP request of this gateway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ORTHANC_METRICS.add("orthanc_rest_api_active_requests", 1)
        try:
            await self.app(scope, receive, send)
        finally:
            ORTHANC_METRICS.add("orthanc_rest_api_active_requests", -1)
            ORTHANC_METRICS.set_max(
                "orthanc_rest_api_duration_ms", (time.perf_counter() - started) * 1000
            )
