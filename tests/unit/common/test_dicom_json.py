"""tags_json, header_json and the content routes: Orthanc's JSON and raw views of a file."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from dicomkeep.common.dicom.instance import dicom_prefix, parse_instance
from dicomkeep.common.dicom.orthanc_json import (
    content_list,
    content_value,
    header_json,
    parse_tag,
    tag_name,
    tags_json,
)
from dicomkeep.common.errors import ErrorCode, OrthancError
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

PIXEL_NULL = {"Name": "PixelData", "Type": "Null", "Value": None}


def sample(name: str) -> bytes:
    """Read one of pydicom's bundled test files."""
    path = get_testdata_file(name) or get_charset_files(name)[0]
    with open(path, "rb") as stream:
        return stream.read()


@pytest.fixture(scope="module")
def ct_small() -> bytes:
    return sample("CT_small.dcm")


def write(ds: Dataset) -> bytes:
    """Write a dataset as an explicit VR little endian Part-10 file."""
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2", "1.2.3", "1.2.3.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- full format -----------------------------------------------------------------


def test_full_format_of_ct_small(ct_small: bytes) -> None:
    tags = tags_json(ct_small)
    assert tags["0010,0010"] == {
        "Name": "PatientName",
        "Type": "String",
        "Value": "CompressedSamples^CT1",
    }
    assert tags["0028,0010"] == {"Name": "Rows", "Type": "String", "Value": "128"}  # US
    assert tags["0028,0120"] == {"Name": "PixelPaddingValue", "Type": "String", "Value": "-2000"}
    assert tags["0008,0008"]["Value"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert tags["0008,0050"] == {"Name": "AccessionNumber", "Type": "String", "Value": ""}
    assert tags["7fe0,0010"] == PIXEL_NULL
    assert not any(key.startswith("0002,") for key in tags)
    assert list(tags) == sorted(tags)


def test_private_tags_carry_their_creator(ct_small: bytes) -> None:
    tags = tags_json(ct_small)
    assert tags["0009,0010"] == {
        "Name": "PrivateCreator",
        "Type": "String",
        "Value": "GEMS_IDEN_01",
    }
    assert tags["0009,1001"] == {
        "Name": "Unknown Tag & Data",
        "PrivateCreator": "GEMS_IDEN_01",
        "Type": "String",
        "Value": "GE_GENESIS_FF",
    }


def test_sequences(ct_small: bytes) -> None:
    sequence = tags_json(ct_small)["0010,1002"]
    assert sequence["Name"] == "OtherPatientIDsSequence"
    assert sequence["Type"] == "Sequence"
    assert sequence["Value"] == [
        {
            "0010,0020": {"Name": "PatientID", "Type": "String", "Value": "ABCD1234"},
            "0010,0022": {"Name": "TypeOfPatientID", "Type": "String", "Value": "TEXT"},
        },
        {
            "0010,0020": {"Name": "PatientID", "Type": "String", "Value": "1234ABCD"},
            "0010,0022": {"Name": "TypeOfPatientID", "Type": "String", "Value": "TEXT"},
        },
    ]


def test_reading_stops_at_pixel_data_unless_whole(ct_small: bytes) -> None:
    assert "fffc,fffc" not in tags_json(ct_small)
    whole = tags_json(ct_small, whole=True)
    assert whole["fffc,fffc"] == {"Name": "DataSetTrailingPadding", "Type": "Null", "Value": None}
    assert whole["7fe0,0010"] == PIXEL_NULL


def test_prefix_gives_the_same_answer(ct_small: bytes) -> None:
    prefix = dicom_prefix(ct_small, parse_instance(ct_small))
    assert prefix is not None
    assert tags_json(prefix, assume_pixel_data=True) == tags_json(ct_small)
    assert "7fe0,0010" not in tags_json(prefix)


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
def test_value_rendering() -> None:
    ds = Dataset()
    ds.ImageComments = "c" * 300  # LT, TooLong
    ds.StudyDescription = "é" * 200  # 400 UTF-8 bytes once decoded: TooLong
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Buc^Jérôme"
    ds.add_new(0x00181310, "US", [1, 2, 3])  # AcquisitionMatrix
    ds.add_new(0x00280106, "SS", -5)  # SmallestImagePixelValue
    ds.StudyID = " 42"  # leading space kept, trailing padding dropped
    ds.add_new(0x00209161, "UI", "")  # empty
    ds.add_new(0x00189082, "FD", 0.1)  # EffectiveEchoTime
    ds.add_new(0x00189219, "FL", 0.1)  # TagAngleSecondAxis
    ds.add_new(0x00209165, "AT", [0x00100010])  # DimensionIndexPointer
    ds.add_new(0x00280030, "DS", ["0.5", "0.5"])
    ds.add_new(0x00189701, "UL", [])  # empty number -> Null
    ds.add_new(0x00420011, "OB", b"%PDF-1.4")  # EncapsulatedDocument
    tags = tags_json(write(ds))
    assert tags["0020,4000"] == {"Name": "ImageComments", "Type": "TooLong", "Value": None}
    assert tags["0008,1030"]["Type"] == "TooLong"
    assert tags["0010,0010"]["Value"] == "Buc^Jérôme"
    assert tags["0018,1310"]["Value"] == "1\\2\\3"
    assert tags["0028,0106"]["Value"] == "-5"
    assert tags["0020,0010"]["Value"] == " 42"
    assert tags["0020,9161"] == {"Name": "ConcatenationUID", "Type": "String", "Value": ""}
    assert tags["0018,9082"]["Value"] == "0.10000000000000001"
    assert tags["0018,9219"]["Value"] == "0.100000001"
    assert tags["0020,9165"]["Value"] == "0010,0010"
    assert tags["0028,0030"]["Value"] == "0.5\\0.5"
    assert tags["0018,9701"]["Type"] == "Null"
    assert tags["0042,0011"] == {"Name": "EncapsulatedDocument", "Type": "Null", "Value": None}
    lifted = tags_json(write(ds), ignore_length=["ImageComments", "0008,1030"])
    assert lifted["0020,4000"] == {"Name": "ImageComments", "Type": "String", "Value": "c" * 300}
    assert lifted["0008,1030"]["Value"] == "é" * 200


def test_unknown_ignore_length_name_is_a_bad_request(ct_small: bytes) -> None:
    with pytest.raises(OrthancError) as caught:
        tags_json(ct_small, ignore_length=["NoSuchKeyword"])
    assert caught.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("name", "patient_name"),
    [("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"), ("chrRuss.dcm", "Люкceмбypг")],
)
def test_character_sets(name: str, patient_name: str) -> None:
    assert tags_json(sample(name), "short")["0010,0010"] == patient_name


