"""Changes log (§6), metadata reads (§3) and protection (§8)."""

from __future__ import annotations

import hashlib

import pytest
from dicomkeep.common.ids import Level
from dicomkeep.common.settings import Settings
from gateway_support import Gateway, dicom_file


async def test_changes_paging(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    everything = (await client.get("/changes")).json()
    assert [c["ChangeType"] for c in everything["Changes"]] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient",
    ]  # fmt: skip
    assert [c["Seq"] for c in everything["Changes"]] == [1, 2, 3, 4]
    assert (everything["Done"], everything["Last"]) == (True, 4)
    first = everything["Changes"][0]
    assert set(first) == {"ChangeType", "Date", "ID", "Path", "ResourceType", "Seq"}
    assert (first["ID"], first["Path"], first["ResourceType"]) == (
        stored["ID"], stored["Path"], "Instance",
    )  # fmt: skip
    page = (await client.get("/changes?limit=2")).json()
    assert ([c["Seq"] for c in page["Changes"]], page["Done"], page["Last"]) == ([1, 2], False, 2)
    page = (await client.get("/changes?since=2&limit=2")).json()
    assert ([c["Seq"] for c in page["Changes"]], page["Done"], page["Last"]) == ([3, 4], True, 4)
    reset = (await client.get("/changes?since=abc&limit=1")).json()
    assert len(reset["Changes"]) == 4
    last = (await client.get("/changes?last")).json()
    assert ([c["Seq"] for c in last["Changes"]], last["Done"], last["Last"]) == ([4], True, 4)
    deleted = await client.delete("/changes")
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert (await client.get("/changes")).json() == {"Changes": [], "Done": True, "Last": 4}


@pytest.mark.parametrize("settings", [Settings(user_metadata={"Sample": 1024})])
async def test_metadata_list_and_expand(gateway: Gateway) -> None:
    instance = (await gateway.upload(dicom_file("CT_small.dcm")))["ID"]
    await gateway.index.set_metadata(Level.INSTANCE, instance, 1024, "user", None, check_revisions=False)
    await gateway.index.set_metadata(Level.INSTANCE, instance, 2000, "other", None, check_revisions=False)
    client = gateway.client
    names = (await client.get(f"/instances/{instance}/metadata")).json()
    assert names == [
        "IndexInSeries", "ReceptionDate", "RemoteAET", "Origin", "TransferSyntax", "SopClassUid",
        "RemoteIP", "HttpUsername", "PixelDataOffset", "MainDicomTagsSignature", "Sample", "2000",
    ]  # fmt: skip
    expanded = (await client.get(f"/instances/{instance}/metadata?expand")).json()
    assert expanded["Origin"] == "RestApi"
    assert expanded["RemoteIP"] == "127.0.0.1"
    assert expanded["HttpUsername"] == ""
    assert expanded["RemoteAET"] == ""
    assert (expanded["Sample"], expanded["2000"]) == ("user", "other")
    numeric = (await client.get(f"/instances/{instance}/metadata?numeric")).json()
    assert numeric == [1, 2, 3, 8, 9, 10, 11, 13, 14, 15, 1024, 2000]
    unknown = await client.get("/instances/nope/metadata")
    assert unknown.status_code == 404
    assert unknown.json()["OrthancError"] == "Unknown resource"


async def test_metadata_value_etag_and_not_modified(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    instance = stored["ID"]
    client = gateway.client
    response = await client.get(f"/instances/{instance}/metadata/Origin")
    assert response.status_code == 200
    assert response.text == "RestApi"
    assert response.headers["content-type"] == "text/plain"
    etag = f'"0-{hashlib.md5(b"RestApi").hexdigest()}"'
    assert response.headers["etag"] == etag
    assert (await client.get(f"/instances/{instance}/metadata/8")).text == "RestApi"
    cached = await client.get(f"/instances/{instance}/metadata/Origin", headers={"If-None-Match": etag})
    assert (cached.status_code, cached.content) == (304, b"")
    absent = await client.get(f"/instances/{instance}/metadata/CalledAET")
    assert (absent.status_code, absent.content) == (404, b"")
    unnamed = await client.get(f"/instances/{instance}/metadata/NoSuchName")
    assert unnamed.status_code == 404
    assert unnamed.json()["OrthancStatus"] == 7
    series = await client.get(f"/series/{stored['ParentSeries']}/metadata/RemoteAET")
    assert (series.status_code, series.text) == (200, "")
    last_update = await client.get(f"/patients/{stored['ParentPatient']}/metadata/LastUpdate")
    assert len(last_update.text) == 15


async def test_protection(gateway: Gateway) -> None:
    patient = (await gateway.upload(dicom_file("CT_small.dcm")))["ParentPatient"]
    client = gateway.client
    path = f"/patients/{patient}/protected"
    response = await client.get(path)
    assert (response.text, response.headers["content-type"]) == ("0", "text/plain")
    put = await client.put(path, content=b"1")
    assert (put.status_code, put.content) == (200, b"")
    assert (await client.get(path)).text == "1"
    assert (await client.put(path, content=b" false\n")).status_code == 200
    assert (await client.get(path)).text == "0"
    assert (await client.put(path, content=b"true")).status_code == 200
    assert (await client.get(path)).text == "1"
    bad = await client.put(path, content=b"yes")
    assert bad.status_code == 400
    assert bad.json()["OrthancError"] == "Bad file format"
    assert (await client.get("/patients/nope/protected")).status_code == 404
    assert (await client.put("/patients/nope/protected", content=b"1")).status_code == 404
