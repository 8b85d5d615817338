"""Query the archive three ways: DCMTK findscu, pynetdicom C-FIND, and POST /tools/find.

One data set (synthetic studies with chosen names, dates and accession numbers,
plus pydicom's CT_small and MR_small) is stored once per mode; every query of the
table runs through the three clients, whose answers must equal the expected set
computed here from the files (ORTHANC_API.md §11.4, §13).
"""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomfiles import sample_path
from dicomkeep.common.ids import hierarchy_ids
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from servers import Server, dcmtk, wait_until
from synthetic import generate_study

SERVER_CONFIG = {
    "DicomModalities": {
        "findscu": ["FINDSCU", "127.0.0.1", 104],
        "pynetdicom": {"AET": "PYFIND", "Host": "127.0.0.1", "Port": 104},
        "blocked": {"AET": "NOFIND", "Host": "127.0.0.1", "Port": 104, "AllowFind": False},
    },
    "LimitFindInstances": 5,
}
LIMIT_FIND_INSTANCES = 5

#: (PatientID, PatientName, charset, studies); a study = (key, StudyDate,
#: AccessionNumber, StudyDescription, series), a series = (Modality, instances, Rows).
PATIENTS: list[tuple[str, str, str | None, list[tuple[str, str, str, str, list[tuple[str, int, int]]]]]] = [
    ("DKQ1", "DOE^JOHN", None, [
        ("1a", "20200105", "ACC1", "CT CHEST", [("CT", 2, 64), ("CT", 1, 64)]),
        ("1b", "20210310", "acc2", "MR BRAIN", [("MR", 2, 64)]),
    ]),
    ("DKQ2", "DOE^JANE", None, [("2a", "20200120", "ACC3", "CT ABDOMEN", [("CT", 1, 64)])]),
    ("DKQ3", "Doe^Mary", None, [("3a", "19991231", "ACC4", "US THYROID", [("US", 1, 64)])]),
    ("DKQ4", "SMITH^JOHN", None, [
        ("4a", "20220601", "ACC5", "PET CT", [("CT", 1, 32), ("MR", 1, 32)]),
    ]),
    ("DKQ5", "Müller^Hans", "ISO_IR 100", [("5a", "20230101", "ACC6", "CT KNEE", [("CT", 1, 64)])]),
]
SAMPLES = ["CT_small.dcm", "MR_small.dcm"]
LEVELS = ["PATIENT", "STUDY", "SERIES", "IMAGE"]
REST_LEVELS = {"PATIENT": "Patient", "STUDY": "Study", "SERIES": "Series", "IMAGE": "Instance"}
#: The UIDs identifying a resource at each level (returned keys of every C-FIND).
IDENTIFIERS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
RANGE_KEYS = {"StudyDate"}
PN_KEYS = {"PatientName"}


def study_uid(key: str) -> str:
    return f"1.2.826.0.1.3680043.8.498.4242.{key[0]}.{ord(key[1])}"


@dataclass(frozen=True)
class Record:
    """One stored instance: its Orthanc IDs and the attributes the queries look at."""

    ids: tuple[str, str, str, str]
    tags: dict[str, str]


def _rewrite(data: bytes, study: tuple[str, str, str, str, Any]) -> bytes:
    ds = dcmread(BytesIO(data))
    _, date, accession, description, _ = study
    ds.StudyDate, ds.AccessionNumber, ds.StudyDescription = date, accession, description
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _files(folder: Path) -> list[Path]:
    paths = []
    seed = 100
    for patient_id, name, charset, studies in PATIENTS:
        for study in studies:
            for modality, count, rows in study[4]:
                seed += 1
                for instance in generate_study(
                    patient_id=patient_id, patient_name=name, study_uid=study_uid(study[0]),
                    series=1, instances_per_series=count, modality=modality, rows=rows,
                    seed=seed, charset=charset,
                ):
                    path = folder / f"{instance.sop_uid}.dcm"
                    path.write_bytes(_rewrite(instance.data, study))
                    paths.append(path)
    return paths + [sample_path(name) for name in SAMPLES]


def _record(path: Path) -> Record:
    ds = dcmread(path, stop_before_pixels=True)
    tags = {
        keyword: str(ds.get(keyword, "") or "").rstrip(" \0")
        for keyword in (*IDENTIFIERS, "PatientName", "StudyDate", "AccessionNumber",
                        "StudyDescription", "Modality", "SOPClassUID")
    }
    tags["Rows"] = str(ds.Rows)
    ids = hierarchy_ids(*(tags[k] for k in IDENTIFIERS))
    return Record(ids, tags)


