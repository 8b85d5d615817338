"""Recycling and protection (ORTHANC_API.md §8): MaximumPatientCount,
MaximumStorageSize (stored, compressed bytes), MaximumStorageMode, protected
patients, and the limits holding under concurrent indexers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

import pytest
from dicomkeep.common.ids import orthanc_id
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from servers import Server, allinone_server, blob_keys, cluster_server, wait_until
from synthetic import generate_study

MB = 1024 * 1024
SERVER_CONFIG = {
    "MaximumPatientCount": 3,
    "MaximumStorageSize": 1,
    "StorageCompression": True,
}
REJECT_CONFIG = {"MaximumPatientCount": 2, "MaximumStorageMode": "Reject"}
OUT_OF_RESOURCES = 0xA700


@pytest.fixture(scope="module")
def reject_server(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A second server of the same mode, in MaximumStorageMode Reject."""
    tmp = tmp_path_factory.mktemp(f"reject-{server.mode}")
    start = allinone_server if server.mode == "allinone" else cluster_server
    with start(tmp, REJECT_CONFIG) as running:
        yield running


def instance(patient: str, seed: int, *, side: int = 64, noise: bool = False) -> bytes:
    """One instance of a new study of `patient`: side x side 16-bit pixels, which
    compress well (stripes) unless `noise` makes them random."""
    item = generate_study(
        patient_id=patient, series=1, instances_per_series=1, rows=side, columns=side,
        seed=seed,
    )[0]
    if not noise:
        return item.data
    dataset = dcmread(BytesIO(item.data))
    dataset.PixelData = os.urandom(len(dataset.PixelData))
    buffer = BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def post(server: Server, data: bytes, replica: int = 0) -> Any:
    with server.client(replica) as client:
        return client.post("/instances", content=data)


def store(server: Server, data: bytes, replica: int = 0) -> dict[str, Any]:
    answer = post(server, data, replica)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["Status"] == "Success"
    return body


def c_store(server: Server, data: bytes) -> int:
    """Send one instance with C-STORE; return the DIMSE status."""
    ae = AE(ae_title="RECYCLER")
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dcmread(BytesIO(data)))
        return int(status.Status)
    finally:
        assoc.release()


def patients(server: Server, replica: int = 0) -> set[str]:
    with server.client(replica) as client:
        return set(client.get("/patients").json())


def pid(patient: str) -> str:
    return orthanc_id(patient)


def stored_attachments(server: Server) -> int:
    """How many attachments the index refers to (each is one blob)."""
    with server.client() as client:
        return sum(
            len(client.get(f"/instances/{i}/attachments").json())
            for i in client.get("/instances").json()
        )


def wait_blobs_match_index(server: Server) -> None:
    wait_until(
        lambda: len(blob_keys(server)) == stored_attachments(server), timeout=30,
        what="the blobs of recycled patients to go",
    )


def test_patient_count_keeps_the_most_recent(clean: Server) -> None:
    for n in range(1, 5):
        store(clean, instance(f"COUNT{n}", seed=n), replica=n)
    assert patients(clean) == {pid("COUNT2"), pid("COUNT3"), pid("COUNT4")}
    # C-STORE recycles the same way.
    assert c_store(clean, instance("COUNT5", seed=5)) == 0x0000
    for replica in range(len(clean.urls)):
        assert patients(clean, replica) == {pid("COUNT3"), pid("COUNT4"), pid("COUNT5")}
    wait_blobs_match_index(clean)


