"""Backends that cannot be reached answer 503, as Orthanc's *database unavailable*.

A pure ASGI middleware, outside the routes' exception handlers: an exception that
`errors.unavailability` recognises (database locked or down, broker or clock
unreachable) becomes Orthanc's 503 JSON error body (OrthancStatus 36) and one
warning line in the log, without a traceback; any other exception goes on to the
500 handler. Starlette's handler for `Exception` re-raises after answering, which
would log a traceback for a transient outage: hence this layer.
"""

from __future__ import annotations

import logging
from typing import Any

from dicomkeep.common.errors import unavailability
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class UnavailableMiddleware:
    """Answer 503 with Orthanc's error body when a backend is unreachable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error = unavailability(exc)
            if error is None or started:
                raise
            log.warning(
                "backend unavailable method=%s path=%s error=%s",
                scope.get("method"),
                scope.get("path"),
                error.details,
            )
            await _answer(scope, receive, send, error)


async def _answer(scope: Scope, receive: Receive, send: Send, error: Any) -> None:
    # Imported here: app.py imports this module.
    from dicomkeep.gateway.app import render_error

    request = Request(scope, receive)
    response = render_error(request, error.code, error.http_status, error.details)
    await response(scope, receive, send)
