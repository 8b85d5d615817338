"""Orthanc peers over HTTP: DicomKeep and a real Orthanc (Debian's 1.10.1) send each
other studies, DicomKeep sends to DicomKeep, and failed transfers are explained and
finished without duplicates (ORTHANC_API.md §10, §12).

Orthanc runs in a loopback-only network namespace (tests/orthanc_peer.py). Files are
compared byte for byte (`Accept-Encoding: identity` with Orthanc) and IDs one by one.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from orthanc_peer import OrthancPeer, orthanc_available, orthanc_peer
from servers import Server, allinone_server, free_port
from synthetic import generate_study

pytestmark = pytest.mark.skipif(orthanc_available() is not None, reason=str(orthanc_available()))

INSTANCES = 6  # 2 series x 3 instances per generated study


@pytest.fixture(scope="module")
def orthanc(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """Orthanc with peers `dicomkeep` (first gateway) and `dicomkeep-last` (last one)."""
    tmp = tmp_path_factory.mktemp("orthanc")
    ports = [int(url.rsplit(":", 1)[1]) for url in server.urls]

    def peers(inside: dict[int, str]) -> dict[str, Any]:
        return {"dicomkeep": [inside[ports[0]]], "dicomkeep-last": {"Url": inside[ports[-1]]}}

    with orthanc_peer(tmp, expose=ports, peers=peers) as running:
        yield running


@pytest.fixture(scope="module")
def second(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An all-in-one DicomKeep whose configuration names the server under test `main`."""
    tmp = tmp_path_factory.mktemp("second")
    with allinone_server(tmp, {"OrthancPeers": {"main": [server.url]}}) as running:
        yield running


_seeds = iter(range(1000, 2000))


def upload_study(client: httpx.Client) -> str:
    """Store a fresh generated study (6 instances); return its Orthanc ID."""
    study = ""
    for instance in generate_study(series=2, instances_per_series=3, seed=next(_seeds)):
        answer = client.post("/instances", content=instance.data)
        assert answer.status_code == 200, answer.text
        study = answer.json()["ParentStudy"]
    return study


def instance_ids(client: httpx.Client, study: str) -> list[str]:
    answer = client.get(f"/studies/{study}/instances")
    assert answer.status_code == 200, answer.text
    return sorted(item["ID"] for item in answer.json())


def assert_same_study(source: httpx.Client, target: httpx.Client, study: str) -> list[str]:
    """Assert that both hold the study with the same instance IDs and identical files."""
    ids = instance_ids(source, study)
    assert len(ids) == INSTANCES
    assert instance_ids(target, study) == ids
    for instance in ids:
        sent = source.get(f"/instances/{instance}/file", headers={"Accept-Encoding": "identity"})
        got = target.get(f"/instances/{instance}/file", headers={"Accept-Encoding": "identity"})
        assert sent.status_code == got.status_code == 200
        assert got.content == sent.content, instance
    return ids


def test_orthanc_runs_in_its_own_namespace(orthanc: OrthancPeer) -> None:
    import os

    assert os.readlink(f"/proc/{orthanc.pid}/ns/net") != os.readlink("/proc/self/ns/net")


def test_dicomkeep_stores_a_study_to_orthanc(server: Server, orthanc: OrthancPeer) -> None:
    with server.client(0) as first, server.client(-1) as last, orthanc.client() as remote:
        study = upload_study(first)
        assert first.put("/peers/orthanc", json=orthanc.peer_config()).status_code == 200
        # The peer is kept in the index: every replica knows it.
        assert last.get("/peers").json() == ["orthanc"]
        assert last.get("/peers/orthanc/system").json()["Name"] == "OrthancPeer"
        answer = last.post("/peers/orthanc/store", content=study)
        assert answer.status_code == 200, answer.text
        content = answer.json()
        size = sum(
            len(first.get(f"/instances/{i}/file").content) for i in instance_ids(first, study)
        )
        assert content == {
            "Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
            "InstancesCount": INSTANCES, "ParentResources": [study],
            "Peer": [orthanc.url, "alice", ""], "Size": str(size), "SizeMB": 0,
        }
        ids = assert_same_study(first, remote, study)
        metadata = remote.get(f"/instances/{ids[0]}/metadata?expand").json()
        assert metadata["Origin"] == "RestApi"
        assert metadata["HttpUsername"] == "alice"
        assert metadata["RemoteIP"] == "127.0.0.1"
        # gzip on the wire (Compress) arrives as the same files; a second store is idempotent.
        again = last.post("/peers/orthanc/store", json={"Resources": [study], "Compress": True})
        assert again.status_code == 200 and again.json()["Compress"] is True
        assert instance_ids(remote, study) == ids


