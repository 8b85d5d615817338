"""`/jobs`, `/modalities` and `/queries` routes on embedded adapters (ORTHANC_API.md §10, §11.6)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import pydicom
import pytest
from dicom_peers import storage_scp
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.index import JobState
from dicomkeep.common.modalities import parse_modality
from dicomkeep.common.settings import Settings
from dicomkeep.jobs.usecases import Deps
from dicomkeep.jobs.worker import JobWorkers
from gateway_support import Gateway, dicom_file
from servers import free_port


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate(
        {
            "DicomAet": "DICOMKEEP",
            "DicomModalities": {
                "conf": ["CONF", "127.0.0.1", 104],
                "dead": {"AET": "DEAD", "Host": "127.0.0.1", "Port": free_port(), "Timeout": 2},
            },
        }
    )


@pytest.fixture
async def workers(gateway: Gateway) -> AsyncIterator[JobWorkers]:
    ctx = gateway.ctx
    running = JobWorkers(
        ctx.index.jobs, Deps(ctx.settings, ctx.index, ctx.blobs), concurrency=1,
        history_size=10, poll=0.05,
    )
    running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_modality_registry(gateway: Gateway) -> None:
    client = gateway.client
    assert (await client.get("/modalities")).json() == ["conf", "dead"]
    conf = (await client.get("/modalities?expand")).json()["conf"]
    assert conf == {
        "AET": "CONF", "AllowEcho": True, "AllowEventReport": True, "AllowFind": True,
        "AllowFindWorklist": True, "AllowGet": True, "AllowMove": True, "AllowNAction": True,
        "AllowStore": True, "AllowTranscoding": True, "Host": "127.0.0.1", "LocalAet": "",
        "Manufacturer": "Generic", "Port": 104, "Timeout": 0, "UseDicomTls": False,
    }
    assert "store" in (await client.get("/modalities/conf")).json()
    missing = await client.get("/modalities/nope")
    assert (missing.status_code, missing.content) == (404, b"")
    put = await client.put("/modalities/new", json={"AET": "NEW", "Host": "h", "Port": "4242", "AllowMove": False})
    assert (put.status_code, put.content) == (200, b"")
    configuration = (await client.get("/modalities/new/configuration")).json()
    assert configuration["Port"] == 4242 and configuration["AllowMove"] is False
    assert (await client.put("/modalities/conf", json=["CONF2", "h2", 11112, "GE"])).status_code == 200
    assert (await client.get("/modalities/conf/configuration")).json()["Manufacturer"] == "GE"
    assert (await client.delete("/modalities/dead")).status_code == 200
    assert (await client.get("/modalities")).json() == ["conf", "new"]
    # Bad input: nothing changes.
    for body in (b"not json", b'["A"]', b'{"AET": "A", "Host": "h", "Port": 0}', b'{"Host": "h", "Port": 1}'):
        bad = await client.put("/modalities/x", content=body)
        assert bad.status_code == 400 and bad.json()["HttpStatus"] == 400
    assert (await client.put("/modalities/b@d", json=["A", "h", 1])).status_code == 400
    unknown = await client.delete("/modalities/nope")
    assert unknown.status_code == 404
    assert (await client.get("/modalities")).json() == ["conf", "new"]


async def test_echo(gateway: Gateway) -> None:
    client = gateway.client
    with storage_scp() as scp:
        await client.put("/modalities/scp", json=["PYSCP", "127.0.0.1", scp.port])
        answer = await client.post("/modalities/scp/echo", content=b"")
        assert (answer.status_code, answer.json()) == (200, {})
        tool = await client.post("/tools/dicom-echo", json={"AET": "PYSCP", "Host": "127.0.0.1", "Port": scp.port})
        assert tool.status_code == 200
    failed = await client.post("/modalities/dead/echo", json={"Timeout": 1})
    assert failed.status_code == 500 and failed.json()["OrthancStatus"] == 9
    unknown = await client.post("/modalities/nope/echo", content=b"")
    assert unknown.status_code == 404 and unknown.json()["OrthancStatus"] == 7


async def test_store_sync_and_async_through_jobs(gateway: Gateway, workers: JobWorkers) -> None:
    client = gateway.client
    instance = await gateway.upload(dicom_file("CT_small.dcm"))
    with storage_scp() as scp:
        await client.put("/modalities/scp", json=["PYSCP", "127.0.0.1", scp.port])
        sync = await client.post("/modalities/scp/store", content=instance["ParentStudy"].encode())
        assert sync.status_code == 200
        assert sync.json() == {
            "Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 1,
            "LocalAet": "DICOMKEEP", "ParentResources": [instance["ParentStudy"]],
            "RemoteAet": "PYSCP",
        }
        queued = await client.post(
            "/modalities/scp/store",
            json={"Resources": [instance["ID"]], "Asynchronous": True, "Priority": 4, "LocalAet": "ME"},
        )
        job_id = queued.json()["ID"]
        assert queued.json() == {"ID": job_id, "Path": f"/jobs/{job_id}"}
        await _until_done(gateway, job_id)
        job = (await client.get(f"/jobs/{job_id}")).json()
        assert scp.received.count(instance_uid()) == 2
    assert job["State"] == "Success" and job["Type"] == "DicomModalityStore"
    assert job["Priority"] == 4 and job["Progress"] == 100 and job["ErrorCode"] == 0
    assert job["ErrorDescription"] == "Success" and job["Content"]["LocalAet"] == "ME"
    assert {"CreationTime", "CompletionTime", "Timestamp", "EffectiveRuntime"} <= set(job)
    assert job_id in (await client.get("/jobs")).json()
    assert job in [dict(j, Timestamp=job["Timestamp"]) for j in (await client.get("/jobs?expand")).json()]


def instance_uid() -> str:
    return str(pydicom.dcmread(io.BytesIO(dicom_file("CT_small.dcm"))).SOPInstanceUID)


async def _until_done(gateway: Gateway, job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ((job := await gateway.index.jobs.get_job(job_id)) and job.state.is_done):
        assert time.monotonic() < deadline, "job not done in time"
        await asyncio.sleep(0.02)


async def test_store_errors(gateway: Gateway, workers: JobWorkers) -> None:
    client = gateway.client
    instance = await gateway.upload(dicom_file("CT_small.dcm"))
    failed = await client.post("/modalities/dead/store", content=instance["ID"].encode())
    assert failed.status_code == 500
    assert failed.json()["OrthancError"] == "Error in the network protocol"
    assert "DEAD" in failed.json()["Details"]
    jobs = (await client.get("/jobs?expand")).json()
    assert [j["State"] for j in jobs] == ["Failure"] and jobs[0]["ErrorCode"] == 9
    before = (await client.get("/jobs")).json()
    assert (await client.post("/modalities/conf/store", content=b"not-an-id")).status_code == 400
    unknown = await client.post("/modalities/conf/store", json=["0" * 8 + "-00000000" * 4])
    assert unknown.status_code == 404
    assert (await client.post("/modalities/nope/store", content=instance["ID"].encode())).status_code == 404
    assert (await client.get("/jobs")).json() == before


async def test_job_actions_and_unknown_jobs(gateway: Gateway) -> None:
    client = gateway.client
    store = gateway.index.jobs
    job = await store.submit_job("DicomModalityStore", {"InstancesCount": 0}, {})
    for action in ("cancel", "pause", "resume", "resubmit"):
        answer = await client.post(f"/jobs/unknown/{action}")
        assert (answer.status_code, answer.content) == (400, b"")
    missing = await client.get("/jobs/unknown")
    assert (missing.status_code, missing.content) == (404, b"")
    assert (await client.delete("/jobs/unknown")).status_code == 404
    assert (await client.get(f"/jobs/{job.id}/archive")).status_code == 404
    assert (await client.post(f"/jobs/{job.id}/resume")).status_code == 400
    assert (await client.post(f"/jobs/{job.id}/pause")).json() == {}
    assert (await client.get(f"/jobs/{job.id}")).json()["State"] == "Paused"
    assert (await client.post(f"/jobs/{job.id}/resume")).json() == {}
    assert (await client.post(f"/jobs/{job.id}/resubmit")).status_code == 400
    assert (await client.post(f"/jobs/{job.id}/cancel")).json() == {}
    cancelled = (await client.get(f"/jobs/{job.id}")).json()
    assert cancelled["State"] == "Failure" and cancelled["ErrorCode"] == 37
    assert cancelled["ErrorDescription"] == "This job was canceled"
    assert (await client.post(f"/jobs/{job.id}/resubmit")).json() == {}
    assert (await store.get_job(job.id)).state is JobState.PENDING  # type: ignore[union-attr]
    assert (await client.delete(f"/jobs/{job.id}")).status_code == 404  # not completed


async def test_move_body_errors(gateway: Gateway) -> None:
    client = gateway.client
    for body in (
        {"Resources": [{"StudyInstanceUID": "1.2"}]},
        {"Level": "Galaxy", "Resources": []},
        {"Level": "Study"},
        {"Level": "Study", "Resources": [{"StudyInstanceUID": 3}]},
        {"Level": "Study", "Resources": [{"NotATag": "x"}]},
    ):
        answer = await client.post("/modalities/conf/move", json=body)
        assert answer.status_code == 400, body
    assert (await client.get("/jobs")).json() == []
    unknown = await client.post("/queries/nope/retrieve", content=b"")
    # Orthanc's QueryAccessor: an unknown query is 404 Unknown resource, for any method.
    assert (unknown.status_code, unknown.json()["OrthancStatus"]) == (404, 17)
    assert (await client.get("/queries/nope/answers")).status_code == 404
    # Orthanc's SharedArchive::Remove: forgetting an unknown query is no error.
    forgotten = await client.delete("/queries/nope")
    assert (forgotten.status_code, forgotten.content) == (200, b"")
    assert (await client.post("/modalities/dead/query", json={"Level": "Study", "Query": {}})).status_code == 500
    assert (await client.post("/modalities/conf/query", json={"Query": {}})).status_code == 400
    assert (await client.get("/queries")).json() == []


def test_modality_forms() -> None:
    assert parse_modality(["A", "h", 1]).to_json()["Manufacturer"] == "Generic"
    assert parse_modality({"AET": "A", "Host": "h", "Port": 1, "AllowStorageCommitment": False}).allows("AllowNAction") is False
    bad_forms: list[object] = [
        ["A", "h"],
        {"AET": "A", "Host": "h", "Port": 70000},
        {"AET": "A" * 17, "Host": "h", "Port": 1},
        {"AET": "A", "Host": "h", "Port": 1, "Manufacturer": "Nope"},
        {"AET": "A", "Host": "h", "Port": 1, "AllowEcho": 1},
    ]
    for bad in bad_forms:
        with pytest.raises(OrthancError) as error:
            parse_modality(bad)
        assert error.value.http_status == 400
