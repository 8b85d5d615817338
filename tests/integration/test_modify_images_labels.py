"""Issue 16 through the public interface, in both modes: modify and anonymize, labels,
images, bulk operations and small tools, with pyorthanc and orthanc-api-client,
compared with Debian's Orthanc on the same files (tests/orthanc_peer.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pyorthanc
import pytest
from dicomfiles import SAMPLES, expected_ids, sample_path
from dicomkeep.common.anonymization import DEFAULT_VERSION, ORTHANC_VERSIONS, basic_profile
from orthanc_api_client import OrthancApiClient
from orthanc_peer import OrthancPeer, orthanc_available, orthanc_peer
from PIL import Image
from pydicom.datadict import dictionary_VR
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from servers import Server, wait_until

#: Repeating-group tags of the curve/overlay ranges the 2017c, 2021b and 2023b tables list
#: as X: Orthanc removes them only inside sequences, DicomKeep at the first level too.
RANGE_TAGS = {0x50000010: ("US", 1), 0x60003000: ("OW", b"\x00\x00"), 0x60004000: ("LT", "comment")}
#: A value per VR for the synthetic file that holds every tag the tables name.
VALUES_BY_VR: dict[str, Any] = {
    "AE": "AET", "AS": "030Y", "CS": "X", "DA": "20200101", "DT": "20200101120000", "TM": "120000",
    "DS": "1", "IS": "1", "LO": "x", "SH": "x", "LT": "x", "ST": "x", "UT": "x", "UC": "x",
    "PN": "Doe^J", "UR": "http://x", "US": 1, "SS": 1, "UL": 1, "SL": 1, "FL": 1.0, "FD": 1.0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "UN": b"\x00\x00", "AT": 0x00100010,
}  # fmt: skip
#: What each action of a table looks like in `_classify`.
CLASS_OF_ACTION = {"removals": "removed", "clearings": "emptied", "uids": "changed"}
#: Not part of the comparison: the pixel data (Orthanc 1.10.1 rewrites big-endian
#: files as little endian) and the dataset trailing padding.
NOT_COMPARED = {0x7FE00010, 0xFFFCFFFC}
#: The samples whose previews are compared pixel for pixel with Orthanc's.
PREVIEW_SAMPLES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm"]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """Debian's Orthanc with the samples stored; fails (never skips) when it cannot run."""
    reason = orthanc_available()
    assert reason is None, reason
    with orthanc_peer(tmp_path_factory.mktemp("orthanc")) as peer, peer.client() as client:
        for name in SAMPLES:
            assert client.post("/instances", content=sample_path(name).read_bytes()).status_code == 200
        assert client.post("/instances", content=_every_profile_tag()).status_code == 200
        yield peer


def _every_profile_tag() -> bytes:
    """Return a file holding every tag any of the four tables names, plus the range tags."""
    tags: set[int] = set()
    for version in ORTHANC_VERSIONS:
        profile = basic_profile(version)
        tags |= profile.removals | profile.clearings | profile.uids
    ds = pydicom.Dataset()
    for number, tag in enumerate(sorted(tags), start=1):
        if tag >> 16 in (0x0000, 0x0002) or tag in (0xFFFAFFFA, 0xFFFCFFFC):
            continue  # command and file-meta groups; signatures and padding need real content
        vr = dictionary_VR(tag).split(" ")[0]
        if vr == "UI":
            value: Any = f"1.2.826.0.1.3680043.10.999.{number}"
        elif vr == "SQ":
            item = pydicom.Dataset()
            item.CodeMeaning = "x"
            value = pydicom.Sequence([item])
        else:
            value = VALUES_BY_VR[vr]
        ds.add_new(tag, vr, value)
    for tag, (vr, value) in RANGE_TAGS.items():
        ds.add_new(tag, vr, value)
    ds.PatientID, ds.PatientName, ds.Modality = "EVERY", "Every^Tag", "OT"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.100001"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.100002"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.100003"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _classify(original: pydicom.Dataset, changed: pydicom.Dataset) -> dict[int, str]:
    """Return, per top-level tag, what anonymization did: removed, emptied, changed, added."""
    outcome: dict[int, str] = {}
    for element in original:
        tag = int(element.tag)
        if tag not in changed:
            outcome[tag] = "removed"
            continue
        new = changed[tag]
        if new.VR == "SQ":
            before, after = len(element.value or []), len(new.value or [])
            if before and not after:
                outcome[tag] = "emptied"
            continue
        if element.value not in (None, "", b"") and new.value in (None, "", b""):
            outcome[tag] = "emptied"
        elif str(new.value) != str(element.value):
            outcome[tag] = "changed"
    for element in changed:
        if int(element.tag) not in original:
            outcome[int(element.tag)] = "added"
    return {tag: what for tag, what in outcome.items() if tag not in NOT_COMPARED}


