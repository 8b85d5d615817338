"""The exports log (`LogExportedResources`, `GET/DELETE /exports`) in both modes.

Resources sent to a modality (a DCMTK storescp) and to a peer (the server
itself) are logged in the index, read back from another replica, paged with
since/limit and cleared, as Orthanc 1.12.4 answers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import pytest
from dicom_peers import StoreScpProcess, storescp
from pydicom import dcmread
from servers import Server, free_port, wait_until
from synthetic import generate_study

STORESCP_PORT = free_port()
SERVER_CONFIG = {
    "LogExportedResources": True,
    "DicomModalities": {"storescp": ["STORESCP", "127.0.0.1", STORESCP_PORT]},
}


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp"), port=STORESCP_PORT) as running:
        yield running


def test_exports_to_modalities_and_peers_are_logged(clean: Server, scp: StoreScpProcess) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=71)
    with clean.client() as client, clean.client(1) as other:
        assert client.delete("/exports").status_code == 200
        assert client.get("/exports").json() == {"Done": True, "Exports": [], "Last": 0}
        for item in study:
            assert client.post("/instances", content=item.data).status_code == 200
        study_id = client.get("/studies").json()[0]
        instance_id = client.get(f"/studies/{study_id}/instances").json()[0]["ID"]
        patient_id = client.get(f"/studies/{study_id}").json()["ParentPatient"]
        sent = client.post("/modalities/storescp/store", json={"Resources": [study_id]})
        assert sent.status_code == 200, sent.text
        wait_until(lambda: len(scp.files()) >= 2, 60, "files at storescp")
        assert client.put("/peers/self", json=[clean.url]).status_code == 200
        sent = client.post("/peers/self/store", json=[instance_id, patient_id])
        assert sent.status_code == 200, sent.text
        # A refused request (unknown resource) logs nothing.
        unknown = "-".join(["0" * 8] * 5)
        assert client.post("/peers/self/store", json=[unknown]).status_code == 404

        page = other.get("/exports").json()
        assert page["Done"] is True and len(page["Exports"]) == 3
        first, second, third = page["Exports"]
        assert page["Last"] == third["Seq"] and first["Seq"] < second["Seq"] < third["Seq"]
        ds = dcmread(BytesIO(study[0].data))
        instance_uid = client.get(f"/instances/{instance_id}").json()["MainDicomTags"]["SOPInstanceUID"]
        assert first == {
            "Seq": first["Seq"], "ResourceType": "Study", "ID": study_id, "Path": f"/studies/{study_id}",
            "RemoteModality": "storescp", "Date": first["Date"],
            "StudyInstanceUID": study[0].study_uid, "PatientID": str(ds.PatientID),
        }
        assert len(first["Date"]) == 15 and first["Date"][8] == "T"
        assert second["ResourceType"] == "Instance" and second["ID"] == instance_id
        assert second["RemoteModality"] == "self" and second["Path"] == f"/instances/{instance_id}"
        assert second["SOPInstanceUID"] == instance_uid
        assert second["SeriesInstanceUID"] == study[0].series_uid
        assert second["StudyInstanceUID"] == study[0].study_uid and second["PatientID"] == str(ds.PatientID)
        assert third["ResourceType"] == "Patient" and set(third) == {
            "Seq", "ResourceType", "ID", "Path", "RemoteModality", "Date", "PatientID"
        }

        paged = client.get(f"/exports?since={first['Seq']}&limit=1").json()
        assert paged == {"Done": False, "Exports": [second], "Last": second["Seq"]}
        assert client.get(f"/exports?since={third['Seq']}").json() == {
            "Done": True, "Exports": [], "Last": third["Seq"]
        }
        assert other.get("/exports?last").json() == {"Done": True, "Exports": [third], "Last": third["Seq"]}

        # The log outlives the resources, as Orthanc's; DELETE clears it for every replica.
        assert client.delete(f"/patients/{patient_id}").status_code == 200
        assert len(other.get("/exports").json()["Exports"]) == 3
        cleared = client.delete("/exports")
        assert cleared.status_code == 200 and cleared.text == ""
        assert other.get("/exports").json() == {"Done": True, "Exports": [], "Last": 0}
        assert client.delete("/peers/self").status_code == 200
