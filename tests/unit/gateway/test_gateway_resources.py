"""GET/DELETE of resources: exact shapes, IDs, lists, relatives, statistics."""

from __future__ import annotations

import io

import pydicom
from dicomkeep.common.ids import Level
from gateway_support import Gateway, dicom_file, orthanc_id, variant

CT_PATIENT = "1CT1"
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_SOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"


def ct_ids() -> tuple[str, str, str, str]:
    return (
        orthanc_id(CT_PATIENT),
        orthanc_id(CT_PATIENT, CT_STUDY),
        orthanc_id(CT_PATIENT, CT_STUDY, CT_SERIES),
        orthanc_id(CT_PATIENT, CT_STUDY, CT_SERIES, CT_SOP),
    )


def test_ct_small_uids_are_the_ones_hashed() -> None:
    dataset = pydicom.dcmread(io.BytesIO(dicom_file("CT_small.dcm")))
    assert (
        dataset.PatientID,
        dataset.StudyInstanceUID,
        dataset.SeriesInstanceUID,
        dataset.SOPInstanceUID,
    ) == (CT_PATIENT, CT_STUDY, CT_SERIES, CT_SOP)


async def test_store_answer_uses_orthanc_ids(gateway: Gateway) -> None:
    patient, study, series, instance = ct_ids()
    answer = await gateway.upload(dicom_file("CT_small.dcm"))
    assert answer == {
        "ID": instance,
        "ParentPatient": patient,
        "ParentSeries": series,
        "ParentStudy": study,
        "Path": f"/instances/{instance}",
        "Status": "Success",
    }


async def test_patient_shape(gateway: Gateway) -> None:
    patient, study, _, _ = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.get(f"/patients/{patient}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {
        "ID", "Type", "Studies", "MainDicomTags", "IsStable", "LastUpdate", "Labels",
    }  # fmt: skip
    assert body["ID"] == patient
    assert body["Type"] == "Patient"
    assert body["Studies"] == [study]
    assert body["MainDicomTags"]["PatientID"] == CT_PATIENT
    assert body["MainDicomTags"]["PatientName"] == "CompressedSamples^CT1"
    assert body["Labels"] == []
    # Unstable from the store until its StablePatient change (ORTHANC_API.md §7).
    assert body["IsStable"] is False
    assert len(body["LastUpdate"]) == 15 and body["LastUpdate"][8] == "T"


async def test_study_shape(gateway: Gateway) -> None:
    patient, study, series, _ = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    body = (await gateway.client.get(f"/studies/{study}")).json()
    assert set(body) == {
        "ID", "Type", "ParentPatient", "Series", "MainDicomTags", "PatientMainDicomTags",
        "IsStable", "LastUpdate", "Labels",
    }  # fmt: skip
    assert body["Type"] == "Study"
    assert body["ParentPatient"] == patient
    assert body["Series"] == [series]
    assert body["MainDicomTags"]["StudyInstanceUID"] == CT_STUDY
    assert "PatientID" not in body["MainDicomTags"]
    assert body["PatientMainDicomTags"]["PatientID"] == CT_PATIENT


async def test_series_shape_and_stability(gateway: Gateway) -> None:
    _, study, series, instance = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    body = (await gateway.client.get(f"/series/{series}")).json()
    assert set(body) == {
        "ID", "Type", "ParentStudy", "Instances", "MainDicomTags", "IsStable", "LastUpdate",
        "ExpectedNumberOfInstances", "Status", "Labels",
    }  # fmt: skip
    assert body["Type"] == "Series"
    assert body["ParentStudy"] == study
    assert body["Instances"] == [instance]
    assert body["MainDicomTags"]["Modality"] == "CT"
    assert body["IsStable"] is False
    assert body["ExpectedNumberOfInstances"] is None
    assert body["Status"] == "Unknown"
    study_body = (await gateway.client.get(f"/studies/{study}")).json()
    assert study_body["IsStable"] is False  # the index marks all parents unstable


