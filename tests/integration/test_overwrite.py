"""OverwriteInstances: a second store of the same instance replaces it and its blob."""

from __future__ import annotations

from io import BytesIO

from dicomfiles import expected_ids, sample_path
from pydicom import dcmread
from servers import Server, blob_keys, wait_until

SERVER_CONFIG = {"OverwriteInstances": True}


def modified_copy(description: str) -> bytes:
    ds = dcmread(sample_path("CT_small.dcm"))
    ds.ImageComments = description
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_overwrite_replaces_instance_and_blob(clean: Server) -> None:
    instance_id = expected_ids(sample_path("CT_small.dcm"))[3]
    with clean.client() as client:
        first = client.post("/instances", content=modified_copy("first"))
        assert first.json()["Status"] == "Success"
        old_uuid = client.get(f"/instances/{instance_id}").json()["FileUuid"]
        second = client.post("/instances", content=modified_copy("second"))
        assert second.status_code == 200 and second.json()["Status"] == "Success"
        instance = client.get(f"/instances/{instance_id}").json()
        assert instance["FileUuid"] != old_uuid
        assert instance["MainDicomTags"]["ImageComments"] == "second"
        stored = dcmread(BytesIO(client.get(f"/instances/{instance_id}/file").content))
        assert stored.ImageComments == "second"
        assert len(client.get("/instances").json()) == 1
        new_instances = [
            c for c in client.get("/changes?limit=1000").json()["Changes"]
            if c["ChangeType"] == "NewInstance"
        ]
        # The replaced instance's change rows went with it, as in Orthanc 1.10.1
        # (measured: only the second store's NewInstance is listed).
        assert len(new_instances) == 1
        assert [c["ChangeType"] for c in client.get("/changes?limit=1000").json()["Changes"]].count("NewPatient") == 1
    wait_until(lambda: blob_keys(clean) == [instance["FileUuid"]], what="old blob removal")
