"""parse_instance and dicom_prefix: Orthanc's identifiers, main tags and store-time metadata."""

from __future__ import annotations

import io
import os
from typing import Any

import pydicom
import pytest
from dicomkeep.common.dicom.instance import ParsedInstance, dicom_prefix, parse_instance
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# The DummyCT.dcm values of ORTHANC_API.md §1 and the IDs Orthanc's tests assert.
DUMMY_CT = {
    "PatientID": "ozp00SjY2xG",
    "StudyInstanceUID": "1.2.840.113619.2.176.2025.1499492.7391.1171285944.390",
    "SeriesInstanceUID": "1.2.840.113619.2.176.2025.1499492.7391.1171285944.394",
    "SOPInstanceUID": "1.2.840.113619.2.176.2025.1499492.7040.1171286242.109",
}
DUMMY_CT_IDS = (
    "6816cb19-844d5aee-85245eba-28e841e6-2414fae2",
    "b9c08539-26f93bde-c81ab0d7-bffaf2cb-a4d0bdd0",
    "f2635388-f01d497a-15f7c06b-ad7dba06-c4c599fe",
    "66a662ce-7430e543-bad44d47-0dc5a943-ec7a538d",
)
EMPTY_PATIENT_ID = "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709"
MISSING_UIDS = "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID"


def make_dicom(
    *, syntax: str = ExplicitVRLittleEndian, pixels: bool = True, **values: Any
) -> bytes:
    """Write a small CT Part-10 file with DummyCT's UIDs; a value of None drops the tag."""
    ds = Dataset()
    fields: dict[str, Any] = {
        "SOPClassUID": CTImageStorage,
        "PatientName": "KNEE",
        "Modality": "CT",
        **DUMMY_CT,
        **values,
    }
    for keyword, value in fields.items():
        if value is not None:
            setattr(ds, keyword, value)
    if pixels:
        ds.Rows, ds.Columns = 4, 4
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = bytes(range(32))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_value(data: bytes, placeholder: str, value: bytes) -> bytes:
    """Replace a written placeholder value by bytes pydicom would refuse to encode."""
    assert data.count(placeholder.encode()) == 1 and len(value) == len(placeholder)
    return data.replace(placeholder.encode(), value)


def sample(name: str) -> bytes:
    """Read one of pydicom's bundled test files."""
    path = get_testdata_file(name) or get_charset_files(name)[0]
    with open(path, "rb") as stream:
        return stream.read()


def refused(data: bytes) -> OrthancError:
    with pytest.raises(OrthancError) as caught:
        parse_instance(data)
    return caught.value


# --- identifiers (§1) ------------------------------------------------------------


def test_dummy_ct_ids_match_orthanc() -> None:
    parsed = parse_instance(make_dicom())
    assert parsed.ids == DUMMY_CT_IDS
    assert parsed.patient_uid == DUMMY_CT["PatientID"]
    assert parsed.study_uid == DUMMY_CT["StudyInstanceUID"]
    assert parsed.series_uid == DUMMY_CT["SeriesInstanceUID"]
    assert parsed.sop_uid == DUMMY_CT["SOPInstanceUID"]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_ids_do_not_depend_on_transfer_syntax(syntax: str) -> None:
    parsed = parse_instance(make_dicom(syntax=syntax))
    assert parsed.ids == DUMMY_CT_IDS
    assert parsed.transfer_syntax == syntax


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
def test_trailing_padding_is_stripped_leading_spaces_kept() -> None:
    padded = parse_instance(
        make_dicom(PatientID="ozp00SjY2xG ", StudyInstanceUID=DUMMY_CT["StudyInstanceUID"] + "\0")
    )
    assert padded.patient_uid == "ozp00SjY2xG"
    assert padded.study_uid == DUMMY_CT["StudyInstanceUID"]
    assert padded.ids == DUMMY_CT_IDS
    leading = parse_instance(make_dicom(PatientID=" ozp00SjY2xG"))
    assert leading.patient_uid == " ozp00SjY2xG"
    assert leading.ids[0] != DUMMY_CT_IDS[0]


