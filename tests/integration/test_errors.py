"""Clean errors under faults and hostile input (issue 15), in both modes.

- The index unreachable (SQLite file locked by another process; PostgreSQL
  database refusing connections) answers 503 with Orthanc's error body
  (OrthancStatus 36), no traceback in the log, and the server recovers.
- Deeply nested JSON on every JSON route answers 400 *Cannot parse a JSON
  document*; a 100,000-character wildcard in /tools/find, an upload without
  SOPInstanceUID and a 10,000-character modality or peer name answer 400, and
  nothing is stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from dicomfiles import sample_path
from pydicom import dcmread
from servers import Server, _pg, wait_until

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
DEEP_OBJECT = ('{"a":' * 5_000 + "1" + "}" * 5_000).encode()

#: Every route that reads a JSON body, with the method.
JSON_ROUTES = [
    ("POST", "/tools/find"),
    ("PUT", "/modalities/deep"),
    ("PUT", "/peers/deep"),
    ("POST", "/modalities/deep/query"),
    ("POST", "/modalities/deep/move"),
    ("POST", "/modalities/deep/echo"),
    ("POST", "/modalities/deep/store"),
    ("POST", "/peers/deep/store"),
    ("POST", "/patients/x/anonymize"),
    ("POST", "/studies/x/modify"),
    ("POST", "/tools/create-dicom"),
]


def _assert_orthanc_error(response, status: int, orthanc_status: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["HttpStatus"] == status
    assert body["OrthancStatus"] == orthanc_status


@pytest.mark.parametrize("method,path", JSON_ROUTES)
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_400(server: Server, method: str, path: str, body: bytes) -> None:
    with server.client() as client:
        response = client.request(method, path, content=body)
        # create-dicom and the modality routes may refuse earlier (unknown
        # modality 404 comes after the body is read in Orthanc): never a 500.
        assert response.status_code in (400, 404), response.text[:300]
        if response.status_code == 400 and path in ("/tools/find", "/peers/deep", "/modalities/deep"):
            assert response.json()["OrthancStatus"] == 28
        assert client.get("/system").status_code == 200
        assert client.get("/modalities").json() == [] or "deep" not in client.get("/modalities").json()
        assert "deep" not in client.get("/peers").json()


def test_huge_wildcard_is_a_400(server: Server) -> None:
    with server.client() as client:
        query = {"PatientName": "*" + "a*" * 50_000}
        response = client.post("/tools/find", json={"Level": "Patient", "Query": query})
        _assert_orthanc_error(response, 400, 8)


def test_upload_without_sop_instance_uid_is_a_400(server: Server, tmp_path: Path) -> None:
    dataset = dcmread(sample_path("CT_small.dcm"))
    del dataset.SOPInstanceUID
    path = tmp_path / "no-uid.dcm"
    dataset.save_as(path)
    with server.client() as client:
        before = client.get("/instances").json()
        response = client.post("/instances", content=path.read_bytes())
        _assert_orthanc_error(response, 400, 15)
        assert client.get("/instances").json() == before


@pytest.mark.parametrize("kind", ["modalities", "peers"])
def test_huge_name_is_a_400(server: Server, kind: str) -> None:
    name = "a" * 10_000
    value = ["X", "127.0.0.1", 104] if kind == "modalities" else {"Url": "http://127.0.0.1:1/"}
    with server.client() as client:
        response = client.put(f"/{kind}/{name}", json=value)
        assert response.status_code == 400, response.text[:300]
        assert len(response.json().get("Details", "")) < 500
        assert name not in client.get(f"/{kind}").json()


def test_unreachable_index_is_a_503(server: Server) -> None:
    """Make the index unreachable without touching the shared servers, then heal it."""
    if server.mode == "allinone":
        _with_sqlite_locked(server)
    else:
        _with_database_closed(server)
    with server.client() as client:
        client.timeout = 90

        def healed() -> bool:
            try:
                answer = client.put("/modalities/healed", json=["H", "127.0.0.1", 104])
            except httpx.TimeoutException:
                return False
            return answer.status_code == 200

        wait_until(healed, timeout=120, what="the index to answer again")
        assert "healed" in client.get("/modalities").json()
        client.delete("/modalities/healed")


def _with_sqlite_locked(server: Server) -> None:
    # Another process holding SQLite's write lock longer than the server's busy
    # timeout (30 s): a write answers 503 *database unavailable*.
    assert server.storage_dir is not None
    index = Path(server.config["IndexDirectory"]) / "index"
    assert index.exists()
    locker = sqlite3.connect(index, isolation_level=None, timeout=5)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(45, locker.execute, ("ROLLBACK",))
    try:
        with server.client() as client:
            client.timeout = 90
            response = client.put("/modalities/locked", json=["L", "127.0.0.1", 104])
        _assert_orthanc_error(response, 503, 36)
        assert response.json()["Message"] == (
            "The database is currently not available (probably a transient situation)"
        )
    finally:
        release.cancel()
        locker.execute("ROLLBACK")
        locker.close()
    _assert_no_traceback(Path(server.config["IndexDirectory"]).parent / "server.log")


def _with_database_closed(server: Server) -> None:
    # The cluster's own database (never the shared server): refuse new
    # connections and end the open ones; every replica then answers 503.
    name = urlsplit(server.config["PostgreSQL"]["ConnectionUri"]).path.lstrip("/")
    _pg(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        _pg(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        with server.client() as client:
            response = client.get("/patients")
            if response.status_code == 200:  # a pooled connection survived: try again
                response = client.get("/patients")
            _assert_orthanc_error(response, 503, 36)
            _assert_orthanc_error(client.put("/modalities/down", json=["D", "127.0.0.1", 104]), 503, 36)
    finally:
        _pg(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert server.state_dir is not None
    _assert_no_traceback(*server.state_dir.glob("**/gateway*.log"))


def _assert_no_traceback(*logs: Path) -> None:
    """The gateway logged the outage as one warning line, with no traceback."""
    text = "".join(log.read_text(encoding="utf-8", errors="replace") for log in logs)
    assert "backend unavailable" in text
    for marker in ("Exception in ASGI application", "ERROR dicomkeep.gateway", "ERROR uvicorn"):
        assert marker not in text, text[-3000:]


def test_unreachable_peer_system_is_a_network_error(server: Server) -> None:
    """Orthanc answers 500 *Error in the network protocol* (OrthancStatus 9), with
    its JSON body, when a peer cannot be reached: never an internal error."""
    with server.client() as client:
        port = _closed_port()
        assert client.put("/peers/gone", json={"Url": f"http://127.0.0.1:{port}/"}).status_code == 200
        try:
            response = client.get("/peers/gone/system")
            _assert_orthanc_error(response, 500, 9)
            assert response.json()["OrthancError"] == "Error in the network protocol"
        finally:
            client.delete("/peers/gone")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
