"""Orthanc peers: configuration forms, the index store, the HTTP client, the transfer."""

from __future__ import annotations

import gzip
import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from backends import PG_ADMIN_DSN, pg_dsn
from cryptography.fernet import Fernet
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.postgres_db import PostgresDatabase
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.dicom.receiving import Origin, Receiver
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index, PeerStore
from dicomkeep.common.peer_http import HttpOptions, PeerClient, PeerHttpError, send_instance
from dicomkeep.common.peer_transfer import (
    StoreRequest,
    content_of,
    expand_instances,
    new_payload,
    parse_store_body,
    transfer,
)
from dicomkeep.common.peers import Peer, config_peers, merge_peers, parse_peer
from dicomkeep.common.secrets import SecretBox, key_source
from synthetic import generate_study

FAST = HttpOptions(timeout=5, attempts=3, backoff=0.0)
Handler = Callable[[httpx.Request], httpx.Response]


# -- configuration forms -----------------------------------------------------------------
def test_array_forms() -> None:
    assert parse_peer("a", ["http://host:8042"]) == Peer(name="a", url="http://host:8042/")
    peer = parse_peer("b", ["https://host/orthanc/", "alice", "secret"])
    assert (peer.url, peer.username, peer.password) == ("https://host/orthanc/", "alice", "secret")
    assert peer.simple_json() == ["https://host/orthanc/", "alice", ""]


@pytest.mark.parametrize(
    ("value", "details"),
    [
        (["http://x", "user"], None),
        ([], None),
        ("http://x", None),
        ({}, "Empty URL"),
        ({"Url": "ftp://x/"}, "Bad URL: ftp://x/"),
        ({"Url": "HTTPS://x"}, "Bad URL: HTTPS://x"),
        ({"Url": "http://x", "Timeout": -1}, "Unsigned integer value expected in field: Timeout"),
        ({"Url": "http://x", "Timeout": "5"}, "Integer value expected in field: Timeout"),
        ({"Url": "http://x", "Nested": {"a": 1}}, "User-defined properties associated with a Web service must be strings: Nested"),
        ({"Url": "http://x", "HttpHeaders": {"a": 1}}, None),
        ({"Url": "http://x", "Password": "p"}, None),
        ({"Url": "http://x", "CertificateFile": "/nonexistent.pem"}, "Cannot open certificate file: /nonexistent.pem"),
    ],
)
def test_invalid_forms(value: Any, details: str | None) -> None:
    with pytest.raises(OrthancError) as caught:
        parse_peer("p", value)
    assert caught.value.code is ErrorCode.BAD_FILE_FORMAT
    if details is not None:
        assert caught.value.details == details


def test_invalid_name() -> None:
    with pytest.raises(OrthancError) as caught:
        parse_peer("bad name", ["http://x/"])
    assert caught.value.details is not None and caught.value.details.endswith("found: bad name")