def test_orthanc_stores_a_study_to_dicomkeep(server: Server, orthanc: OrthancPeer) -> None:
    with server.client(0) as local, orthanc.client() as remote:
        study = upload_study(remote)
        answer = remote.post("/peers/dicomkeep/store", json=[study])
        assert answer.status_code == 200, answer.text
        assert answer.json()["InstancesCount"] == INSTANCES
        ids = assert_same_study(remote, local, study)
        metadata = local.get(f"/instances/{ids[0]}/metadata?expand").json()
        assert metadata["Origin"] == "RestApi"
        assert metadata["RemoteIP"] == "127.0.0.1"
        assert metadata["HttpUsername"] == ""
        # Through the last replica, with gzip: already stored, nothing changes.
        again = remote.post("/peers/dicomkeep-last/store", json={"Resources": [study], "Compress": True})
        assert again.status_code == 200, again.text
        assert instance_ids(local, study) == ids


def test_dicomkeep_to_dicomkeep_both_ways(server: Server, second: Server) -> None:
    with server.client(0) as main, second.client() as other:
        study = upload_study(main)
        assert main.put("/peers/second", json={"Url": second.url}).status_code == 200
        answer = main.post("/peers/second/store", content=f'"{study}"')
        assert answer.status_code == 200, answer.text
        assert_same_study(main, other, study)
        back = upload_study(other)
        assert other.get("/peers").json() == ["main"]
        answer = other.post("/peers/main/store", json={"Resources": [back]})
        assert answer.status_code == 200, answer.text
        assert_same_study(other, main, back)
        # store-straight forwards a file without storing it here.
        data = generate_study(series=1, instances_per_series=1, seed=next(_seeds))[0].data
        straight = main.post("/peers/second/store-straight", content=data)
        assert straight.status_code == 200, straight.text
        forwarded = straight.json()["ID"]
        assert main.get(f"/instances/{forwarded}").status_code == 404
        assert other.get(f"/instances/{forwarded}/file").content == data


