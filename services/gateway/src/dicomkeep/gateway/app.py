"""The FastAPI application: Orthanc's routes, error answers and HTTP security.

`create_app(ctx)` builds the app on an opened `GatewayContext`. Error rendering
follows ORTHANC_API.md §0 and §16:
- `OrthancError` -> its status with Orthanc's JSON error body (no body when
  `HttpDescribeErrors` is false);
- `NoAnswer` -> empty 404 (400 for POST, or its own status); `Forbidden` -> empty 403;
- unknown route -> empty 404; known route, wrong method -> empty 405 with
  `Allow: GET,POST,DELETE,PUT` (the path's methods, Orthanc's order);
- invalid request parameters -> 400 *Bad request*; an unreachable database,
  broker or clock -> 503 *database unavailable* (`availability.py`); any other
  exception -> 500 *Internal error*.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dicomkeep.common.errors import ErrorCode, Forbidden, NoAnswer, OrthancError, unavailability
from dicomkeep.common.metrics import ORTHANC_METRICS
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import instrument_app
from dicomkeep.gateway.api import (
    archives,
    attachments,
    changes,
    find,
    images,
    instances,
    jobs,
    labels,
    metadata,
    modalities,
    modify,
    monitoring,
    peers,
    queries,
    resources,
    scp_options,
    system,
    tools,
)
from dicomkeep.gateway.availability import UnavailableMiddleware
from dicomkeep.gateway.context import GatewayContext
from dicomkeep.gateway.http_options import ConnectionCloseMiddleware, RequestTimeoutMiddleware
from dicomkeep.gateway.paths import PathMiddleware
from dicomkeep.gateway.process_control import ProcessControl
from dicomkeep.gateway.responses import OrthancJSONResponse, empty, error_body
from dicomkeep.gateway.revisions import AnsweredError
from dicomkeep.gateway.security import SecurityMiddleware
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.routing import Match

log = logging.getLogger(__name__)

#: Orthanc lists allowed methods in the order of its HttpMethod enumeration.
METHOD_ORDER = ("GET", "POST", "DELETE", "PUT")


def create_app(ctx: GatewayContext | None = None, *, settings: Settings | None = None) -> FastAPI:
    """Build the REST API on a context (adapters opened by the caller).

    Without `ctx` (then `settings` is required), routes answer 503 until
    `attach_context(app, ctx)`: this lets a composition root hand the app to an
    HTTP server before its adapters are open. Raises ValueError with neither.
    """
    effective = ctx.settings if ctx is not None else settings
    if effective is None:
        raise ValueError("create_app needs a context or settings")
    app = FastAPI(
        title="DicomKeep",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        default_response_class=OrthancJSONResponse,
    )
    app.state.ctx = ctx
    # What /tools/reset and /tools/shutdown set; the composition root puts the one
    # its runner watches here (GatewayService).
    app.state.control = ProcessControl()
    app.state.describe_errors = effective.http_describe_errors
    routers = (
        archives.router, resources.router, metadata.router, attachments.router, instances.router,
        changes.router, system.router, peers.router, find.router,
        jobs.router, modalities.router, queries.router, modify.router, tools.router,
        images.router, labels.router, scp_options.router, monitoring.router,
    )  # fmt: skip
    for router in routers:
        app.include_router(router)
    app.state.routers = routers
    app.add_exception_handler(OrthancError, _orthanc_error)
    app.add_exception_handler(NoAnswer, _no_answer)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    if effective.http_request_timeout > 0:
        app.add_middleware(RequestTimeoutMiddleware, seconds=effective.http_request_timeout)
    if effective.http_compression_enabled:
        app.add_middleware(GZipMiddleware)
    if not effective.keep_alive:
        app.add_middleware(ConnectionCloseMiddleware)
    app.add_middleware(SecurityMiddleware, settings=effective)
    # Outside the security layer: also covers its own index lookups.
    app.add_middleware(UnavailableMiddleware)
    app.add_middleware(monitoring.RequestMetrics)
    ORTHANC_METRICS.enabled = effective.metrics_enabled
    instrument_app(app)
    app.add_middleware(PathMiddleware)  # outermost: every layer sees the clean path
    return app


def attach_context(app: FastAPI, ctx: GatewayContext | None) -> None:
    """Give the app its context (None detaches it: routes then answer 503)."""
    app.state.ctx = ctx


def render_error(
    request: Request,
    code: ErrorCode,
    status: int,
    details: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return Orthanc's error answer for a request: the JSON body, or none if
    `HttpDescribeErrors` is false."""
    if not getattr(request.app.state, "describe_errors", True):
        return empty(status, headers=headers)
    body = error_body(code, status, request.method, request.url.path, details)
    return OrthancJSONResponse(body, status_code=status, headers=headers)


async def _orthanc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrthancError)
    headers = exc.headers if isinstance(exc, AnsweredError) else None
    return render_error(request, exc.code, exc.http_status, exc.details, headers)


async def _no_answer(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NoAnswer)
    status = exc.http_status or (400 if request.method == "POST" else 404)
    return empty(status)


async def _forbidden(request: Request, exc: Exception) -> Response:
    return empty(403)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return empty(405, headers={"Allow": allowed_methods(request)})
    return empty(exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
        for error in exc.errors()
    )
    return render_error(request, ErrorCode.BAD_REQUEST, 400, problems or None)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Reached only by what UnavailableMiddleware did not see (errors raised while
    # an answer was already being sent are not rendered at all).
    unavailable = unavailability(exc)
    if unavailable is not None:
        return render_error(request, unavailable.code, 503, unavailable.details)
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(request, ErrorCode.INTERNAL_ERROR, 500)


def allowed_methods(request: Request) -> str:
    """Return the comma-separated methods of every route matching the request's path."""
    methods: set[str] = set()
    routers: tuple[APIRouter, ...] = getattr(request.app.state, "routers", ())
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods or set()
    ordered = [method for method in METHOD_ORDER if method in methods]
    return ",".join(ordered + sorted(methods - set(METHOD_ORDER) - {"HEAD"}))
