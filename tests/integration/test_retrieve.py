"""Retrieve: C-MOVE/C-GET SCP (SynchronousCMove true), modalities, store to a modality,
query/retrieve, in both modes.

A DCMTK storescp started by the module is the modality `storescp` of the
configuration; movescu/getscu (DCMTK) and pynetdicom SCUs drive DicomKeep.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from dicom_peers import StoreScpProcess, storescp
from dicomfiles import sample_path
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove,
)
from servers import Server, dcmtk, free_port, wait_until
from synthetic import GeneratedInstance, generate_study, write_files

STORESCP_PORT = free_port()
MOVER = "MOVER"
SERVER_CONFIG = {
    "DicomModalities": {
        "storescp": ["STORESCP", "127.0.0.1", STORESCP_PORT],
        "mover": {"AET": MOVER, "Host": "127.0.0.1", "Port": 1},
    },
    "SynchronousCMove": True,
}


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp"), port=STORESCP_PORT) as running:
        yield running


@pytest.fixture
def target(scp: StoreScpProcess) -> StoreScpProcess:
    scp.clear()
    return scp


def store(server: Server, study: list[GeneratedInstance], folder: Path) -> None:
    files = write_files(study, folder)
    result = subprocess.run(
        [dcmtk("storescu"), "-aec", server.aet, "127.0.0.1", str(server.dicom_port), *map(str, files)],
        capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr


def received(scp: StoreScpProcess, count: int, timeout: float = 60) -> set[str]:
    """Wait until `count` files arrived; return their SOP Instance UIDs."""
    wait_until(lambda: len(scp.files()) >= count, timeout, f"{count} files at storescp")

    def uids() -> set[str] | None:
        try:
            return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.files()}
        except Exception:  # a file still being written
            return None

    wait_until(lambda: uids() is not None, 10, "complete files")
    found = uids()
    assert found is not None
    return found


def movescu(
    server: Server, *keys: str, destination: str = "STORESCP", model: str = "-S"
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK's movescu (`-S` study root, `-P` patient root) as MOVER."""
    args = [dcmtk("movescu"), model, "-aet", MOVER, "-aec", server.aet, "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return subprocess.run(
        [*args, "127.0.0.1", str(server.dicom_port)], capture_output=True, text=True, timeout=300
    )


