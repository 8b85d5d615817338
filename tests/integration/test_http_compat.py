"""Issue 11's HTTP behaviours as real clients see them, in both modes: empty path
components, Content-Type of empty answers, conditional GETs, modality forms,
/tools/dicom-echo bodies, /tools/execute-script, /tools/count-resources."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyorthanc
import pytest
from dicom_peers import StoreScpProcess, storescp
from dicomfiles import expected_ids, sample_path
from orthanc_api_client import OrthancApiClient
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from servers import DICOMKEEP, Server, free_port, wait_until
from synthetic import generate_study, write_files

STORESCP_PORT = free_port()
SERVER_CONFIG = {
    "DicomModalities": {
        "three": ["STORESCP", "127.0.0.1", STORESCP_PORT],
        "four": ["STORESCP", "127.0.0.1", STORESCP_PORT, "GenericNoWildcardInDates"],
        "object": {"AET": "STORESCP", "Host": "127.0.0.1", "Port": STORESCP_PORT,
                   "Manufacturer": "GE"},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScpProcess]:
    with storescp(tmp_path_factory.mktemp("storescp"), port=STORESCP_PORT) as running:
        yield running


def test_clients_with_a_base_url_ending_in_slash(clean: Server) -> None:
    ct = sample_path("CT_small.dcm")
    patient_id, study_id, _, instance_id = expected_ids(ct)
    api_client = OrthancApiClient(clean.url + "/")
    assert api_client.is_alive()
    assert api_client.upload_file(ct) == [instance_id]
    assert api_client.studies.get_all_ids() == [study_id]
    assert api_client.instances.get_file(instance_id) == ct.read_bytes()
    client = pyorthanc.Orthanc(clean.url + "/")
    assert client.get_patients() == [patient_id]
    assert client.get_system()["Version"] == "1.12.4"
    raw = httpx.get(f"{clean.url}//instances//{instance_id}/file/", timeout=30)
    assert (raw.status_code, raw.content) == (200, ct.read_bytes())
    assert httpx.get(f"{clean.url}//system", timeout=30).json()["Name"]


def test_empty_answers_carry_text_plain_and_pyorthanc_accepts_them(clean: Server) -> None:
    ct = sample_path("CT_small.dcm")
    patient_id = expected_ids(ct)[0]
    client = pyorthanc.Orthanc(clean.url)
    client.post_instances(ct.read_bytes())
    patient = pyorthanc.Patient(patient_id, client)
    patient.protected = True  # pyorthanc reads the Content-Type of the empty answer
    assert patient.protected is True
    with clean.client() as http:
        answer = http.put(f"/patients/{patient_id}/protected", content=b"0")
        assert (answer.status_code, answer.content) == (200, b"")
        assert answer.headers["content-type"] == "text/plain"
        assert http.get(f"/patients/{patient_id}/protected").text == "0"


def test_conditional_gets_on_metadata_and_attachments(clean: Server) -> None:
    ct = sample_path("CT_small.dcm")
    instance_id = expected_ids(ct)[3]
    with clean.client() as http:
        assert http.post("/instances", content=ct.read_bytes()).status_code == 200
        assert http.put(f"/instances/{instance_id}/metadata/1024", content=b"v1").status_code == 200
        for path in ("metadata/TransferSyntax", "metadata/1024", "attachments/dicom/data"):
            url = f"/instances/{instance_id}/{path}"
            current = http.get(url)
            tag = current.headers["etag"]
            not_modified = http.get(url, headers={"If-None-Match": tag})
            assert (not_modified.status_code, not_modified.content) == (304, b"")
            assert not_modified.headers["etag"] == tag
            other = http.get(url, headers={"If-None-Match": '"99-0123"'})
            assert other.status_code == 200
            assert other.content == current.content
            malformed = http.get(url, headers={"If-None-Match": "abc"})
            assert malformed.status_code == 400
            assert malformed.headers["etag"] == tag
            assert malformed.json()["OrthancStatus"] == 3


def test_modality_forms_from_configuration_and_put(server: Server) -> None:
    with server.client() as http:
        configured = http.get("/modalities", params={"expand": ""}).json()
        assert configured["three"]["Manufacturer"] == "Generic"
        assert configured["four"]["Manufacturer"] == "GenericNoWildcardInDates"
        assert configured["object"]["Manufacturer"] == "GE"
        assert {configured[n]["Port"] for n in ("three", "four", "object")} == {STORESCP_PORT}
        put = http.put("/modalities/put4", json=["PEER", "10.0.0.9", 104, "GenericNoUniversalWildcard"])
        assert (put.status_code, put.headers["content-type"]) == (200, "text/plain")
        shown = http.get("/modalities/put4/configuration").json()
        assert (shown["AET"], shown["Host"], shown["Port"], shown["Manufacturer"]) == (
            "PEER", "10.0.0.9", 104, "GenericNoUniversalWildcard"
        )
        bad = http.put("/modalities/bad", json=["PEER", "10.0.0.9", 104, "NoSuchVendor"])
        assert bad.status_code == 400
        assert "bad" not in http.get("/modalities").json()
        assert http.delete("/modalities/put4").status_code == 200


def test_dicom_echo_accepts_object_and_array_forms(server: Server, scp: StoreScpProcess) -> None:
    with server.client() as http:
        for body in (
            {"AET": "STORESCP", "Host": "127.0.0.1", "Port": STORESCP_PORT},
            ["STORESCP", "127.0.0.1", STORESCP_PORT],
            ["STORESCP", "127.0.0.1", STORESCP_PORT, "GE"],
        ):
            answer = http.post("/tools/dicom-echo", json=body)
            assert (answer.status_code, answer.json()) == (200, {}), body
        closed = free_port()
        failed = http.post("/tools/dicom-echo", json=["STORESCP", "127.0.0.1", closed])
        assert failed.status_code == 500
        for name in ("three", "four", "object"):
            assert http.post(f"/modalities/{name}/echo", json={}).status_code == 200


def test_execute_script_and_count_resources(clean: Server, tmp_path: Path) -> None:
    with clean.client() as http:
        script = http.post("/tools/execute-script", content=b"print(42)")
        assert (script.status_code, script.content) == (403, b"")
        for name in ("CT_small.dcm", "MR_small.dcm"):
            assert http.post("/instances", content=sample_path(name).read_bytes()).status_code == 200
        count = http.post("/tools/count-resources", json={"Level": "Instance", "Query": {}})
        assert count.json() == {"Count": 2}
        mr = http.post("/tools/count-resources", json={"Level": "Study", "Query": {"ModalitiesInStudy": "MR"}})
        assert mr.json() == {"Count": 1}


def test_changes_keep_only_existing_resources(clean: Server) -> None:
    ct, mr = sample_path("CT_small.dcm"), sample_path("MR_small.dcm")
    ct_ids, mr_ids = set(expected_ids(ct)), set(expected_ids(mr))
    with clean.client() as http:
        http.delete("/changes")
        for path in (ct, mr):
            assert http.post("/instances", content=path.read_bytes()).status_code == 200
        patient = expected_ids(ct)[0]
        assert http.delete(f"/patients/{patient}").status_code == 200
        page = http.get("/changes", params={"limit": 1000}).json()
        listed = {change["ID"] for change in page["Changes"]}
        assert not listed & ct_ids
        assert mr_ids <= listed
        assert page["Last"] == page["Changes"][-1]["Seq"]
        one = http.get("/changes", params={"limit": 1}).json()
        following = http.get("/changes", params={"since": one["Last"], "limit": 1000}).json()
        assert one["Changes"] + following["Changes"] == page["Changes"]


def test_lookup_is_case_insensitive(clean: Server) -> None:
    ct = sample_path("CT_small.dcm")
    patient_id, study_id, _, _ = expected_ids(ct)
    with clean.client() as http:
        assert http.post("/instances", content=ct.read_bytes()).status_code == 200
        found = http.post("/tools/lookup", content=b"1ct1").json()
        assert found == [{"ID": patient_id, "Path": f"/patients/{patient_id}", "Type": "Patient"}]
        uid = http.get(f"/studies/{study_id}").json()["MainDicomTags"]["StudyInstanceUID"]
        assert [item["ID"] for item in http.post("/tools/lookup", content=uid.encode()).json()] == [study_id]


def test_deleting_a_child_updates_parents_last_update(clean: Server, tmp_path: Path) -> None:
    files = write_files(generate_study(series=1, instances_per_series=2, seed=11), tmp_path)
    with clean.client() as http:
        ids = [http.post("/instances", content=f.read_bytes()).json() for f in files]
        first = ids[0]
        parents = [
            ("series", first["ParentSeries"]), ("studies", first["ParentStudy"]),
            ("patients", first["ParentPatient"]),
        ]  # fmt: skip
        before = {level: http.get(f"/{level}/{pid}/metadata/LastUpdate").text for level, pid in parents}
        latest = max(before.values())
        wait_until(lambda: http.get("/tools/now").text > latest, what="the clock to pass the stores")
        assert http.delete(f"/instances/{ids[1]['ID']}").status_code == 200
        for level, pid in parents:
            after = http.get(f"/{level}/{pid}/metadata/LastUpdate").text
            assert after > before[level], level


def test_a_bare_data_set_without_file_meta_is_stored_as_orthanc_does(clean: Server) -> None:
    dataset = dcmread(sample_path("MR_small_implicit.dcm"))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    bare = buffer.getvalue()
    with clean.client() as http:
        answer = http.post("/instances", content=bare)
        assert answer.status_code == 200, answer.text
        instance = answer.json()["ID"]
        # Orthanc 1.10.1 (measured): the file is kept as sent, the syntax guessed
        assert http.get(f"/instances/{instance}/file").content == bare
        assert http.get(f"/instances/{instance}/metadata/TransferSyntax").text == "1.2.840.10008.1.2"
        tags = http.get(f"/instances/{instance}/simplified-tags").json()
        assert tags["SOPInstanceUID"] == dataset.SOPInstanceUID
        assert http.post("/instances", content=b"garbage").status_code == 400


def _routes(tmp_path: Path) -> dict[str, Any]:
    """Return the OpenAPI paths of every route (`dicomkeep --openapi=FILE`)."""
    target = tmp_path / "openapi.json"
    written = subprocess.run([DICOMKEEP, f"--openapi={target}"], capture_output=True, timeout=300)
    assert written.returncode == 0, written.stderr
    paths: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))["paths"]
    return paths


def test_every_answer_with_a_body_has_a_content_type(clean: Server, tmp_path: Path) -> None:
    """GET every route (with real IDs, and with unknown ones), then a few refused writes:
    any answer that carries a body names its Content-Type (issue 11)."""
    ct = sample_path("CT_small.dcm")
    patient_id, study_id, series_id, instance_id = expected_ids(ct)
    ids = {"patients": patient_id, "studies": study_id, "series": series_id, "instances": instance_id}
    with clean.client() as http:
        assert http.post("/instances", content=ct.read_bytes()).status_code == 200
        assert http.put(f"/studies/{study_id}/labels/one").status_code == 200
        query = http.post("/tools/find", json={"Level": "Study", "Query": {}}).json()
        assert query == [study_id]
        checked, missing = 0, []
        for path, operations in _routes(tmp_path).items():
            if "get" not in operations:
                continue
            level = path.split("/")[1]
            for known in (True, False):
                values = {
                    "public_id": ids.get(level, "nope") if known else "nope",
                    "name": ("dicom" if "/attachments/" in path else "RemoteAET") if known else "nope",
                    "path": "0010-0010", "frame": "0", "label": "one" if known else "nope",
                    "job_id": "nope", "key": "nope", "query_id": "nope", "position": "0",
                }  # fmt: skip
                url = path.format(**values)
                answer = http.get(url)
                checked += 1
                if answer.content and "content-type" not in answer.headers:
                    missing.append((url, answer.status_code))
        for method, url, body in (
            ("POST", "/tools/find", b"not json"),
            ("POST", "/instances", b"not dicom"),
            ("PUT", f"/patients/{patient_id}/metadata/1024", b"x"),
            ("DELETE", "/patients/nope", b""),
            ("POST", "/modalities/nope/echo", b"{}"),
            ("POST", f"/studies/{study_id}/anonymize", b"[]"),
        ):
            answer = http.request(method, url, content=body)
            checked += 1
            if answer.content and "content-type" not in answer.headers:
                missing.append((url, answer.status_code))
        assert checked > 250 and missing == []