def _read(content: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(content))


def _upload_samples(client: httpx.Client) -> dict[str, str]:
    ids = {}
    for name in SAMPLES:
        answer = client.post("/instances", content=sample_path(name).read_bytes())
        assert answer.status_code == 200, answer.text
        ids[name] = expected_ids(sample_path(name))[3]
    return ids


def _edition_changes(original: pydicom.Dataset, version: str) -> dict[int, str]:
    """Return what `version` does differently from 2021b (Debian's Orthanc 1.10.1 knows no
    2023b) to the tags of a file, by the action each table gives them."""
    def actions(profile_version: str) -> dict[int, str]:
        profile = basic_profile(profile_version)
        return {tag: CLASS_OF_ACTION[name] for name in CLASS_OF_ACTION for tag in getattr(profile, name)}

    before, after = actions("2021b"), actions(version)
    return {
        tag: after.get(tag, "kept")
        for tag in original.keys()
        if before.get(tag) != after.get(tag) and original[tag].value not in (None, "", b"")
    }


@pytest.mark.parametrize("version", ["2008", "2017c", "2021b", None])
def test_anonymized_tags_match_orthanc(clean: Server, orthanc: OrthancPeer, version: str | None) -> None:
    """Every DicomVersion both know gives Orthanc's tag set, on the samples and on a file
    holding every tag the tables name; the default (2023b, unknown to Debian's 1.10.1) is
    checked as its 2021b output changed by the 2023b edition."""
    files = {name: sample_path(name).read_bytes() for name in SAMPLES} | {"every-tag": _every_profile_tag()}
    body = {} if version is None else {"DicomVersion": version}
    with clean.client() as ours, orthanc.client() as theirs:
        ids = {}
        for name, content in files.items():
            stored = ours.post("/instances", content=content)
            assert stored.status_code == 200, stored.text
            ids[name] = stored.json()["ID"]
        for name, instance_id in ids.items():
            original = _read(files[name])
            mine = ours.post(f"/instances/{instance_id}/anonymize", json=body)
            reference = theirs.post(f"/instances/{instance_id}/anonymize", json=body)
            assert mine.status_code == reference.status_code == 200, (name, mine.text)
            mine_file, reference_file = _read(mine.content), _read(reference.content)
            expected = _classify(original, reference_file)
            if version != "2008":
                expected |= {tag: "removed" for tag in RANGE_TAGS if tag in original}
            if version is None:
                changes = _edition_changes(original, DEFAULT_VERSION)
                expected = {tag: what for tag, what in expected.items() if tag not in changes}
                expected |= {tag: what for tag, what in changes.items() if what != "kept"}
            actual = _classify(original, mine_file)
            assert actual == expected, name
            # "Orthanc 1.10.1 - PS 3.15-2021b Table E.1-1 Basic Profile": same table name.
            method = str(mine_file.DeidentificationMethod)
            assert method.startswith("DicomKeep - ")
            if version is not None:
                assert method.split(" - ", 1)[1] == str(reference_file.DeidentificationMethod).split(" - ", 1)[1]
        # Instance-level anonymization and modification store nothing.
        assert sorted(ours.get("/instances").json()) == sorted(set(ids.values()))


def test_previews_match_orthanc(clean: Server, orthanc: OrthancPeer) -> None:
    with clean.client() as ours, orthanc.client() as theirs:
        ids = _upload_samples(ours)
        for name in PREVIEW_SAMPLES:
            for route in ("preview", "rendered", "rendered?window-center=100&window-width=50&width=32"):
                url = f"/instances/{ids[name]}/{route}"
                mine, reference = ours.get(url), theirs.get(url)
                assert mine.status_code == reference.status_code == 200, (name, route)
                assert mine.headers["content-type"] == reference.headers["content-type"]
                mine_pixels = np.asarray(Image.open(io.BytesIO(mine.content)))
                their_pixels = np.asarray(Image.open(io.BytesIO(reference.content)))
                assert mine_pixels.shape == their_pixels.shape, (name, route)
                assert (mine_pixels == their_pixels).all(), (name, route)
        # Orthanc answers 415 without pixel data; DicomKeep too, with a message.
        for client in (ours, theirs):
            assert client.get(f"/instances/{ids['rtplan.dcm']}/preview").status_code == 415