async def test_instance_shape(gateway: Gateway) -> None:
    _, _, series, instance = ct_ids()
    data = dicom_file("CT_small.dcm")
    await gateway.upload(data)
    body = (await gateway.client.get(f"/instances/{instance}")).json()
    assert set(body) == {
        "ID", "Type", "ParentSeries", "MainDicomTags", "FileSize", "FileUuid",
        "IndexInSeries", "Labels",
    }  # fmt: skip
    assert body["Type"] == "Instance"
    assert body["ParentSeries"] == series
    assert body["FileSize"] == len(data)
    assert len(body["FileUuid"]) == 36
    assert body["IndexInSeries"] == 1
    assert body["MainDicomTags"]["SOPInstanceUID"] == CT_SOP


async def test_modified_and_anonymized_from_appear_with_their_metadata(gateway: Gateway) -> None:
    patient, _, _, _ = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    await gateway.index.set_metadata(Level.PATIENT, patient, 5, "source-a", None, check_revisions=False)
    await gateway.index.set_metadata(Level.PATIENT, patient, 6, "source-b", None, check_revisions=False)
    body = (await gateway.client.get(f"/patients/{patient}")).json()
    assert body["ModifiedFrom"] == "source-a"
    assert body["AnonymizedFrom"] == "source-b"


async def test_series_status_follows_expected_count(gateway: Gateway) -> None:
    first = variant(CardiacNumberOfImages="2", InstanceNumber="1")
    second = variant(CardiacNumberOfImages="2", InstanceNumber="2", SOPInstanceUID="1.2.3.4.5.6")
    series = (await gateway.upload(first))["ParentSeries"]
    body = (await gateway.client.get(f"/series/{series}")).json()
    assert (body["ExpectedNumberOfInstances"], body["Status"]) == (2, "Missing")
    await gateway.upload(second)
    body = (await gateway.client.get(f"/series/{series}")).json()
    assert (body["ExpectedNumberOfInstances"], body["Status"]) == (2, "Complete")


async def test_unknown_or_wrong_level_id_is_an_empty_404(gateway: Gateway) -> None:
    patient, _, _, _ = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    for path in (f"/studies/{patient}", "/patients/nope", f"/studies/{patient}/patient"):
        response = await gateway.client.get(path)
        assert response.status_code == 404
        assert response.content == b""


