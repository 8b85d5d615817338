"""Orthanc's matching rules (ORTHANC_API.md §11.4, §13): parsing and the Python matcher."""

from __future__ import annotations

import pytest
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.find import (
    Constraint,
    Kind,
    build_constraints,
    file_constraints,
    fold_variants,
    glob_pattern,
    index_constraints,
    main_tag_level,
    make_constraint,
    parse_rest_query,
    regex_pattern,
    tag_of,
)
from dicomkeep.common.ids import Level


def constraint(keyword: str, value: str, level: Level = Level.STUDY, **options: bool) -> Constraint:
    made = make_constraint(tag_of(keyword), value, level, **options)
    assert made is not None
    return made


def test_tags_by_keyword_or_number() -> None:
    assert tag_of("PatientName") == 0x00100010
    assert tag_of("0010,0010") == 0x00100010
    assert tag_of("0009,10AF") == 0x000910AF
    with pytest.raises(OrthancError) as error:
        tag_of("NoSuchKeyword")
    assert error.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("keyword", "level", "expected"),
    [
        ("PatientName", Level.PATIENT, Level.PATIENT),
        ("PatientName", Level.INSTANCE, Level.PATIENT),
        ("StudyDate", Level.SERIES, Level.STUDY),
        ("Modality", Level.STUDY, Level.SERIES),
        ("SOPInstanceUID", Level.PATIENT, Level.INSTANCE),
        ("ImageOrientationPatient", Level.SERIES, Level.SERIES),
        ("ImageOrientationPatient", Level.INSTANCE, Level.INSTANCE),
        ("ImageOrientationPatient", Level.STUDY, Level.SERIES),
        ("Rows", Level.INSTANCE, None),
    ],
)
def test_main_tag_level(keyword: str, level: Level, expected: Level | None) -> None:
    assert main_tag_level(keyword, level) is expected


def test_first_rule_that_applies() -> None:
    dates = constraint("StudyDate", "20200101-20201231")
    assert (dates.kind, dates.values) == (Kind.RANGE, ("20200101", "20201231"))
    assert constraint("StudyDate", "-20201231").values == ("", "20201231")
    assert constraint("StudyTime", "0800-").values == ("0800", "")
    assert make_constraint(tag_of("StudyDate"), "-", Level.STUDY) is None
    # Range matching exists for DA, DT and TM only.
    assert constraint("StudyDescription", "A-B").kind is Kind.EXACT
    uids = constraint("StudyInstanceUID", "1.2\\1.3\\1.2")
    assert (uids.kind, uids.values) == (Kind.LIST, ("1.2", "1.3"))
    assert constraint("PatientName", "DOE*").kind is Kind.WILDCARD
    assert constraint("AccessionNumber", "A?1").kind is Kind.WILDCARD
    assert constraint("PatientName", "DOE").kind is Kind.EXACT


def test_modalities_in_study_is_a_list_on_the_series_modality() -> None:
    made = constraint("ModalitiesInStudy", "CT")
    assert (made.keyword, made.kind, made.values, made.level) == (
        "Modality", Kind.LIST, ("CT",), Level.SERIES
    )


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("StudyInstanceUID", "1.2.*"), ("StudyDate", "2020*"), ("StudyDate", "2020*-2021"),
     ("SeriesNumber", "1?")],
)
def test_wildcards_are_refused_outside_wildcard_vrs(keyword: str, value: str) -> None:
    with pytest.raises(OrthancError) as error:
        make_constraint(tag_of(keyword), value, Level.STUDY)
    assert error.value.code is ErrorCode.PARAMETER_OUT_OF_RANGE
    assert "Wildcards are not allowed on tag" in (error.value.details or "")


def test_sequences_cannot_be_matched() -> None:
    with pytest.raises(OrthancError) as error:
        make_constraint(tag_of("ReferencedStudySequence"), "x", Level.STUDY)
    assert error.value.code is ErrorCode.PARAMETER_OUT_OF_RANGE


