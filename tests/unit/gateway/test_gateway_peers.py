"""`/peers` routes on embedded adapters: configuration, overrides, errors (ORTHANC_API.md §12)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from dicomkeep.common.settings import Settings
from dicomkeep.jobs.usecases import Deps
from dicomkeep.jobs.worker import JobWorkers
from gateway_support import Gateway, dicom_file


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate(
        {"OrthancPeers": {"conf": ["http://127.0.0.1:9/", "alice", "pw"], "other": ["http://o/"]}}
    )


async def test_configured_peers_and_overrides(gateway: Gateway) -> None:
    client = gateway.client
    assert (await client.get("/peers")).json() == ["conf", "other"]
    expanded = (await client.get("/peers?expand")).json()
    assert expanded["conf"] == {
        "Url": "http://127.0.0.1:9/", "Username": "alice", "Password": None,
        "HttpHeaders": [], "Pkcs11": False, "Timeout": 0,
    }
    assert (await client.get("/peers/conf")).json() == [
        "configuration", "store", "store-straight", "system",
    ]
    put = await client.put("/peers/new", json={"Url": "http://n:8042", "HttpHeaders": {"X": "y"}})
    assert (put.status_code, put.content) == (200, b"")
    assert (await client.get("/peers/new/configuration")).json()["HttpHeaders"] == ["X"]
    # A configured peer can be replaced and deleted; the index keeps the change.
    assert (await client.put("/peers/conf", json=["http://c2/"])).status_code == 200
    assert (await client.get("/peers/conf/configuration")).json()["Url"] == "http://c2/"
    assert (await client.delete("/peers/other")).status_code == 200
    assert (await client.get("/peers")).json() == ["conf", "new"]
    assert await gateway.index.peers.peer_overrides() == {
        "conf": {"Url": "http://c2/", "Username": "", "Password": "", "HttpHeaders": {},
                 "Pkcs11": False, "Timeout": 0},
        "new": {"Url": "http://n:8042/", "Username": "", "Password": "",
                "HttpHeaders": {"X": "y"}, "Pkcs11": False, "Timeout": 0},
        "other": None,
    }


async def test_errors(gateway: Gateway) -> None:
    client = gateway.client
    unknown = await client.get("/peers/nope")
    assert (unknown.status_code, unknown.content) == (404, b"")
    missing = await client.get("/peers/nope/configuration")
    assert missing.status_code == 404
    assert missing.json()["Details"] == "No peer with symbolic name: nope"
    deleted = await client.delete("/peers/nope")
    assert (deleted.status_code, deleted.json()["OrthancStatus"]) == (404, 7)
    bad_url = await client.put("/peers/x", json=["ftp://x/"])
    assert (bad_url.status_code, bad_url.json()["Details"]) == (400, "Bad URL: ftp://x/")
    assert (await client.put("/peers/x", content=b"not json")).status_code == 400
    assert (await client.put("/peers/bad%20name", json=["http://x/"])).status_code == 400
    assert (await client.post("/peers/nope/store", content=b"[]")).status_code == 404
    bad_id = await client.post("/peers/conf/store", content=b'["nope"]')
    assert bad_id.status_code == 400
    unknown_resource = await client.post(
        "/peers/conf/store", content=b'"8a8cf898-ca27c490-d0c7058c-929d0581-2bbf104d"'
    )
    assert (unknown_resource.status_code, unknown_resource.json()["OrthancStatus"]) == (404, 17)


@pytest.fixture
async def workers(gateway: Gateway) -> AsyncIterator[JobWorkers]:
    """The jobs service's workers on the gateway's adapters (synchronous stores wait for them)."""
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


async def test_store_to_a_peer_that_is_down(gateway: Gateway, workers: JobWorkers) -> None:
    answer = await gateway.upload(dicom_file("CT_small.dcm"))
    failed = await gateway.client.post("/peers/conf/store", content=answer["ParentStudy"].encode())
    assert failed.status_code == 500
    body = failed.json()
    assert body["OrthancError"] == "Error in the network protocol"
    assert body["Details"].startswith('Cannot connect to peer "conf" for POST http://127.0.0.1:9/')
    empty = await gateway.client.post("/peers/conf/store", json=[])
    assert empty.json() == {
        "Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
        "InstancesCount": 0, "Peer": ["http://127.0.0.1:9/", "alice", ""], "Size": "0",
        "SizeMB": 0,
    }
    jobs = [await gateway.index.jobs.get_job(j.id) for j in await gateway.index.jobs.list_jobs()]
    assert [(j.type, j.state.value) for j in jobs if j] == [
        ("OrthancPeerStore", "Failure"), ("OrthancPeerStore", "Success"),
    ]
    system = await gateway.client.get("/peers/conf/system")
    assert (system.status_code, system.json()["OrthancStatus"]) == (500, 9)


async def test_asynchronous_store_queues_a_job(gateway: Gateway) -> None:
    answer = await gateway.upload(dicom_file("CT_small.dcm"))
    study = answer["ParentStudy"]
    queued = await gateway.client.post(
        "/peers/conf/store", json={"Resources": [study], "Asynchronous": True, "Priority": 4}
    )
    assert queued.status_code == 200, queued.text
    job_id = queued.json()["ID"]
    assert queued.json() == {"ID": job_id, "Path": f"/jobs/{job_id}"}
    job = await gateway.index.jobs.get_job(job_id)
    assert job is not None
    assert (job.type, job.priority, job.state.value) == ("OrthancPeerStore", 4, "Pending")
    assert job.content["InstancesCount"] == 1
    assert job.content["ParentResources"] == [study]
    assert job.payload["Peer"] == "conf"
    assert job.payload["Instances"] == [answer["ID"]]