@pytest.mark.parametrize("patient_id", ["", None])
def test_empty_or_absent_patient_id_hashes_as_empty_string(patient_id: str | None) -> None:
    parsed = parse_instance(make_dicom(PatientID=patient_id))
    assert parsed.patient_uid == ""
    assert parsed.ids[0] == EMPTY_PATIENT_ID


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_absent_uid_is_a_bad_file_format(keyword: str) -> None:
    # Orthanc 1.12 answers 400 (1.10.1 answered 404 *Inexistent tag*).
    error = refused(make_dicom(**{keyword: None}))
    assert error.code is ErrorCode.BAD_FILE_FORMAT
    assert error.http_status == 400


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_empty_uid_is_a_bad_file(keyword: str) -> None:
    error = refused(make_dicom(**{keyword: ""}))
    assert error.code is ErrorCode.BAD_FILE_FORMAT
    assert error.details == MISSING_UIDS


# --- refused files ---------------------------------------------------------------


def test_empty_body() -> None:
    error = refused(b"")
    assert error.code is ErrorCode.BAD_FILE_FORMAT
    assert error.details == "Received an empty DICOM file"


@pytest.mark.parametrize("size", [7, 132, 5000])
def test_random_bytes(size: int) -> None:
    data = os.urandom(size)
    error = refused(data)
    assert error.code is ErrorCode.BAD_FILE_FORMAT
    assert error.details == f"Cannot parse an invalid DICOM file (size: {size} bytes)"


def test_unparsable_dataset_without_file_meta_is_refused() -> None:
    # Orthanc 1.10.1 refuses it too (measured): 400 "Cannot parse an invalid DICOM file"
    assert refused(sample("no_meta.dcm")).code is ErrorCode.BAD_FILE_FORMAT


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("ExplVR_LitEndNoMeta.dcm", "1.2.840.10008.1.2.1"),
        ("ExplVR_BigEndNoMeta.dcm", "1.2.840.10008.1.2.2"),
    ],
)
def test_dataset_without_file_meta_is_accepted(name: str, syntax: str) -> None:
    # As Orthanc 1.10.1 (measured): the syntax is guessed from the data set
    parsed = parse_instance(sample(name))
    assert parsed.transfer_syntax == syntax
    assert parsed.ids[3] == "e4fc48da-1d3f3fba-107ec509-16996dd4-01ccabd1"


def test_implicit_dataset_without_file_meta_is_accepted() -> None:
    dataset = dcmread(get_testdata_file("MR_small_implicit.dcm"))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    parsed = parse_instance(buffer.getvalue())
    assert parsed.transfer_syntax == "1.2.840.10008.1.2"
    assert parsed.sop_uid == dataset.SOPInstanceUID
    assert parsed.pixel_data_offset is not None


def test_meta_without_preamble_is_accepted() -> None:
    data = make_dicom()
    parsed = parse_instance(data[128:].replace(b"DICM", b"", 1))
    assert parsed.ids == DUMMY_CT_IDS
    assert parsed.pixel_data_offset == parse_instance(data).pixel_data_offset - 132


def _cut_points(data: bytes) -> list[int]:
    """Offsets strictly inside element headers and values, found with pydicom."""
    ds = pydicom.dcmread(io.BytesIO(data))
    points = []
    for keyword in ("PatientName", "StudyInstanceUID", "SOPInstanceUID"):
        raw = ds.get_item(keyword)
        points += [raw.value_tell - 3, raw.value_tell + 1]
    pixels = ds.get_item("PixelData")
    points += [pixels.value_tell - 2, pixels.value_tell + 10, len(data) - 1]
    return points


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_truncated_files_are_refused(syntax: str) -> None:
    data = make_dicom(syntax=syntax)
    parse_instance(data)
    for cut in _cut_points(data):
        error = refused(data[:cut])
        assert error.code is ErrorCode.BAD_FILE_FORMAT, cut
        assert error.details == f"Cannot parse an invalid DICOM file (size: {cut} bytes)"