def test_pyorthanc_modify_anonymize_labels_and_preview(clean: Server) -> None:
    client = pyorthanc.Orthanc(clean.url)
    ct = sample_path("CT_small.dcm")
    client.post_instances(ct.read_bytes())
    patient_id, study_id, _, instance_id = expected_ids(ct)
    study = pyorthanc.Study(study_id, client)
    modified = study.modify(replace={"StudyDescription": "Fixed"})
    assert modified.id_ != study_id and modified.description == "Fixed"
    assert modified.get_main_information()["ModifiedFrom"] == study_id
    anonymized = pyorthanc.Patient(patient_id, client).anonymize()
    assert anonymized.name.startswith("Anonymized") and anonymized.patient_id != "1CT1"
    study.add_label("cohort_A")
    assert study.labels == ["cohort_A"]
    assert [s.id_ for s in pyorthanc.find_studies(client, labels=["cohort_A"])] == [study_id]
    study.remove_label("cohort_A")
    assert study.labels == []
    preview = client.get_instances_id_preview(instance_id)
    assert Image.open(io.BytesIO(preview)).size == (128, 128)
    anonymous_file = pyorthanc.Instance(instance_id, client).anonymize()
    assert _read(anonymous_file).PatientIdentityRemoved == "YES"


def test_orthanc_api_client_modify_anonymize_labels_and_preview(clean: Server) -> None:
    client = OrthancApiClient(clean.url)
    mr = sample_path("MR_small.dcm")
    [instance_id] = client.upload_file(mr)
    _, study_id, series_id, _ = expected_ids(mr)
    modified = client.studies.modify(study_id, replace_tags={"StudyDescription": "B"}, delete_original=False)
    assert client.studies.get(modified).main_dicom_tags.get("StudyDescription") == "B"
    anonymized = client.studies.anonymize(study_id, delete_original=False)
    assert anonymized not in (None, study_id, modified)
    client.studies.add_labels(study_id, ["one", "two"])
    assert sorted(client.studies.get_labels(study_id)) == ["one", "two"]
    assert client.get_all_labels() == ["one", "two"]
    preview = client.series.get_preview_file(series_id, jpeg_format=True)
    assert Image.open(io.BytesIO(preview)).format == "JPEG"
    file = client.instances.modify(instance_id, replace_tags={"PatientName": "X^Y"}, force=True)
    assert _read(file).PatientName == "X^Y"


def _instances(client: httpx.Client) -> list[str]:
    return sorted(client.get("/instances").json())


@pytest.mark.parametrize(
    ("route", "body", "status"),
    [
        ("modify", {"Replace": {"NoSuchTag": "x"}}, 500),
        ("modify", {"Replace": {"PatientID": "x"}}, 400),
        ("modify", {"Remove": ["StudyInstanceUID"]}, 400),
        ("anonymize", {"DicomVersion": "1999"}, 400),
        ("modify", {"Transcode": "1.2.840.10008.1.2.4.50"}, 400),
    ],
)
def test_bad_modifications_store_nothing(clean: Server, route: str, body: dict[str, Any], status: int) -> None:
    with clean.client() as client:
        ids = _upload_samples(client)
        before = _instances(client)
        study = expected_ids(sample_path("CT_small.dcm"))[1]
        answer = client.post(f"/studies/{study}/{route}", json=body)
        assert answer.status_code == status, answer.text
        assert answer.json()["HttpStatus"] == status and answer.json()["Message"]
        assert _instances(client) == before
        plan = client.get(f"/instances/{ids['rtplan.dcm']}/rendered")
        assert plan.status_code == 415 and "no pixel data" in plan.json()["Details"]


def test_modification_changes_and_metadata(clean: Server) -> None:
    with clean.client() as client:
        ct = sample_path("CT_small.dcm")
        client.post("/instances", content=ct.read_bytes())
        patient_id, study_id, series_id, instance_id = expected_ids(ct)
        last = client.get("/changes?last").json()["Last"]
        answer = client.post(
            f"/series/{series_id}/modify",
            json={"Replace": {"SeriesDescription": "moved"}, "KeepSource": False},
        ).json()
        assert answer["Type"] == "Series" and answer["InstancesCount"] == 1
        series = client.get(f"/series/{answer['ID']}").json()
        assert series["ModifiedFrom"] == series_id and series["ParentStudy"] == study_id
        [copy] = series["Instances"]
        assert client.get(f"/instances/{copy}/metadata/ModifiedFrom").text == instance_id
        assert client.get(f"/instances/{instance_id}").status_code == 404
        # As Orthanc: the study, whose ID the copy shares, records no ModifiedFrom.
        assert "ModifiedFrom" not in client.get(f"/studies/{study_id}").json()
        changes = client.get(f"/changes?since={last}").json()["Changes"]
        kinds = {(c["ChangeType"], c["ID"]) for c in changes}
        assert ("NewInstance", copy) in kinds and ("NewSeries", answer["ID"]) in kinds
        # As Orthanc 1.12: no Modified*/Anonymized* change is logged (docs/rest.md).
        assert not {kind for kind, _ in kinds if kind.startswith(("Modified", "Anonymized"))}


