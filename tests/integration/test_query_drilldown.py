"""Drill-down of query answers (`/queries/{id}/answers/{n}/query-*`) compared with
Debian's Orthanc, in both modes: both query the same C-FIND SCP (tests/dicom_peers.py,
reached by Orthanc from its network namespace), which records who asked what.

Orthanc's QueryAnswerChildren: the parent's `Normalize` and `Timeout` are inherited
(the body's `Timeout` wins), the body's `LocalAet` is ignored (the modality's, else
DicomAet), the body's `Query` is sent with the answer's identifiers over it, and the
drill-downs a level does not allow, bad indexes and bad bodies are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dicom_peers import FindScp, find_scp
from orthanc_peer import OrthancPeer, orthanc_available, orthanc_peer
from servers import Server

#: What the SCP answers: the requested keys, filled with these values.
ANSWER = {
    "PatientID": "P1", "PatientName": "Doe^J", "StudyInstanceUID": "1.2.3", "AccessionNumber": "A1",
    "SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5", "StudyDescription": "desc",
}  # fmt: skip
#: A value that makes the SCP wait `SLOW_DELAY` seconds before answering.
SLOW = "SLOW"
#: The patient parent's Timeout. It also bounds the association of its own C-FIND
#: (Orthanc's semantics: the ACSE and connection timeouts too), so it must leave
#: room for a slow machine: at 1 s, one whole-suite run in three on a loaded
#: 2-core machine saw that first association of the cluster "not established".
PARENT_TIMEOUT = 4
#: Beyond PARENT_TIMEOUT (the inherited timeout always expires first: the answer
#: leaves at least this long after the request arrived), within DicomScuTimeout
#: (10 s by default) with room to spare.
SLOW_DELAY = 5
#: Orthanc's DicomAet (its default); DicomKeep's is the test server's.
ORTHANC_AET = "ORTHANC"
#: The parent queries, by name: Normalize false, a LocalAet and a Timeout on the patient one.
PARENTS = {
    "patient": {"Level": "Patient", "Query": {"PatientID": "P1"}, "Normalize": False,
                "LocalAet": "PARENTAET", "Timeout": PARENT_TIMEOUT},
    "study": {"Level": "Study", "Query": {"PatientID": "P1"}},
    "series": {"Level": "Series", "Query": {"PatientID": "P1"}},
    "instance": {"Level": "Instance", "Query": {"PatientID": "P1"}},
}  # fmt: skip


@pytest.fixture(scope="module")
def finder() -> Iterator[FindScp]:
    with find_scp(answer=ANSWER, slow={SLOW}, delay=SLOW_DELAY) as scp:
        yield scp


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, finder: FindScp) -> Iterator[OrthancPeer]:
    """Debian's Orthanc with the SCP as modality `finder`; fails (never skips) when it cannot run."""
    reason = orthanc_available()
    assert reason is None, reason
    with orthanc_peer(tmp_path_factory.mktemp("orthanc"), expose=[finder.port]) as peer, peer.client() as client:
        port = int(peer.inside[finder.port].rstrip("/").rsplit(":", 1)[1])
        assert client.put("/modalities/finder", json=[finder.aet, "127.0.0.1", port]).status_code == 200
        yield peer


def _sent(finder: FindScp, own_aet: str) -> list[tuple[str, dict[str, str]]]:
    """Return the C-FINDs the SCP received since the last call: calling AET (relative to
    the server's DicomAet) and identifier, SpecificCharacterSet and template keys included."""
    return [
        ("DicomAet" if request.calling_aet == own_aet else request.calling_aet, request.identifier)
        for request in finder.clear()
    ]


def _parents(client: httpx.Client, finder: FindScp, own_aet: str) -> tuple[dict[str, str], list[Any]]:
    """Run the parent queries: return their IDs and the C-FINDs they sent."""
    ids, sent = {}, []
    for name, body in PARENTS.items():
        answer = client.post("/modalities/finder/query", json=body)
        assert answer.status_code == 200, answer.text
        ids[name] = answer.json()["ID"]
        sent.append(_sent(finder, own_aet))
    return ids, sent


def _outcome(answer: httpx.Response, finder: FindScp, own_aet: str) -> tuple[Any, ...]:
    """Return what a caller sees of a drill-down: status, error code, and the C-FIND sent."""
    error = answer.json().get("OrthancStatus") if answer.status_code != 200 else None
    return answer.status_code, error, _sent(finder, own_aet)


