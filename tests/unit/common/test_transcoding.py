"""Transcoding with pydicom and the pylibjpeg plugins (common/transcoding.py)."""

from __future__ import annotations

import pydicom
import pytest
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.transcoding import dataset_bytes, read_dataset, transcode
from pydicom.data import get_testdata_file


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.1"),
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.5"),
        ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.1"),
        ("JPEG2000.dcm", "1.2.840.10008.1.2"),
        ("CT_small.dcm", "1.2.840.10008.1.2.4.90"),
        ("CT_small.dcm", "1.2.840.10008.1.2.1.99"),
        ("rtplan.dcm", "1.2.840.10008.1.2.1"),
    ],
)
def test_transcoded_files_keep_their_pixels(name: str, target: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    pixels = ds.pixel_array.copy() if "PixelData" in ds else None
    back = read_dataset(dataset_bytes(transcode(ds, target)))
    assert back.file_meta.TransferSyntaxUID == target
    if pixels is not None:
        if "JPEG" in name and target == "1.2.840.10008.1.2.1":
            assert back.pixel_array.shape == pixels.shape  # lossy source, decoded once
        else:
            assert (back.pixel_array == pixels).all()


def test_targets_pydicom_cannot_write_are_refused() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    with pytest.raises(OrthancError) as refused:
        transcode(ds, "1.2.840.10008.1.2.4.50")
    assert refused.value.http_status == 400 and "1.2.840.10008.1.2.4.50" in (refused.value.details or "")
