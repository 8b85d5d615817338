"""The HTTP client of Orthanc peers: `POST {Url}instances` and `GET {Url}system`.

Mirrors Orthanc's HttpClient as used by OrthancPeerStoreJob (ORTHANC_API.md §12):
Basic auth from the peer's Username/Password, its HttpHeaders, its client
certificate, its Timeout (0 = `HttpTimeout`, 0 = none), `HttpsVerifyPeers`,
`HttpsCACertificates` and `HttpProxy`; with `Compress`, the body is gzipped
(level 9) with `Content-Encoding: gzip`.

Transient failures (cannot connect, timeouts, connection closed mid-request,
HTTP 502/503/504) are retried with exponential backoff; a refusal (401, 403,
400, 404, 507...) fails at once. `POST /instances` is idempotent at the receiver
(a second store of a SOP instance answers AlreadyStored), so a retry never makes
a duplicate. Every failure is a `PeerHttpError` (Orthanc's *Error in the network
protocol*) whose details say which peer, which request and why.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

import httpx
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.peers import Peer
from dicomkeep.common.retries import retrying
from dicomkeep.common.settings import Settings

log = logging.getLogger(__name__)

#: Answers of a proxy or an overloaded server: worth another try.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class HttpOptions:
    """The global options of outgoing HTTP, and the retry policy.

    `timeout` is `HttpTimeout` in seconds (0 = none); `attempts` counts the first
    try; the n-th retry waits `backoff * 2**(n-1)` seconds.
    """

    timeout: int = 60
    verify_peers: bool = True
    ca_certificates: str = ""
    proxy: str = ""
    verbose: bool = False
    attempts: int = 3
    backoff: float = 0.25

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpOptions:
        """Read `HttpTimeout`, `HttpsVerifyPeers`, `HttpsCACertificates`, `HttpProxy`,
        `HttpVerbose`."""
        return cls(
            timeout=settings.http_timeout,
            verify_peers=settings.https_verify_peers,
            ca_certificates=settings.https_ca_certificates,
            proxy=settings.http_proxy,
            verbose=settings.http_verbose,
        )


class PeerHttpError(OrthancError):
    """A request to a peer failed: *Error in the network protocol* (500) with details.

    `remote_status` is the peer's HTTP status when it answered one, else None;
    `transient` tells whether another try later may succeed.
    """

    def __init__(self, details: str, *, remote_status: int | None = None, transient: bool) -> None:
        super().__init__(ErrorCode.NETWORK_PROTOCOL, details)
        self.remote_status = remote_status
        self.transient = transient


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _remote_details(response: httpx.Response) -> str:
    """Return the `Details` (else `Message`) of an Orthanc error body, "" otherwise."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        text = body.get("Details") or body.get("Message") or ""
        return text if isinstance(text, str) else ""
    return ""