@pytest.mark.parametrize("name", ["chrSQEncoding.dcm", "chrSQEncoding1.dcm"])
def test_items_use_their_own_or_the_inherited_character_set(name: str) -> None:
    # chrSQEncoding: UTF-8 dataset, ISO 2022 IR 13/87 item; chrSQEncoding1: inherited.
    item = tags_json(sample(name), "simplify")["RequestedProcedureCodeSequence"][0]
    assert item["PatientName"] == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_encodings_render_like_explicit_little_endian(name: str) -> None:
    reference = tags_json(sample("MR_small.dcm"), "short")
    other = tags_json(sample(name), "short")
    assert other["0028,0010"] == reference["0028,0010"] == "64"
    assert other["0010,0010"] == reference["0010,0010"]
    assert other["0020,0032"] == reference["0020,0032"]


def test_deflated_file() -> None:
    tags = tags_json(sample("image_dfl.dcm"), "short")
    assert tags["0008,0060"] == pydicom.dcmread(get_testdata_file("image_dfl.dcm")).Modality
    assert tags["7fe0,0010"] is None


def test_retired_tags_get_dcmtk_names() -> None:
    assert tag_name(0x00080010) == "RETIRED_RecognitionCode"
    assert tag_name(0x00100010) == "PatientName"
    assert tag_name(0x00080000) == "GenericGroupLength"
    assert tag_name(0x00090010) == "PrivateCreator"
    assert tag_name(0x00091001) == "Unknown Tag & Data"
    assert tag_name(0x60003000) == "OverlayData"
    assert tag_name(0x00089999) == "Unknown Tag & Data"


def test_parse_tag_forms() -> None:
    assert parse_tag("0010,0010") == parse_tag("0010-0010") == parse_tag("00100010") == 0x00100010
    assert parse_tag("PatientName") == 0x00100010
    assert parse_tag("7FE0,0010") == 0x7FE00010
    with pytest.raises(KeyError):
        parse_tag("NoSuchKeyword")


# --- short and simplify ----------------------------------------------------------


def test_short_format(ct_small: bytes) -> None:
    short = tags_json(ct_small, "short")
    assert short["0010,0010"] == "CompressedSamples^CT1"
    assert short["0010,1002"] == [
        {"0010,0020": "ABCD1234", "0010,0022": "TEXT"},
        {"0010,0020": "1234ABCD", "0010,0022": "TEXT"},
    ]
    assert short["7fe0,0010"] is None
    assert short["0009,1001"] == "GE_GENESIS_FF"


