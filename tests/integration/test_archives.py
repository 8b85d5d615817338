"""ZIP archives and DICOMDIR media (issue 11's last part, issue 16's transcoding in
archives), in both modes: synchronous downloads through orthanc-api-client and
pyorthanc, asynchronous Archive/Media jobs whose ZIP any gateway serves from the
blob store, transcoding, MediaArchiveSize, SynchronousZipStream, errors."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pyorthanc
import pytest
from dicomfiles import SAMPLES, expected_ids, sample_path
from orthanc_api_client import OrthancApiClient
from orthanc_peer import OrthancPeer, orthanc_available, orthanc_peer
from pydicom.fileset import FileSet
from servers import DCMTK_ENV, Server, allinone_server, blob_keys, cluster_server, dcmtk, wait_until
from synthetic import generate_study

SERVER_CONFIG = {"MediaArchiveSize": 1}
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
IMPLICIT = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """Debian's Orthanc (1.10.1); fails (never skips) when it cannot run."""
    reason = orthanc_available()
    assert reason is None, reason
    with orthanc_peer(tmp_path_factory.mktemp("orthanc")) as peer:
        yield peer


@pytest.fixture
def stored(clean: Server) -> Iterator[tuple[Server, dict[str, tuple[str, str, str, str]]]]:
    """The server with three patients (CT, MR, RT plan) stored; their IDs by file."""
    ids = {}
    with clean.client() as client:
        for name in FILES:
            answer = client.post("/instances", content=sample_path(name).read_bytes())
            assert answer.status_code == 200, answer.text
            ids[name] = expected_ids(sample_path(name))
    yield clean, ids


