"""HTTP access control as Orthanc's embedded server does it (ORTHANC_API.md §14).

1. `RemoteAccessAllowed` false: a client not on the loopback address gets 401.
2. Authentication on (`AuthenticationEnabled`, defaulting to `RemoteAccessAllowed`):
   every request needs `Authorization: Basic ...` of a `RegisteredUsers` entry,
   else 401. With remote access allowed and no user declared, Orthanc creates the
   user `orthanc`/`orthanc` (and reports the server as not secure).
Both 401 answers carry `WWW-Authenticate: Basic realm="Orthanc Secure Area"` and an
empty body. The authenticated user name is kept in `request.state.http_username`
("" without authentication) for the `HttpUsername` metadata.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

from dicomkeep.common.settings import Settings
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

REALM = "Orthanc Secure Area"
#: Client addresses Orthanc treats as local.
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
#: The user Orthanc creates when authentication is on, remote access allowed and
#: `RegisteredUsers` empty.
DEFAULT_USER = ("orthanc", "orthanc")


def http_users(settings: Settings) -> dict[str, str]:
    """Return the accepted user -> password pairs, the implicit default user included."""
    if settings.registered_users:
        return dict(settings.registered_users)
    if settings.effective_authentication and settings.remote_access_allowed:
        return {DEFAULT_USER[0]: DEFAULT_USER[1]}
    return {}


def is_http_server_secure(settings: Settings) -> bool:
    """Return `IsHttpServerSecure` of /system.

    False when remote access is allowed without authentication, or when the
    implicit `orthanc`/`orthanc` user is in use; true otherwise.
    """
    if settings.remote_access_allowed and not settings.effective_authentication:
        return False
    return not (
        settings.effective_authentication
        and settings.remote_access_allowed
        and not settings.registered_users
    )


def basic_username(authorization: str | None, users: dict[str, str]) -> str | None:
    """Return the user named by a valid `Basic` Authorization header, else None."""
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    expected = users.get(user)
    if not separator or expected is None:
        return None
    if not hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
        return None
    return user


class SecurityMiddleware:
    """ASGI middleware: the loopback check, then HTTP Basic authentication."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.remote_access_allowed = settings.remote_access_allowed
        self.authentication = settings.effective_authentication
        self.users = http_users(settings)
        if self.authentication and self.remote_access_allowed and not settings.registered_users:
            log.warning(
                "HTTP authentication is on but RegisteredUsers is empty: the default "
                "user orthanc/orthanc is accepted; this setup is INSECURE"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        if not self.remote_access_allowed and host not in LOOPBACK:
            await _unauthorized(scope, receive, send)
            return
        username = ""
        if self.authentication:
            found = basic_username(Headers(scope=scope).get("authorization"), self.users)
            if found is None:
                await _unauthorized(scope, receive, send)
                return
            username = found
        scope.setdefault("state", {})["http_username"] = username
        await self.app(scope, receive, send)


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    response = Response(
        status_code=401, headers={"WWW-Authenticate": f'Basic realm="{REALM}"'}
    )
    await response(scope, receive, send)