#: Drill-downs compared with Orthanc: (parent, route, answer index, body as httpx kwargs).
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("patient", "query-studies", "0",
     {"json": {"Query": {"StudyDescription": "x", "PatientID": "OTHER", "0009,1001": ""}, "LocalAet": "CHILD"}}),
    ("patient", "query-series", "0", {"json": {"Timeout": 30}}),
    ("study", "query-series", "0", {"json": {"Query": {"StudyInstanceUID": "9.9", "ReferringPhysicianName": ""}}}),
    ("study", "query-instances", "0", {"json": {"Normalize": False, "Query": {"0009,1001": "x"}}}),
    ("series", "query-instances", "0", {"json": {}}),
    ("study", "query-series", "0", {"content": b""}),
    ("study", "query-series", "0", {"content": b"not json"}),
    ("study", "query-series", "0", {"json": {"Timeout": "x"}}),
    ("study", "query-series", "0", {"json": {"Timeout": -1}}),
    ("study", "query-series", "0", {"json": {"Query": "x"}}),
    ("study", "query-series", "0", {"json": {"Query": {"PatientID": 3}}}),
    ("study", "query-series", "0", {"json": {"Query": {"NoSuchTag": "x"}}}),
    ("study", "query-studies", "0", {"json": {}}),
    ("series", "query-series", "0", {"json": {}}),
    ("study", "query-series", "5", {"json": {}}),
    ("study", "query-series", "x", {"json": {}}),
    ("unknown", "query-series", "0", {"json": {}}),
]  # fmt: skip


def test_drill_down_as_orthanc(server: Server, orthanc: OrthancPeer, finder: FindScp) -> None:
    with server.client() as ours, orthanc.client() as theirs:
        assert ours.put("/modalities/finder", json=[finder.aet, "127.0.0.1", finder.port]).status_code == 200
        clients = {"orthanc": (theirs, ORTHANC_AET), "dicomkeep": (ours, server.aet)}
        parents, templates = {}, {}
        for name, (client, own_aet) in clients.items():
            ids, templates[name] = _parents(client, finder, own_aet)
            parents[name] = ids | {"unknown": "nope"}
        # The C-FIND SCU of /modalities/{id}/query: Orthanc's return keys per level, its
        # SpecificCharacterSet, the body's LocalAet, Normalize false keeping any tag.
        assert templates["dicomkeep"] == templates["orthanc"]
        assert templates["dicomkeep"][0] == [
            ("PARENTAET", {"SpecificCharacterSet": "ISO_IR 100", "QueryRetrieveLevel": "PATIENT", "PatientID": "P1"})
        ]
        for parent, route, index, request in CASES:
            seen = {}
            for name, (client, own_aet) in clients.items():
                url = f"/queries/{parents[name][parent]}/answers/{index}/{route}"
                seen[name] = _outcome(client.post(url, **request), finder, own_aet)
            assert seen["dicomkeep"] == seen["orthanc"], (parent, route, index, request)
        for name, (client, _) in clients.items():
            listed = {level: client.get(f"/queries/{parents[name][level]}/answers/0").json() for level in PARENTS}
            if name == "orthanc":  # Orthanc 1.10.1 lists the patient drill-down as "query-study"
                listed["patient"] = ["query-studies" if op == "query-study" else op for op in listed["patient"]]
            assert listed == {
                "patient": ["content", "retrieve", "query-studies", "query-series", "query-instances"],
                "study": ["content", "retrieve", "query-series", "query-instances"],
                "series": ["content", "retrieve", "query-instances"],
                "instance": ["content", "retrieve"],
            }, name
        # A JSON body that is not an object: Orthanc fails with a 500, DicomKeep answers 400.
        for body in (["x"], "text"):
            refused = ours.post(f"/queries/{parents['dicomkeep']['study']}/answers/0/query-series", json=body)
            assert (refused.status_code, refused.json()["OrthancStatus"]) == (400, 15)
            assert theirs.post(f"/queries/{parents['orthanc']['study']}/answers/0/query-series",
                               json=body).status_code == 500  # fmt: skip
        assert finder.clear() == []
        # The SpecificCharacterSet follows /tools/default-encoding, on every replica.
        assert ours.put("/tools/default-encoding", content="Utf8").status_code == 200
        try:
            with server.client(-1) as other:
                answer = other.post("/modalities/finder/query", json=PARENTS["study"])
            assert answer.status_code == 200, answer.text
            [(_, sent)] = _sent(finder, server.aet)
            assert sent["SpecificCharacterSet"] == "ISO_IR 192"
        finally:
            assert ours.put("/tools/default-encoding", content="Latin1").status_code == 200
        assert ours.delete("/modalities/finder").status_code == 200


def test_drill_down_timeout_inherited_as_orthanc(server: Server, orthanc: OrthancPeer, finder: FindScp) -> None:
    """The parent's Timeout (PARENT_TIMEOUT on the patient query) applies to a drill-down
    unless its body names another; the SCP answers a SLOW query after SLOW_DELAY."""
    with server.client() as ours, orthanc.client() as theirs:
        assert ours.put("/modalities/finder", json=[finder.aet, "127.0.0.1", finder.port]).status_code == 200
        for client in (ours, theirs):
            parents, _ = _parents(client, finder, "")
            slow = {"Query": {"StudyDescription": SLOW}}
            url = f"/queries/{parents['patient']}/answers/0/query-studies"
            inherited = client.post(url, json=slow)
            assert inherited.status_code == 500, inherited.text
            longer = client.post(url, json=slow | {"Timeout": 30})
            assert longer.status_code == 200, longer.text
            # The study query named no Timeout: DicomScuTimeout (10 s by default) applies.
            default = client.post(f"/queries/{parents['study']}/answers/0/query-series", json=slow)
            assert default.status_code == 200, default.text
            finder.clear()
        assert ours.delete("/modalities/finder").status_code == 200