def test_synchronous_job_and_concurrent_anonymized_names(clean: Server) -> None:
    """A synchronous study anonymization is a ResourceModification job listed in
    /jobs (Orthanc's SubmitAndWait); concurrent anonymizations on every replica each
    draw their own Anonymized<N>."""
    from concurrent.futures import ThreadPoolExecutor

    with clean.client() as client:
        ct = sample_path("CT_small.dcm")
        client.post("/instances", content=ct.read_bytes())
        _, study_id, _, instance_id = expected_ids(ct)
        before = set(client.get("/jobs").json())
        answer = client.post(f"/studies/{study_id}/anonymize", json={})
        assert answer.status_code == 200, answer.text
        [job_id] = set(client.get("/jobs").json()) - before
        job = client.get(f"/jobs/{job_id}").json()
        assert job["Type"] == "ResourceModification" and job["State"] == "Success"
        assert job["Content"] == answer.json()
        first = client.get(f"/patients/{answer.json()['PatientID']}").json()
        drawn = {first["MainDicomTags"]["PatientName"]}

    def anonymize(n: int) -> str:
        with clean.client(replica=n) as each:
            reply = each.post(f"/instances/{instance_id}/anonymize", json={})
            assert reply.status_code == 200, reply.text
            return str(_read(reply.content).PatientName)

    with ThreadPoolExecutor(6) as pool:
        drawn |= set(pool.map(anonymize, range(12)))
    assert len(drawn) == 13 and all(name.startswith("Anonymized") for name in drawn)


def test_tools_and_bulk_routes(clean: Server) -> None:
    with clean.client() as client:
        assert client.get("/plugins").json() == ["explorer.js"]
        assert "C-Store" in client.get("/tools/dicom-conformance").text
        pdf = b"%PDF-1.4\n%%EOF\n"
        created = client.post(
            "/tools/create-dicom",
            json={"Tags": {"PatientName": "Doc^Pdf"},
                  "Content": "data:application/pdf;base64," + base64.b64encode(pdf).decode()},
        ).json()  # fmt: skip
        assert client.get(f"/instances/{created['ID']}/pdf").content == pdf
        ids = _upload_samples(client)
        client.put(f"/instances/{ids['CT_small.dcm']}/labels/keep", content=b"")
        assert client.get("/tools/labels").json() == ["keep"]
        found = client.post(
            "/tools/find", json={"Level": "Instance", "Query": {}, "Labels": ["keep"]}
        ).json()
        assert found == [ids["CT_small.dcm"]]
        bulk = client.post(
            "/tools/bulk-anonymize", json={"Resources": [ids["CT_small.dcm"], ids["MR_small.dcm"]]}
        ).json()
        assert bulk["InstancesCount"] == 2 and bulk["IsAnonymization"] is True
        content = client.post("/tools/bulk-content", json={"Resources": [created["ID"]]}).json()
        assert content[0]["ID"] == created["ID"]
        client.post("/tools/bulk-delete", json={"Resources": [created["ParentPatient"], "unknown"]})
        assert client.get(f"/instances/{created['ID']}").status_code == 404


def test_frames_numpy_shared_tags_and_slices(clean: Server, tmp_path: Path) -> None:
    with clean.client() as client:
        ids = _upload_samples(client)
        rle = ids["SC_rgb_rle_2frame.dcm"]
        assert client.get(f"/instances/{rle}/frames").json() == [0, 1]
        array = np.load(io.BytesIO(client.get(f"/instances/{rle}/numpy").content))
        assert array.shape == (2, 100, 100, 3)
        j2k = client.get(f"/instances/{ids['JPEG2000.dcm']}/frames/0/raw")
        assert j2k.headers["content-type"] == "image/jp2"
        study = expected_ids(sample_path("CT_small.dcm"))[1]
        assert client.get(f"/studies/{study}/shared-tags?simplify").json()["PatientID"] == "1CT1"
        series = expected_ids(sample_path("CT_small.dcm"))[2]
        assert client.get(f"/series/{series}/ordered-slices").json()["Type"] == "Sequence"


def test_asynchronous_anonymization_job(clean: Server) -> None:
    with clean.client() as client:
        ct = sample_path("CT_small.dcm")
        client.post("/instances", content=ct.read_bytes())
        _, study_id, _, _ = expected_ids(ct)
        answer = client.post(f"/studies/{study_id}/anonymize", json={"Asynchronous": True}).json()
        job_id = answer["ID"]
        wait_until(
            lambda: client.get(f"/jobs/{job_id}").json()["State"] in ("Success", "Failure"),
            timeout=60, what="the anonymization job",
        )
        job = client.get(f"/jobs/{job_id}").json()
        assert job["State"] == "Success" and job["Type"] == "ResourceModification", job
        assert job["Progress"] == 100 and job["Content"]["InstancesCount"] == 1
        copy = client.get(f"/studies/{job['Content']['ID']}").json()
        assert copy["AnonymizedFrom"] == study_id