@pytest.fixture(scope="module")
def stored(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    """The data set, stored once through storescu; its records in storage order."""
    folder = tmp_path_factory.mktemp("query-files")
    paths = _files(folder)
    result = subprocess.run(
        [dcmtk("storescu"), "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
         *map(str, paths)],
        capture_output=True, timeout=120, text=True,
    )
    assert result.returncode == 0, result.stderr
    records = [_record(p) for p in paths]
    with server.client() as client:
        wait_until(lambda: len(client.get("/instances").json()) == len(records), 30,
                   "every instance to be indexed")
        # Stable* changes come StableAge after the last store: wait for them, so that
        # the tests below can check that nothing changes.
        wait_until(
            lambda: all(p["IsStable"] for p in client.get("/patients?expand").json()), 60,
            "every patient to be stable",
        )
    return records


# -- the expected answers, computed from the files --------------------------------
def _reference_match(key: str, pattern: str, value: str, *, fold: bool) -> bool:
    """An independent reading of §11.4 (no `[` in the patterns below)."""
    if key == "ModalitiesInStudy":  # a list on the series' modality
        return value in pattern.split("\\")
    norm = (lambda s: s.upper()) if fold else (lambda s: s)
    if key in RANGE_KEYS and "-" in pattern:
        lower, upper = pattern.split("-", 1)
        return (not lower or value >= lower) and (not upper or value <= upper)
    if "\\" in pattern:
        return any(norm(value) == norm(item) for item in pattern.split("\\"))
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(norm(value), norm(pattern))
    return norm(value) == norm(pattern)


def expected(
    records: list[Record], level: str, query: dict[str, str], *, fold_pn: bool, fold_all: bool
) -> list[str]:
    """IDs at `level` with at least one instance matching every key, in storage order."""
    depth = LEVELS.index(level)
    found: list[str] = []
    for record in records:
        ok = all(
            _reference_match(
                key, pattern,
                record.tags["Modality" if key == "ModalitiesInStudy" else key],
                fold=fold_all or (fold_pn and key in PN_KEYS),
            )
            for key, pattern in query.items() if pattern
        )
        if ok and record.ids[depth] not in found:
            found.append(record.ids[depth])
    return found


# -- the three clients -------------------------------------------------------------
def _returned_keys(level: str, query: dict[str, str], extra: list[str]) -> list[str]:
    keys = IDENTIFIERS[: LEVELS.index(level) + 1] + extra
    return [k for k in dict.fromkeys(keys) if k not in query]


def _ids_of(level: str, answers: list[Dataset]) -> list[str]:
    depth = LEVELS.index(level)
    ids = []
    for answer in answers:
        parts = [str(answer.get(k, "") or "") for k in IDENTIFIERS[: depth + 1]]
        parts += ["x"] * (3 - depth)
        ids.append(hierarchy_ids(*parts)[depth])
    return ids


@dataclass
class FindAnswer:
    answers: list[Dataset]
    final: str  # findscu's final line / pynetdicom's final status as hex
    output: str = ""


def run_findscu(
    server: Server, folder: Path, level: str, query: dict[str, str], *,
    extra: list[str] | None = None, aet: str = "FINDSCU", model: str | None = None,
) -> FindAnswer:
    folder.mkdir(parents=True, exist_ok=True)
    model = model or ("-P" if level == "PATIENT" else "-S")
    keys = [f"{k}={v}" for k, v in query.items()]
    keys += _returned_keys(level, query, extra or [])
    if any(not v.isascii() for v in query.values()):
        keys.append("SpecificCharacterSet=ISO_IR 192")
    argv = [dcmtk("findscu"), "-v", model, "-aet", aet, "-aec", server.aet, "-X", "-od", str(folder),
            "-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        argv += ["-k", key]
    result = subprocess.run(argv + ["127.0.0.1", str(server.dicom_port)],
                            capture_output=True, timeout=60, text=True)
    output = result.stdout + result.stderr
    answers = [dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]
    final = next((line for line in output.splitlines() if "Final Find Response" in line), "")
    return FindAnswer(answers, final, output)


def run_pynetdicom(
    server: Server, level: str | None, query: dict[str, Any], *,
    extra: list[str] | None = None, aet: str = "PYFIND", keys: bool = True,
) -> FindAnswer:
    ae = AE(ae_title=aet)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    identifier = Dataset()
    if any(isinstance(v, str) and not v.isascii() for v in query.values()):
        identifier.SpecificCharacterSet = "ISO_IR 192"
    if level is not None:
        identifier.QueryRetrieveLevel = level
    for key, value in query.items():
        setattr(identifier, key, value)
    if keys and level in LEVELS:
        for key in _returned_keys(level, query, extra or []):
            setattr(identifier, key, "" if key != "Rows" else None)
    model = (
        PatientRootQueryRetrieveInformationModelFind if level == "PATIENT"
        else StudyRootQueryRetrieveInformationModelFind
    )
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert assoc.is_established
    answers: list[Dataset] = []
    final = ""
    try:
        for status, answer in assoc.send_c_find(identifier, model):
            if status is None:
                final = "none"
                break
            if status.Status in (0xFF00, 0xFF01):
                answers.append(answer)
            else:
                final = f"{status.Status:04X}"
    finally:
        assoc.release()
    return FindAnswer(answers, final)


def rest_find(server: Server, body: dict[str, Any]) -> httpx.Response:
    with server.client() as client:
        return client.post("/tools/find", json=body)


# -- the table -----------------------------------------------------------------------
QUERIES: list[tuple[str, dict[str, str]]] = [
    ("PATIENT", {"PatientName": "DOE*"}),
    ("PATIENT", {"PatientName": "doe^jane"}),
    ("PATIENT", {"PatientName": "*^JOHN"}),
    ("PATIENT", {"PatientName": "D?E^J*"}),
    ("PATIENT", {"PatientName": "?"}),
    ("PATIENT", {"PatientName": "müller*"}),
    ("PATIENT", {"PatientID": "DKQ1\\DKQ3\\NOPE"}),
    ("STUDY", {"PatientName": "DOE*"}),
    ("STUDY", {"StudyDate": "20200101-20201231"}),
    ("STUDY", {"StudyDate": "-20000101"}),
    ("STUDY", {"StudyDate": "20210101-"}),
    ("STUDY", {"StudyDate": "20040119"}),
    ("STUDY", {"StudyInstanceUID": f"{study_uid('1a')}\\{study_uid('4a')}"}),
    ("STUDY", {"AccessionNumber": "acc2"}),
    ("STUDY", {"AccessionNumber": "ACC2"}),
    ("STUDY", {"AccessionNumber": "ACC?"}),
    ("STUDY", {"StudyDescription": "CT*"}),
    ("STUDY", {"StudyDescription": "ct*"}),
    ("STUDY", {"ModalitiesInStudy": "MR"}),
    ("STUDY", {"ModalitiesInStudy": "US\\MR"}),
    ("STUDY", {"PatientName": "*JOHN", "StudyDescription": "*CT*"}),
    ("SERIES", {"Modality": "MR"}),
    ("SERIES", {"Modality": "CT", "StudyDate": "20200105"}),
    ("SERIES", {"Rows": "32"}),
    ("IMAGE", {"PatientID": "DKQ1", "Modality": "MR"}),
    ("IMAGE", {"StudyDescription": "PET CT"}),
]


@pytest.mark.parametrize(("level", "query"), QUERIES, ids=[f"{lv}-{q}" for lv, q in QUERIES])
def test_three_clients_agree(
    server: Server, stored: list[Record], tmp_path: Path, level: str, query: dict[str, str]
) -> None:
    # C-FIND: PN case-insensitive (CaseSensitivePN false), every other VR case-sensitive.
    want = expected(stored, level, query, fold_pn=True, fold_all=False)
    assert len(want) <= LIMIT_FIND_INSTANCES or level != "IMAGE"
    dcmtk_answer = run_findscu(server, tmp_path / "findscu", level, query)
    assert "(Success)" in dcmtk_answer.final, dcmtk_answer.output
    assert _ids_of(level, dcmtk_answer.answers) == want, dcmtk_answer.output
    pynet = run_pynetdicom(server, level, {k: (int(v) if k == "Rows" else v) for k, v in query.items()})
    assert pynet.final == "0000"
    assert _ids_of(level, pynet.answers) == want
    # /tools/find: CaseSensitive (default false) applies to every tag.
    rest_level = REST_LEVELS[level]
    folded = rest_find(server, {"Level": rest_level, "Query": query})
    assert folded.status_code == 200, folded.text
    assert folded.json() == expected(stored, level, query, fold_pn=True, fold_all=True)
    strict = rest_find(server, {"Level": rest_level, "Query": query, "CaseSensitive": True})
    assert strict.json() == expected(stored, level, query, fold_pn=False, fold_all=False)


def test_answers_carry_requested_keys_and_computed_tags(server: Server, stored: list[Record], tmp_path: Path) -> None:
    extra = ["PatientName", "StudyDate", "StudyDescription", "NumberOfStudyRelatedSeries",
             "NumberOfStudyRelatedInstances", "ModalitiesInStudy", "InstanceAvailability",
             "ReferringPhysicianName", "SOPClassesInStudy", "Modality"]
    query = {"AccessionNumber": "ACC5\\ACC6"}
    for answer in (
        run_findscu(server, tmp_path / "a", "STUDY", query, extra=extra),
        run_pynetdicom(server, "STUDY", query, extra=extra),
    ):
        assert len(answer.answers) == 2
        by_accession = {str(a.AccessionNumber): a for a in answer.answers}
        pet = by_accession["ACC5"]
        assert pet.QueryRetrieveLevel == "STUDY"
        assert pet.RetrieveAETitle == server.aet
        assert pet.SpecificCharacterSet == "ISO_IR 100"
        assert str(pet.PatientName) == "SMITH^JOHN"
        assert pet.StudyDate == "20220601"
        assert pet.StudyDescription == "PET CT"
        assert pet.NumberOfStudyRelatedSeries == 2
        assert pet.NumberOfStudyRelatedInstances == 2
        assert list(pet.ModalitiesInStudy) == ["CT", "MR"]
        assert pet.InstanceAvailability == "ONLINE"
        classes = pet.SOPClassesInStudy
        assert ([classes] if isinstance(classes, str) else list(classes)) == sorted(
            {r.tags["SOPClassUID"] for r in stored if r.tags["AccessionNumber"] == "ACC5"}
        )
        assert pet.Modality == "CT"  # a series tag: the one of the study's first instance
        assert str(by_accession["ACC6"].PatientName) == "Müller^Hans"
        # Requested but unknown: present and empty.
        assert "ReferringPhysicianName" in pet


def test_patient_root_at_study_level_agrees(server: Server, stored: list[Record], tmp_path: Path) -> None:
    query = {"PatientID": "DKQ1", "StudyDate": "20200101-20211231"}
    want = expected(stored, "STUDY", query, fold_pn=True, fold_all=False)
    answer = run_findscu(server, tmp_path / "p", "STUDY", query, model="-P")
    assert _ids_of("STUDY", answer.answers) == want and len(want) == 2


def test_limit_find_instances_terminates_matching(server: Server, stored: list[Record], tmp_path: Path) -> None:
    with server.client() as client:
        first = client.get("/instances").json()[:LIMIT_FIND_INSTANCES]
    dcmtk_answer = run_findscu(server, tmp_path / "l", "IMAGE", {})
    assert _ids_of("IMAGE", dcmtk_answer.answers) == first
    assert "MatchingTerminatedDueToCancelRequest" in dcmtk_answer.final, dcmtk_answer.output
    pynet = run_pynetdicom(server, "IMAGE", {})
    assert _ids_of("IMAGE", pynet.answers) == first
    assert pynet.final == "FE00"
    assert rest_find(server, {"Level": "Instance", "Query": {}}).json() == first
    assert rest_find(server, {"Level": "Instance", "Query": {}, "Limit": 2, "Since": 1}).json() == first[1:3]
    # The cap is for instances only.
    studies = expected(stored, "STUDY", {}, fold_pn=True, fold_all=False)
    assert len(studies) > LIMIT_FIND_INSTANCES
    assert _ids_of("STUDY", run_pynetdicom(server, "STUDY", {}).answers) == studies
    assert rest_find(server, {"Level": "Study", "Query": {}, "Since": 2, "Limit": 3}).json() == studies[2:5]
    assert rest_find(server, {"Level": "Study", "Query": {}, "Since": 100}).json() == []


def test_expand_and_requested_tags(server: Server, stored: list[Record]) -> None:
    body = {"Level": "Study", "Query": {"PatientName": "*JOHN"}, "Expand": True,
            "RequestedTags": ["ModalitiesInStudy", "NumberOfStudyRelatedInstances", "Rows",
                              "0010,0010", "PerformedProcedureStepID"]}
    answer = rest_find(server, body)
    assert answer.status_code == 200, answer.text
    with server.client() as client:
        for item in answer.json():
            plain = client.get(f"/studies/{item['ID']}").json()
            requested = item.pop("RequestedTags")
            item.pop("IsStable"), plain.pop("IsStable")
            assert item == plain
            records = [r for r in stored if r.ids[1] == item["ID"]]
            assert requested == {
                "ModalitiesInStudy": "\\".join(sorted({r.tags["Modality"] for r in records})),
                "NumberOfStudyRelatedInstances": str(len(records)),
                "Rows": records[0].tags["Rows"],
                "PatientName": records[0].tags["PatientName"],
            }
    full = rest_find(server, {**body, "Full": True}).json()[0]
    assert full["MainDicomTags"]["0008,0050"]["Name"] == "AccessionNumber"
    assert full["RequestedTags"]["0028,0010"] == {"Name": "Rows", "Type": "String", "Value": "64"}
    short = rest_find(server, {**body, "Short": True}).json()[0]
    assert short["RequestedTags"]["0008,0061"] == "CT"


def _state(server: Server) -> tuple[Any, Any]:
    with server.client() as client:
        return client.get("/statistics").json(), client.get("/changes?last").json()


@pytest.mark.parametrize(
    ("body", "status", "details"),
    [
        (b"[1]", 400, "The body must contain a JSON object"),
        (b"{nope", 400, "The body must contain a JSON object"),
        (b'{"Query": {}}', 400, 'Field "Level" is missing, or should be a string'),
        (b'{"Level": 3, "Query": {}}', 400, 'Field "Level" is missing, or should be a string'),
        (b'{"Level": "Nope", "Query": {}}', 400, "Unknown resource type: Nope"),
        (b'{"Level": "Study"}', 400, 'Field "Query" is missing, or should be a JSON object'),
        (b'{"Level": "Study", "Query": ["PatientName"]}', 400,
         'Field "Query" is missing, or should be a JSON object'),
        (b'{"Level": "Study", "Query": {"PatientName": 7}}', 400,
         'Tag "PatientName" should be associated with a string'),
        (b'{"Level": "Study", "Query": {"NoSuchTag": "x"}}', 400, "Unknown DICOM tag: NoSuchTag"),
        (b'{"Level": "Study", "Query": {"StudyInstanceUID": "1.2*"}}', 400,
         "Wildcards are not allowed on tag 0020,000d"),
        (b'{"Level": "Study", "Query": {}, "Limit": -1}', 400, 'Field "Limit" should be a positive integer'),
        (b'{"Level": "Study", "Query": {}, "Limit": "5"}', 400, 'Field "Limit" should be an integer'),
        (b'{"Level": "Study", "Query": {}, "Since": 1.5}', 400, 'Field "Since" should be an integer'),
        (b'{"Level": "Study", "Query": {}, "CaseSensitive": "yes"}', 400,
         'Field "CaseSensitive" should be a Boolean'),
        (b'{"Level": "Study", "Query": {}, "RequestedTags": "Rows"}', 400,
         'Field "RequestedTags" should be an array of strings'),
    ],
)
def test_rest_bad_input(server: Server, stored: list[Record], body: bytes, status: int, details: str) -> None:
    before = _state(server)
    with server.client() as client:
        answer = client.post("/tools/find", content=body)
    assert answer.status_code == status
    error = answer.json()
    assert error["Details"] == details
    assert error["HttpStatus"] == status and error["Method"] == "POST" and error["Uri"] == "/tools/find"
    assert {"Message", "OrthancError", "OrthancStatus", "HttpError"} <= set(error)
    assert _state(server) == before


@pytest.mark.parametrize(
    ("level", "query"),
    [
        (None, {"PatientName": "DOE*"}),              # no QueryRetrieveLevel
        ("ROOT", {"PatientName": "DOE*"}),            # unknown level
        ("STUDY", {"StudyInstanceUID": "1.2.*"}),     # wildcard on a UI
    ],
)
def test_cfind_bad_identifier_fails(server: Server, stored: list[Record], level: str | None, query: dict[str, str]) -> None:
    before = _state(server)
    answer = run_pynetdicom(server, level, query, keys=False)
    assert answer.answers == []
    assert answer.final == "C000"
    assert _state(server) == before


def test_cfind_access_control(server: Server, stored: list[Record], tmp_path: Path) -> None:
    for aet in ("INTRUDER", "NOFIND"):
        refused = run_findscu(server, tmp_path / aet, "PATIENT", {"PatientName": "*"}, aet=aet)
        assert refused.answers == [], refused.output
        assert "(Success)" not in refused.final
    # Modality AETs compare case-insensitively (StrictAetComparison false).
    allowed = run_findscu(server, tmp_path / "ok", "PATIENT", {"PatientName": "*"}, aet="findscu")
    assert len(allowed.answers) == len(expected(stored, "PATIENT", {}, fold_pn=True, fold_all=False))
