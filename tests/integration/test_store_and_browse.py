"""Receive over DICOM and REST, browse over REST: the first day of an Orthanc user."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from dicomfiles import SAMPLES, expected_ids, sample_path
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from servers import Server, blob_keys, dcmtk, wait_until
from synthetic import generate_study, write_files

#: storescu's proposal option for each compressed sample.
PROPOSAL = {
    "JPEG2000.dcm": "-xw",
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "SC_rgb_rle_2frame.dcm": "-xr",
    "image_dfl.dcm": "-xd",
}

#: Same SOP Instance UID as MR_small.dcm: stored once, the others answer AlreadyStored.
SAME_SOP_AS_MR_SMALL = {"MR_small_implicit.dcm", "MR_small_bigendian.dcm"}


def test_echoscu(server: Server) -> None:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aec", server.aet, "127.0.0.1", str(server.dicom_port)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_storescu_samples_then_browse(clean: Server) -> None:
    paths = [sample_path(name) for name in SAMPLES]
    # DCMTK proposes uncompressed syntaxes unless told which one a file needs;
    # compressed files are sent as they are, each with its own proposal.
    plain = [p for p in paths if p.name not in PROPOSAL]
    batches = [([], plain)] + [([PROPOSAL[p.name]], [p]) for p in paths if p.name in PROPOSAL]
    for options, files in batches:
        result = subprocess.run(
            [dcmtk("storescu"), "-aec", clean.aet, "-aet", "MODALITY1", *options,
             "127.0.0.1", str(clean.dicom_port), *map(str, files)],
            capture_output=True, timeout=120, text=True,
        )
        assert result.returncode == 0, result.stderr
    expected = {expected_ids(p)[3] for p in paths}
    with clean.client() as client:
        assert set(client.get("/instances").json()) == expected
        ct = sample_path("CT_small.dcm")
        patient_id, study_id, series_id, instance_id = expected_ids(ct)
        instance = client.get(f"/instances/{instance_id}").json()
        assert instance["ParentSeries"] == series_id
        assert instance["FileSize"] == len(client.get(f"/instances/{instance_id}/file").content)
        assert instance["MainDicomTags"]["SOPInstanceUID"] == dcmread(ct).SOPInstanceUID
        study = client.get(f"/studies/{study_id}").json()
        assert study["ParentPatient"] == patient_id
        assert study["PatientMainDicomTags"]["PatientID"] == "1CT1"
        metadata = client.get(f"/instances/{instance_id}/metadata?expand").json()
        assert metadata["Origin"] == "DicomProtocol"
        assert metadata["RemoteAET"] == "MODALITY1"
        assert metadata["CalledAET"] == clean.aet
        assert metadata["RemoteIP"] == "127.0.0.1"
        assert metadata["TransferSyntax"] == "1.2.840.10008.1.2.1"
        assert metadata["SopClassUid"] == "1.2.840.10008.5.1.4.1.1.2"
        # What comes back is the dataset that was sent (pixel data included).
        for path in paths:
            body = client.get(f"/instances/{expected_ids(path)[3]}/file").content
            returned, original = dcmread(BytesIO(body)), dcmread(path)
            assert returned.SOPInstanceUID == original.SOPInstanceUID
            if "PixelData" in original and path.name not in SAME_SOP_AS_MR_SMALL:
                assert returned.PixelData == original.PixelData, path.name
        russian = client.get(f"/instances/{expected_ids(sample_path('chrRuss.dcm'))[3]}/simplified-tags").json()
        assert russian["PatientName"] == dcmread(sample_path("chrRuss.dcm")).PatientName.original_string.decode("iso8859_5")


def test_pynetdicom_store_and_rest_shapes(clean: Server) -> None:
    study = generate_study(series=2, instances_per_series=3, seed=7)
    ae = AE(ae_title="PYSCU")
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", clean.dicom_port, ae_title=clean.aet)
    assert assoc.is_established
    try:
        for item in study:
            status = assoc.send_c_store(dcmread(BytesIO(item.data)))
            assert status.Status == 0x0000
    finally:
        assoc.release()
    with clean.client() as client:
        patients = client.get("/patients").json()
        assert len(patients) == 1
        patient = client.get(f"/patients/{patients[0]}").json()
        assert set(patient) >= {"ID", "Type", "MainDicomTags", "Studies", "IsStable", "LastUpdate"}
        assert patient["Type"] == "Patient"
        series = client.get(f"/studies/{patient['Studies'][0]}/series").json()
        assert len(series) == 2
        assert all(s["Status"] == "Complete" for s in series)
        assert all(s["ExpectedNumberOfInstances"] == 3 for s in series)
        stats = client.get("/statistics").json()
        assert stats["CountInstances"] == 6 and stats["CountSeries"] == 2
        changes = client.get("/changes?limit=1000").json()["Changes"]
        types = [c["ChangeType"] for c in changes]
        assert types.count("NewInstance") >= 6


def test_parallel_associations_store_everything_once(clean: Server, tmp_path: Path) -> None:
    """Four storescu associations at once (their stores grouped into shared index
    transactions), two of them sending the same series: every instance is stored
    once, readable, with one NewInstance each and its blob, and the copies answer
    success (AlreadyStored) with their blobs collected."""
    study = generate_study(series=3, instances_per_series=8, seed=4242)
    paths = write_files(study, tmp_path / "files")
    by_series: dict[str, list[Path]] = {}
    for item, path in zip(study, paths, strict=True):
        by_series.setdefault(item.series_uid, []).append(path)
    chunks = [*by_series.values(), next(iter(by_series.values()))]  # one series twice
    senders = [
        subprocess.Popen(
            [dcmtk("storescu"), "-aec", clean.aet, "-aet", f"SENDER{n}", "127.0.0.1",
             str(clean.dicom_port), *map(str, chunk)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n, chunk in enumerate(chunks)
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
    with clean.client() as client:
        instances = client.get("/instances").json()
        assert sorted(instances) == sorted(expected_ids(path)[3] for path in paths)
        changes = client.get("/changes?limit=1000").json()["Changes"]
        new = [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]
        assert sorted(new) == sorted(instances)
        seqs = [c["Seq"] for c in changes]
        assert seqs == sorted(set(seqs))
        assert client.get("/statistics").json()["CountInstances"] == len(study)
        path = paths[5]
        answer = client.get(f"/instances/{expected_ids(path)[3]}/file")
        assert dcmread(BytesIO(answer.content)).SOPInstanceUID == dcmread(path).SOPInstanceUID
    wait_until(lambda: len(blob_keys(clean)) == len(study), what="duplicate blobs to go")


def test_rest_upload_already_stored_and_changes(clean: Server) -> None:
    data = sample_path("CT_small.dcm").read_bytes()
    with clean.client() as client:
        first = client.post("/instances", content=data)
        assert first.status_code == 200
        body = first.json()
        patient_id, study_id, series_id, instance_id = expected_ids(sample_path("CT_small.dcm"))
        assert body == {
            "ID": instance_id, "ParentPatient": patient_id, "ParentStudy": study_id,
            "ParentSeries": series_id, "Path": f"/instances/{instance_id}", "Status": "Success",
        }
        last = client.get("/changes?last").json()["Last"]
        blobs_before = len(blob_keys(clean))
        second = client.post("/instances", content=data)
        assert second.status_code == 200 and second.json()["Status"] == "AlreadyStored"
        assert client.get("/changes?last").json()["Last"] == last
        meta = client.get(f"/instances/{instance_id}/metadata?expand").json()
        assert meta["Origin"] == "RestApi" and meta["RemoteAET"] == ""
        # The duplicate's blob is collected; the stored copy stays.
        wait_until(lambda: len(blob_keys(clean)) == blobs_before, what="duplicate blob removal")
        assert client.get(f"/instances/{instance_id}/file").content == data


@pytest.mark.parametrize(
    "payload",
    [b"", b"not a dicom file at all", sample_path("CT_small.dcm").read_bytes()[:2000],
     sample_path("CT_small.dcm").read_bytes()[:-100]],
    ids=["empty", "garbage", "truncated-header", "truncated-pixels"],
)
def test_bad_upload_is_refused_and_leaves_nothing(clean: Server, payload: bytes) -> None:
    with clean.client() as client:
        answer = client.post("/instances", content=payload)
        assert answer.status_code == 400
        error = answer.json()
        assert error["HttpStatus"] == 400 and error["OrthancStatus"] == 15
        assert error["Method"] == "POST" and error["Uri"] == "/instances"
        assert client.get("/instances").json() == []
        assert client.get("/system").status_code == 200
    assert blob_keys(clean) == []


def test_malformed_cstore_gets_failure_status_and_leaves_nothing(clean: Server) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "BAD"
    ds.StudyInstanceUID = ""  # present but empty: Orthanc refuses the file
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    assoc = ae.associate("127.0.0.1", clean.dicom_port, ae_title=clean.aet)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        assert status.Status != 0x0000
        assert status.Status & 0xF000 in (0xA000, 0xC000)
    finally:
        assoc.release()
    with clean.client() as client:
        assert client.get("/instances").json() == []
    assert blob_keys(clean) == []


def test_delete_removes_blobs_and_reports_ancestor(clean: Server, tmp_path: Path) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=11)
    files = write_files(study, tmp_path)
    result = subprocess.run(
        [dcmtk("storescu"), "-aec", clean.aet, "127.0.0.1", str(clean.dicom_port), *map(str, files)],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0
    with clean.client() as client:
        instances = client.get("/instances").json()
        assert len(instances) == 2
        answer = client.delete(f"/instances/{instances[0]}").json()
        assert answer["RemainingAncestor"]["Type"] == "Series"
        answer = client.delete(f"/instances/{instances[1]}").json()
        assert answer == {"RemainingAncestor": None}
        assert client.get("/patients").json() == []
        assert client.get(f"/instances/{instances[0]}").status_code == 404
    wait_until(lambda: blob_keys(clean) == [], what="blob removal after delete")


def test_zip_upload(clean: Server) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/ct.dcm", sample_path("CT_small.dcm").read_bytes())
        archive.writestr("b/mr.dcm", sample_path("MR_small.dcm").read_bytes())
        archive.writestr("readme.txt", b"not dicom")
    with clean.client() as client:
        answer = client.post("/instances", content=buffer.getvalue())
        assert answer.status_code == 200
        assert sorted(item["Status"] for item in answer.json()) == ["Success", "Success"]
        assert len(client.get("/instances").json()) == 2


def test_unknown_routes_and_methods(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/nope")
        assert missing.status_code == 404 and missing.content == b""
        wrong = client.post("/patients")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
        assert client.get("/patients/nope").status_code == 404
        system = client.get("/system").json()
        assert system["DicomAet"] == server.aet and system["DicomPort"] == server.dicom_port
        assert system["Version"] == "1.12.4"
        assert "DicomKeepVersion" in system
        assert isinstance(httpx.get(f"{server.url}/tools/now").text, str)