class CuttingProxy:
    """An HTTP proxy to a peer that forwards `healthy` requests, then closes every
    further connection in the middle of the request body (until `healthy` is None)."""

    def __init__(self, target: str, healthy: int | None) -> None:
        self.target = target.rstrip("/")
        self.healthy = healthy
        self.forwarded = 0
        self.cut = 0
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy.handle(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, handler: socketserver.StreamRequestHandler) -> None:
        request_line = handler.rfile.readline().decode("latin-1").split()
        headers: dict[str, str] = {}
        while (line := handler.rfile.readline().decode("latin-1").strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if self.healthy is not None and self.forwarded >= self.healthy and length:
            handler.rfile.read(min(length, 1000))
            self.cut += 1
            handler.connection.close()
            return
        body = handler.rfile.read(length)
        forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
        answer = httpx.request(
            request_line[0], self.target + request_line[1], content=body, headers=forwarded,
            timeout=30,
        )
        self.forwarded += 1
        handler.wfile.write(
            f"HTTP/1.1 {answer.status_code} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(answer.content)}\r\nConnection: close\r\n\r\n".encode()
            + answer.content
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(orthanc: OrthancPeer) -> Iterator[CuttingProxy]:
    running = CuttingProxy(orthanc.url, healthy=2)
    try:
        yield running
    finally:
        running.close()


def test_synchronous_failures_are_explained(
    server: Server, orthanc: OrthancPeer, proxy: CuttingProxy
) -> None:
    with server.client(0) as local, orthanc.client() as remote:
        study = upload_study(local)
        down = {"Url": f"http://127.0.0.1:{free_port()}/"}
        wrong = {**orthanc.peer_config(), "Password": "wrong"}
        cutting = {**orthanc.peer_config(), "Url": proxy.url}
        expected = {
            "down": 'Cannot connect to peer "flaky"',
            "wrong": 'Peer "flaky" answered HTTP 401 Unauthorized',
            "cutting": 'Peer "flaky" closed the connection during POST',
        }
        for name, config in (("down", down), ("wrong", wrong), ("cutting", cutting)):
            assert local.put("/peers/flaky", json=config).status_code == 200
            answer = local.post("/peers/flaky/store", content=study)
            assert answer.status_code == 500, name
            body = answer.json()
            assert body["OrthancError"] == "Error in the network protocol"
            assert body["Details"].startswith(expected[name]), body["Details"]
            if name == "wrong":
                # /system passes the peer's HTTP error status through.
                assert local.get("/peers/flaky/system").status_code == 401
        assert proxy.forwarded == 2 and proxy.cut >= 1
        # Two instances went through the proxy before it cut the third one.
        assert len(instance_ids(remote, study)) == 2
        assert local.put("/peers/flaky", json=orthanc.peer_config()).status_code == 200
        assert local.post("/peers/flaky/store", content=study).status_code == 200
        assert_same_study(local, remote, study)
        local.delete("/peers/flaky")


def _wait_job(client: httpx.Client, job: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/jobs/{job}")
        assert answer.status_code == 200, answer.text
        if answer.json()["State"] in states:
            return dict(answer.json())
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not reach {states}")


def test_failed_jobs_explain_why_and_a_resubmit_finishes_without_duplicates(
    server: Server, orthanc: OrthancPeer, proxy: CuttingProxy
) -> None:
    with server.client(0) as local, server.client(-1) as last, orthanc.client() as remote:
        cases = [
            ("down", {"Url": f"http://127.0.0.1:{free_port()}/"}, 'Cannot connect to peer "flaky"', 0),
            ("wrong", {**orthanc.peer_config(), "Password": "wrong"},
             'Peer "flaky" answered HTTP 401 Unauthorized', 0),
            ("cutting", {**orthanc.peer_config(), "Url": proxy.url},
             'Peer "flaky" closed the connection during POST', 2),
        ]
        for name, config, expected, delivered in cases:
            study = upload_study(local)
            assert local.put("/peers/flaky", json=config).status_code == 200
            queued = local.post("/peers/flaky/store", json={"Resources": [study], "Asynchronous": True})
            assert queued.status_code == 200, queued.text
            job = queued.json()["ID"]
            failed = _wait_job(last, job, ("Success", "Failure"))
            assert failed["State"] == "Failure", name
            assert failed["Type"] == "OrthancPeerStore"
            assert (failed["ErrorCode"], failed["ErrorDescription"]) == (9, "Error in the network protocol")
            assert failed["ErrorDetails"].startswith(expected), failed["ErrorDetails"]
            assert failed["Progress"] == delivered * 100 // INSTANCES
            assert failed["Content"]["InstancesCount"] == INSTANCES
            arrived = remote.get(f"/studies/{study}/instances")
            assert (len(arrived.json()) if arrived.status_code == 200 else 0) == delivered
            # Repair: the right password or a running peer; the cutting proxy heals.
            if name == "cutting":
                proxy.healthy = None
            else:
                assert local.put("/peers/flaky", json=orthanc.peer_config()).status_code == 200
            assert last.post(f"/jobs/{job}/resubmit").status_code == 200
            done = _wait_job(local, job, ("Success", "Failure"))
            assert done["State"] == "Success", done["ErrorDetails"]
            assert done["Progress"] == 100
            assert done["Content"]["InstancesCount"] == INSTANCES
            assert done["Content"]["FailedInstancesCount"] == 0
            assert_same_study(local, remote, study)
        # The proxy forwarded each instance once: 2 before it cut, the 4 others after.
        assert proxy.forwarded == INSTANCES
        local.delete("/peers/flaky")
