"""Modification and anonymization routes on the embedded adapters (Orthanc 1.12 behaviour)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pydicom
import pytest
from dicomkeep.jobs.usecases import Deps
from dicomkeep.jobs.worker import JobWorkers
from gateway_support import Gateway, dicom_file


@pytest.fixture(autouse=True)
async def workers(gateway: Gateway) -> AsyncIterator[JobWorkers]:
    """The jobs service's workers: every resource modification runs as a job."""
    ctx = gateway.ctx
    running = JobWorkers(
        ctx.index.jobs, Deps(ctx.settings, ctx.index, ctx.blobs, ctx.receiver), concurrency=1,
        history_size=10, poll=0.05,
    )
    running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_instance_modify_answers_a_file_and_stores_nothing(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.post(
        f"/instances/{stored['ID']}/modify",
        json={"Replace": {"StudyDescription": "X"}, "Remove": ["InstitutionName"]},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(response.content))
    original = pydicom.dcmread(io.BytesIO(dicom_file("CT_small.dcm")))
    assert ds.StudyDescription == "X" and "InstitutionName" not in ds
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert ds.SeriesInstanceUID == original.SeriesInstanceUID
    assert (await gateway.client.get("/instances")).json() == [stored["ID"]]


async def test_study_modify_stores_a_copy_with_modified_from(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    study = stored["ParentStudy"]
    response = await gateway.client.post(
        f"/studies/{study}/modify", json={"Replace": {"StudyDescription": "Fixed"}}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["Type"] == "Study" and answer["ID"] != study
    assert answer["PatientID"] == stored["ParentPatient"]
    assert answer["InstancesCount"] == 1 and answer["FailedInstancesCount"] == 0
    assert answer["IsAnonymization"] is False
    copy = (await gateway.client.get(f"/studies/{answer['ID']}")).json()
    assert copy["MainDicomTags"]["StudyDescription"] == "Fixed"
    assert copy["ModifiedFrom"] == study
    instance = (await gateway.client.get(f"/studies/{answer['ID']}/instances")).json()[0]
    assert instance["ModifiedFrom"] == stored["ID"]
    series = (await gateway.client.get(f"/series/{instance['ParentSeries']}")).json()
    assert series["ModifiedFrom"] == stored["ParentSeries"]
    # As Orthanc's ResourceModificationJob: only levels whose ID changed get it.
    patient = (await gateway.client.get(f"/patients/{stored['ParentPatient']}")).json()
    assert "ModifiedFrom" not in patient


async def test_anonymize_study_names_the_patient_anonymized(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.post(f"/studies/{stored['ParentStudy']}/anonymize", json={})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["IsAnonymization"] is True and answer["PatientID"] != stored["ParentPatient"]
    patient = (await gateway.client.get(f"/patients/{answer['PatientID']}")).json()
    assert patient["MainDicomTags"]["PatientName"] == "Anonymized1"
    assert patient["AnonymizedFrom"] == stored["ParentPatient"]
    instance = (await gateway.client.get(f"/studies/{answer['ID']}/instances")).json()[0]
    tags = (await gateway.client.get(f"/instances/{instance['ID']}/simplified-tags")).json()
    assert tags["PatientIdentityRemoved"] == "YES"
    assert "InstitutionName" not in tags and tags["StudyDate"] == ""


@pytest.mark.parametrize(
    ("url_level", "body", "status", "details"),
    [
        ("instances", {"Replace": {"Foo": "x"}}, 500, None),
        ("studies", {"Replace": {"PatientID": "x"}}, 400,
         'Marking tag "PatientID" as to be replaced requires the "Force" option to be set to true'),
        ("instances", {"Remove": ["SOPInstanceUID"]}, 400,
         'Marking tag "SOPInstanceUID" as to be removed requires the "Force" option to be set to true'),
        ("instances", {"Force": "yes"}, 400, 'Member "Force" should be a Boolean value'),
        ("patients", {"Replace": {"PatientName": "X"}}, 400,
         "When modifying a patient, her PatientID is required to be modified"),
        ("studies", {"Transcode": "1.2.840.10008.1.2.4.50"}, 400, None),
    ],
)  # fmt: skip
async def test_bad_modifications_answer_orthanc_errors_and_store_nothing(
    gateway: Gateway, url_level: str, body: dict[str, object], status: int, details: str | None
) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    ids = {"instances": stored["ID"], "studies": stored["ParentStudy"], "patients": stored["ParentPatient"]}
    response = await gateway.client.post(f"/{url_level}/{ids[url_level]}/modify", json=body)
    assert response.status_code == status, response.text
    if details is not None:
        assert response.json()["Details"] == details
    assert (await gateway.client.get("/instances")).json() == [stored["ID"]]


async def test_unknown_tag_is_orthanc_unknown_dicom_tag(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.post(
        f"/instances/{stored['ID']}/modify", json={"Replace": {"Foo": "x"}}
    )
    assert response.json()["OrthancStatus"] == 27
    assert response.json()["OrthancError"] == "Unknown DICOM tag"


async def test_keep_source_false_deletes_the_original(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.post(
        f"/series/{stored['ParentSeries']}/modify",
        json={"Replace": {"SeriesDescription": "moved"}, "KeepSource": False},
    )
    assert response.status_code == 200, response.text
    instances = (await gateway.client.get("/instances")).json()
    assert stored["ID"] not in instances and len(instances) == 1


async def test_transcode_to_rle_and_back(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.post(
        f"/instances/{stored['ID']}/modify", json={"Transcode": "1.2.840.10008.1.2.5"}
    )
    assert response.status_code == 200, response.text
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    original = pydicom.dcmread(io.BytesIO(dicom_file("CT_small.dcm")))
    assert (ds.pixel_array == original.pixel_array).all()


async def test_bulk_modify_and_anonymize_answer_every_level(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    mr = await gateway.upload(dicom_file("MR_small.dcm"))
    response = await gateway.client.post(
        "/tools/bulk-modify",
        json={"Resources": [ct["ID"], mr["ParentStudy"]], "Replace": {"StudyDescription": "B"}},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["InstancesCount"] == 2
    types = [item["Type"] for item in answer["Resources"]]
    assert types.count("Instance") == 2 and "Patient" in types
    response = await gateway.client.post("/tools/bulk-anonymize", json={"Resources": [ct["ParentPatient"]]})
    assert response.status_code == 200, response.text
    assert response.json()["IsAnonymization"] is True
    bad = await gateway.client.post("/tools/bulk-modify", json={"Resources": "x"})
    assert bad.status_code == 400
    assert bad.json()["Details"] == "List of strings expected in field: Resources"


async def test_asynchronous_modification_runs_as_a_job(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    await gateway.upload(dicom_file("MR_small.dcm"))
    response = await gateway.client.post(
        f"/studies/{ct['ParentStudy']}/anonymize", json={"Asynchronous": True}
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["ID"]
    assert response.json()["Path"] == f"/jobs/{job_id}"
    for _ in range(200):
        job = (await gateway.client.get(f"/jobs/{job_id}")).json()
        if job["State"] in ("Success", "Failure"):
            break
        await asyncio.sleep(0.05)
    assert job["State"] == "Success", job
    assert job["Type"] == "ResourceModification" and job["Progress"] == 100
    content = job["Content"]
    assert content["IsAnonymization"] is True and content["InstancesCount"] == 1
    copy = (await gateway.client.get(f"/studies/{content['ID']}")).json()
    assert copy["AnonymizedFrom"] == ct["ParentStudy"]
    assert copy["ParentPatient"] == content["PatientID"]
    bulk = await gateway.client.post(
        "/tools/bulk-modify",
        json={"Resources": [ct["ID"]], "Replace": {"StudyDescription": "J"}, "Asynchronous": True},
    )
    bulk_id = bulk.json()["ID"]
    for _ in range(200):
        job = (await gateway.client.get(f"/jobs/{bulk_id}")).json()
        if job["State"] in ("Success", "Failure"):
            break
        await asyncio.sleep(0.05)
    assert job["State"] == "Success", job
    assert {item["Type"] for item in job["Content"]["Resources"]} == {"Instance", "Series", "Study", "Patient"}


async def test_synchronous_modification_is_a_job_in_the_history(gateway: Gateway) -> None:
    """As Orthanc's SubmitAndWait: the answer is the job's content, and the job is listed."""
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    before = set((await gateway.client.get("/jobs")).json())
    response = await gateway.client.post(
        f"/studies/{ct['ParentStudy']}/modify", json={"Replace": {"StudyDescription": "S"}}
    )
    assert response.status_code == 200, response.text
    jobs = set((await gateway.client.get("/jobs")).json()) - before
    assert len(jobs) == 1
    job = (await gateway.client.get(f"/jobs/{jobs.pop()}")).json()
    assert job["Type"] == "ResourceModification" and job["State"] == "Success"
    assert job["Content"] == response.json()
    copy = response.json()["ID"]
    instance = (await gateway.client.get(f"/studies/{copy}/instances")).json()[0]["ID"]
    origin = await gateway.client.get(f"/instances/{instance}/metadata/Origin")
    assert origin.text == "RestApi"
    assert (await gateway.client.get(f"/instances/{instance}/metadata/RemoteIP")).text != ""


async def test_concurrent_anonymizations_draw_distinct_names(gateway: Gateway) -> None:
    """The Anonymized<N> counter is one index transaction per request (no two alike)."""
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    answers = await asyncio.gather(*(
        gateway.client.post(f"/instances/{ct['ID']}/anonymize", json={}) for _ in range(8)
    ))
    names = {str(pydicom.dcmread(io.BytesIO(a.content)).PatientName) for a in answers}
    assert names == {f"Anonymized{n}" for n in range(1, 9)}
