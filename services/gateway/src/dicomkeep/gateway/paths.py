"""URI paths as Orthanc reads them: empty components are ignored.

Orthanc splits the URI on `/` and drops empty components, so `//system`,
`/system/` and `//instances//{id}/file` name the same resources as `/system` and
`/instances/{id}/file`. Clients that build `base_url + "/system"` from a base URL
ending in `/` rely on it (orthanc-api-client does). This pure ASGI middleware
rewrites `path` and `raw_path` before routing; it reads no body and holds no state.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


def normalize_path(path: str) -> str:
    """Return `path` without empty components: `//a//b/` -> `/a/b`, `//` -> `/`."""
    return "/" + "/".join(part for part in path.split("/") if part)


def normalize_raw_path(raw: bytes) -> bytes:
    """Return the raw (percent-encoded) path without empty components."""
    return b"/" + b"/".join(part for part in raw.split(b"/") if part)


class PathMiddleware:
    """ASGI middleware: drop the empty components of HTTP request paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if "//" in path or (len(path) > 1 and path.endswith("/")):
                scope = dict(scope)
                scope["path"] = normalize_path(path)
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = normalize_raw_path(raw)
        await self.app(scope, receive, send)