def test_object_form_public_json_and_round_trip(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not checked here")
    value = {
        "URL": "http://127.0.0.1:8043",
        "Username": "u",
        "Password": "p",
        "HttpHeaders": {"X-Token": "t", "A": "b"},
        "CertificateFile": str(cert),
        "CertificateKeyPassword": "kp",
        "Timeout": 3,
        "Site": "north",
        "Flag": True,
        "Number": 5,
    }
    peer = parse_peer("b", value)
    assert peer.public_json() == {
        "Url": "http://127.0.0.1:8043/",
        "Username": "u",
        "Password": None,
        "HttpHeaders": ["A", "X-Token"],
        "CertificateFile": str(cert),
        "CertificateKeyFile": None,
        "CertificateKeyPassword": None,
        "Pkcs11": False,
        "Timeout": 3,
        "Site": "north",
        "Flag": "1",
        "Number": "5",
    }
    assert parse_peer("b", peer.to_json()) == peer
    # Without a user, neither Username nor Password appear (Orthanc 1.10.1).
    assert parse_peer("a", ["http://x/"]).public_json() == {
        "Url": "http://x/", "HttpHeaders": [], "Pkcs11": False, "Timeout": 0,
    }


def test_overrides_apply_to_configured_peers() -> None:
    configured = config_peers({"b": ["http://b/"], "a": ["http://a/"], "c": ["http://c/"]})
    merged = merge_peers(configured, {"a": None, "d": {"Url": "http://d"}, "c": {"Url": "http://c2"}})
    assert list(merged) == ["b", "c", "d"]
    assert merged["c"].url == "http://c2/"
    with pytest.raises(OrthancError, match="OrthancPeers.x"):
        config_peers({"x": ["http://x", "user"]})


# -- the index store -----------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    if request.param == "sqlite":
        db: Any = SqliteDatabase(tmp_path / "index")
    else:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute("DROP DATABASE IF EXISTS dicomkeep_peers WITH (FORCE)")
            await admin.execute("CREATE DATABASE dicomkeep_peers")
        finally:
            await admin.close()
        db = PostgresDatabase(pg_dsn("dicomkeep_peers"), size=2)
    idx = Index(db, secrets=SecretBox(Fernet.generate_key()))
    await idx.open()
    try:
        yield idx
    finally:
        await idx.close()


async def test_peer_store_keeps_overrides_and_deletions(index: Index) -> None:
    assert await index.peers.peer_overrides() == {}
    await index.peers.set_peer("b", {"Url": "http://b/", "Password": "secret"})
    await index.peers.set_peer("a", None)
    await index.peers.set_peer("b", {"Url": "http://b2/"})
    assert await index.peers.peer_overrides() == {"a": None, "b": {"Url": "http://b2/"}}
    # The schema is idempotent: opening again keeps the rows.
    await index.open()
    assert "b" in await index.peers.peer_overrides()


async def _raw_rows(index: Index) -> dict[str, str | None]:
    async def body(tx: Any) -> dict[str, str | None]:
        return {r[0]: r[1] for r in await tx.fetch("SELECT name, value FROM peers")}

    return await index.peers._run(body, readonly=True)


async def test_peer_secrets_are_sealed_in_the_index(index: Index) -> None:
    value = {"Url": "http://b/", "Username": "u", "Password": "pass-WORD-1",
             "HttpHeaders": {"Authorization": "Bearer tok-EN-2"},
             "CertificateFile": "/c", "CertificateKeyPassword": "key-PASS-3"}
    await index.peers.set_peer("b", value)
    raw = (await _raw_rows(index))["b"]
    assert raw is not None and "fernet:" in raw
    for secret in ("pass-WORD-1", "tok-EN-2", "key-PASS-3"):
        assert secret not in raw
    assert (await index.peers.peer_overrides())["b"] == value


async def test_rows_in_clear_still_work_and_are_sealed_at_open(index: Index) -> None:
    from dicomkeep.common.index.peers import write_override

    async def body(tx: Any) -> None:  # a row as a DicomKeep before issue 15 wrote it
        await write_override(tx, "peers", "old", {"Url": "http://o/", "Username": "u",
                                                  "Password": "clear-PW"})

    await index.peers._run(body)
    assert (await index.peers.peer_overrides())["old"]["Password"] == "clear-PW"  # type: ignore[index]
    await index.open()
    assert "clear-PW" not in str((await _raw_rows(index))["old"])
    assert (await index.peers.peer_overrides())["old"]["Password"] == "clear-PW"  # type: ignore[index]


async def test_without_a_key_a_peer_password_is_refused(index: Index) -> None:
    store = PeerStore(index.db)  # the distributed mode without DicomKeep.SecretKey
    with pytest.raises(OrthancError) as refused:
        await store.set_peer("p", {"Url": "http://p/", "Username": "u", "Password": "x"})
    assert refused.value.code is ErrorCode.BAD_REQUEST
    await store.set_peer("p", {"Url": "http://p/"})  # no secret: accepted
    assert (await store.peer_overrides())["p"] == {"Url": "http://p/"}


def test_key_sources(tmp_path: Path) -> None:
    from dicomkeep.common.settings import Settings

    allinone = key_source(Settings(IndexDirectory=str(tmp_path)))  # type: ignore[call-arg]
    assert allinone is not None and allinone.create
    box = allinone.load()
    key_file = tmp_path / "dicomkeep-secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert allinone.load().open(box.seal("x")) == "x"  # the same key at the next start
    distributed = Settings(DicomKeep={"Mode": "distributed"})  # type: ignore[call-arg]
    assert key_source(distributed) is None
    configured = Settings(DicomKeep={"Mode": "distributed", "SecretKeyFile": str(key_file)})  # type: ignore[call-arg]
    assert configured_box(configured).open(box.seal("y")) == "y"


def configured_box(settings: Any) -> SecretBox:
    source = key_source(settings)
    assert source is not None and not source.create
    return source.load()


# -- the HTTP client ----------------------------------------------------------------------
def client_with(handler: Handler) -> Callable[[Peer, HttpOptions], PeerClient]:
    def factory(peer: Peer, options: HttpOptions) -> PeerClient:
        return PeerClient(peer, options, transport=httpx.MockTransport(handler))

    return factory


def stored(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ID": "x", "Status": "Success"})


async def test_send_instance_with_auth_headers_and_gzip() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return stored(request)

    peer = parse_peer("p", {"Url": "http://peer:8042/base", "Username": "alice",
                            "Password": "pw", "HttpHeaders": {"X-Token": "t"}})
    async with client_with(handler)(peer, FAST) as client:
        assert (await client.send_instance(b"DICM-data", compress=True))["Status"] == "Success"
    request = seen[0]
    assert str(request.url) == "http://peer:8042/base/instances"
    assert request.headers["authorization"] == httpx.BasicAuth("alice", "pw")._auth_header
    assert request.headers["x-token"] == "t"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.content) == b"DICM-data"


async def test_transient_errors_are_retried_refusals_are_not() -> None:
    answers = iter([httpx.Response(503), httpx.Response(502)])
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return next(answers, None) or stored(request)

    peer = parse_peer("p", ["http://peer/"])
    async with client_with(flaky)(peer, FAST) as client:
        await client.send_instance(b"x")
    assert len(calls) == 3

    calls.clear()

    def refusing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Orthanc Secure Area"'})

    async with client_with(refusing)(peer, FAST) as client:
        with pytest.raises(PeerHttpError) as caught:
            await client.send_instance(b"x")
    assert len(calls) == 1
    assert caught.value.remote_status == 401
    assert caught.value.code is ErrorCode.NETWORK_PROTOCOL
    assert "401 Unauthorized" in str(caught.value.details)
    assert "Username and Password" in str(caught.value.details)


async def test_closed_connection_is_retried_then_explained() -> None:
    calls: list[int] = []

    def closing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    peer = parse_peer("p", ["http://peer/"])
    async with client_with(closing)(peer, FAST) as client:
        with pytest.raises(PeerHttpError) as caught:
            await client.send_instance(b"x")
    assert len(calls) == 3
    details = str(caught.value.details)
    assert 'Peer "p" closed the connection during POST http://peer/instances' in details
    assert details.endswith("(after 3 attempts)")


async def test_peer_down_says_cannot_connect() -> None:
    peer = parse_peer("down", ["http://127.0.0.1:9/"])
    with pytest.raises(PeerHttpError) as caught:
        await send_instance(peer, b"x", FAST)
    assert str(caught.value.details).startswith('Cannot connect to peer "down"')


async def test_https_options_are_checked(tmp_path: Path) -> None:
    peer = parse_peer("tls", ["https://peer/"])
    with pytest.raises(PeerHttpError, match="HttpsCACertificates"):
        PeerClient(peer, HttpOptions(ca_certificates=str(tmp_path / "missing.pem")))
    # The CA bundle is only read for HTTPS peers, and not when verification is off.
    await PeerClient(parse_peer("plain", ["http://peer/"]),
                     HttpOptions(ca_certificates=str(tmp_path / "missing.pem"))).aclose()
    await PeerClient(peer, HttpOptions(verify_peers=False,
                                       ca_certificates=str(tmp_path / "missing.pem"))).aclose()


# -- store bodies --------------------------------------------------------------------------
ID = "8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (ID.encode(), StoreRequest(resources=[ID])),
        (json.dumps(ID).encode(), StoreRequest(resources=[ID])),
        (json.dumps([ID, ID]).encode(), StoreRequest(resources=[ID, ID])),
        (json.dumps({"Resources": [ID], "Asynchronous": True, "Priority": 3, "Compress": True,
                     "Permissive": True}).encode(),
         StoreRequest(resources=[ID], synchronous=False, priority=3, compress=True, permissive=True)),
        (json.dumps({"Resources": [], "Synchronous": True, "Asynchronous": True}).encode(),
         StoreRequest(resources=[])),
    ],
)
def test_store_bodies(body: bytes, expected: StoreRequest) -> None:
    assert parse_store_body(body) == expected


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (b"nope", "Must provide a JSON value"),
        (b'"nope"', "This string is not a valid Orthanc identifier: nope"),
        (b"5", "Must provide a JSON object, or a JSON array of strings"),
        (b"{}", 'Missing field in JSON: "Resources"'),
        (b'{"Resources": "x"}', 'JSON field "Resources" must contain an array'),
    ],
)
def test_bad_store_bodies(body: bytes, details: str) -> None:
    with pytest.raises(OrthancError) as caught:
        parse_store_body(body)
    assert (caught.value.http_status, caught.value.details) == (400, details)


