"""POST /instances and the instance content routes (ORTHANC_API.md §2.5, §2.6)."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest
from dicomkeep.common.events import StoreInstance, StoreReply, StoreStatus
from gateway_support import Gateway, dicom_file, variant
from pydicom.data import get_testdata_file


async def test_file_round_trip_is_byte_identical(gateway: Gateway) -> None:
    data = dicom_file("CT_small.dcm")
    instance = (await gateway.upload(data))["ID"]
    response = await gateway.client.get(f"/instances/{instance}/file")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/dicom"
    assert response.headers["content-disposition"] == f'filename="{instance}.dcm"'


async def test_second_upload_is_already_stored(gateway: Gateway) -> None:
    data = dicom_file("CT_small.dcm")
    await gateway.upload(data)
    assert (await gateway.upload(data))["Status"] == "AlreadyStored"


async def test_gzip_body_is_accepted(gateway: Gateway) -> None:
    data = dicom_file("MR_small.dcm")
    response = await gateway.client.post(
        "/instances", content=gzip.compress(data), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    instance = response.json()["ID"]
    assert (await gateway.client.get(f"/instances/{instance}/file")).content == data


async def test_empty_upload_is_a_400(gateway: Gateway) -> None:
    response = await gateway.client.post("/instances", content=b"")
    assert response.status_code == 400
    body = response.json()
    assert body["Details"] == "Received an empty DICOM file"
    assert body["OrthancError"] == "Bad file format"


async def test_absent_uid_is_a_bad_file_format(gateway: Gateway) -> None:
    # Orthanc 1.12 answers 400 (1.10.1 answered 404 *Inexistent tag*).
    response = await gateway.client.post("/instances", content=variant(remove=("SOPInstanceUID",)))
    assert response.status_code == 400
    assert response.json()["OrthancStatus"] == 15
    assert (await gateway.client.get("/instances")).json() == []


async def _storage_full(command: StoreInstance) -> StoreReply:
    return StoreReply(
        status=StoreStatus.FAILURE, instance_id=command.instance_id, error_code="FULL_STORAGE"
    )


@pytest.mark.parametrize("submit", [_storage_full])
async def test_storage_full_is_a_507(gateway: Gateway) -> None:
    response = await gateway.client.post("/instances", content=dicom_file("CT_small.dcm"))
    assert response.status_code == 507
    body = response.json()
    assert (body["HttpError"], body["OrthancStatus"]) == ("Insufficient Storage", 19)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("folder/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _dicomdir_bytes() -> bytes:
    path = get_testdata_file("DICOMDIR")
    assert isinstance(path, str)
    return Path(path).read_bytes()


async def test_zip_upload_stores_every_dicom_member(gateway: Gateway) -> None:
    body = _zip(
        {
            "a/CT.dcm": dicom_file("CT_small.dcm"),
            "README.txt": b"not dicom",
            "DICOMDIR": _dicomdir_bytes(),
            "b/renamed-dicomdir": _dicomdir_bytes(),
            "b/MR": dicom_file("MR_small.dcm"),
            "empty": b"",
        }
    )
    response = await gateway.client.post("/instances", content=body)
    assert response.status_code == 200
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 2
    assert {answer["Status"] for answer in answers} == {"Success"}
    assert set(answers[0]) == {"ID", "ParentPatient", "ParentSeries", "ParentStudy", "Path", "Status"}
    assert len((await gateway.client.get("/instances")).json()) == 2


async def test_tags_formats(gateway: Gateway) -> None:
    instance = (await gateway.upload(dicom_file("CT_small.dcm")))["ID"]
    client = gateway.client
    full = (await client.get(f"/instances/{instance}/tags")).json()
    assert full["0010,0010"] == {"Name": "PatientName", "Type": "String", "Value": "CompressedSamples^CT1"}
    assert full["7fe0,0010"]["Type"] == "Null"
    short = (await client.get(f"/instances/{instance}/tags?short")).json()
    assert short["0010,0010"] == "CompressedSamples^CT1"
    simplified = (await client.get(f"/instances/{instance}/tags?simplify")).json()
    assert simplified["PatientName"] == "CompressedSamples^CT1"
    assert (await client.get(f"/instances/{instance}/simplified-tags")).json() == simplified
    assert (await client.get(f"/instances/{instance}/tags?whole")).status_code == 200
    unknown = await client.get("/instances/nope/tags")
    assert unknown.status_code == 404


async def test_content_header_and_frames(gateway: Gateway) -> None:
    instance = (await gateway.upload(dicom_file("CT_small.dcm")))["ID"]
    client = gateway.client
    listing = (await client.get(f"/instances/{instance}/content/")).json()
    assert "0010-0010" in listing and "7fe0-0010" in listing
    assert (await client.get(f"/instances/{instance}/content")).json() == listing
    value = await client.get(f"/instances/{instance}/content/0010-0010")
    assert value.headers["content-type"] == "application/octet-stream"
    assert value.content.rstrip(b" ") == b"CompressedSamples^CT1"
    missing = await client.get(f"/instances/{instance}/content/0011-0001")
    assert missing.status_code == 404
    header = (await client.get(f"/instances/{instance}/header")).json()
    assert header["0002,0010"]["Value"] == "1.2.840.10008.1.2.1"
    assert (await client.get(f"/instances/{instance}/frames")).json() == [0]


async def test_frames_follow_number_of_frames(gateway: Gateway) -> None:
    instance = (await gateway.upload(variant(NumberOfFrames="3")))["ID"]
    assert (await gateway.client.get(f"/instances/{instance}/frames")).json() == [0, 1, 2]
