"""Orthanc's HTTP options that shape each exchange, as pure ASGI middlewares.

- `KeepAlive` false: every answer carries `Connection: close`, so the server
  closes the connection after it (uvicorn honours the header).
- `HttpRequestTimeout` (seconds, 0 = none): each read of the request body must
  arrive within it; otherwise the answer is an empty 408 and the connection is
  closed, as Orthanc's server drops a client that stalls. Once the body is in,
  nothing is timed: a streamed answer may last longer than the timeout.
- `HttpCompressionEnabled`: answers are gzip-compressed for clients that accept
  gzip (`Accept-Encoding`), as Orthanc does (Starlette's GZipMiddleware).
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ConnectionCloseMiddleware:
    """Add `Connection: close` to every HTTP answer (KeepAlive false)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, receive, send_closing)


class RequestTimeout(Exception):
    """The client did not send the next part of its request in time."""


class RequestTimeoutMiddleware:
    """Answer 408 (and close) when a read of the request body exceeds the timeout."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done or started:
                # The request is in: what is awaited now is the client hanging up
                # (a streamed answer listens for it for as long as it lasts).
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise RequestTimeout from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except RequestTimeout:
            if started:
                raise
            await send({
                "type": "http.response.start", "status": 408,
                "headers": [(b"content-length", b"0"), (b"connection", b"close")],
            })  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
