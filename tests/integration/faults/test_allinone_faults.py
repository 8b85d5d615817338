"""kill -9 of the all-in-one server mid-stream, mid-DELETE and mid-recycling.

Each time the server is started again on the same SQLite index and storage folder
(`restart_member`). After a crash mid-stream the checks of the distributed suite
hold (fault_streams.check_after_fault); after one mid-DELETE every instance whose
deletion was acknowledged is gone and every other one is whole; after one
mid-recycling the patient limit holds and the newest patients are whole. At the
end, no orphan blob survives the collector.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_streams import (
    Report,
    all_changes,
    check_after_fault,
    check_identical,
    check_no_orphan_blob,
    check_seqs,
    last_seq,
    make_items,
    stream_through,
    wait_stable,
)
from servers import (
    START_TIMEOUT,
    Server,
    allinone_server,
    kill_member,
    restart_member,
    wait_until,
)

SERVER_CONFIG: dict[str, Any] = {
    "StableAge": 1,
    "DicomKeep": {"StoreTimeout": 10, "OrphanGracePeriod": 12},
}
DOWN_SECONDS = 1.0
MAXIMUM_PATIENT_COUNT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("faults-allinone")
    with allinone_server(tmp, SERVER_CONFIG) as running:
        yield running


def crash_and_restart(server: Server) -> None:
    kill_member(server)
    time.sleep(DOWN_SECONDS)
    restart_member(server)


def reconfigure(server: Server, name: str, **options: Any) -> None:
    """Rewrite the server's configuration file (with `Name` = `name`, to tell when it
    is in force) and have it read again with POST /tools/reset (no process start)."""
    assert server.storage_dir is not None
    path = server.storage_dir.parent / "dicomkeep.json"
    config = {**server.config, "Name": name, **options}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    with server.client() as client:
        assert client.post("/tools/reset").status_code == 200

    def renamed() -> bool:
        try:
            with server.client() as client:
                return bool(client.get("/system").json()["Name"] == name)
        except (httpx.HTTPError, ValueError):
            return False

    wait_until(renamed, timeout=START_TIMEOUT, what="the configuration to be read again")


def test_crash_mid_stream_loses_nothing_acknowledged(
    server: Server, fault_instances: int, fault_report: Report
) -> None:
    with server.client() as client:
        since = last_seq(client)
    items = make_items(fault_instances, seed=51)
    ledger = stream_through(server, items, lambda: crash_and_restart(server))
    check_after_fault(server, items, ledger, since)
    assert ledger.failures, "the crash did not reach the senders"
    fault_report("allinone/kill-mid-stream", len(items), len(ledger.acked), len(ledger.failures))


def test_crash_mid_delete_deletes_whole_instances(
    server: Server, fault_instances: int, fault_report: Report
) -> None:
    items = make_items(fault_instances, seed=52)
    with server.client() as client:
        since = last_seq(client)
    ledger = stream_through(server, items, lambda: None)
    check_after_fault(server, items, ledger, since)

    deleted: list[str] = []
    failures: list[str] = []

    def delete_all() -> None:
        with server.client() as client:
            for item in items:
                try:
                    answer = client.delete(f"/instances/{item.instance}")
                except httpx.HTTPError as error:
                    failures.append(type(error).__name__)
                    return  # the server is gone: what was not acknowledged is undecided
                if answer.status_code == 200:
                    deleted.append(item.instance)
                else:
                    failures.append(f"HTTP {answer.status_code}")

    deleter = threading.Thread(target=delete_all)
    deleter.start()
    deadline = time.monotonic() + 120
    while len(deleted) < len(items) // 3 and deleter.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_member(server)
    deleter.join(60)
    assert len(deleted) < len(items), "the crash came after every deletion"
    restart_member(server)

    with server.client() as client:
        present = set(client.get("/instances").json())
        assert not present & set(deleted), "an acknowledged deletion came back"
        remaining = [item for item in items if item.instance in present]
        # At most the deletion in flight at the crash is undecided; it is all or nothing.
        assert len(items) - len(deleted) - len(remaining) <= 1
        check_identical(client, remaining)
        for series in {item.series for item in remaining}:
            assert client.get(f"/series/{series}").json()["Instances"], "empty series left"
        check_seqs(all_changes(client, since))
        # Deletion works again, to the last instance.
        for item in remaining:
            assert client.delete(f"/instances/{item.instance}").status_code == 200
        assert not set(client.get("/instances").json()) & {item.instance for item in items}
    fault_report("allinone/kill-mid-delete", len(items), len(deleted), len(failures))


def test_crash_mid_recycling_keeps_the_limit_and_the_newest(
    server: Server, fault_instances: int, fault_report: Report
) -> None:
    reconfigure(server, "recycling", MaximumPatientCount=MAXIMUM_PATIENT_COUNT)
    try:
        # Patients of 4 instances, so that many are recycled.
        items = make_items(fault_instances, seed=53, per_series=2)
        with server.client() as client:
            since = last_seq(client)
        ledger = stream_through(server, items, lambda: crash_and_restart(server),
                                by_study=True)
        assert ledger.failures, "the crash did not reach the senders"
        assert not any("gave up" in f for f in ledger.failures), ledger.failures[-5:]
        expected = {item.instance: item for item in items}
        with server.client() as client:
            patients = client.get("/patients").json()
            assert len(patients) <= MAXIMUM_PATIENT_COUNT
            present = set(client.get("/instances").json())
            assert present <= expected.keys()
            check_identical(client, [expected[i] for i in present])
            # The studies acknowledged last are the newest patients: never recycled,
            # and whole.
            newest = list(dict.fromkeys(i.study for i in reversed(ledger.acked.values())))
            for study in newest[:MAXIMUM_PATIENT_COUNT - 1]:
                assert {i.instance for i in items if i.study == study} <= present, (
                    "a newest study lost instances")
            changes = all_changes(client, since)
            check_seqs(changes)
            new = [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]
            assert sorted(set(new) & present) == sorted(present)
            assert len([i for i in new if i in present]) == len(present), "indexed twice"
        wait_stable(server, [expected[i] for i in present], since)
        fault_report("allinone/kill-mid-recycling", len(items), len(ledger.acked),
                     len(ledger.failures))
    finally:
        reconfigure(server, "no-limit")


def test_no_orphan_blob_survives_the_crashes(server: Server) -> None:
    """Blobs written by stores or deletions that the crashes interrupted are collected."""
    check_no_orphan_blob(server)
