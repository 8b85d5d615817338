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
    assert unknown.value.details == "Unknown specific version of the DICOM standard: 1999"
    with pytest.raises(OrthancError) as unsupported:
        parse_anonymize_request({"DicomVersion": "2021b"})
    assert unsupported.value.http_status == 400 and "2023b" in (unsupported.value.details or "")