def test_simplify_format(ct_small: bytes) -> None:
    simple = tags_json(ct_small, "simplify")
    assert simple["PatientName"] == "CompressedSamples^CT1"
    assert simple["Rows"] == "128"
    assert simple["OtherPatientIDsSequence"][1] == {
        "PatientID": "1234ABCD",
        "TypeOfPatientID": "TEXT",
    }
    assert simple["PixelData"] is None
    assert simple["0009,1001"] == "GE_GENESIS_FF"  # unknown private tag keyed by its tag
    assert "Unknown Tag & Data" not in simple


def test_invalid_file_is_refused() -> None:
    with pytest.raises(OrthancError) as caught:
        tags_json(b"not a dicom file")
    assert caught.value.code is ErrorCode.BAD_FILE_FORMAT


# --- header ----------------------------------------------------------------------


def test_header(ct_small: bytes) -> None:
    header = header_json(ct_small)
    assert header["0002,0010"] == {
        "Name": "TransferSyntaxUID",
        "Type": "String",
        "Value": "1.2.840.10008.1.2.1",
    }
    assert header["0002,0000"] == {
        "Name": "FileMetaInformationGroupLength",
        "Type": "String",
        "Value": "192",
    }
    assert header["0002,0003"]["Value"] == parse_instance(ct_small).sop_uid
    assert "0002,0001" not in header  # OB: binary tags are left out of the header
    assert all(key.startswith("0002,") for key in header)


# --- content routes --------------------------------------------------------------


def test_content_top_level(ct_small: bytes) -> None:
    listing = content_list(ct_small, [])
    assert listing[:3] == ["0008-0005", "0008-0008", "0008-0012"]
    assert "7fe0-0010" in listing and listing[-1] == "fffc-fffc"


def test_content_leaf_values(ct_small: bytes) -> None:
    # DCMTK answers the value as stored: padded to an even length.
    assert content_value(ct_small, ["0010-0010"]) == b"CompressedSamples^CT1 "
    assert content_value(ct_small, ["0010,0020"]) == b"1CT1"
    assert content_value(ct_small, ["PatientID"]) == b"1CT1"
    assert content_value(ct_small, ["0028-0010"]) == struct.pack("<H", 128)


def test_content_sequences(ct_small: bytes) -> None:
    assert content_list(ct_small, ["0010-1002"]) == ["0", "1"]
    assert content_list(ct_small, ["0010-1002", "1"]) == ["0010-0020", "0010-0022"]
    assert content_value(ct_small, ["0010-1002", "1", "0010-0020"]) == b"1234ABCD"


@pytest.mark.parametrize(
    "path",
    [
        ["0010-9999"],
        ["0010-1002", "2"],
        ["0010-1002", "x"],
        ["0010-0010", "0"],
        ["0010-1002", "0", "0008-0018"],
        ["NoSuchKeyword"],
        ["7fe0-0010", "1"],
    ],
)
def test_content_unknown_paths(ct_small: bytes, path: list[str]) -> None:
    with pytest.raises(OrthancError) as caught:
        content_value(ct_small, path)
    assert caught.value.code is ErrorCode.UNKNOWN_RESOURCE


def test_content_list_of_a_leaf_is_refused(ct_small: bytes) -> None:
    with pytest.raises(OrthancError) as caught:
        content_list(ct_small, ["0010-0010"])
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_content_native_pixel_data(ct_small: bytes) -> None:
    assert content_list(ct_small, ["7fe0-0010"]) == ["0"]
    pixels = content_value(ct_small, ["7fe0-0010", "0"])
    assert isinstance(pixels, bytes) and len(pixels) == 128 * 128 * 2


def test_content_encapsulated_pixel_data() -> None:
    data = sample("JPEG2000.dcm")
    blocks = content_list(data, ["7fe0-0010"])
    assert blocks == ["0", "1"]  # basic offset table, then one fragment
    fragment = content_value(data, ["7fe0-0010", "1"])
    assert isinstance(fragment, bytes) and fragment[:4] == b"\xff\x4f\xff\x51"


def test_content_of_big_endian_numbers_is_little_endian() -> None:
    data = sample("MR_small_bigendian.dcm")
    assert content_value(data, ["0028-0010"]) == struct.pack("<H", 64)


def test_content_of_nested_sequences() -> None:
    ds = Dataset()
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = "1.2.3.9"
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([outer])
    data = write(ds)
    assert content_value(data, ["0008-1140", "0", "0008-1155"]) == b"1.2.3.9\0"
    assert content_value(data, ["0008-1140", "0", "0040-a170", "0", "0008-0100"]) == b"T-A0100 "
    nested = tags_json(data, "simplify")["ReferencedImageSequence"]
    assert nested == [
        {
            "PurposeOfReferenceCodeSequence": [{"CodeValue": "T-A0100"}],
            "ReferencedSOPInstanceUID": "1.2.3.9",
        }
    ]
