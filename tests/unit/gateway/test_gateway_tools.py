"""Small tools: plugins, conformance, create-dicom, pdf, bulk-delete, bulk-content."""

from __future__ import annotations

import base64
import io

import pydicom
from gateway_support import Gateway, dicom_file
from PIL import Image

PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"


def data_uri(mime: str, content: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(content).decode()


async def test_plugins_and_conformance(gateway: Gateway) -> None:
    assert (await gateway.client.get("/plugins")).json() == ["explorer.js"]
    text = (await gateway.client.get("/tools/dicom-conformance")).text
    assert "1.2.840.10008.5.1.4.1.1.2" in text and "C-Move" in text


async def test_create_dicom_with_tags_pdf_and_parent(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/tools/create-dicom", json={"Tags": {"PatientName": "Jo", "Modality": "OT"}}
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["Status"] == "Success"
    tags = (await gateway.client.get(f"/instances/{created['ID']}/simplified-tags")).json()
    assert tags["PatientName"] == "Jo" and tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.7"

    pdf = await gateway.client.post(
        "/tools/create-dicom",
        json={"Tags": {"PatientName": "Pdf"}, "Content": data_uri("application/pdf", PDF)},
    )
    assert pdf.status_code == 200, pdf.text
    answer = await gateway.client.get(f"/instances/{pdf.json()['ID']}/pdf")
    assert answer.headers["content-type"] == "application/pdf" and answer.content == PDF
    assert (await gateway.client.get(f"/instances/{created['ID']}/pdf")).status_code == 404

    child = await gateway.client.post(
        "/tools/create-dicom",
        json={"Tags": {"SeriesDescription": "child"}, "Parent": created["ParentStudy"]},
    )
    assert child.status_code == 200, child.text
    assert child.json()["ParentStudy"] == created["ParentStudy"]
    assert child.json()["ParentSeries"] != created["ParentSeries"]


async def test_create_dicom_with_an_image(gateway: Gateway) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5), (200, 10, 20)).save(buffer, format="PNG")
    response = await gateway.client.post(
        "/tools/create-dicom", json={"Content": data_uri("image/png", buffer.getvalue())}
    )
    assert response.status_code == 200, response.text
    file = await gateway.client.get(f"/instances/{response.json()['ID']}/file")
    ds = pydicom.dcmread(io.BytesIO(file.content))
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (5, 7, 3)
    assert tuple(ds.pixel_array[0, 0]) == (200, 10, 20)


async def test_create_dicom_errors(gateway: Gateway) -> None:
    bad_tag = await gateway.client.post("/tools/create-dicom", json={"Tags": {"Bogus": "x"}})
    assert bad_tag.status_code == 500 and bad_tag.json()["OrthancStatus"] == 27
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    no_parent = await gateway.client.post("/tools/create-dicom", json={"Parent": "nope"})
    assert no_parent.status_code == 400 and no_parent.json()["OrthancStatus"] == 2024
    instance_parent = await gateway.client.post("/tools/create-dicom", json={"Parent": stored["ID"]})
    assert instance_parent.status_code == 400 and instance_parent.json()["OrthancStatus"] == 2025
    assert (await gateway.client.get("/instances")).json() == [stored["ID"]]


async def test_bulk_content_and_delete(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    mr = await gateway.upload(dicom_file("MR_small.dcm"))
    content = await gateway.client.post(
        "/tools/bulk-content", json={"Resources": [ct["ParentStudy"], "nope"], "Level": "Series"}
    )
    assert [item["ID"] for item in content.json()] == [ct["ParentSeries"]]
    own = await gateway.client.post("/tools/bulk-content", json={"Resources": [mr["ID"]]})
    assert own.json()[0]["Type"] == "Instance"
    deleted = await gateway.client.post(
        "/tools/bulk-delete", json={"Resources": [ct["ParentPatient"], "nope"]}
    )
    assert deleted.status_code == 200 and deleted.text == ""
    assert (await gateway.client.get("/instances")).json() == [mr["ID"]]
    bad = await gateway.client.post("/tools/bulk-delete", json={})
    assert bad.status_code == 400


async def test_create_dicom_series_from_a_content_array(gateway: Gateway) -> None:
    frames = []
    for shade in (10, 200):
        buffer = io.BytesIO()
        Image.new("L", (4, 3), shade).save(buffer, format="PNG")
        frames.append(data_uri("image/png", buffer.getvalue()))
    response = await gateway.client.post(
        "/tools/create-dicom",
        json={"Tags": {"PatientName": "Series^Test"},
              "Content": [frames[0], {"Content": frames[1], "Tags": {"ImageComments": "second"}}]},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    series = response.json()["ID"]
    assert response.json()["Path"] == f"/series/{series}"
    instances = (await gateway.client.get(f"/series/{series}/instances")).json()
    numbers = sorted(item["MainDicomTags"]["InstanceNumber"] for item in instances)
    assert numbers == ["1", "2"]
    empty = await gateway.client.post("/tools/create-dicom", json={"Content": []})
    assert empty.status_code == 400 and empty.json()["OrthancStatus"] == 2022


async def test_reset_and_shutdown_answer_and_set_the_process_control(gateway: Gateway) -> None:
    """Orthanc's ResetOrthanc/ShutdownOrthanc: `{}` first, then the runner acts."""
    control = gateway.client._transport.app.state.control  # type: ignore[attr-defined]
    assert (await gateway.client.get("/tools/shutdown")).status_code == 405
    assert not control.requested.is_set()
    answer = await gateway.client.post("/tools/shutdown")
    assert answer.status_code == 200 and answer.json() == {}
    assert control.requested.is_set() and not control.reset
    answer = await gateway.client.post("/tools/reset")
    assert answer.status_code == 200 and answer.json() == {}
    assert control.reset
