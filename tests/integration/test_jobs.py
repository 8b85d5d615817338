"""Jobs (ORTHANC_API.md §10) and the asynchronous C-MOVE SCP (SynchronousCMove false),
in both modes; a jobs process killed mid-job in the distributed mode.

One job runs at a time (ConcurrentJobs 1), so a slow in-process storage SCP keeps
a job Running long enough to act on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicom_peers import StorageScp, StoreScpProcess, storage_scp, storescp
from servers import Server, dcmtk, free_port, wait_until
from synthetic import GeneratedInstance, generate_study, write_files

STORESCP_PORT = free_port()
MOVER = "MOVER"
SERVER_CONFIG = {
    "DicomModalities": {
        "storescp": ["STORESCP", "127.0.0.1", STORESCP_PORT],
        "mover": [MOVER, "127.0.0.1", 1],
    },
    "SynchronousCMove": False,
    "ConcurrentJobs": 1,
}


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp"), port=STORESCP_PORT) as running:
        yield running


@pytest.fixture
def slow(clean: Server) -> Iterator[StorageScp]:
    """A storage SCP taking 0.1 s per instance, registered as modality `slow`."""
    with storage_scp(aet="SLOW", delay=0.1) as running:
        with clean.client() as client:
            put = client.put("/modalities/slow", json=["SLOW", "127.0.0.1", running.port])
            assert put.status_code == 200
        yield running


def store(server: Server, study: list[GeneratedInstance], folder: Path) -> str:
    """Store a study over DICOM; return its Orthanc ID."""
    files = write_files(study, folder)
    result = subprocess.run(
        [dcmtk("storescu"), "-aec", server.aet, "127.0.0.1", str(server.dicom_port), *map(str, files)],
        capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with server.client() as client:
        found = client.post("/tools/lookup", content=study[0].study_uid.encode()).json()
    return str(found[0]["ID"])


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return answer


def submit_store(client: httpx.Client, modality: str, resources: list[str], **extra: Any) -> str:
    answer = client.post(
        f"/modalities/{modality}/store", json={"Resources": resources, "Asynchronous": True, **extra}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["ID"])


def wait_state(client: httpx.Client, job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    wait_until(lambda: job(client, job_id)["State"] == state, timeout, f"job {job_id} {state}")
    return job(client, job_id)


def test_asynchronous_cmove_queues_a_store_job(clean: Server, scp: StoreScpProcess, tmp_path: Path) -> None:
    scp.clear()
    study = generate_study(series=1, instances_per_series=5, seed=51)
    store(clean, study, tmp_path)
    result = subprocess.run(
        [dcmtk("movescu"), "-S", "-aet", MOVER, "-aec", clean.aet, "-aem", "STORESCP",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study_uid}",
         "127.0.0.1", str(clean.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with clean.client() as client, clean.client(1) as other:
        jobs = [j for j in client.get("/jobs?expand").json() if j["Content"].get("Description") == "C-MOVE"]
        assert len(jobs) == 1
        done = wait_state(other, jobs[0]["ID"], "Success")
    assert done["Type"] == "DicomModalityStore"
    assert done["Content"]["MoveOriginatorAET"] == MOVER and done["Content"]["InstancesCount"] == 5
    assert done["Content"]["RemoteAet"] == "STORESCP" and done["Content"]["LocalAet"] == clean.aet
    wait_until(lambda: len(scp.files()) == 5, 30, "moved files")


def test_pause_resume_and_cancel_a_running_job(clean: Server, slow: StorageScp, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=20, seed=52)
    study_id = store(clean, study, tmp_path)
    with clean.client() as client, clean.client(1) as other:
        job_id = submit_store(client, "slow", [study_id])
        wait_until(lambda: job(client, job_id)["Progress"] > 0, 60, "progress")
        assert client.post(f"/jobs/{job_id}/pause").json() == {}
        paused = wait_state(other, job_id, "Paused")
        assert 0 < paused["Progress"] < 100
        assert client.post(f"/jobs/{job_id}/resubmit").status_code == 400
        assert other.post(f"/jobs/{job_id}/resume").json() == {}
        done = wait_state(client, job_id, "Success")
        assert done["Progress"] == 100 and done["Content"]["FailedInstancesCount"] == 0
        assert set(slow.received) == {item.sop_uid for item in study}
        # Cancel while running: Failure with ErrorCode 37, the rest is not sent.
        slow.received.clear()
        job_id = submit_store(client, "slow", [study_id])
        wait_until(lambda: job(client, job_id)["Progress"] > 0, 60, "progress")
        assert other.post(f"/jobs/{job_id}/cancel").json() == {}
        cancelled = wait_state(client, job_id, "Failure")
    assert cancelled["ErrorCode"] == 37 and cancelled["ErrorDescription"] == "This job was canceled"
    assert 0 < len(set(slow.received)) < 20


def test_higher_priority_runs_first(clean: Server, slow: StorageScp, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=10, seed=53)
    study_id = store(clean, study, tmp_path)
    with clean.client() as client:
        busy = submit_store(client, "slow", [study_id])
        wait_state(client, busy, "Running")
        low = submit_store(client, "slow", [study_id], Priority=-3)
        high = submit_store(client, "slow", [study_id], Priority=5)
        assert job(client, low)["State"] == "Pending" and job(client, high)["Priority"] == 5
        for job_id in (busy, low, high):
            wait_state(client, job_id, "Success", 120)
        assert job(client, high)["CompletionTime"] < job(client, low)["CompletionTime"]


def test_failures_resubmit_and_unknown_jobs(clean: Server, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=54)
    study_id = store(clean, study, tmp_path)
    with clean.client() as client, clean.client(1) as other:
        dead = {"AET": "DEAD", "Host": "127.0.0.1", "Port": free_port(), "Timeout": 2}
        assert client.put("/modalities/dead", json=dead).status_code == 200
        sync = client.post("/modalities/dead/store", content=study_id.encode())
        assert sync.status_code == 500
        body = sync.json()
        assert body["OrthancStatus"] == 9 and body["OrthancError"] == "Error in the network protocol"
        assert "DEAD" in body["Details"]
        job_id = submit_store(client, "dead", [study_id])
        failed = wait_state(other, job_id, "Failure")
        assert failed["ErrorCode"] == 9 and "DEAD" in failed["ErrorDetails"]
        assert other.post(f"/jobs/{job_id}/cancel").json() == {}  # no-op on a finished job
        assert client.post(f"/jobs/{job_id}/resume").status_code == 400
        assert client.post(f"/jobs/{job_id}/resubmit").json() == {}
        wait_until(lambda: job(client, job_id)["State"] in ("Pending", "Running", "Failure"), 5)
        assert wait_state(client, job_id, "Failure")["ErrorCode"] == 9
        before = client.get("/jobs").json()
        for action in ("cancel", "pause", "resume", "resubmit"):
            refused = client.post(f"/jobs/nope/{action}")
            assert (refused.status_code, refused.content) == (400, b"")
        missing = client.get("/jobs/nope")
        assert (missing.status_code, missing.content) == (404, b"")
        assert client.post("/modalities/nope/store", content=study_id.encode()).status_code == 404
        assert client.post("/modalities/dead/store", content=b"bad id").status_code == 400
        assert client.get("/jobs").json() == before
        assert client.delete(f"/jobs/{job_id}").status_code == 200
        assert other.get(f"/jobs/{job_id}").status_code == 404


def test_job_events_are_published(clean: Server, scp: StoreScpProcess, tmp_path: Path) -> None:
    if clean.mode != "distributed":
        pytest.skip("the all-in-one bus is in-process: no broker to subscribe to")
    import aio_pika

    study = generate_study(series=1, instances_per_series=1, seed=55)
    study_id = store(clean, study, tmp_path)

    async def record() -> list[dict[str, Any]]:
        connection = await aio_pika.connect_robust(clean.config["RabbitMQ"]["Url"])
        events: list[dict[str, Any]] = []
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                "dicomkeep.changes", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key="Job.#")
            with clean.client() as client:
                job_id = await asyncio.to_thread(submit_store, client, "storescp", [study_id])
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        events.append({"Key": message.routing_key, **json.loads(message.body)})
                    if any(e["ID"] == job_id and e["ChangeType"] == "JobSuccess" for e in events):
                        break
        return [e for e in events if e["ID"] == job_id]

    events = asyncio.run(asyncio.wait_for(record(), 60))
    assert [e["ChangeType"] for e in events] == ["JobSubmitted", "JobSuccess"]
    assert [e["Key"] for e in events] == ["Job.JobSubmitted", "Job.JobSuccess"]
    assert all(e["ResourceType"] == "Job" and e["Path"] == f"/jobs/{e['ID']}" for e in events)


def test_killed_jobs_process_finishes_the_job_after_restart(
    clean: Server, slow: StorageScp, tmp_path: Path
) -> None:
    if clean.mode != "distributed":
        pytest.skip("the jobs process is a process of its own only in the distributed mode")
    from dicomkeep.allinone import cluster

    assert clean.state_dir is not None
    study = generate_study(series=1, instances_per_series=60, seed=56)
    study_id = store(clean, study, tmp_path)
    with clean.client() as client, clean.client(1) as other:
        job_id = submit_store(client, "slow", [study_id])
        wait_until(lambda: job(client, job_id)["Progress"] >= 5, 60, "progress")
        cluster.kill_member(clean.state_dir, "jobs")
        stalled = job(other, job_id)
        assert stalled["State"] == "Running" and stalled["Progress"] < 100
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
        cluster.restart_member(clean.state_dir, "jobs", environ=environ)
        done = wait_state(other, job_id, "Success", 120)
    assert done["Progress"] == 100 and done["Content"]["InstancesCount"] == 60
    assert done["Content"]["FailedInstancesCount"] == 0
    assert set(slow.received) == {item.sop_uid for item in study}
    # The restarted process said that it resumed the job (second attempt).
    state = cluster.load_state(clean.state_dir)
    assert state is not None
    log = Path(next(m.log for m in state.members if m.name == "jobs")).read_text()
    assert f"job started job_id={job_id} type=DicomModalityStore attempt=2" in log