# -- the transfer ------------------------------------------------------------------------
@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Index, FileBlobStore, list[str], str]]:
    """An index with one study of 6 instances: (index, blobs, instance IDs, study ID)."""
    index = Index(SqliteDatabase(tmp_path / "index"))
    await index.open()
    blobs = FileBlobStore(tmp_path / "storage")
    receiver = Receiver(blobs, index.store_instance)
    study = ""
    for instance in generate_study(series=2, instances_per_series=3, seed=7):
        received = await receiver.receive(instance.data, Origin(protocol="RestApi"))
        study = received.parsed.ids[1]
    try:
        yield index, blobs, await index.descendants(Level.STUDY, study, Level.INSTANCE), study
    finally:
        await index.close()


async def test_expand_instances(local: tuple[Index, FileBlobStore, list[str], str]) -> None:
    index, _, instances, study = local
    assert await expand_instances(index, [study, instances[0]]) == instances
    with pytest.raises(OrthancError) as caught:
        await expand_instances(index, [ID])
    assert caught.value.code is ErrorCode.UNKNOWN_RESOURCE


async def test_failed_transfer_resumes_without_resending(
    local: tuple[Index, FileBlobStore, list[str], str],
) -> None:
    index, blobs, instances, study = local
    peer = parse_peer("p", ["http://peer/", "alice", "wrong"])
    received: list[bytes] = []

    def refuses_after_two(request: httpx.Request) -> httpx.Response:
        if len(received) == 2:
            return httpx.Response(401)
        received.append(request.content)
        return stored(request)

    payload = new_payload(peer, StoreRequest(resources=[study]), instances)
    checkpoints: list[int] = []

    async def checkpoint(payload: dict[str, Any], content: dict[str, Any], progress: int) -> bool:
        checkpoints.append(progress)
        return True

    first = await transfer(index, blobs, peer, FAST, payload, checkpoint=checkpoint,
                           client_factory=client_with(refuses_after_two))
    assert first.error is not None and "401" in str(first.error.details)
    assert checkpoints == [16, 33]
    assert first.progress == 33 and len(first.payload["Delivered"]) == 2
    # A resubmit clears the checkpoint but keeps what was delivered.
    again = {k: v for k, v in first.payload.items() if k != "Checkpoint"}
    second = await transfer(index, blobs, peer, FAST, again, client_factory=client_with(
        lambda request: (received.append(request.content), stored(request))[1]))
    assert second.error is None and second.progress == 100
    assert len(received) == len(instances) == 6
    assert len(set(received)) == 6
    sizes = sum(len(body) for body in received)
    assert second.content == {
        "Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
        "InstancesCount": 6, "ParentResources": [study], "Peer": ["http://peer/", "alice", ""],
        "Size": str(sizes), "SizeMB": 0,
    }
    assert content_of(second.payload, peer) == second.content


