"""Real DICOM files for the tests: pydicom's bundled files and synthetic studies."""

from __future__ import annotations

from pathlib import Path

from dicomkeep.common.ids import hierarchy_ids
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file

#: pydicom test files covering transfer syntaxes, multi-frame and character sets.
SAMPLES = [
    "CT_small.dcm",            # explicit VR little endian
    "MR_small.dcm",            # explicit VR little endian, MR
    "rtplan.dcm",              # implicit VR little endian, no pixel data
    "image_dfl.dcm",           # deflated explicit VR little endian
    "JPEG2000.dcm",            # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",   # JPEG baseline
    "rtdose.dcm",              # multi-frame (RT Dose)
    "SC_rgb_rle_2frame.dcm",   # RLE lossless, 2 frames
    "MR_small_implicit.dcm",   # implicit VR little endian
    "chrH31.dcm",              # Japanese character set
    "chrRuss.dcm",             # Cyrillic
    "MR_small_bigendian.dcm",  # explicit VR big endian (retired)
    "chrX1.dcm",               # UTF-8 (ISO_IR 192)
]


def sample_path(name: str) -> Path:
    """Return the path of a file bundled with pydicom (test or character-set files)."""
    found = get_testdata_file(name) if not name.startswith("chr") else None
    if found is None:
        found = get_charset_files(name)[0]
    return Path(str(found))


def expected_ids(path: Path) -> tuple[str, str, str, str]:
    """Orthanc's four IDs of a file, from the formula of ORTHANC_API.md §1."""
    ds = dcmread(path, stop_before_pixels=True)
    return hierarchy_ids(
        str(ds.get("PatientID", "") or "").rstrip(" \x00"),
        str(ds.StudyInstanceUID).rstrip(" \x00"),
        str(ds.SeriesInstanceUID).rstrip(" \x00"),
        str(ds.SOPInstanceUID).rstrip(" \x00"),
    )
