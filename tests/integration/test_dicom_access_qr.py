"""DICOM access control of C-FIND, C-MOVE and C-GET, driven by DCMTK, in both modes.

With `DicomAlwaysAllowFind/Move/Get` false and `DicomCheckModalityHost` true, as
Orthanc's OrthancApplicationEntityFilter: an unknown AET, a known AET calling from
another host than its configured one, and a modality whose `AllowFind` /
`AllowMove` / `AllowGet` is false are refused (no answer, no file sent); the known
modality is served (the positive control, so that a refusal is not a broken
query). C-STORE and C-ECHO: test_dicom_access.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicom_peers import StoreScpProcess, storescp
from pydicom import dcmread
from servers import DCMTK_ENV, Server, dcmtk, free_port
from synthetic import GeneratedInstance, generate_study, write_files

STORESCP_PORT = free_port()
KNOWN = "KNOWNQR"
SERVER_CONFIG = {
    "DicomAlwaysAllowFind": False,
    "DicomAlwaysAllowMove": False,
    "DicomAlwaysAllowGet": False,
    "DicomCheckModalityHost": True,
    "DicomModalities": {
        "known": {"AET": KNOWN, "Host": "127.0.0.1", "Port": STORESCP_PORT},
        # Known AET, configured on another host than the one it calls from.
        "elsewhere": {"AET": "FARAWAY", "Host": "127.0.0.2", "Port": STORESCP_PORT},
        "nofind": {"AET": "NOFIND", "Host": "127.0.0.1", "Port": 104, "AllowFind": False},
        "nomove": {"AET": "NOMOVE", "Host": "127.0.0.1", "Port": 104, "AllowMove": False},
        "noget": {"AET": "NOGET", "Host": "127.0.0.1", "Port": 104, "AllowGet": False},
    },
}


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp"), aet=KNOWN, port=STORESCP_PORT) as running:
        yield running


@pytest.fixture(scope="module")
def study(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[GeneratedInstance]:
    instances = generate_study(series=1, instances_per_series=3, seed=77)
    files = write_files(instances, tmp_path_factory.mktemp("study"))
    with server.client() as client:
        for path in files:
            assert client.post("/instances", content=path.read_bytes()).status_code == 200
    return instances


def _run(args: list[str], server: Server) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args, "127.0.0.1", str(server.dicom_port)],
        capture_output=True, text=True, timeout=120, env=DCMTK_ENV,
    )


def findscu(server: Server, aet: str, out: Path, study: list[GeneratedInstance]) -> list[Path]:
    """Query the study with findscu as `aet`; return the answers it wrote."""
    out.mkdir()
    _run([dcmtk("findscu"), "-S", "-aet", aet, "-aec", server.aet, "-X", "-od", str(out),
          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study_uid}",
          "-k", "PatientID"], server)
    return sorted(out.iterdir())


def movescu(server: Server, aet: str, study: list[GeneratedInstance]) -> subprocess.CompletedProcess[str]:
    """Move the study to the known modality's storescp, asked by `aet`."""
    return _run([dcmtk("movescu"), "-v", "-S", "-aet", aet, "-aec", server.aet, "-aem", KNOWN,
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study_uid}"],
                server)


def getscu(server: Server, aet: str, out: Path, study: list[GeneratedInstance]) -> list[Path]:
    """C-GET the study as `aet`; return the files received."""
    out.mkdir()
    _run([dcmtk("getscu"), "-S", "-aet", aet, "-aec", server.aet, "-od", str(out),
          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study_uid}"],
         server)
    return sorted(out.iterdir())


@pytest.mark.parametrize("aet", ["EVIL", "FARAWAY", "NOFIND"])
def test_find_refused(server: Server, study: list[GeneratedInstance], tmp_path: Path, aet: str) -> None:
    assert findscu(server, aet, tmp_path / "answers", study) == []


def test_find_served_to_the_known_modality(server: Server, study: list[GeneratedInstance],
                                           tmp_path: Path) -> None:
    answers = findscu(server, KNOWN, tmp_path / "answers", study)
    assert [str(dcmread(path).StudyInstanceUID) for path in answers] == [study[0].study_uid]


@pytest.mark.parametrize("aet", ["EVIL", "FARAWAY", "NOMOVE"])
def test_move_refused(server: Server, study: list[GeneratedInstance], scp: StoreScpProcess,
                      aet: str) -> None:
    scp.clear()
    result = movescu(server, aet, study)
    assert "Received Final Move Response (Success)" not in result.stdout + result.stderr
    assert scp.files() == []


def test_move_served_to_the_known_modality(server: Server, study: list[GeneratedInstance],
                                           scp: StoreScpProcess) -> None:
    scp.clear()
    result = movescu(server, KNOWN, study)
    assert result.returncode == 0, result.stderr
    assert {str(dcmread(path).SOPInstanceUID) for path in scp.files()} == {
        item.sop_uid for item in study}


@pytest.mark.parametrize("aet", ["EVIL", "FARAWAY", "NOGET"])
def test_get_refused(server: Server, study: list[GeneratedInstance], tmp_path: Path, aet: str) -> None:
    assert getscu(server, aet, tmp_path / "files", study) == []


def test_get_served_to_the_known_modality(server: Server, study: list[GeneratedInstance],
                                          tmp_path: Path) -> None:
    files = getscu(server, KNOWN, tmp_path / "files", study)
    assert {str(dcmread(path).SOPInstanceUID) for path in files} == {item.sop_uid for item in study}