def _status_error(peer: Peer, request: str, response: httpx.Response) -> PeerHttpError:
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    text = f'Peer "{peer.name}" answered HTTP {status} {phrase} to {request}'.replace("  ", " ")
    if status == 401:
        text += ": bad credentials, check the peer's Username and Password"
    elif status == 403:
        text += ": access forbidden by the peer"
    remote = _remote_details(response)
    if remote:
        text += f" ({remote})"
    return PeerHttpError(text, remote_status=status, transient=status in TRANSIENT_STATUSES)


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    """Return the TLS error behind a transport error (certificate refused...), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _transport_error(peer: Peer, request: str, error: httpx.TransportError) -> PeerHttpError:
    reason = _describe(error)
    tls = _tls_failure(error)
    if tls is not None and isinstance(error, httpx.ConnectError):
        # A certificate problem does not go away by trying again.
        return PeerHttpError(
            f'TLS handshake with peer "{peer.name}" failed for {request}: {_describe(tls)} '
            "(see HttpsCACertificates, HttpsVerifyPeers and the peer's CertificateFile)",
            transient=False,
        )
    if isinstance(error, httpx.ConnectTimeout):
        text = f'Timeout while connecting to peer "{peer.name}" for {request}'
    elif isinstance(error, httpx.ConnectError):
        text = f'Cannot connect to peer "{peer.name}" for {request}: {reason}'
    elif isinstance(error, httpx.TimeoutException):
        text = f'Timeout of peer "{peer.name}" during {request}'
    elif isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        text = f'Peer "{peer.name}" closed the connection during {request}: {reason}'
    else:
        text = f'Network error with peer "{peer.name}" during {request}: {reason}'
    transient = not isinstance(error, httpx.UnsupportedProtocol | httpx.ProxyError)
    return PeerHttpError(text, transient=transient)


def _ssl_context(peer: Peer, options: HttpOptions) -> ssl.SSLContext:
    """Build the TLS context of an HTTPS peer; raise PeerHttpError if a file is unreadable."""
    try:
        if options.verify_peers:
            context = ssl.create_default_context(cafile=options.ca_certificates or None)
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if peer.certificate_file:
            context.load_cert_chain(
                peer.certificate_file,
                peer.certificate_key_file or None,
                peer.certificate_key_password or None,
            )
    except (OSError, ssl.SSLError) as error:
        raise PeerHttpError(
            f'Cannot set up HTTPS for peer "{peer.name}" (HttpsCACertificates or client '
            f"certificate): {_describe(error)}",
            transient=False,
        ) from error
    return context


class PeerClient:
    """One HTTP connection pool to one peer; use as `async with PeerClient(...) as c`.

    `transport` replaces the network (tests). Methods raise PeerHttpError.
    """

    def __init__(
        self, peer: Peer, options: HttpOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if peer.pkcs11:
            raise PeerHttpError(
                f'Peer "{peer.name}" asks for PKCS#11, which DicomKeep does not support',
                transient=False,
            )
        self.peer = peer
        self.options = options
        seconds = peer.timeout or options.timeout
        verify: ssl.SSLContext | bool = True
        if peer.url.startswith("https://"):
            verify = _ssl_context(peer, options)
        self._client = httpx.AsyncClient(
            base_url=peer.url,
            auth=httpx.BasicAuth(peer.username, peer.password) if peer.username else None,
            headers=peer.http_headers,
            timeout=float(seconds) if seconds else None,
            verify=verify,
            proxy=options.proxy or None,
            # Orthanc's HttpProxy is the only proxy: environment variables are ignored.
            trust_env=False,
            transport=transport,
        )

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def _request(
        self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send one request with retries; return a 2xx answer or raise PeerHttpError.

        Transient failures are retried by the project's policy (`retries.retrying`);
        a refusal is raised at once.
        """
        request = f"{method} {self.peer.url}{path}"
        attempts = max(1, self.options.attempts)
        policy = retrying(
            f"peer {self.peer.name}: {request}",
            attempts=attempts,
            first=self.options.backoff,
            longest=max(self.options.backoff * 2 ** (attempts - 1), self.options.backoff),
            on=(PeerHttpError,),
            when=lambda error: isinstance(error, PeerHttpError) and error.transient,
        )
        try:
            async for attempt in policy:
                with attempt:
                    return await self._send(method, path, request, content, headers)
        except PeerHttpError as error:
            if error.transient and attempts > 1:
                error.details = f"{error.details} (after {attempts} attempts)"
                error.args = (error.details,)
            raise
        raise AssertionError("the retry policy neither returned nor raised")

    async def _send(
        self, method: str, path: str, request: str, content: bytes | None, headers: dict[str, str] | None
    ) -> httpx.Response:
        """Send the request once; return a 2xx answer or raise PeerHttpError."""
        try:
            response = await self._client.request(method, path, content=content, headers=headers)
        except httpx.TransportError as failure:
            error = _transport_error(self.peer, request, failure)
        except ssl.SSLError as failure:
            # With TLS 1.3 a peer refusing our (missing) client certificate says so
            # after the handshake; httpx may then let the SSLError through unwrapped.
            error = PeerHttpError(
                f'TLS error with peer "{self.peer.name}" during {request}: {_describe(failure)} '
                "(see the peer's CertificateFile)",
                transient=False,
            )
        else:
            if self.options.verbose:
                log.info("peer %s: %s -> %d", self.peer.name, request, response.status_code)
            if response.is_success:
                return response
            error = _status_error(self.peer, request, response)
        log.warning("peer %s: %s failed: %s", self.peer.name, request, error.details)
        raise error

    async def post_instances(self, data: bytes, *, compress: bool = False) -> Any:
        """Send a DICOM file (or ZIP) to the peer's `POST /instances`; return its JSON answer."""
        headers = {"Content-Type": "application/dicom"}
        if compress:
            data = await asyncio.to_thread(gzip.compress, data, 9)
            headers["Content-Encoding"] = "gzip"
        response = await self._request("POST", "instances", content=data, headers=headers)
        try:
            return response.json()
        except ValueError as failure:
            raise PeerHttpError(
                f'Peer "{self.peer.name}" answered POST {self.peer.url}instances with no JSON',
                transient=False,
            ) from failure

    async def send_instance(self, data: bytes, *, compress: bool = False) -> dict[str, Any]:
        """Store one DICOM instance at the peer; return its answer (`ID`, `Status`...).

        Raises PeerHttpError when the peer refuses it or cannot be reached.
        """
        answer = await self.post_instances(data, compress=compress)
        if not isinstance(answer, dict) or "ID" not in answer:
            raise PeerHttpError(
                f'Peer "{self.peer.name}" gave an unexpected answer to POST '
                f"{self.peer.url}instances: {str(answer)[:200]}",
                transient=False,
            )
        return answer

    async def system(self) -> Any:
        """Return the peer's `GET /system` JSON."""
        response = await self._request("GET", "system")
        try:
            return response.json()
        except ValueError as failure:
            raise PeerHttpError(
                f'Peer "{self.peer.name}" answered GET {self.peer.url}system with no JSON',
                transient=False,
            ) from failure


async def send_instance(
    peer: Peer, data: bytes, options: HttpOptions | None = None, *, compress: bool = False
) -> dict[str, Any]:
    """Store one DICOM instance at a peer on a connection of its own; see PeerClient."""
    async with PeerClient(peer, options or HttpOptions()) as client:
        return await client.send_instance(data, compress=compress)