def pynetdicom_move(
    server: Server, identifier: Dataset, destination: str = "STORESCP", calling: str = MOVER
) -> list[Dataset]:
    """C-MOVE with pynetdicom; return every response status (Pending ones included)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    if not assoc.is_established:
        return []
    try:
        return [
            status
            for status, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove)
        ]
    finally:
        if assoc.is_established:
            assoc.release()


def study_query(study: list[GeneratedInstance]) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study[0].study_uid
    return query


def test_echo_and_modalities_shared_by_replicas(server: Server, scp: StoreScpProcess) -> None:
    with server.client() as first, server.client(1) as second:
        assert first.post("/modalities/storescp/echo", content=b"").json() == {}
        assert first.put("/modalities/temp", json=["TEMP", "127.0.0.1", 1234]).status_code == 200
        assert second.get("/modalities").json() == ["mover", "storescp", "temp"]
        assert second.get("/modalities/temp/configuration").json()["AET"] == "TEMP"
        assert second.delete("/modalities/temp").status_code == 200
        assert first.get("/modalities").json() == ["mover", "storescp"]
        assert first.post("/modalities/nope/echo", content=b"").status_code == 404


def test_movescu_study_with_pending_counts(clean: Server, target: StoreScpProcess, tmp_path: Path) -> None:
    study = generate_study(series=2, instances_per_series=3, seed=31)
    store(clean, study, tmp_path)
    result = movescu(clean, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study[0].study_uid}")
    assert result.returncode == 0, result.stderr
    assert received(target, 6) == {item.sop_uid for item in study}
    target.clear()
    statuses = pynetdicom_move(clean, study_query(study))
    pending = [s for s in statuses if s.Status == 0xFF00]
    assert [s.NumberOfCompletedSuboperations for s in pending] == [1, 2, 3, 4, 5, 6]
    assert [s.NumberOfRemainingSuboperations for s in pending] == [5, 4, 3, 2, 1, 0]
    final = statuses[-1]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 6
    assert final.NumberOfFailedSuboperations == 0
    assert received(target, 6) == {item.sop_uid for item in study}


def test_move_by_accession_number_patient_and_series(
    clean: Server, target: StoreScpProcess, tmp_path: Path
) -> None:
    study = generate_study(series=2, instances_per_series=2, seed=39)
    store(clean, study, tmp_path)
    accession = str(dcmread(BytesIO(study[0].data)).AccessionNumber)
    for model, keys, count in (
        ("-S", ["QueryRetrieveLevel=STUDY", f"AccessionNumber={accession}", "StudyInstanceUID=9.9"], 4),
        ("-P", ["QueryRetrieveLevel=PATIENT", f"PatientID={study[0].patient_id}"], 4),
        ("-S", ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={study[0].series_uid}"], 2),
    ):
        target.clear()
        result = movescu(clean, *keys, model=model)
        assert result.returncode == 0, result.stderr
        assert len(received(target, count)) == count, keys


def test_move_of_a_100_instance_study_arrives_complete(
    clean: Server, target: StoreScpProcess, tmp_path: Path
) -> None:
    study = generate_study(series=2, instances_per_series=50, seed=32)
    store(clean, study, tmp_path)
    result = movescu(clean, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study[0].study_uid}")
    assert result.returncode == 0, result.stderr
    assert received(target, 100) == {item.sop_uid for item in study}
    assert len(target.files()) == 100


def test_getscu(clean: Server, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=4, seed=33)
    store(clean, study, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [dcmtk("getscu"), "-S", "-aet", MOVER, "-aec", clean.aet, "-od", str(out),
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study[0].study_uid}",
         "-k", f"SeriesInstanceUID={study[0].series_uid}", "127.0.0.1", str(clean.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in out.iterdir()}
    assert set(got) == {item.sop_uid for item in study}
    original = dcmread(BytesIO(study[0].data))
    assert got[study[0].sop_uid].PixelData == original.PixelData


def test_pynetdicom_get(clean: Server, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=3, seed=34)
    store(clean, study, tmp_path)
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    ae = AE(ae_title=MOVER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1", clean.dicom_port, ae_title=clean.aet,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        statuses = [s for s, _ in assoc.send_c_get(study_query(study), StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 3
    assert sorted(got) == sorted(item.sop_uid for item in study)


def test_move_errors(clean: Server, target: StoreScpProcess, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=35)
    store(clean, study, tmp_path)
    # Unknown move destination.
    assert [s.Status for s in pynetdicom_move(clean, study_query(study), destination="NOWHERE")] == [0xA801]
    result = movescu(clean, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study[0].study_uid}", destination="NOWHERE")
    assert "MoveDestinationUnknown" in result.stderr
    # Nothing matched, no identifier, unknown level.
    unknown = Dataset()
    unknown.QueryRetrieveLevel = "STUDY"
    unknown.StudyInstanceUID = "1.2.3.4.5.6.7.8.9"
    assert [s.Status for s in pynetdicom_move(clean, unknown)] == [0xC000]
    empty = Dataset()
    empty.QueryRetrieveLevel = "STUDY"
    empty.StudyInstanceUID = ""
    assert [s.Status for s in pynetdicom_move(clean, empty)] == [0xC000]
    galaxy = Dataset()
    galaxy.QueryRetrieveLevel = "GALAXY"
    galaxy.StudyInstanceUID = study[0].study_uid
    assert [s.Status for s in pynetdicom_move(clean, galaxy)] == [0xC000]
    # A calling AET that is no modality may not move (DicomAlwaysAllowMove false).
    refused = pynetdicom_move(clean, study_query(study), calling="STRANGER")
    assert all("Status" not in status for status in refused)  # aborted: no response
    assert target.files() == []


def test_partial_failure_ends_with_warning(clean: Server, target: StoreScpProcess, tmp_path: Path) -> None:
    """storescp refuses JPEG: one sub-operation fails, the final status says so."""
    study = generate_study(series=1, instances_per_series=1, seed=36)
    store(clean, study, tmp_path)
    jpeg = sample_path("SC_rgb_jpeg_dcmtk.dcm")
    with clean.client() as client:
        assert client.post("/instances", content=jpeg.read_bytes()).status_code == 200
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = [study[0].sop_uid, str(dcmread(jpeg).SOPInstanceUID)]
    statuses = pynetdicom_move(clean, query)
    final = statuses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert received(target, 1) == {study[0].sop_uid}


def test_parallel_moves_complete(clean: Server, target: StoreScpProcess, tmp_path: Path) -> None:
    """4 C-MOVEs at once: 4 parallel C-STORE associations from DicomKeep, none stalls."""
    studies = [generate_study(series=1, instances_per_series=25, seed=40 + n) for n in range(4)]
    for n, study in enumerate(studies):
        store(clean, study, tmp_path / str(n))
    finals: list[Dataset] = []

    def move(study: list[GeneratedInstance]) -> None:
        finals.append(pynetdicom_move(clean, study_query(study))[-1])

    threads = [threading.Thread(target=move, args=(study,)) for study in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert [f.Status for f in finals] == [0x0000] * 4
    assert all(f.NumberOfCompletedSuboperations == 25 for f in finals)
    assert received(target, 100) == {item.sop_uid for study in studies for item in study}


def test_store_to_modality_sync_and_async(clean: Server, target: StoreScpProcess, tmp_path: Path) -> None:
    study = generate_study(series=2, instances_per_series=2, seed=37)
    store(clean, study, tmp_path)
    with clean.client() as client, clean.client(1) as other:
        study_id = client.get("/studies").json()[0]
        answer = client.post("/modalities/storescp/store", content=study_id.encode())
        assert answer.status_code == 200, answer.text
        assert answer.json()["InstancesCount"] == 4 and answer.json()["RemoteAet"] == "STORESCP"
        assert received(target, 4) == {item.sop_uid for item in study}
        target.clear()
        queued = client.post("/modalities/storescp/store", json={"Resources": [study_id], "Synchronous": False}).json()
        wait_until(lambda: other.get(f"/jobs/{queued['ID']}").json()["State"] == "Success", 60, "store job")
        job = other.get(f"/jobs/{queued['ID']}").json()
        assert job["Type"] == "DicomModalityStore" and job["Progress"] == 100
        assert job["Content"]["ParentResources"] == [study_id]
        assert received(target, 4) == {item.sop_uid for item in study}


def test_query_and_retrieve_from_dicomkeep_itself(
    clean: Server, target: StoreScpProcess, tmp_path: Path
) -> None:
    study = generate_study(series=1, instances_per_series=3, seed=38)
    store(clean, study, tmp_path)
    with clean.client() as client, clean.client(1) as other:
        assert client.put("/modalities/self", json=[clean.aet, "127.0.0.1", clean.dicom_port]).status_code == 200
        answer = client.post(
            "/modalities/self/query",
            json={"Level": "Study", "Query": {"PatientID": study[0].patient_id, "StudyDescription": ""}},
        )
        assert answer.status_code == 200, answer.text
        query_id = answer.json()["ID"]
        assert answer.json()["Path"] == f"/queries/{query_id}"
        assert other.get(f"/queries/{query_id}/answers").json() == ["0"]
        assert other.get(f"/queries/{query_id}/level").json() == "Study"
        assert other.get(f"/queries/{query_id}/modality").json() == "self"
        content = other.get(f"/queries/{query_id}/answers/0/content?simplify").json()
        assert content["StudyInstanceUID"] == study[0].study_uid
        # Orthanc's template of return keys at study level (issue 11, item 10).
        accession = str(dcmread(BytesIO(study[0].data)).AccessionNumber)
        assert content["AccessionNumber"] == accession
        assert content["PatientID"] == study[0].patient_id
        full = other.get(f"/queries/{query_id}/answers/0/content").json()
        assert full["0020,000d"]["Value"] == study[0].study_uid
        # Drill down (Orthanc 1.5+): a new C-FIND at a lower level for the answer's identifiers.
        assert "query-series" in other.get(f"/queries/{query_id}/answers/0").json()
        series = other.post(f"/queries/{query_id}/answers/0/query-series", json={})
        assert series.status_code == 200, series.text
        series_id = series.json()["ID"]
        assert series.json() == {"ID": series_id, "Path": f"/queries/{series_id}"}
        assert client.get(f"/queries/{series_id}/level").json() == "Series"
        assert client.get(f"/queries/{series_id}/modality").json() == "self"
        assert client.get(f"/queries/{series_id}/query").json()["StudyInstanceUID"] == study[0].study_uid
        series_answers = client.get(f"/queries/{series_id}/answers?expand&simplify").json()
        assert [a["SeriesInstanceUID"] for a in series_answers] == [study[0].series_uid]
        instances = other.post(
            f"/queries/{series_id}/answers/0/query-instances", json={"Query": {"0008,0018": study[1].sop_uid}}
        ).json()
        found = client.get(f"/queries/{instances['ID']}/answers?expand&simplify").json()
        assert [a["SOPInstanceUID"] for a in found] == [study[1].sop_uid]
        assert client.get(f"/queries/{instances['ID']}/level").json() == "Instance"
        every = client.post(f"/queries/{query_id}/answers/0/query-instances", json={}).json()
        assert len(client.get(f"/queries/{every['ID']}/answers").json()) == 3
        # Studies of a study answer: not a drill-down Orthanc allows (404), nor an empty body.
        assert client.post(f"/queries/{query_id}/answers/0/query-studies", json={}).status_code == 404
        assert client.post(f"/queries/{query_id}/answers/0/query-series").status_code == 400
        bad = client.post(f"/queries/{query_id}/answers/0/query-series", json={"Query": ["x"]})
        assert bad.status_code == 400 and bad.json()["HttpStatus"] == 400
        # No such answer (400 Parameter out of range) or query (404), as Orthanc.
        assert client.post(f"/queries/{query_id}/answers/7/query-series", json={}).status_code == 400
        assert client.post("/queries/nope/answers/0/query-series", json={}).status_code == 404
        assert len(client.get("/queries").json()) == 4  # the refused drill-downs kept nothing
        retrieved = other.post(f"/queries/{query_id}/retrieve", json={"TargetAet": "STORESCP"})
        assert retrieved.status_code == 200, retrieved.text
        assert retrieved.json()["TargetAet"] == "STORESCP"
        assert received(target, 3) == {item.sop_uid for item in study}
        target.clear()
        move = client.post(
            "/modalities/self/move",
            json={"Level": "Study", "Resources": [{"StudyInstanceUID": study[0].study_uid}],
                  "TargetAet": "STORESCP", "Asynchronous": True},
        ).json()
        wait_until(lambda: other.get(f"/jobs/{move['ID']}").json()["State"] == "Success", 60, "move job")
        moved = other.get(f"/jobs/{move['ID']}").json()
        assert moved["Type"] == "DicomMoveScu"
        # Orthanc's Content.Query: identifiers keyed by tag (issue 11, item 12).
        assert moved["Content"]["Query"] == [{"0008,0052": "STUDY", "0020,000d": study[0].study_uid}]
        assert received(target, 3) == {item.sop_uid for item in study}
        # A failing C-MOVE (unknown target) fails the job: 500 for a synchronous call.
        failed = client.post("/queries/" + query_id + "/answers/0/retrieve", content=b"NOWHERE")
        assert failed.status_code == 500 and failed.json()["OrthancStatus"] == 9
        assert client.delete(f"/queries/{query_id}").status_code == 200
        assert other.get(f"/queries/{query_id}/answers").status_code == 404
        assert client.delete("/modalities/self").status_code == 200


def test_move_study_by_accession_number_with_empty_or_absent_study_uid(
    clean: Server, target: StoreScpProcess, tmp_path: Path
) -> None:
    """Orthanc moves the studies of a non-empty AccessionNumber; an empty StudyInstanceUID
    is a universal match, not a failure (issue 11, item 11)."""
    study = generate_study(series=1, instances_per_series=2, seed=41)
    store(clean, study, tmp_path)
    accession = str(dcmread(BytesIO(study[0].data)).AccessionNumber)
    for keys in (
        ["QueryRetrieveLevel=STUDY", f"AccessionNumber={accession}", "StudyInstanceUID="],
        ["QueryRetrieveLevel=STUDY", f"AccessionNumber={accession}"],
        ["QueryRetrieveLevel=STUDY", f"AccessionNumber={accession}", "StudyInstanceUID=", "PatientID="],
    ):
        target.clear()
        result = movescu(clean, *keys)
        assert result.returncode == 0, result.stderr
        assert received(target, 2) == {item.sop_uid for item in study}, keys
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.AccessionNumber = accession
    identifier.StudyInstanceUID = ""
    target.clear()
    statuses = pynetdicom_move(clean, identifier)
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == 2
