"""Modification and anonymization of datasets (common/modification.py), Orthanc's rules."""

from __future__ import annotations

import pytest
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.modification import parse_anonymize_request, parse_modify_request
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


def dataset() -> Dataset:
    ds = Dataset()
    ds.PatientID = "P1"
    ds.PatientName = "Doe^John"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.FrameOfReferenceUID = "1.2.9"
    ds.InstitutionName = "Hospital"
    ds.StudyDate = "20200101"
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = "1.2.3.4.6"
    reference.add_new(0x00091001, "LO", "private inside")
    ds.ReferencedImageSequence = Sequence([reference])
    ds.add_new(0x00090010, "LO", "CREATOR")
    ds.add_new(0x00091001, "LO", "private")
    return ds


def test_series_modification_maps_series_and_sop_uids_consistently() -> None:
    modification = parse_modify_request({"Replace": {"SeriesDescription": "x"}}, Level.SERIES)
    first, second = dataset(), dataset()
    second.SOPInstanceUID = "1.2.3.4.7"
    modification.apply(first)
    modification.apply(second)
    assert first.StudyInstanceUID == "1.2.3"
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != "1.2.3.4"
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SeriesDescription == "x" and first.InstitutionName == "Hospital"


def test_sequence_paths_and_keep() -> None:
    modification = parse_modify_request(
        {"Replace": {"ReferencedImageSequence[0].ReferencedSOPInstanceUID": "9.9"},
         "Remove": ["ReferencedImageSequence[*].0009,1001"],
         "Keep": ["SOPInstanceUID"], "Force": True},
        Level.INSTANCE,
    )  # fmt: skip
    ds = dataset()
    modification.apply(ds)
    assert ds.SOPInstanceUID == "1.2.3.4.5"
    item = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == "9.9" and 0x00091001 not in item


def test_anonymization_basic_profile_and_relationships() -> None:
    modification, overridden = parse_anonymize_request({})
    assert not overridden
    ds = dataset()
    modification.apply(ds)
    assert "InstitutionName" not in ds and ds.StudyDate in ("", None)
    assert 0x00091001 not in ds and 0x00090010 not in ds
    assert ds.PatientID != "P1" and ds.PatientIdentityRemoved == "YES"
    assert ds.FrameOfReferenceUID != "1.2.9"
    item = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID not in ("1.2.3.4.6", "")
    assert 0x00091001 not in item
    again = dataset()
    modification.apply(again)
    assert again.StudyInstanceUID == ds.StudyInstanceUID and again.PatientID == ds.PatientID


def test_keep_private_tags_and_replaced_patient_name() -> None:
    modification, overridden = parse_anonymize_request(
        {"KeepPrivateTags": True, "Replace": {"PatientName": "Anon"}}
    )
    assert overridden
    ds = dataset()
    modification.apply(ds)
    assert ds[0x00091001].value == "private" and ds.PatientName == "Anon"


@pytest.mark.parametrize(
    ("body", "level", "status"),
    [
        ([], Level.STUDY, 400),
        ({"Replace": {"SeriesInstanceUID": "1"}}, Level.INSTANCE, 400),
        ({"Replace": {"StudyInstanceUID": "1"}, "Force": True}, Level.SERIES, 200),
        ({"Keep": ["Unknown"]}, Level.STUDY, 500),
        ({"Remove": "PatientName"}, Level.STUDY, 400),
    ],
)
def test_modify_requests_refused_as_orthanc(body: object, level: Level, status: int) -> None:
    if status == 200:
        parse_modify_request(body, level)
        return
    with pytest.raises(OrthancError) as refused:
        parse_modify_request(body, level)
    assert refused.value.http_status == status


def test_unknown_dicom_version() -> None:
    with pytest.raises(OrthancError) as unknown:
        parse_anonymize_request({"DicomVersion": "1999"})
    assert unknown.value.http_status == 400
    assert unknown.value.details == "Unknown specific version of the DICOM standard: 1999"


def _anonymized(version: str) -> Dataset:
    modification, _ = parse_anonymize_request({"DicomVersion": version})
    ds = dataset()
    ds.StudyDescription = "study"
    ds.AcquisitionDate = "20200101"
    ds.InstanceCreationDate = "20200101"
    ds.IrradiationEventUID = "1.2.77"
    ds.add_new(0x50000010, "US", 1)  # curve data, a repeating group
    ds.add_new(0x60003000, "OW", b"\x00\x00")  # overlay data
    ds.add_new(0x60000010, "US", 1)  # overlay rows: not in the table
    modification.apply(ds)
    return ds


@pytest.mark.parametrize(
    ("version", "method"),
    [
        ("2008", "DicomKeep - PS 3.15-2008 Table E.1-1"),
        ("2017c", "DicomKeep - PS 3.15-2017c Table E.1-1 Basic Profile"),
        ("2021b", "DicomKeep - PS 3.15-2021b Table E.1-1 Basic Profile"),
        ("2023b", "DicomKeep - PS 3.15-2023b Table E.1-1 Basic Profile"),
    ],
)
def test_every_orthanc_dicom_version(version: str, method: str) -> None:
    """Each DicomVersion applies its own edition of Orthanc's table."""
    ds = _anonymized(version)
    assert ds.DeidentificationMethod == method and ds.PatientIdentityRemoved == "YES"
    assert "StudyDescription" not in ds and "InstitutionName" not in ds
    assert ds.FrameOfReferenceUID != "1.2.9" and ds.PatientID != "P1"
    assert 0x60000010 in ds
    # 2008 removes what later editions empty (Type 2 dates) and knows no repeating groups.
    if version == "2008":
        assert "StudyDate" in ds and ds.StudyDate == "20200101"
        assert "AcquisitionDate" in ds and 0x50000010 in ds and 0x60003000 in ds
        assert ds.IrradiationEventUID == "1.2.77"
    else:
        assert ds.StudyDate in ("", None) and "AcquisitionDate" not in ds
        assert 0x50000010 not in ds and 0x60003000 not in ds
        assert ds.IrradiationEventUID not in ("1.2.77", "")
    # Only the 2023b edition removes the Instance Creation Date (X/D).
    assert ("InstanceCreationDate" in ds) == (version != "2023b")


def test_cleared_tags_inside_sequences_as_orthanc() -> None:
    """In a sequence, a cleared string is emptied, any other cleared element removed."""
    modification, _ = parse_anonymize_request({"DicomVersion": "2021b"})
    ds = dataset()
    item = Dataset()
    item.StudyDate = "20200101"
    item.ContentSequence = Sequence([Dataset()])  # D in 2021b: cleared
    item.ReferencedSOPInstanceUID = "1.2.3.4.6"
    ds.SourceImageSequence = Sequence([item])
    modification.apply(ds)
    inner = ds.SourceImageSequence[0]
    assert inner.StudyDate in ("", None) and "ContentSequence" not in inner
    assert inner.ReferencedSOPInstanceUID == ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