def test_protection_and_recycling_order(clean: Server) -> None:
    for n in range(1, 4):
        store(clean, instance(f"PROT{n}", seed=10 + n))
    oldest = pid("PROT1")
    with clean.client() as client:
        assert client.get(f"/patients/{oldest}/protected").text == "0"
        answer = client.put(f"/patients/{oldest}/protected", content=b"1")
        assert (answer.status_code, answer.content) == (200, b"")
        assert client.get(f"/patients/{oldest}/protected").text == "1"
        assert client.put(f"/patients/{oldest}/protected", content=b"maybe").status_code == 400
        assert client.put("/patients/nope/protected", content=b"1").status_code == 404
    with clean.client(1) as other:
        assert other.get(f"/patients/{oldest}/protected").text == "1"
    # The protected oldest survives; the next oldest goes.
    store(clean, instance("PROT4", seed=14))
    assert patients(clean) == {oldest, pid("PROT3"), pid("PROT4")}
    # A new instance makes its patient the most recent: PROT4 goes before PROT3.
    store(clean, instance("PROT3", seed=23))
    store(clean, instance("PROT5", seed=15))
    assert patients(clean) == {oldest, pid("PROT3"), pid("PROT5")}
    # Unprotecting puts the patient at the end of the recycling order.
    with clean.client() as client:
        assert client.put(f"/patients/{oldest}/protected", content=b"false").status_code == 200
        assert client.get(f"/patients/{oldest}/protected").text == "0"
    store(clean, instance("PROT6", seed=16))
    assert patients(clean) == {oldest, pid("PROT5"), pid("PROT6")}
    wait_blobs_match_index(clean)


def test_storage_size_counts_compressed_bytes(clean: Server) -> None:
    # 3 x 512 KB of pixels: 1.5 MB uncompressed, far less once compressed.
    for n in range(1, 4):
        store(clean, instance(f"SIZE{n}", seed=30 + n, side=512))
    with clean.client() as client:
        stats = client.get("/statistics").json()
    assert int(stats["TotalUncompressedSize"]) > MB > int(stats["TotalDiskSize"])
    assert len(patients(clean)) == 3
    # 700 KB of noise: the count recycles SIZE1, the size then fits.
    store(clean, instance("SIZE4", seed=34, side=600, noise=True))
    assert patients(clean) == {pid("SIZE2"), pid("SIZE3"), pid("SIZE4")}
    # 700 KB more cannot fit beside SIZE4: everything older goes.
    store(clean, instance("SIZE5", seed=35, side=600, noise=True), replica=1)
    assert patients(clean) == {pid("SIZE5")}
    # An instance larger than the whole quota is refused, with nothing written.
    answer = post(clean, instance("SIZE6", seed=36, side=800, noise=True))
    assert answer.status_code == 507
    assert answer.json()["OrthancStatus"] == 19
    assert patients(clean) == {pid("SIZE5")}
    wait_blobs_match_index(clean)


def test_concurrent_stores_never_exceed_the_count(clean: Server) -> None:
    def store_then_count(n: int) -> int:
        store(clean, instance(f"RACE{n}", seed=100 + n), replica=n)
        with clean.client(n + 1) as client:
            return int(client.get("/statistics").json()["CountPatients"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(store_then_count, range(32)))
    assert len(counts) == 32 and max(counts) <= 3
    assert len(patients(clean)) == 3
    wait_blobs_match_index(clean)


def test_reject_mode_refuses_new_patients(reject_server: Server) -> None:
    server = reject_server
    store(server, instance("REJ1", seed=201))
    store(server, instance("REJ2", seed=202), replica=1)
    answer = post(server, instance("REJ3", seed=203))
    assert answer.status_code == 507
    error = answer.json()
    assert error["HttpError"] == "Insufficient Storage" and error["HttpStatus"] == 507
    assert error["OrthancStatus"] == 19
    assert error["OrthancError"] == error["Message"] == "The file storage is full"
    assert c_store(server, instance("REJ3", seed=203)) == OUT_OF_RESOURCES
    assert patients(server) == {pid("REJ1"), pid("REJ2")}
    with server.client() as client:
        assert client.get(f"/patients/{pid('REJ3')}").status_code == 404
    # A stored patient may still receive instances.
    store(server, instance("REJ1", seed=211))
    assert patients(server) == {pid("REJ1"), pid("REJ2")}
    wait_blobs_match_index(server)