async def test_permissive_transfer_counts_failures_and_stops_on_request(
    local: tuple[Index, FileBlobStore, list[str], str],
) -> None:
    index, blobs, instances, study = local
    peer = parse_peer("p", ["http://peer/"])

    payload = new_payload(peer, StoreRequest(resources=[study], permissive=True), instances)
    outcome = await transfer(index, blobs, peer, FAST, payload,
                             client_factory=client_with(lambda r: httpx.Response(400)))
    assert outcome.error is None
    assert outcome.content["FailedInstancesCount"] == 6 and outcome.progress == 100

    async def stop(payload: dict[str, Any], content: dict[str, Any], progress: int) -> bool:
        return False

    stopped = await transfer(index, blobs, peer, FAST, new_payload(peer, StoreRequest(resources=[study]), instances),
                             checkpoint=stop, client_factory=client_with(stored))
    assert stopped.stopped and len(stopped.payload["Delivered"]) == 1


# -- HTTPS: CA bundle, verification, client certificate -----------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate whose key
    is encrypted with the password "kp"."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=DicomKeep test CA", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, key_options in (("server", ["-nodes"]), ("client", ["-passout", "pass:kp"])):
        _openssl("req", "-newkey", "rsa:2048", *key_options, "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext",
                 cwd=folder)
    return folder


