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
from dicomfiles import expected_ids, sample_path
from orthanc_api_client import OrthancApiClient
from pydicom.fileset import FileSet
from servers import DCMTK_ENV, Server, allinone_server, blob_keys, cluster_server, dcmtk, wait_until

SERVER_CONFIG = {"MediaArchiveSize": 1}
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
IMPLICIT = "1.2.840.10008.1.2"


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
    assert "IMAGES\\IM0" in dump.stdout and "RT PLAN" in dump.stdout
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


def test_series_media_through_pyorthanc_and_extended(stored: Any) -> None:
    server, ids = stored
    series = ids["MR_small.dcm"][2]
    client = pyorthanc.Orthanc(server.url)
    members = _members(client.get_series_id_media(series))
    assert sorted(members) == ["DICOMDIR", "IMAGES/IM0"]
    with server.client() as http:
        extended = http.post(f"/series/{series}/media", json={"Extended": True})
        dicom_dir = pydicom.dcmread(io.BytesIO(_members(extended.content)["DICOMDIR"]))
        plain = pydicom.dcmread(io.BytesIO(members["DICOMDIR"]))
    records = {str(r.DirectoryRecordType): r for r in dicom_dir.DirectoryRecordSequence}
    assert "Rows" in records["IMAGE"]
    assert all("Rows" not in r for r in plain.DirectoryRecordSequence)


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
