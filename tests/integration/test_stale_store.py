"""A store command older than the orphan grace period is refused (issue 15).

Distributed mode: every indexer is down, so a `POST /instances` waits in the
store queue and times out (REST 500 Timeout); the storage service collects its
blob once older than `OrphanGracePeriod`; then the indexers come back and take
the command from the queue. They must refuse it: committing it would index an
instance whose file is gone. Nothing appears in /instances or /changes, no blob
is left, and the same file stores normally afterwards.

All-in-one mode has no equivalent through the public interface: its in-process
queue dies with the process, so a command can outlive the grace period only if
the indexer inside a running server is stuck that long;
tests/unit/services/test_store_flow.py::test_store_older_than_the_grace_period_is_refused
runs that case on the embedded adapters and the in-process bus.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomfiles import sample_path
from servers import Server, blob_keys, cluster_server, kill_member, restart_member, wait_until

#: A command older than 6 - 0.6 = 5.4 s is refused; senders give up after 2 s.
SERVER_CONFIG = {"DicomKeep": {"StoreTimeout": 2, "OrphanGracePeriod": 6}}
INDEXERS = ("indexer-1", "indexer-2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with cluster_server(tmp_path_factory.mktemp("stale-store"), SERVER_CONFIG) as running:
        yield running


def _refusals(server: Server) -> int:
    assert server.state_dir is not None
    return sum(
        (Path(server.state_dir) / f"{name}.log").read_text(errors="replace").count(
            "refused a stale store"
        )
        for name in INDEXERS
    )


def test_a_command_outliving_the_grace_period_is_not_committed(cluster: Server) -> None:
    data = sample_path("CT_small.dcm").read_bytes()
    for name in INDEXERS:
        kill_member(cluster, name)
    with cluster.client() as client:
        answer = client.post("/instances", content=data)
        assert answer.status_code == 500 and answer.json()["OrthancError"] == "Timeout"
        # The blob was written, then collected once older than the grace period.
        wait_until(lambda: blob_keys(cluster) == [], timeout=60, what="orphan collection")
        for name in INDEXERS:
            restart_member(cluster, name)
        # Handled: refused (logged), or (without the guard) committed.
        wait_until(lambda: _refusals(cluster) > 0 or client.get("/instances").json() != [],
                   timeout=60, what="the queued command to be handled")
        assert client.get("/instances").json() == []
        assert _refusals(cluster) == 1
        changes = client.get("/changes", params={"limit": 100}).json()["Changes"]
        assert [c for c in changes if c["ChangeType"] == "NewInstance"] == []
        assert blob_keys(cluster) == []
        # The indexers work: the same file stores, and is readable.
        stored = client.post("/instances", content=data)
        assert stored.status_code == 200 and stored.json()["Status"] == "Success"
        instance = stored.json()["ID"]
        assert client.get("/instances").json() == [instance]
        assert client.get(f"/instances/{instance}/file").content == data
    assert _refusals(cluster) == 1
