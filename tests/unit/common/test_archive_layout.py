"""Archive naming and options as Orthanc's ArchiveJob and OrthancRestArchive."""

from __future__ import annotations

import pytest
from dicomkeep.common.archives import (
    ArchiveOptions,
    _file_format,
    _Folder,
    _folder_name,
    attachment_filename,
    parse_options,
    resources_of,
)
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.ids import Level


def test_folder_names_keep_ascii_letters_digits_dots_and_underscores() -> None:
    folder = _Folder()
    assert folder.unique(_folder_name(Level.PATIENT, {"PatientID": "1CT1", "PatientName": "A^B"})) == "1CT1 A B"
    assert folder.unique(_folder_name(Level.PATIENT, {"PatientID": "1CT1", "PatientName": "A^B"})) == "1CT1 A B-2"
    assert folder.unique(_folder_name(Level.STUDY, {"StudyDescription": "e+1 / x.y_z"})) == "e1 x.y_z"
    assert folder.unique(_folder_name(Level.SERIES, {"SeriesDescription": "Люк"})) == "Unknown Series"
    assert folder.unique(_folder_name(Level.STUDY, {})) == "Unknown Study"


def test_file_names_take_two_letters_of_the_modality() -> None:
    assert _file_format("CT") == ("CT", 6)
    assert _file_format("rtplan") == ("RT", 6)
    assert _file_format("M") == ("M", 7)
    assert _file_format("") == ("", 8)


def test_options() -> None:
    assert parse_options({}) == ArchiveOptions()
    assert parse_options({"Asynchronous": True, "Priority": -2}) == ArchiveOptions(synchronous=False, priority=-2)
    assert parse_options({"Synchronous": True, "Asynchronous": True}).synchronous
    assert parse_options({}, default_extended=True).extended
    assert parse_options({"Transcode": "1.2.840.10008.1.2"}).transcode == "1.2.840.10008.1.2"
    for bad in ({"Synchronous": "yes"}, {"Priority": True}, {"Transcode": 3}, {"Transcode": "1.2.3"}):
        with pytest.raises(OrthancError) as raised:
            parse_options(bad)
        assert raised.value.http_status == 400


def test_resources_and_filenames() -> None:
    assert resources_of(["a"]) == ["a"]
    assert resources_of({"Resources": ["a", "b"]}) == ["a", "b"]
    for bad in ({}, {"Resources": "a"}, {"Resources": [1]}, "a"):
        with pytest.raises(OrthancError):
            resources_of(bad)
    assert attachment_filename('a"b\r\nc.zip', "x.zip") == "abc.zip"
    assert attachment_filename("", "x.zip") == "x.zip"