def _members(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _stored_file(client: httpx.Client, instance_id: str) -> bytes:
    answer = client.get(f"/instances/{instance_id}/file")
    assert answer.status_code == 200
    return answer.content


def test_study_archive_has_orthanc_layout_and_the_stored_bytes(stored: Any, tmp_path: Path) -> None:
    server, ids = stored
    patient, study, _, instance = ids["CT_small.dcm"]
    api = OrthancApiClient(server.url)
    target = tmp_path / "study.zip"
    api.studies.download_archive(study, str(target))
    members = _members(target.read_bytes())
    assert list(members) == ["1CT1 CompressedSamples CT1/e1/CT/CT000000.dcm"]
    with server.client() as client:
        assert members["1CT1 CompressedSamples CT1/e1/CT/CT000000.dcm"] == _stored_file(client, instance)
        answer = client.get(f"/studies/{study}/archive")
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["content-disposition"] == f'filename="{study}.zip"'
        assert "content-length" not in answer.headers  # streamed (SynchronousZipStream)
        named = client.get(f"/patients/{patient}/archive", params={"filename": "ct.zip"})
        assert named.headers["content-disposition"] == 'filename="ct.zip"'
        assert list(_members(named.content)) == list(members)


def test_create_archive_of_resources_at_several_levels(stored: Any) -> None:
    server, ids = stored
    ct_patient = ids["CT_small.dcm"][0]
    mr_instance = ids["MR_small.dcm"][3]
    with server.client() as client:
        answer = client.post("/tools/create-archive", json={"Resources": [ct_patient, mr_instance]})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-disposition"] == 'filename="Archive.zip"'
        members = _members(answer.content)
        assert sorted(members) == [
            "1CT1 CompressedSamples CT1/e1/CT/CT000000.dcm",
            "4MR1 CompressedSamples MR1/Unknown Study/MR/MR000000.dcm",
        ]
        assert members["4MR1 CompressedSamples MR1/Unknown Study/MR/MR000000.dcm"] == _stored_file(
            client, mr_instance
        )
        listed = client.get(
            "/tools/create-archive", params={"resources": f"{ct_patient},{mr_instance}"}
        )
        assert sorted(_members(listed.content)) == sorted(members)


def test_media_has_a_dicomdir_that_pydicom_and_dcmtk_read(stored: Any, tmp_path: Path) -> None:
    server, ids = stored
    instances = {ids[name][3] for name in FILES}
    target = tmp_path / "media.zip"
    with server.client() as client:
        answer = client.post("/tools/create-media", json={"Resources": [ids[n][0] for n in FILES]})
        assert answer.status_code == 200, answer.text
        target.write_bytes(answer.content)
        stored_files = {_stored_file(client, instance) for instance in instances}
    folder = tmp_path / "media"
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        archive.extractall(folder)
    assert sorted(names) == ["DICOMDIR", "IMAGES/IM0", "IMAGES/IM1", "IMAGES/IM2"]
    assert {(folder / name).read_bytes() for name in names if name != "DICOMDIR"} == stored_files
    file_set = FileSet(pydicom.dcmread(folder / "DICOMDIR"))
    assert len(file_set) == 3
    assert {Path(instance.path).relative_to(folder).as_posix() for instance in file_set} == {
        "IMAGES/IM0", "IMAGES/IM1", "IMAGES/IM2",
    }
    assert {instance.SOPInstanceUID for instance in file_set} == {
        pydicom.dcmread(sample_path(name)).SOPInstanceUID for name in FILES
    }
    dump = subprocess.run(
        [dcmtk("dcmdump"), "--print-all", str(folder / "DICOMDIR")],
        capture_output=True, text=True, env=DCMTK_ENV, check=True,
    )
    assert "IMAGES\\IM0" in dump.stdout
    # Orthanc's records: one IMAGE record per file, whatever its SOP class.
    assert dump.stdout.count('(0004,1430) CS [IMAGE]') == 3
    # DCMTK appends to the DICOMDIR (it reads and checks the existing records first).
    extra = folder / "EXTRA"
    extra.mkdir()
    (extra / "CT").write_bytes(sample_path("CT_small.dcm").read_bytes())
    check = subprocess.run(
        [dcmtk("dcmmkdir"), "--append", "--input-directory", str(folder), "--output-file",
         str(folder / "DICOMDIR"), "+I", "EXTRA/CT"],
        capture_output=True, text=True, env=DCMTK_ENV,
    )
    assert check.returncode == 0, check.stderr


def test_series_media_through_pyorthanc_and_extended(clean: Server) -> None:
    study = generate_study(series=1, instances_per_series=3, seed=11)
    with clean.client() as http:
        for instance in study:
            assert http.post("/instances", content=instance.data).status_code == 200
        series = http.get("/series").json()[0]
        client = pyorthanc.Orthanc(clean.url)
        members = _members(client.get_series_id_media(series))
        assert sorted(members) == ["DICOMDIR", "IMAGES/IM0", "IMAGES/IM1", "IMAGES/IM2"]
        # Files in the order they were stored.
        assert [members[f"IMAGES/IM{n}"] for n in range(3)] == [i.data for i in study]
        extended = http.post(f"/series/{series}/media", json={"Extended": True})
        listed = http.get("/tools/create-media-extended", params={"resources": series})
    plain = pydicom.dcmread(io.BytesIO(members["DICOMDIR"]))
    assert plain.FileSetID == "ORTHANC_MEDIA"
    description = pydicom.dcmread(io.BytesIO(study[0].data)).SeriesDescription
    for answer in (extended, listed):
        dicom_dir = pydicom.dcmread(io.BytesIO(_members(answer.content)["DICOMDIR"]))
        records = {str(r.DirectoryRecordType): r for r in dicom_dir.DirectoryRecordSequence}
        assert records["SERIES"].SeriesDescription == description
    assert all("SeriesDescription" not in r for r in plain.DirectoryRecordSequence)


def test_transcoded_archive(stored: Any) -> None:
    server, ids = stored
    study, instance = ids["CT_small.dcm"][1], ids["CT_small.dcm"][3]
    with server.client() as client:
        for answer in (
            client.get(f"/studies/{study}/archive", params={"transcode": IMPLICIT}),
            client.post(f"/studies/{study}/archive", json={"Transcode": IMPLICIT}),
        ):
            assert answer.status_code == 200, answer.text
            (data,) = _members(answer.content).values()
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.file_meta.TransferSyntaxUID == IMPLICIT
            original = pydicom.dcmread(io.BytesIO(_stored_file(client, instance)))
            assert ds.PixelData == original.PixelData
            assert ds.SOPInstanceUID == original.SOPInstanceUID


def test_bad_requests_change_nothing(stored: Any) -> None:
    server, ids = stored
    study = ids["CT_small.dcm"][1]
    with server.client() as client:
        jobs_before = client.get("/jobs").json()
        for answer in (
            client.get(f"/studies/{study}/archive", params={"transcode": "1.2.3.4"}),
            client.post(f"/studies/{study}/media", json={"Transcode": "1.2.840.10008.1.2.4.50"}),
            client.post("/tools/create-archive", json={"Resources": [study], "Transcode": "x"}),
        ):
            assert answer.status_code == 400, answer.text
            assert answer.json()["HttpStatus"] == 400
        for answer in (
            client.get("/studies/0000/archive"),
            client.post("/series/0000/media", json={}),
            client.post("/tools/create-archive", json={"Resources": [study, "0000"]}),
        ):
            assert answer.status_code == 404, answer.text
            assert answer.json()["HttpStatus"] == 404
        for body in ({"Resources": "x"}, {"Other": []}, {"Resources": [study], "Synchronous": "yes"}):
            assert client.post("/tools/create-archive", json=body).status_code == 400
        assert client.get("/jobs").json() == jobs_before


def _wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> bool:
        return client.get(f"/jobs/{job_id}").json()["State"] in ("Success", "Failure")

    wait_until(done, timeout=60, what=f"job {job_id}")
    job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return job


def test_asynchronous_archives_are_job_outputs(stored: Any) -> None:
    server, ids = stored
    study, instance = ids["CT_small.dcm"][1], ids["CT_small.dcm"][3]
    with server.client() as client, server.client(1) as other:
        answer = client.post(f"/studies/{study}/archive", json={"Asynchronous": True, "Priority": 3})
        assert answer.status_code == 200, answer.text
        first = answer.json()["ID"]
        assert answer.json()["Path"] == f"/jobs/{first}"
        job = _wait_job(client, first)
        assert job["State"] == "Success", job
        assert job["Type"] == "Archive" and job["Priority"] == 3
        assert job["Content"]["InstancesCount"] == 1
        assert job["Content"]["Description"] == "REST API"
        # Any gateway answers it: the ZIP lives in the blob store.
        output = other.get(f"/jobs/{first}/archive")
        assert output.status_code == 200
        assert output.headers["content-type"] == "application/zip"
        assert int(job["Content"]["ArchiveSize"]) == len(output.content)
        assert _members(output.content) == {
            "1CT1 CompressedSamples CT1/e1/CT/CT000000.dcm": _stored_file(client, instance)
        }
        assert first in blob_keys(server)
        # MediaArchiveSize 1: a second archive drops the first one (and its blob).
        media = client.post(
            "/tools/create-media", json={"Resources": [study], "Asynchronous": True}
        ).json()["ID"]
        job = _wait_job(client, media)
        assert job["State"] == "Success" and job["Type"] == "Media", job
        assert sorted(_members(other.get(f"/jobs/{media}/archive").content)) == [
            "DICOMDIR", "IMAGES/IM0",
        ]
        missing = client.get(f"/jobs/{first}/archive")
        assert missing.status_code == 404 and missing.json()["HttpStatus"] == 404
        wait_until(lambda: first not in blob_keys(server), timeout=60, what="the dropped archive blob")
        # DELETE /jobs/{id}/archive removes the output and its blob.
        assert other.delete(f"/jobs/{media}/archive").status_code == 200
        assert client.get(f"/jobs/{media}/archive").status_code == 404
        assert client.delete(f"/jobs/{media}/archive").status_code == 404
        wait_until(lambda: media not in blob_keys(server), timeout=60, what="the deleted archive blob")


@pytest.mark.parametrize("mode", ["allinone", "distributed"])
def test_synchronous_zip_stream_false_sends_a_content_length(
    mode: str, tmp_path: Path
) -> None:
    start = allinone_server if mode == "allinone" else cluster_server
    with start(tmp_path, {"SynchronousZipStream": False}) as server, server.client() as client:
        data = sample_path("MR_small.dcm").read_bytes()
        assert client.post("/instances", content=data).status_code == 200
        study = expected_ids(sample_path("MR_small.dcm"))[1]
        answer = client.get(f"/studies/{study}/archive")
        assert answer.status_code == 200
        assert int(answer.headers["content-length"]) == len(answer.content)
        (name, content), = _members(answer.content).items()
        assert re.fullmatch(r"4MR1 CompressedSamples MR1/Unknown Study/MR/MR000000\.dcm", name)
        assert content == data


def _records(dicom_dir: bytes) -> list[dict[str, str]]:
    """The DICOMDIR records without offsets; a missing PatientID read as empty."""
    records = []
    for record in pydicom.dcmread(io.BytesIO(dicom_dir)).DirectoryRecordSequence:
        fields = {e.keyword: str(e.value) for e in record if not e.keyword.startswith("Offset")}
        if record.DirectoryRecordType == "PATIENT":
            fields.setdefault("PatientID", "")
        records.append(fields)
    return records


def test_same_archive_and_media_as_orthanc(clean: Server, orthanc: OrthancPeer) -> None:
    """Side by side with Debian's Orthanc on the same files: same ZIP member names
    (folders, duplicate names, counters), same bytes, same DICOMDIR records (Orthanc
    1.10.1 loses non-ASCII names in DICOMDIR records: those files are left out)."""
    files = [sample_path(name).read_bytes() for name in SAMPLES if not name.startswith("chr")]
    files += [i.data for i in generate_study(series=2, instances_per_series=3, seed=7)]
    for seed in (8, 9):  # two studies of one patient: same folder names -> "-2"
        files += [i.data for i in generate_study(
            series=1, instances_per_series=2, seed=seed, patient_id="SAME", patient_name="X^Y",
        )]  # fmt: skip
    with clean.client() as ours, orthanc.client() as theirs:
        for data in files:
            assert ours.post("/instances", content=data).status_code == 200
            assert theirs.post("/instances", content=data).status_code == 200
        patients = sorted(ours.get("/patients").json())
        assert patients == sorted(theirs.get("/patients").json())
        try:
            for route in ("create-archive", "create-media", "create-media-extended"):
                body = {"Resources": patients}
                mine = _members(ours.post(f"/tools/{route}", json=body).content)
                reference = _members(theirs.post(f"/tools/{route}", json=body).content)
                assert list(mine) == list(reference), route
                for name in mine:
                    if name != "DICOMDIR":
                        assert mine[name] == reference[name], name
                if "DICOMDIR" in mine:
                    assert _records(mine["DICOMDIR"]) == _records(reference["DICOMDIR"]), route
        finally:
            for patient in theirs.get("/patients").json():
                theirs.delete(f"/patients/{patient}")
