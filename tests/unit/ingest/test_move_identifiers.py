"""How the C-MOVE/C-GET SCP reads an identifier (ORTHANC_API.md §11.5)."""

from __future__ import annotations

import pytest
from dicomkeep.common.ids import Level
from dicomkeep.ingest.move import identifier_targets
from pydicom.dataset import Dataset


def identifier(**values: object) -> Dataset:
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


def test_each_level_has_its_identifying_tag() -> None:
    assert identifier_targets(identifier(QueryRetrieveLevel="PATIENT", PatientID="P1")) == (
        Level.PATIENT, "PatientID", ["P1"],
    )
    assert identifier_targets(identifier(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2")) == (
        Level.SERIES, "SeriesInstanceUID", ["1.2"],
    )
    assert identifier_targets(identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=["1.1", "1.2"])) == (
        Level.INSTANCE, "SOPInstanceUID", ["1.1", "1.2"],
    )


def test_study_prefers_a_non_empty_accession_number() -> None:
    with_accession = identifier(QueryRetrieveLevel="STUDY", AccessionNumber="A1", StudyInstanceUID="1.2")
    assert identifier_targets(with_accession) == (Level.STUDY, "AccessionNumber", ["A1"])
    empty_accession = identifier(QueryRetrieveLevel="STUDY", AccessionNumber="", StudyInstanceUID="1.2")
    assert identifier_targets(empty_accession) == (Level.STUDY, "StudyInstanceUID", ["1.2"])


def test_without_a_level_the_most_specific_tag_wins() -> None:
    assert identifier_targets(identifier(PatientID="P", SeriesInstanceUID="1.2"))[:2] == (
        Level.SERIES, "SeriesInstanceUID",
    )
    assert identifier_targets(identifier(PatientID="P"))[0] is Level.PATIENT


@pytest.mark.parametrize(
    "values",
    [
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
        {"QueryRetrieveLevel": "GALAXY", "StudyInstanceUID": "1.2"},
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2"},
        {},
    ],
)
def test_nothing_to_retrieve_is_an_error(values: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        identifier_targets(identifier(**values))
