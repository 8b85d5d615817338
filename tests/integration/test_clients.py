"""Real Orthanc client libraries work against DicomKeep unchanged: pyorthanc and
orthanc-api-client (the orthanc-team's client), in both modes."""

from __future__ import annotations

from pathlib import Path

import pyorthanc
from dicomfiles import expected_ids, sample_path
from orthanc_api_client import OrthancApiClient
from servers import Server
from synthetic import generate_study, write_files


def test_pyorthanc_upload_browse_find_and_delete(clean: Server) -> None:
    client = pyorthanc.Orthanc(clean.url)
    ct = sample_path("CT_small.dcm")
    answer = client.post_instances(ct.read_bytes())
    patient_id, study_id, series_id, instance_id = expected_ids(ct)
    assert answer["ID"] == instance_id
    patients = pyorthanc.find_patients(client)
    assert [p.id_ for p in patients] == [patient_id]
    patient = patients[0]
    assert patient.patient_id == "1CT1"
    [study] = patient.studies
    assert study.id_ == study_id
    [series] = study.series
    assert series.id_ == series_id
    [instance] = series.instances
    assert instance.get_dicom_file_content() == ct.read_bytes()
    assert instance.simplified_tags["PatientID"] == "1CT1"
    found = pyorthanc.find_studies(client, query={"PatientID": "1CT*"})
    assert [s.id_ for s in found] == [study_id]
    assert client.get_system()["Version"] == "1.12.4"
    client.delete_patients_id(patient_id)
    assert client.get_patients() == []


def test_orthanc_api_client_upload_metadata_and_changes(clean: Server, tmp_path: Path) -> None:
    client = OrthancApiClient(clean.url)
    assert client.is_alive()
    files = write_files(generate_study(series=1, instances_per_series=3, seed=31), tmp_path)
    ids = client.upload_folder(tmp_path)
    assert len(ids) == 3
    [study_id] = client.studies.get_all_ids()
    study = client.studies.get(study_id)
    assert study.main_dicom_tags.get("StudyInstanceUID")
    assert len(client.studies.get_instances_ids(study_id)) == len(files)
    client.studies.set_string_metadata(study_id, metadata_name="1024", content="read")
    assert client.studies.get_string_metadata(study_id, metadata_name="1024") == "read"
    changes, seq, done = client.get_changes(since=0, limit=1000)
    assert done and seq > 0
    new_instances = {c.resource_id for c in changes if c.change_type == "NewInstance"}
    assert set(ids) <= new_instances
    assert client.get_statistics().instances_count == 3
    client.studies.delete(study_id)
    assert client.studies.get_all_ids() == []
