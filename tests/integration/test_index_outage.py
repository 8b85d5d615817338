"""An index outage seen by the jobs worker and the REST API (issue 15), distributed mode.

The cluster reaches PostgreSQL through a TCP relay of this test (tests/tcp_cut.py): cutting it is an
outage for this cluster only (the shared server keeps running). While it lasts,
REST answers 503 with Orthanc's body and the jobs worker logs one line (no
traceback loop) and retries with backoff; once healed, a job submitted runs to its
end without a restart. (All-in-one: SQLite outages are in test_errors.py, the
worker's backoff in tests/unit/jobs/test_jobs_worker.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from backends import PG_ADMIN_DSN
from servers import Server, cluster_server, wait_until
from tcp_cut import CuttableRelay, relays


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, CuttableRelay]]:
    target = urlsplit(PG_ADMIN_DSN)
    with relays({"postgres": (target.hostname or "127.0.0.1", target.port or 5432)}) as started:
        proxy = started["postgres"]
        tmp = tmp_path_factory.mktemp("outage")
        with cluster_server(tmp, pg_port=proxy.port) as server:
            yield server, proxy
        proxy.restore()  # the teardown drops the database through the relay's target


def _jobs_log(server: Server) -> str:
    assert server.state_dir is not None
    return (server.state_dir / "jobs.log").read_text(encoding="utf-8", errors="replace")


def _answers(client: httpx.Client, path: str) -> int:
    try:
        return client.get(path).status_code
    except httpx.HTTPError:
        return 0


def test_jobs_worker_and_rest_ride_out_an_index_outage(
    proxied: tuple[Server, CuttableRelay],
) -> None:
    server, proxy = proxied
    before = _jobs_log(server)
    proxy.cut()
    try:
        with server.client() as client:
            client.timeout = 90
            wait_until(lambda: _answers(client, "/jobs") == 503, timeout=60,
                       what="REST to answer 503")
            answer = client.get("/jobs")
            assert answer.status_code == 503
            assert answer.json()["OrthancStatus"] == 36
        wait_until(lambda: "index unavailable" in _jobs_log(server)[len(before):],
                   timeout=60, what="the jobs worker to notice")
        # Let the worker fail several more claims (backoff 0.5, 1, 2, 4 s): the
        # assertions below are on the log, not on time.
        time.sleep(8)
    finally:
        proxy.restore()
    during = _jobs_log(server)[len(before):]
    assert during.count("index unavailable") == 1, during[-3000:]
    assert "Traceback" not in during, during[-3000:]
    with server.client() as client:
        client.timeout = 90
        wait_until(lambda: _answers(client, "/jobs") == 200, timeout=120,
                   what="REST to answer again")
        # A job submitted after the outage runs to its end: the worker resumed.
        assert client.put("/peers/nowhere", json={"Url": "http://127.0.0.1:9/"}).status_code == 200
        queued = client.post("/peers/nowhere/store", json={"Resources": [], "Asynchronous": True})
        assert queued.status_code == 200, queued.text
        job = queued.json()["ID"]
        wait_until(lambda: client.get(f"/jobs/{job}").json()["State"] in ("Success", "Failure"),
                   timeout=120, what="the job to finish")
    wait_until(lambda: "index available again" in _jobs_log(server), timeout=30,
               what="the worker to log the end of the outage")
    assert "Traceback" not in _jobs_log(server)[len(before):]