def test_build_constraints_skips_universal_and_special_keys() -> None:
    items = [
        (tag_of("QueryRetrieveLevel"), "STUDY"),
        (tag_of("SpecificCharacterSet"), "ISO_IR 100"),
        (tag_of("TimezoneOffsetFromUTC"), "+0100"),
        (0x00100000, "12"),
        (tag_of("StudyInstanceUID"), ""),
        (tag_of("PatientName"), "doe*"),
        (tag_of("AccessionNumber"), "a1"),
    ]
    made = build_constraints(Level.STUDY, items, case_sensitive=True, case_sensitive_pn=False)
    assert [(c.keyword, c.case_sensitive) for c in made] == [
        ("PatientName", False), ("AccessionNumber", True),
    ]
    rest = build_constraints(Level.STUDY, items[-2:], case_sensitive=False)
    assert [c.case_sensitive for c in rest] == [False, False]


@pytest.mark.parametrize(
    ("keyword", "pattern", "sensitive", "matching", "not_matching"),
    [
        ("PatientName", "DOE*", True, ["DOE", "DOE^JOHN"], ["doe^john", "JOHN^DOE", None]),
        ("PatientName", "*^JOHN", True, ["DOE^JOHN", "^JOHN"], ["DOE^JOHNNY"]),
        ("PatientName", "D?E", True, ["DOE", "DUE"], ["DE", "DOOE"]),
        ("PatientName", "doe*", False, ["DOE^JOHN", "Doe"], ["JOHN^DOE"]),
        ("PatientName", "müller*", False, ["MÜLLER^HANS", "Müller"], ["MULLER"]),
        ("PatientName", "MÜLLER", True, ["MÜLLER"], ["müller"]),
        ("StudyDescription", "a.b(c)+$^|{1}[x]*", True, ["a.b(c)+$^|{1}[x]", "a.b(c)+$^|{1}[x]yz"], ["aXb(c)+$^|{1}[x]", "a.b(c)+$^|{1}x"]),
        ("StudyDescription", "*", True, ["", "anything\nwith a newline"], [None]),
        ("StudyDescription", "KNEE", True, ["KNEE"], ["knee", "KNEE "]),
        ("StudyDescription", "KNEE", False, ["knee", "Knee"], ["KNEES"]),
        ("StudyDate", "20200101-20201231", True, ["20200101", "20201231", "20200615"], ["20210101", "2019"]),
        ("StudyDate", "20200101-", True, ["20200101", "99999999"], ["20191231"]),
        ("StudyDate", "-20200101", True, ["20200101", "1999"], ["20200102"]),
        ("StudyTime", "080000-090000", True, ["083722", "080000", "083722.000000"], ["090000.1", "07"]),
        ("StudyInstanceUID", "1.2\\1.3", True, ["1.2", "1.3"], ["1.23", "1"]),
        ("AccessionNumber", "a1\\B2", False, ["A1", "b2"], ["A12"]),
        ("AccessionNumber", "A*\\B", True, ["A*", "B"], ["AB"]),  # no wildcard inside lists
    ],
)
def test_matcher(
    keyword: str, pattern: str, sensitive: bool, matching: list[str], not_matching: list[str | None]
) -> None:
    made = constraint(keyword, pattern, case_sensitive=sensitive)
    for value in matching:
        assert made.matches(value), value
    for other in not_matching:
        assert not made.matches(other), other


def test_patterns_render_case_classes() -> None:
    assert fold_variants("a") == "aA"
    assert fold_variants("É") == "Éé"
    assert fold_variants("ß") == "ß"
    assert fold_variants("1") == "1"
    assert regex_pattern("Dé*?.", wildcard=True, case_sensitive=False) == "^[Dd][éÉ].*.\\.$"
    assert regex_pattern("a*", wildcard=False, case_sensitive=True) == "^a\\*$"
    assert glob_pattern("Dé*?[", wildcard=True, case_sensitive=False) == "[Dd][éÉ]*?[[]"
    assert glob_pattern("a*?", wildcard=False, case_sensitive=True) == "a[*][?]"


def test_rest_query() -> None:
    made = parse_rest_query(
        Level.SERIES, {"PatientName": "", "0008,0060": "MR", "Rows": "512"}, case_sensitive=False
    )
    assert [c.keyword for c in made] == ["Modality", "Rows"]
    assert [c.keyword for c in index_constraints(made)] == ["Modality"]
    assert [c.keyword for c in file_constraints(made)] == ["Rows"]
    with pytest.raises(OrthancError) as error:
        parse_rest_query(Level.SERIES, {"Modality": 3}, case_sensitive=False)
    assert error.value.details == 'Tag "Modality" should be associated with a string'
    with pytest.raises(OrthancError):
        parse_rest_query(Level.SERIES, {"Nonsense": "x"}, case_sensitive=False)