def test_truncated_inside_a_sequence_and_big_pixel_data() -> None:
    data = sample("CT_small.dcm")
    sequence = pydicom.dcmread(io.BytesIO(data)).get_item("OtherPatientIDsSequence")
    for cut in (sequence.value_tell + sequence.length // 2, len(data) // 2, len(data) - 3):
        assert refused(data[:cut]).code is ErrorCode.BAD_FILE_FORMAT


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "image_dfl.dcm"])
def test_truncated_encapsulated_or_deflated(name: str) -> None:
    data = sample(name)
    parse_instance(data)
    # image_dfl.dcm has 8 bytes after the end of its deflate stream: cut before them.
    for cut in (len(data) - 10, len(data) - 100, len(data) * 3 // 4):
        assert refused(data[:cut]).code is ErrorCode.BAD_FILE_FORMAT


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_pydicom_truncated_samples(name: str) -> None:
    assert refused(sample(name)).code is ErrorCode.BAD_FILE_FORMAT


# --- pixel data offset and prefix (§3) -------------------------------------------


@pytest.mark.parametrize(
    ("name", "tag_bytes"),
    [
        ("CT_small.dcm", b"\xe0\x7f\x10\x00"),
        ("MR_small_implicit.dcm", b"\xe0\x7f\x10\x00"),
        ("MR_small_bigendian.dcm", b"\x7f\xe0\x00\x10"),
        ("JPEG2000.dcm", b"\xe0\x7f\x10\x00"),
    ],
)
def test_pixel_data_offset_points_at_the_tag(name: str, tag_bytes: bytes) -> None:
    data = sample(name)
    parsed = parse_instance(data)
    offset = parsed.pixel_data_offset
    assert offset is not None
    assert data[offset : offset + 4] == tag_bytes
    prefix = dicom_prefix(data, parsed)
    assert prefix == data[:offset]
    # The prefix is itself a valid file with the same identity and no pixel data.
    again = parse_instance(prefix)
    assert again.ids == parsed.ids
    assert again.pixel_data_offset is None


def test_no_pixel_data_and_deflated_have_no_offset() -> None:
    for name in ("rtplan.dcm", "image_dfl.dcm"):
        data = sample(name)
        parsed = parse_instance(data)
        assert parsed.pixel_data_offset is None
        assert dicom_prefix(data, parsed) is None


def test_pixel_data_offset_of_a_512x512_image() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.Rows = ds.Columns = 512
    ds.PixelData = bytes(512 * 512 * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    parsed = parse_instance(data)
    # Pixel data is the last element: 12-byte explicit OW header, then the pixels.
    assert parsed.pixel_data_offset == len(data) - 512 * 512 * 2 - 12
    assert parsed.ids == DUMMY_CT_IDS


# --- transfer syntax, SOP class, charsets ----------------------------------------


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("CT_small.dcm", ExplicitVRLittleEndian),
        ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
        ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
        ("JPEG2000.dcm", JPEG2000),
    ],
)
def test_transfer_syntax_from_file_meta(name: str, syntax: str) -> None:
    assert parse_instance(sample(name)).transfer_syntax == syntax


def test_same_content_in_every_encoding() -> None:
    reference = parse_instance(sample("MR_small.dcm"))
    for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm"):
        parsed = parse_instance(sample(name))
        assert parsed.ids == reference.ids
        assert parsed.main_tags == reference.main_tags
        assert parsed.sop_class_uid == reference.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"


def test_deflated_file_is_inflated() -> None:
    parsed = parse_instance(sample("image_dfl.dcm"))
    ds = pydicom.dcmread(get_testdata_file("image_dfl.dcm"))
    assert parsed.sop_uid == ds.SOPInstanceUID
    assert parsed.main_tags[Level.SERIES]["Modality"] == ds.Modality


@pytest.mark.parametrize(
    ("name", "patient_name"),
    [
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東="),
        ("chrX2.dcm", "Wang^XiaoDong=王^小东="),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
    ],
)
def test_specific_character_set_decoding(name: str, patient_name: str) -> None:
    parsed = parse_instance(sample(name))
    assert parsed.main_tags[Level.PATIENT]["PatientName"] == patient_name


# --- main DICOM tags (§2.1) ------------------------------------------------------


