"""Several writers at once, and reads through another replica right after a write."""

from __future__ import annotations

import threading
from io import BytesIO

import httpx
from dicomkeep.common.ids import hierarchy_ids
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from servers import Server
from synthetic import generate_study


def c_store_all(server: Server, files: list[bytes], errors: list[str]) -> None:
    ae = AE(ae_title="WRITER")
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    if not assoc.is_established:
        errors.append("association refused")
        return
    try:
        for data in files:
            status = assoc.send_c_store(dcmread(BytesIO(data)))
            if status.Status != 0:
                errors.append(f"status 0x{status.Status:04X}")
    finally:
        assoc.release()


def rest_store_all(url: str, files: list[bytes], errors: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for data in files:
            answer = client.post("/instances", content=data)
            if answer.status_code != 200:
                errors.append(f"HTTP {answer.status_code}")


def test_two_writers_store_the_same_study_at_once(clean: Server) -> None:
    study = generate_study(series=2, instances_per_series=10, seed=21)
    files = [item.data for item in study]
    errors: list[str] = []
    writers = [
        threading.Thread(target=c_store_all, args=(clean, files, errors)),
        threading.Thread(target=c_store_all, args=(clean, list(reversed(files)), errors)),
        threading.Thread(target=rest_store_all, args=(clean.urls[-1], files, errors)),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert errors == []
    with clean.client() as client:
        assert len(client.get("/patients").json()) == 1
        assert len(client.get("/studies").json()) == 1
        assert len(client.get("/series").json()) == 2
        assert len(client.get("/instances").json()) == 20
        changes = client.get("/changes?limit=1000").json()["Changes"]
        types = [c["ChangeType"] for c in changes]
        assert types.count("NewInstance") == 20
        assert types.count("NewPatient") == 1 and types.count("NewStudy") == 1
        assert types.count("NewSeries") == 2
        seqs = [c["Seq"] for c in changes]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_read_your_writes_through_every_replica(clean: Server) -> None:
    study = generate_study(series=1, instances_per_series=5, seed=22)
    ae = AE(ae_title="WRITER")
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", clean.dicom_port, ae_title=clean.aet)
    assert assoc.is_established
    clients = [clean.client(n) for n in range(len(clean.urls))]
    try:
        for n, item in enumerate(study):
            status = assoc.send_c_store(dcmread(BytesIO(item.data)))
            assert status.Status == 0
            instance_id = hierarchy_ids(item.patient_id, item.study_uid, item.series_uid, item.sop_uid)[3]
            # Right after the C-STORE success, the other replica already sees it.
            reader = clients[(n + 1) % len(clients)]
            assert reader.get(f"/instances/{instance_id}").status_code == 200
    finally:
        assoc.release()
        for client in clients:
            client.close()
