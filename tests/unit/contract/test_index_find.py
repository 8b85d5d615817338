"""Contract of `Index.find` / `Index.find_tags`: the same cases on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from dicomkeep.common.events import AttachmentInfo, StoreInstance
from dicomkeep.common.find import build_constraints, make_constraint, tag_of
from dicomkeep.common.ids import Level, hierarchy_ids
from dicomkeep.common.index import Index
from dicomkeep.common.index.find import find_ids


def command(
    patient: str, name: str, study: str, series: str, sop: str, *,
    study_date: str = "20200101", modality: str = "CT", description: str = "KNEE",
    accession: str | None = None, sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
) -> StoreInstance:
    ids = hierarchy_ids(patient, study, series, sop)
    md5 = hashlib.md5(sop.encode()).hexdigest()
    study_tags = {"StudyInstanceUID": study, "StudyDate": study_date, "StudyDescription": description}
    if accession is not None:
        study_tags["AccessionNumber"] = accession
    return StoreInstance(
        patient_id=ids[0], study_id=ids[1], series_id=ids[2], instance_id=ids[3],
        patient_uid=patient, study_uid=study, series_uid=series, sop_uid=sop,
        main_tags={
            Level.PATIENT: {"PatientID": patient, "PatientName": name},
            Level.STUDY: study_tags,
            Level.SERIES: {"SeriesInstanceUID": series, "Modality": modality},
            Level.INSTANCE: {"SOPInstanceUID": sop, "InstanceNumber": sop[-1]},
        },
        metadata={Level.INSTANCE: {10: sop_class}},
        attachments=[AttachmentInfo(
            content_type=1, uuid=f"uuid-{sop}", uncompressed_size=1,
            uncompressed_md5=md5, compressed_size=1, compressed_md5=md5,
        )],
    )


#: (patient, name, study, series, sop, options)
DATA = [
    ("P1", "DOE^JOHN", "1.1", "1.1.1", "1.1.1.1", {"study_date": "20200105", "accession": "A1"}),
    ("P1", "DOE^JOHN", "1.1", "1.1.1", "1.1.1.2", {}),
    ("P1", "DOE^JOHN", "1.1", "1.1.2", "1.1.2.1", {"modality": "MR", "sop_class": "1.2.4"}),
    ("P1", "DOE^JOHN", "1.2", "1.2.1", "1.2.1.1", {"study_date": "20210310", "modality": "US"}),
    ("P2", "Müller^Hans", "2.1", "2.1.1", "2.1.1.1", {"study_date": "19991231", "accession": "a1"}),
    ("P3", "SMITH^JANE", "3.1", "3.1.1", "3.1.1.1", {"description": "50% [A]_x\\y", "modality": "MR"}),
    ("P4", "doe^jane", "4.1", "4.1.1", "4.1.1.1", {"study_date": "20200110", "accession": "A2"}),
]


@pytest.fixture
async def stored(index: Index) -> Index:
    for patient, name, study, series, sop, options in DATA:
        await index.store_instance(command(patient, name, study, series, sop, **options))
    return index


def study_id(patient: str, study: str) -> str:
    return hierarchy_ids(patient, study, "x", "x")[1]


def patient_id(patient: str) -> str:
    return hierarchy_ids(patient, "x", "x", "x")[0]


async def find(index: Index, level: Level, query: dict[str, str], **options: object) -> list[str]:
    sensitive = bool(options.pop("case_sensitive", True))
    pn = options.pop("case_sensitive_pn", None)
    constraints = build_constraints(
        level, [(tag_of(k), v) for k, v in query.items()],
        case_sensitive=sensitive, case_sensitive_pn=pn,  # type: ignore[arg-type]
    )
    return await index.find(level, constraints, **options)  # type: ignore[arg-type]


STUDY_CASES = [
    ({"PatientName": "DOE*"}, {("P1", "1.1"), ("P1", "1.2")}),
    ({"PatientName": "*^JOHN"}, {("P1", "1.1"), ("P1", "1.2")}),
    ({"PatientName": "D?E^JOHN"}, {("P1", "1.1"), ("P1", "1.2")}),
    ({"PatientName": "DOE"}, set()),
    ({"StudyDate": "20200101-20200131"}, {("P1", "1.1"), ("P3", "3.1"), ("P4", "4.1")}),
    ({"StudyDate": "-20000101"}, {("P2", "2.1")}),
    ({"StudyDate": "20210101-"}, {("P1", "1.2")}),
    ({"StudyDate": "20200105"}, {("P1", "1.1")}),
    ({"StudyInstanceUID": "1.2\\3.1\\9.9"}, {("P1", "1.2"), ("P3", "3.1")}),
    ({"AccessionNumber": "A1"}, {("P1", "1.1")}),
    ({"AccessionNumber": "A*"}, {("P1", "1.1"), ("P4", "4.1")}),
    ({"Modality": "MR"}, {("P1", "1.1"), ("P3", "3.1")}),
    ({"ModalitiesInStudy": "US\\MR"}, {("P1", "1.1"), ("P1", "1.2"), ("P3", "3.1")}),
    ({"ModalitiesInStudy": "CT", "PatientID": "P1"}, {("P1", "1.1")}),
    ({"StudyDescription": "50% [A]_x\\y"}, set()),  # a list of two items
    ({"StudyDescription": "50% [A]_x*"}, {("P3", "3.1")}),
    ({"StudyDescription": "5_%*"}, set()),
    ({"StudyDescription": "*[A]?x*"}, {("P3", "3.1")}),
    ({"StudyDescription": "KNEE", "PatientName": "*jane"}, {("P4", "4.1")}),
    ({"StudyDescription": "KNEE", "PatientName": "*JANE"}, set()),
    ({"StudyDate": "-"}, {("P1", "1.1"), ("P1", "1.2"), ("P2", "2.1"), ("P3", "3.1"), ("P4", "4.1")}),
    ({"StudyDescription": "-"}, set()),
    ({"AccessionNumber": "*"}, {("P1", "1.1"), ("P2", "2.1"), ("P4", "4.1")}),  # absent -> no match
]


async def test_study_queries(stored: Index) -> None:
    for query, expected in STUDY_CASES:
        found = await find(stored, Level.STUDY, query)
        assert set(found) == {study_id(p, s) for p, s in expected}, query
        assert len(found) == len(set(found)), query


async def test_person_names_fold_case_with_accents(stored: Index) -> None:
    insensitive = await find(stored, Level.PATIENT, {"PatientName": "müller*"}, case_sensitive_pn=False)
    assert insensitive == [patient_id("P2")]
    assert await find(stored, Level.PATIENT, {"PatientName": "MÜLLER^HANS"}, case_sensitive_pn=False) == [patient_id("P2")]
    assert await find(stored, Level.PATIENT, {"PatientName": "müller*"}, case_sensitive_pn=True) == []
    both = await find(stored, Level.PATIENT, {"PatientName": "doe*"}, case_sensitive_pn=False)
    assert both == [patient_id("P1"), patient_id("P4")]
    # C-FIND keeps other VRs case-sensitive; /tools/find may fold every tag.
    assert await find(stored, Level.STUDY, {"AccessionNumber": "a1"}, case_sensitive_pn=False) == [study_id("P2", "2.1")]
    folded = await find(stored, Level.STUDY, {"AccessionNumber": "a1"}, case_sensitive=False)
    assert set(folded) == {study_id("P1", "1.1"), study_id("P2", "2.1")}
    listed = await find(stored, Level.STUDY, {"AccessionNumber": "a2\\zz"}, case_sensitive=False)
    assert listed == [study_id("P4", "4.1")]


async def test_levels_see_ancestors_and_descendants(stored: Index) -> None:
    series = await find(stored, Level.SERIES, {"PatientName": "DOE^JOHN", "Modality": "CT"})
    assert series == [hierarchy_ids("P1", "1.1", "1.1.1", "x")[2]]
    instances = await find(stored, Level.INSTANCE, {"StudyDate": "20200105", "InstanceNumber": "2"})
    assert instances == [hierarchy_ids("P1", "1.1", "1.1.1", "1.1.1.2")[3]]
    patients = await find(stored, Level.PATIENT, {"Modality": "US"})
    assert patients == [patient_id("P1")]
    # One descendant chain must satisfy all lower constraints together.
    assert await find(stored, Level.PATIENT, {"Modality": "US", "StudyDate": "20200105"}) == []
    assert await find(stored, Level.PATIENT, {"Modality": "MR", "StudyDate": "20200105"}) == [patient_id("P1")]


async def test_since_limit_and_index_order(stored: Index) -> None:
    everything = await find(stored, Level.INSTANCE, {})
    assert len(everything) == len(DATA)
    assert everything == await stored.list_resources(Level.INSTANCE)
    assert await find(stored, Level.INSTANCE, {}, since=2, limit=3) == everything[2:5]
    assert await find(stored, Level.INSTANCE, {}, since=5) == everything[5:]
    assert await find(stored, Level.INSTANCE, {}, limit=0) == []


async def test_labels(stored: Index) -> None:
    studies = await stored.list_resources(Level.STUDY)
    async with stored.db.transaction() as tx:
        for public_id, label in ((studies[0], "red"), (studies[0], "blue"), (studies[1], "red")):
            internal = await tx.fetchval("SELECT internal_id FROM resources WHERE public_id = $1", public_id)
            await tx.execute("INSERT INTO labels(internal_id, label) VALUES ($1, $2)", internal, label)
    assert await stored.find(Level.STUDY, [], labels=["red", "blue"]) == [studies[0]]
    assert await stored.find(Level.STUDY, [], labels=["blue", "red"], labels_constraint="Any") == studies[:2]
    assert await stored.find(Level.STUDY, [], labels=["red"], labels_constraint="None") == studies[2:]


async def test_file_constraints_are_refused(stored: Index) -> None:
    constraint = make_constraint(tag_of("Rows"), "5", Level.INSTANCE)
    assert constraint is not None and constraint.level is None
    with pytest.raises(ValueError):
        await stored.find(Level.INSTANCE, [constraint])


async def test_python_matcher_agrees_with_the_index(stored: Index) -> None:
    values = {study_id(p, s): o.get("description", "KNEE") for p, _, s, _, _, o in DATA}
    patterns = ["*", "?NEE", "k*", "*e", "50*", "*%*", "*_*", "*[*", "*\\*", "KNEE\\k", "[A]"]
    for sensitive in (True, False):
        for pattern in patterns:
            constraint = make_constraint(
                tag_of("StudyDescription"), pattern, Level.STUDY, case_sensitive=sensitive
            )
            assert constraint is not None
            expected = {i for i, v in values.items() if constraint.matches(v)}
            assert set(await stored.find(Level.STUDY, [constraint])) == expected, (pattern, sensitive)


async def test_find_tags_merges_levels_and_computes(stored: Index) -> None:
    study = study_id("P1", "1.1")
    tags = await stored.find_tags(
        Level.STUDY, [study, "unknown"],
        ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
         "SOPClassesInStudy", "NumberOfPatientRelatedStudies"],
    )
    assert list(tags) == [study]
    assert tags[study] == {
        "PatientID": "P1", "PatientName": "DOE^JOHN", "StudyInstanceUID": "1.1",
        "StudyDate": "20200105", "StudyDescription": "KNEE", "AccessionNumber": "A1",
        "NumberOfStudyRelatedSeries": "2", "NumberOfStudyRelatedInstances": "3",
        "ModalitiesInStudy": "CT\\MR", "SOPClassesInStudy": "1.2.4\\1.2.840.10008.5.1.4.1.1.2",
    }
    instance = hierarchy_ids("P1", "1.1", "1.1.2", "1.1.2.1")[3]
    assert (await stored.find_tags(Level.INSTANCE, [instance]))[instance]["Modality"] == "MR"
    patient = patient_id("P1")
    counts = await stored.find_tags(
        Level.PATIENT, [patient],
        ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"],
    )
    assert counts[patient]["NumberOfPatientRelatedStudies"] == "2"
    assert counts[patient]["NumberOfPatientRelatedSeries"] == "3"
    assert counts[patient]["NumberOfPatientRelatedInstances"] == "4"
    assert "StudyDate" not in counts[patient]
    series = hierarchy_ids("P1", "1.1", "1.1.1", "x")[2]
    assert (await stored.find_tags(Level.SERIES, [series], ["NumberOfSeriesRelatedInstances"]))[series][
        "NumberOfSeriesRelatedInstances"] == "2"


async def test_case_insensitive_identifiers_seek_an_index(stored: Index) -> None:
    """A case-insensitive exact value (PatientID in /tools/find by default) finds the
    same resources through the `main_tags_upper` index; SQLite's plan seeks it
    rather than visiting every study (the cost grew with the store's size)."""
    p1 = {study_id("P1", "1.1"), study_id("P1", "1.2")}
    assert set(await find(stored, Level.STUDY, {"PatientID": "p1"}, case_sensitive=False)) == p1
    listed = await find(stored, Level.STUDY, {"PatientID": "p1\\P4\\zz"}, case_sensitive=False)
    assert set(listed) == p1 | {study_id("P4", "4.1")}
    assert await find(stored, Level.STUDY, {"PatientID": "p1"}, case_sensitive=True) == []
    # A wildcard's literal prefix is a range of the index.
    assert set(await find(stored, Level.STUDY, {"PatientName": "do*"}, case_sensitive=False)) == p1 | {
        study_id("P4", "4.1")
    }
    assert set(await find(stored, Level.STUDY, {"PatientID": "p?"}, case_sensitive=False)) == {
        study_id(p, s) for p, _, s, _, _, _ in DATA
    }
    assert await find(stored, Level.STUDY, {"AccessionNumber": "a~*"}, case_sensitive=False) == []
    # Non-ASCII values are matched without the index, folding accented letters too.
    assert await find(stored, Level.PATIENT, {"PatientName": "müller^hans"}, case_sensitive=False) == [
        patient_id("P2")
    ]
    if stored.dialect != "sqlite":
        return
    plans: list[str] = []

    class Explaining:
        def __init__(self, tx: Any) -> None:
            self.tx = tx

        async def fetch(self, sql: str, *args: Any) -> list[Any]:
            plans.extend(str(row[3]) for row in await self.tx.fetch("EXPLAIN QUERY PLAN " + sql, *args))
            return []

    for keyword, value in (("PatientID", "p1"), ("PatientName", "do*")):
        plans.clear()
        constraints = build_constraints(Level.STUDY, [(tag_of(keyword), value)], case_sensitive=False)
        async with stored.db.transaction(readonly=True) as tx:
            await find_ids(Explaining(tx), "sqlite", Level.STUDY, constraints)  # type: ignore[arg-type]
        assert any("main_tags_upper (tag_level=? AND name=? AND <expr>" in plan for plan in plans), plans
