"""The DICOM SCU: C-STORE under parallel associations (the pynetdicom trap), retries, echo."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicom_peers import StoreScpProcess, storage_scp, storescp
from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.scu import DicomNetworkError, Peer, StoreSession
from dicomkeep.common.orthanc import DimseStatus
from pydicom import dcmread
from servers import free_port
from synthetic import generate_study

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def dcmtk_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp")) as running:
        yield running


def peer(port: int, aet: str = "STORESCP", timeout: float = 5.0) -> Peer:
    return Peer(aet=aet, host="127.0.0.1", port=port, local_aet="DICOMKEEP", timeout=timeout)


def test_parallel_associations_lose_no_response(
    dcmtk_scp: StoreScpProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """6 associations store 60 instances each at once to DCMTK's storescp.

    Without the guard, pynetdicom 3.0.4 loses a C-STORE response in about half of
    such runs (INFRA.md); every one must come back here, at once (no retry).
    """
    dcmtk_scp.clear()
    studies = [generate_study(series=1, instances_per_series=60, seed=100 + n) for n in range(6)]
    statuses: list[list[int]] = [[] for _ in studies]

    def send(n: int) -> None:
        with StoreSession(peer(dcmtk_scp.port), [(CT_IMAGE, EXPLICIT)]) as session:
            for _ in range(2):  # each file twice: also over re-used associations
                statuses[n] += [session.send(item.data) for item in studies[n]]

    caplog.set_level(logging.WARNING)  # scu.py and its retry policy (common/retries.py)
    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(studies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(status == [0] * 120 for status in statuses)
    assert "no C-STORE response" not in caplog.text
    expected = {item.sop_uid for study in studies for item in study}
    received = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in dcmtk_scp.files()}
    assert received == expected


def test_guard_keeps_the_reactor_off_the_queue() -> None:
    """The requestor's reactor thread never takes a DIMSE message from the queue."""
    with storage_scp() as scp:
        ae_peer = peer(scp.port, scp.aet)
        session = StoreSession(ae_peer, [(CT_IMAGE, EXPLICIT)])
        study = generate_study(series=1, instances_per_series=1, seed=5)
        assert session.send(study[0].data) == 0
        assoc = session._assoc
        seen: list[object] = []
        reader = threading.Thread(target=lambda: seen.append(assoc.dimse.get_msg(False)))
        reader.start()
        reader.join()
        assoc.dimse.msg_queue.put((1, "message"))
        # From the association's own thread (the reactor) nothing is returned...
        original_current = threading.current_thread
        try:
            threading.current_thread = lambda: assoc  # type: ignore[assignment]
            assert assoc.dimse.get_msg(False) == (None, None)
        finally:
            threading.current_thread = original_current  # type: ignore[assignment]
        # ...while the sender's thread still gets it.
        assert assoc.dimse.get_msg(False) == (1, "message")
        session.close()


def test_unanswered_store_is_resent_on_a_new_association() -> None:
    study = generate_study(series=1, instances_per_series=3, seed=9)
    with storage_scp(silent=1, silent_for=6.0) as scp:
        with StoreSession(peer(scp.port, scp.aet, timeout=2.5), [(CT_IMAGE, EXPLICIT)]) as session:
            assert [session.send(item.data) for item in study] == [0, 0, 0]
        assert sorted(scp.received) == sorted(item.sop_uid for item in study)
        assert scp.associations == 2


def test_store_to_nobody_raises_network_error() -> None:
    study = generate_study(series=1, instances_per_series=1, seed=9)
    with pytest.raises(DicomNetworkError):
        with StoreSession(peer(free_port(), timeout=1.0), [(CT_IMAGE, EXPLICIT)]) as session:
            session.send(study[0].data)


def test_unsupported_sop_class_is_a_failure_status(tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=1, seed=9)
    with storage_scp() as scp:
        # Only another SOP class was negotiated: the file cannot be sent.
        with StoreSession(peer(scp.port, scp.aet), [("1.2.840.10008.5.1.4.1.1.4", EXPLICIT)]) as session:
            assert session.send(study[0].data) == DimseStatus.SOP_CLASS_NOT_SUPPORTED
        assert scp.received == []


def test_echo(dcmtk_scp: StoreScpProcess) -> None:
    dicom_scu.echo(peer(dcmtk_scp.port))
    with pytest.raises(DicomNetworkError):
        dicom_scu.echo(peer(free_port(), timeout=1.0))


def test_identifier_and_contexts() -> None:
    query = dicom_scu.identifier(
        {"QueryRetrieveLevel": "STUDY", "0010,0010": "DOE*", "NumberOfStudyRelatedInstances": ""}
    )
    assert query.PatientName == "DOE*" and query.QueryRetrieveLevel == "STUDY"
    with pytest.raises(KeyError):
        dicom_scu.identifier({"NotATag": "x"})
    contexts = dicom_scu.store_contexts(
        [(CT_IMAGE, EXPLICIT), (CT_IMAGE, "1.2.840.10008.1.2"), (CT_IMAGE, "1.2.840.10008.1.2.4.50")]
    )
    assert [(c.abstract_syntax, c.transfer_syntax) for c in contexts] == [
        (CT_IMAGE, [EXPLICIT, "1.2.840.10008.1.2"]),
        (CT_IMAGE, ["1.2.840.10008.1.2.4.50"]),
    ]
