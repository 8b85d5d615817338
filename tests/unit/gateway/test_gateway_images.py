"""Image routes on the embedded adapters: formats, windowing, frames, numpy, shared tags."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from gateway_support import Gateway, dicom_file
from PIL import Image


def image(content: bytes) -> Image.Image:
    return Image.open(io.BytesIO(content))


async def test_preview_rendered_and_formats(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("MR_small.dcm"))
    base = f"/instances/{stored['ID']}"
    preview = await gateway.client.get(f"{base}/preview")
    assert preview.headers["content-type"] == "image/png"
    pixels = np.asarray(image(preview.content))
    assert pixels.shape == (64, 64) and pixels.min() == 0 and pixels.max() == 255
    rendered = np.asarray(image((await gateway.client.get(f"{base}/rendered")).content))
    assert rendered.min() == 52  # the file's window 600/1600 applied to 127..2145
    jpeg = await gateway.client.get(f"{base}/rendered?quality=50", headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and image(jpeg.content).format == "JPEG"
    small = image((await gateway.client.get(f"{base}/rendered?width=32&smooth=1")).content)
    assert small.size == (32, 32)
    windowed = np.asarray(image((await gateway.client.get(f"{base}/rendered?window-center=100&window-width=50")).content))
    assert windowed.min() == 255
    refused = await gateway.client.get(f"{base}/preview", headers={"Accept": "image/gif"})
    assert refused.status_code == 406


async def test_frames_raw_integer_images_and_numpy(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("SC_rgb_rle_2frame.dcm"))
    base = f"/instances/{stored['ID']}"
    assert (await gateway.client.get(f"{base}/frames")).json() == [0, 1]
    second = image((await gateway.client.get(f"{base}/frames/1/preview")).content)
    assert second.mode == "RGB" and second.size == (100, 100)
    assert (await gateway.client.get(f"{base}/frames/2/preview")).status_code == 404
    assert (await gateway.client.get(f"{base}/frames/0/image-uint8")).status_code == 415
    array = np.load(io.BytesIO((await gateway.client.get(f"{base}/numpy")).content))
    original = pydicom.dcmread(io.BytesIO(dicom_file("SC_rgb_rle_2frame.dcm"))).pixel_array
    assert array.shape == (2, 100, 100, 3) and (array == original).all()

    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    raw = await gateway.client.get(f"/instances/{ct['ID']}/frames/0/raw")
    assert len(raw.content) == 128 * 128 * 2
    uint16 = np.asarray(image((await gateway.client.get(f"/instances/{ct['ID']}/frames/0/image-uint16")).content))
    assert uint16.max() == 2191


async def test_jpeg2000_decodes_and_no_pixels_is_415(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("JPEG2000.dcm"))
    preview = await gateway.client.get(f"/instances/{stored['ID']}/preview")
    assert preview.status_code == 200 and image(preview.content).size == (256, 1024)
    plan = await gateway.upload(dicom_file("rtplan.dcm"))
    answer = await gateway.client.get(f"/instances/{plan['ID']}/preview")
    assert answer.status_code == 415
    assert answer.json()["Details"] == "This instance has no pixel data"


async def test_shared_tags_and_ordered_slices(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    shared = (await gateway.client.get(f"/studies/{stored['ParentStudy']}/shared-tags?simplify")).json()
    assert shared["PatientID"] == "1CT1"
    await gateway.client.post(
        "/tools/create-dicom", json={"Tags": {"SeriesDescription": "x"}, "Parent": stored["ParentStudy"]}
    )
    shared = (await gateway.client.get(f"/studies/{stored['ParentStudy']}/shared-tags?simplify")).json()
    assert shared["PatientID"] == "1CT1" and "SeriesDescription" not in shared and "Modality" not in shared
    full = (await gateway.client.get(f"/series/{stored['ParentSeries']}/shared-tags")).json()
    assert full["0010,0020"]["Value"] == "1CT1"
    ordered = (await gateway.client.get(f"/series/{stored['ParentSeries']}/ordered-slices")).json()
    assert ordered == {
        "Dicom": [f"/instances/{stored['ID']}/file"],
        "Slices": [f"/instances/{stored['ID']}/frames/0"],
        "SlicesShort": [[stored["ID"], 0, 1]],
        "Type": "Sequence",
    }


async def test_return_unsupported_image(gateway: Gateway) -> None:
    plan = await gateway.upload(dicom_file("rtplan.dcm"))
    answer = await gateway.client.get(f"/instances/{plan['ID']}/preview?returnUnsupportedImage=true")
    assert answer.status_code == 200 and image(answer.content).size == (64, 64)