@contextmanager
def https_peer(pki: Path, *, require_client_certificate: bool) -> Iterator[tuple[str, list[str]]]:
    """Serve POST /instances over HTTPS on loopback; yield (URL, client certificate CNs)."""
    clients: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            peer_cert = self.connection.getpeercert()  # type: ignore[attr-defined]
            if peer_cert:
                clients.append(dict(item[0] for item in peer_cert["subject"])["commonName"])
            body = json.dumps({"ID": "x", "Status": "Success"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki / "ca.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", clients
    finally:
        server.shutdown()
        server.server_close()


async def test_https_peer_with_a_ca_bundle(pki: Path) -> None:
    with https_peer(pki, require_client_certificate=False) as (url, _):
        peer = parse_peer("tls", [url])
        bundle = HttpOptions(ca_certificates=str(pki / "ca.pem"), attempts=3, backoff=0.0)
        assert (await send_instance(peer, b"x", bundle))["Status"] == "Success"
        with pytest.raises(PeerHttpError) as caught:
            await send_instance(peer, b"x", HttpOptions(attempts=3, backoff=0.0))
        details = str(caught.value.details)
        assert details.startswith('TLS handshake with peer "tls" failed')
        assert "CERTIFICATE_VERIFY_FAILED" in details and "attempts" not in details
        unverified = HttpOptions(verify_peers=False)
        assert (await send_instance(peer, b"x", unverified))["Status"] == "Success"


async def test_https_peer_asking_for_a_client_certificate(pki: Path) -> None:
    with https_peer(pki, require_client_certificate=True) as (url, clients):
        bundle = HttpOptions(ca_certificates=str(pki / "ca.pem"), attempts=1)
        with pytest.raises(PeerHttpError):
            await send_instance(parse_peer("tls", [url]), b"x", bundle)
        peer = parse_peer("tls", {
            "Url": url, "CertificateFile": str(pki / "client.pem"),
            "CertificateKeyFile": str(pki / "client.key"), "CertificateKeyPassword": "kp",
        })
        assert (await send_instance(peer, b"x", bundle))["Status"] == "Success"
        assert clients == ["client"]
