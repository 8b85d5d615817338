"""The DICOM server's access control and negotiation, as DCMTK and pynetdicom see them.

One access check serves every DIMSE service (issue 15): unknown callers, callers
from the wrong host and modalities without `Allow<Command>` are refused for
C-ECHO and C-STORE as for C-FIND. Negotiation as Orthanc's (issue 11): called
AET check, Explicit VR preferred over Implicit in either order,
AcceptedTransferSyntaxes and UnknownSopClassAccepted (also changed over REST,
reaching the ingest process in both modes), CalledAET metadata, an idle
association timeout, the listen backlog.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from dicomfiles import sample_path
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)
from servers import DCMTK_ENV, Server, allinone_server, cluster_server, dcmtk, wait_until

KNOWN = "LOCALSCU"
SERVER_CONFIG = {
    "DicomAlwaysAllowStore": False,
    "DicomAlwaysAllowEcho": False,
    "DicomCheckModalityHost": True,
    "DicomCheckCalledAet": True,
    "DicomScpTimeout": 2,
    "DicomThreadsCount": 1,
    "DicomModalities": {
        "local": [KNOWN, "127.0.0.1", 104],
        # Known AET, but configured on another host than the one it calls from.
        "elsewhere": ["FARAWAY", "127.0.0.2", 104],
        "nostore": {"AET": "NOSTORE", "Host": "127.0.0.1", "Port": 104, "AllowStore": False},
        "noecho": {"AET": "NOECHO", "Host": "127.0.0.1", "Port": 104, "AllowEcho": False},
    },
}


def storescu(server: Server, aet: str, path: Path, called: str | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [dcmtk("storescu"), "-aet", aet, "-aec", called or server.aet,
         "127.0.0.1", str(server.dicom_port), str(path)],
        capture_output=True, timeout=60, env=DCMTK_ENV,
    )


def echo_succeeds(server: Server, aet: str, called: str | None = None) -> bool:
    """Run echoscu (which exits 0 even when the echo fails): did it get a Success?"""
    result = subprocess.run(
        [dcmtk("echoscu"), "-v", "-aet", aet, "-aec", called or server.aet,
         "127.0.0.1", str(server.dicom_port)],
        capture_output=True, timeout=60, env=DCMTK_ENV, text=True,
    )
    return "Received Echo Response (Success)" in result.stdout + result.stderr


def instances(server: Server) -> list[str]:
    with server.client() as client:
        found: list[str] = client.get("/instances").json()
        return found


@pytest.mark.parametrize("aet", ["EVIL", "FARAWAY", "NOSTORE"])
def test_store_refused(clean: Server, aet: str) -> None:
    result = storescu(clean, aet, sample_path("CT_small.dcm"))
    assert result.returncode != 0, result.stderr
    assert instances(clean) == []


@pytest.mark.parametrize("aet", ["EVIL", "FARAWAY", "NOECHO"])
def test_echo_refused(server: Server, aet: str) -> None:
    assert not echo_succeeds(server, aet)


def test_known_caller_echoes_and_stores_with_called_aet(clean: Server) -> None:
    assert echo_succeeds(clean, KNOWN)
    assert echo_succeeds(clean, "NOSTORE")  # AllowEcho defaults to true
    # AETs compare case-insensitively: the called AET recorded is the association's.
    called = clean.aet.lower()
    result = storescu(clean, KNOWN, sample_path("CT_small.dcm"), called=called)
    assert result.returncode == 0, result.stderr
    [instance] = instances(clean)
    with clean.client() as client:
        metadata = client.get(f"/instances/{instance}/metadata?expand").json()
    assert metadata["CalledAET"] == called
    assert metadata["RemoteAET"] == KNOWN
    assert metadata["RemoteIP"] == "127.0.0.1"


def test_wrong_called_aet_rejected(clean: Server) -> None:
    assert not echo_succeeds(clean, KNOWN, called="NOT-US")
    assert storescu(clean, KNOWN, sample_path("CT_small.dcm"), called="NOT-US").returncode != 0
    assert instances(clean) == []


def _associate(server: Server, contexts: list[object]) -> object:
    ae = AE(ae_title=KNOWN)
    ae.requested_contexts = contexts
    return ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)


@pytest.mark.parametrize(
    "proposed",
    [[ImplicitVRLittleEndian, ExplicitVRLittleEndian], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]],
)
def test_explicit_preferred_in_either_order(clean: Server, proposed: list[str]) -> None:
    assoc = _associate(clean, [build_context(MRImageStorage, proposed)])
    assert assoc.is_established
    try:
        [context] = assoc.accepted_contexts
        assert context.transfer_syntax == [ExplicitVRLittleEndian]
        # The stored Explicit VR file goes out as it is.
        status = assoc.send_c_store(dcmread(sample_path("MR_small.dcm")))
        assert status.Status == 0x0000
    finally:
        assoc.release()
    [instance] = instances(clean)
    with clean.client() as client:
        metadata = client.get(f"/instances/{instance}/metadata?expand").json()
    assert metadata["TransferSyntax"] == ExplicitVRLittleEndian


def test_accepted_transfer_syntaxes_over_rest(clean: Server) -> None:
    with clean.client() as client:
        initial = client.get("/tools/accepted-transfer-syntaxes").json()
        assert ImplicitVRLittleEndian in initial and ExplicitVRLittleEndian in initial
        assert "1.2.840.10008.1.2.4.50" in initial  # the default 1.2.840.10008.1.* is all
        answer = client.put("/tools/accepted-transfer-syntaxes", content=ImplicitVRLittleEndian)
        assert answer.json() == [ImplicitVRLittleEndian]
    try:
        # Every replica and the ingest process see it at the next association.
        for replica in range(len(clean.urls)):
            with clean.client(replica) as client:
                assert client.get("/tools/accepted-transfer-syntaxes").json() == [ImplicitVRLittleEndian]
        refused = _associate(clean, [build_context(MRImageStorage, ExplicitVRLittleEndian)])
        assert not refused.is_established or refused.accepted_contexts == []
        if refused.is_established:
            refused.release()
        both = _associate(clean, [build_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
        assert [cx.transfer_syntax for cx in both.accepted_contexts] == [[ImplicitVRLittleEndian]]
        both.release()
    finally:
        with clean.client() as client:
            restored = client.put("/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.*"])
            assert restored.json() == initial
            bad = client.put("/tools/accepted-transfer-syntaxes", json={"not": "a list"})
            assert bad.status_code == 400
            assert client.get("/tools/accepted-transfer-syntaxes").json() == initial


def _private_dataset() -> Dataset:
    dataset = dcmread(sample_path("CT_small.dcm"))
    dataset.SOPClassUID = "1.2.826.0.1.3680043.8.498.1.99"
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.SOPInstanceUID = generate_uid()
    return dataset


def test_unknown_sop_class_accepted_over_rest(clean: Server) -> None:
    dataset = _private_dataset()
    context = build_context(dataset.SOPClassUID, ExplicitVRLittleEndian)
    with clean.client() as client:
        assert client.get("/tools/unknown-sop-class-accepted").text == "0"
    refused = _associate(clean, [context])
    assert not refused.is_established or refused.accepted_contexts == []
    if refused.is_established:
        refused.release()
    with clean.client() as client:
        answer = client.put("/tools/unknown-sop-class-accepted", content="1")
        assert answer.status_code == 200 and answer.text == ""
        assert client.put("/tools/unknown-sop-class-accepted", content="maybe").status_code == 400
    try:
        assoc = _associate(clean, [context])
        assert assoc.is_established
        assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.release()
        [instance] = instances(clean)
        with clean.client() as client:
            sop = client.get(f"/instances/{instance}/metadata/SopClassUid").text
        assert sop == dataset.SOPClassUID
    finally:
        with clean.client() as client:
            client.put("/tools/unknown-sop-class-accepted", content="false")
            assert client.get("/tools/unknown-sop-class-accepted").text == "0"


def test_default_encoding_over_rest_reaches_c_find(server: Server) -> None:
    def find_charset() -> str:
        assoc = _associate(server, [build_context(StudyRootQueryRetrieveInformationModelFind)])
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        try:
            answers = [
                identifier for status, identifier in
                assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                if status and status.Status == 0xFF00
            ]
        finally:
            assoc.release()
        assert answers
        return str(answers[0].SpecificCharacterSet)

    if not instances(server):
        assert storescu(server, KNOWN, sample_path("CT_small.dcm")).returncode == 0
    with server.client() as client:
        assert client.get("/tools/default-encoding").text == "Latin1"
        assert find_charset() == "ISO_IR 100"
        assert client.put("/tools/default-encoding", content="utf8").text == "Utf8"
        try:
            assert client.get("/tools/default-encoding").text == "Utf8"
            assert find_charset() == "ISO_IR 192"
            bad = client.put("/tools/default-encoding", content="klingon")
            assert bad.status_code == 400
            assert client.get("/tools/default-encoding").text == "Utf8"
        finally:
            client.put("/tools/default-encoding", content="Latin1")


def test_idle_association_closed_after_dicom_scp_timeout(server: Server) -> None:
    assoc = _associate(server, [build_context(MRImageStorage)])
    assert assoc.is_established
    started = time.monotonic()
    wait_until(lambda: not assoc.is_established, timeout=15, what="the idle association to close")
    assert time.monotonic() - started < 10  # DicomScpTimeout is 2 s, not the default 30 s


def test_dicom_threads_count_serves_one_association_at_a_time(server: Server) -> None:
    first = _associate(server, [build_context(MRImageStorage)])
    assert first.is_established
    waiting = AE(ae_title=KNOWN)
    waiting.acse_timeout = 1
    waiting.add_requested_context(MRImageStorage)
    try:
        second = waiting.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
        assert not second.is_established  # DicomThreadsCount is 1: it waits, unanswered
    finally:
        first.release()
    wait_until(lambda: _established_then_released(server), timeout=15, what="a free slot")


def _established_then_released(server: Server) -> bool:
    assoc = _associate(server, [build_context(MRImageStorage)])
    if not assoc.is_established:
        return False
    assoc.release()
    return True


def test_listen_backlog(server: Server) -> None:
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.dicom_port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # For a listening socket, ss's Send-Q column is the backlog.
    assert int(listing[2]) >= 128, listing


def test_cfind_answers_carry_no_file_meta_nor_group_length(server: Server) -> None:
    if not instances(server):
        assert storescu(server, KNOWN, sample_path("CT_small.dcm")).returncode == 0
    query = Dataset()
    query.add_new(0x00020010, "UI", ExplicitVRLittleEndian)  # TransferSyntaxUID: file meta
    query.add_new(0x00080000, "UL", 0)  # a group length
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.AccessionNumber = ""
    assoc = _associate(server, [build_context(StudyRootQueryRetrieveInformationModelFind)])
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    statuses = [f"0x{status.Status:04X}" if "Status" in status else "none" for status, _ in responses]
    answers = [identifier for status, identifier in responses if "Status" in status and status.Status == 0xFF00]
    assert answers, (statuses, instances(server))
    for answer in answers:
        tags = [int(tag) for tag in answer.keys()]
        assert not [t for t in tags if t >> 16 == 0x0002], answer
        assert not [t for t in tags if t & 0xFFFF == 0], answer
        assert "StudyInstanceUID" in answer and "AccessionNumber" in answer


@pytest.mark.parametrize("mode", ["allinone", "distributed"])
def test_dicom_server_disabled(mode: str, tmp_path: Path) -> None:
    """DicomServerEnabled false: nothing listens on DicomPort, the REST API serves."""
    start = allinone_server if mode == "allinone" else cluster_server
    with start(tmp_path, {"DicomServerEnabled": False}) as running:
        with running.client() as client:
            assert client.get("/system").json()["DicomPort"] == running.dicom_port
        with socket.socket() as sock:
            sock.settimeout(5)
            assert sock.connect_ex(("127.0.0.1", running.dicom_port)) != 0
        assert not echo_succeeds(running, KNOWN)