async def test_lists_expand_and_paging(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    mr = await gateway.upload(dicom_file("MR_small.dcm"))
    client = gateway.client
    patients = [ct["ParentPatient"], mr["ParentPatient"]]
    assert (await client.get("/patients")).json() == patients
    assert (await client.get("/patients?expand=false")).json() == patients
    assert (await client.get("/patients?since=1&limit=1")).json() == [patients[1]]
    assert (await client.get("/patients?since=0&limit=0")).json() == []
    expanded = (await client.get("/instances?expand")).json()
    assert [item["ID"] for item in expanded] == [ct["ID"], mr["ID"]]
    assert expanded[0]["Type"] == "Instance"
    for bad in ("/patients?since=1", "/patients?limit=1", "/patients?since=x&limit=1"):
        response = await client.get(bad)
        assert response.status_code == 400
        assert response.json()["OrthancError"] == "Bad request"


async def test_boolean_arguments(gateway: Gateway) -> None:
    await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    for value in ("", "=true", "=1"):
        assert isinstance((await client.get(f"/studies?expand{value}")).json()[0], dict)
    for value in ("=false", "=0"):
        assert isinstance((await client.get(f"/studies?expand{value}")).json()[0], str)
    response = await client.get("/studies?expand=yes")
    assert response.status_code == 400
    assert response.json()["HttpStatus"] == 400


async def test_tag_formats_of_expanded_objects(gateway: Gateway) -> None:
    _, study, _, _ = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    default = (await client.get(f"/studies/{study}")).json()["MainDicomTags"]
    short = (await client.get(f"/studies/{study}?short")).json()["MainDicomTags"]
    full = (await client.get("/studies?expand&full")).json()[0]["MainDicomTags"]
    assert default["StudyInstanceUID"] == CT_STUDY
    assert short["0020,000d"] == CT_STUDY
    assert full["0020,000d"] == {"Name": "StudyInstanceUID", "Type": "String", "Value": CT_STUDY}
    patient_tags = (await client.get(f"/studies/{study}?short")).json()["PatientMainDicomTags"]
    assert patient_tags["0010,0020"] == CT_PATIENT


async def test_children_and_parents(gateway: Gateway) -> None:
    patient, study, series, instance = ct_ids()
    await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    children = (await client.get(f"/patients/{patient}/instances")).json()
    assert [item["ID"] for item in children] == [instance]
    assert (await client.get(f"/patients/{patient}/series?expand=false")).json() == [series]
    assert (await client.get(f"/studies/{study}/instances?expand=0")).json() == [instance]
    assert (await client.get(f"/series/{series}/instances")).json()[0]["Type"] == "Instance"
    assert (await client.get(f"/instances/{instance}/patient")).json()["ID"] == patient
    assert (await client.get(f"/instances/{instance}/study")).json()["ID"] == study
    assert (await client.get(f"/series/{series}/study")).json()["ID"] == study
    assert (await client.get(f"/studies/{study}/patient")).json()["Type"] == "Patient"
    unknown = await client.get("/patients/nope/studies")
    assert unknown.status_code == 404
    assert unknown.json()["OrthancError"] == "Unknown resource"


async def test_delete_walks_up_and_reports_the_remaining_ancestor(gateway: Gateway) -> None:
    first = await gateway.upload(dicom_file("CT_small.dcm"))
    second = await gateway.upload(variant(SOPInstanceUID="1.2.3.4.5.6", InstanceNumber="2"))
    series = first["ParentSeries"]
    client = gateway.client
    response = await client.delete(f"/instances/{first['ID']}")
    assert response.status_code == 200
    assert response.json() == {
        "RemainingAncestor": {"ID": series, "Path": f"/series/{series}", "Type": "Series"}
    }
    assert (await client.get(f"/instances/{first['ID']}")).status_code == 404
    response = await client.delete(f"/instances/{second['ID']}")
    assert response.json() == {"RemainingAncestor": None}
    assert (await client.get("/patients")).json() == []
    # The stability clock forgets deleted resources from their Deleted changes
    # (tests/unit/stability); the gateway has no clock.
    again = await client.delete(f"/instances/{second['ID']}")
    assert (again.status_code, again.content) == (404, b"")


async def test_resource_statistics(gateway: Gateway) -> None:
    patient, study, series, instance = ct_ids()
    size = len(dicom_file("CT_small.dcm"))
    await gateway.upload(dicom_file("CT_small.dcm"))
    sizes = {
        "DiskSize": str(size), "DiskSizeMB": 0, "UncompressedSize": str(size),
        "UncompressedSizeMB": 0, "DicomDiskSize": str(size), "DicomDiskSizeMB": 0,
        "DicomUncompressedSize": str(size), "DicomUncompressedSizeMB": 0,
    }  # fmt: skip
    client = gateway.client
    assert (await client.get(f"/patients/{patient}/statistics")).json() == {
        "CountStudies": 1, "CountSeries": 1, "CountInstances": 1, **sizes,
    }  # fmt: skip
    assert (await client.get(f"/studies/{study}/statistics")).json() == {
        "CountSeries": 1, "CountInstances": 1, **sizes,
    }  # fmt: skip
    assert (await client.get(f"/series/{series}/statistics")).json() == {
        "CountInstances": 1, **sizes,
    }  # fmt: skip
    assert (await client.get(f"/instances/{instance}/statistics")).json() == sizes
    unknown = await client.get("/series/nope/statistics")
    assert unknown.status_code == 404
    assert unknown.json()["OrthancStatus"] == 17
