"""The ops port of a service: `/livez`, `/readyz` (per dependency) and `/metrics`.

A minimal HTTP/1.1 server on asyncio streams, so that every service (not only
the gateway) can answer orchestrators' probes and Prometheus without a web
framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dicomkeep.common.ids import Level
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]

#: Readiness probes publish here (an exchange nobody consumes).
OPS_EXCHANGE = "dicomkeep.ops"


def adapter_checks(
    *, index: Any = None, blobs: Any = None, bus: Any = None, clock: Any = None
) -> dict[str, Check]:
    """Readiness checks of the adapters a process holds: one cheap call each.

    Adapters not opened yet (None) are left out of the checks.
    """
    checks: dict[str, Check] = {}
    if index is not None:
        checks["index"] = lambda: index.get_property("readyz")
    if blobs is not None:
        checks["blobs"] = lambda: blobs.exists("readyz")
    if bus is not None:
        checks["bus"] = lambda: bus.publish(OPS_EXCHANGE, "readyz", b"", {})
    if clock is not None:
        checks["clock"] = lambda: clock.is_unstable(Level.PATIENT, "readyz")
    return checks


class OpsServer:
    """Serve liveness, readiness and metrics on `port` (0 = an ephemeral port)."""

    def __init__(
        self,
        port: int,
        checks: Callable[[], Mapping[str, Check]],
        *,
        host: str = "127.0.0.1",
        timeout: float = 3.0,
    ) -> None:
        """`checks` is called at each probe (adapters may be opened after this)."""
        self.host = host
        self.port = port
        self.checks = checks
        self.timeout = timeout
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening; `port` holds the bound port afterwards."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ops endpoints listening port=%d", self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def readiness(self) -> dict[str, str]:
        """Run every dependency check; return name -> "ok" or the error."""
        results: dict[str, str] = {}
        for name, check in self.checks().items():
            try:
                await asyncio.wait_for(check(), self.timeout)
                results[name] = "ok"
            except Exception as error:  # a probe reports, it does not raise
                results[name] = f"{type(error).__name__}: {error}"
        return results

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), self.timeout)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            status, content_type, body = await self._answer(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, path: str) -> tuple[str, str, bytes]:
        if path == "/livez":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            results = await self.readiness()
            ready = all(value == "ok" for value in results.values())
            body = json.dumps({"ready": ready, "checks": results}).encode()
            return ("200 OK" if ready else "503 Service Unavailable"), "application/json", body
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        return "404 Not Found", "text/plain", b""