def test_main_tags_of_ct_small() -> None:
    parsed = parse_instance(sample("CT_small.dcm"))
    assert parsed.main_tags[Level.PATIENT] == {
        "PatientName": "CompressedSamples^CT1",
        "PatientID": "1CT1",
        "PatientBirthDate": "",
        "PatientSex": "O",
    }
    study = parsed.main_tags[Level.STUDY]
    assert study["StudyInstanceUID"] == parsed.study_uid
    assert study["AccessionNumber"] == ""  # present but empty
    assert study["InstitutionName"] == "JFK IMAGING CENTER"
    assert "RequestingPhysician" not in study  # absent
    series = parsed.main_tags[Level.SERIES]
    assert series["Modality"] == "CT"
    assert series["ContrastBolusAgent"] == "ISOVUE300/100"
    orientation = "1.000000\\0.000000\\0.000000\\0.000000\\1.000000\\0.000000"
    assert series["ImageOrientationPatient"] == orientation
    instance = parsed.main_tags[Level.INSTANCE]
    assert instance["ImageOrientationPatient"] == orientation
    assert instance["ImagePositionPatient"] == "-158.135803\\-179.035797\\-75.699997"
    assert instance["InstanceNumber"] == "1"
    assert instance["SOPInstanceUID"] == parsed.sop_uid
    assert parsed.sop_class_uid == CTImageStorage
    assert parsed.index_in_series == 1
    assert parsed.expected_instances is None


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
def test_binary_numbers_render_as_strings_and_too_long_values_are_dropped() -> None:
    parsed = parse_instance(
        make_dicom(
            NumberOfSlices=10, NumberOfTimeSlices=2, ImageIndex=7, StudyDescription="x" * 300
        )
    )
    assert parsed.main_tags[Level.SERIES]["NumberOfSlices"] == "10"
    assert parsed.main_tags[Level.INSTANCE]["ImageIndex"] == "7"
    assert "StudyDescription" not in parsed.main_tags[Level.STUDY]


# --- IndexInSeries and ExpectedNumberOfInstances (§2.3) ---------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"InstanceNumber": " 12 "}, 12),
        ({"InstanceNumber": "-3"}, -3),
        ({"ImageIndex": 7}, 7),
        ({"InstanceNumber": "4", "ImageIndex": 7}, 4),
        ({"InstanceNumber": "9999", "ImageIndex": 7, "raw": b"abc "}, None),
        ({"InstanceNumber": "", "ImageIndex": 7}, None),
        ({}, None),
    ],
)
def test_index_in_series(values: dict[str, Any], expected: int | None) -> None:
    raw = values.pop("raw", None)
    data = make_dicom(**values)
    if raw is not None:
        data = with_value(data, "9999", raw)
    assert parse_instance(data).index_in_series == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"ImagesInAcquisition": "10", "NumberOfTemporalPositions": "3"}, 30),
        ({"ImagesInAcquisition": "10", "CardiacNumberOfImages": "25"}, 25),
        ({"NumberOfSlices": 12, "NumberOfTimeSlices": 2, "CardiacNumberOfImages": "5"}, 24),
        ({"CardiacNumberOfImages": "25"}, 25),
        ({"CardiacNumberOfImages": "0"}, None),
        ({"CardiacNumberOfImages": "9999", "raw": b"x   "}, None),
        (
            {
                "ImagesInAcquisition": "9999",
                "NumberOfTemporalPositions": "3",
                "CardiacNumberOfImages": "5",
                "raw": b"1\\2 ",
            },
            None,
        ),
        ({}, None),
    ],
)
def test_expected_number_of_instances(values: dict[str, Any], expected: int | None) -> None:
    raw = values.pop("raw", None)
    data = make_dicom(**values)
    if raw is not None:
        data = with_value(data, "9999", raw)
    assert parse_instance(data).expected_instances == expected


def test_parsed_instance_is_frozen() -> None:
    parsed = parse_instance(make_dicom())
    assert isinstance(parsed, ParsedInstance)
    with pytest.raises(AttributeError):
        parsed.sop_uid = "x"  # type: ignore[misc]
