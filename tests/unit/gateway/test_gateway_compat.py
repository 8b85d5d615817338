"""Issue 11's HTTP behaviours on the app alone: paths, Content-Type, conditional
GETs, execute-script, count-resources, dicom-echo body forms."""

from __future__ import annotations

import pytest
from dicomkeep.gateway.paths import normalize_path, normalize_raw_path
from gateway_support import Gateway, dicom_file, orthanc_id, variant

ROOT = "http://localhost"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"), ("//", "/"), ("/system", "/system"), ("//system", "/system"),
        ("/system/", "/system"), ("//instances//abc/file/", "/instances/abc/file"),
    ],
)  # fmt: skip
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected
    assert normalize_raw_path(path.encode()) == expected.encode()


async def test_empty_path_components_are_ignored(gateway: Gateway) -> None:
    answer = await gateway.upload(dicom_file("CT_small.dcm"))
    instance = answer["ID"]
    system = await gateway.client.get(f"{ROOT}//system")
    assert system.status_code == 200
    assert system.json()["Version"] == "1.12.4"
    file = await gateway.client.get(f"{ROOT}//instances//{instance}/file/")
    assert file.status_code == 200
    assert file.content == dicom_file("CT_small.dcm")
    # 405 still lists the methods of the normalized path
    wrong = await gateway.client.post(f"{ROOT}//patients//")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET")


async def test_empty_200_answers_are_text_plain(gateway: Gateway) -> None:
    await gateway.upload(dicom_file("CT_small.dcm"))
    patient = orthanc_id("1CT1")
    protect = await gateway.client.put(f"/patients/{patient}/protected", content=b"1")
    assert (protect.status_code, protect.content) == (200, b"")
    assert protect.headers["content-type"] == "text/plain"
    cleared = await gateway.client.delete("/changes")
    assert cleared.headers["content-type"] == "text/plain"
    missing = await gateway.client.get("/patients/nope")
    assert missing.status_code == 404
    assert "content-type" not in missing.headers


async def test_malformed_if_none_match_answers_400_with_the_current_etag(gateway: Gateway) -> None:
    answer = await gateway.upload(dicom_file("CT_small.dcm"))
    base = f"/instances/{answer['ID']}"
    for path in (f"{base}/metadata/TransferSyntax", f"{base}/attachments/dicom",
                 f"{base}/attachments/dicom/data", f"{base}/attachments/dicom/md5"):  # fmt: skip
        current = await gateway.client.get(path)
        tag = current.headers["etag"]
        same = await gateway.client.get(path, headers={"If-None-Match": tag})
        assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", tag), path
        bad = await gateway.client.get(path, headers={"If-None-Match": "abc"})
        assert bad.status_code == 400, path
        assert bad.headers["etag"] == tag
        body = bad.json()
        assert body["OrthancStatus"] == 3
        assert body["Details"] == (
            'The "If-None-Match" HTTP header should contain the ETag (revision followed '
            "by MD5 hash), but found: abc"
        )


async def test_execute_script_is_forbidden_as_orthanc_without_lua(gateway: Gateway) -> None:
    response = await gateway.client.post("/tools/execute-script", content=b"print(42)")
    assert (response.status_code, response.content) == (403, b"")


async def test_count_resources_counts_what_find_matches(gateway: Gateway) -> None:
    await gateway.upload(dicom_file("CT_small.dcm"))
    await gateway.upload(dicom_file("MR_small.dcm"))
    every = await gateway.client.post(
        "/tools/count-resources", json={"Level": "Study", "Query": {}}
    )
    assert every.json() == {"Count": 2}
    ct = await gateway.client.post(
        "/tools/count-resources", json={"Level": "Series", "Query": {"Modality": "ct"}}
    )
    assert ct.json() == {"Count": 1}
    bad = await gateway.client.post("/tools/count-resources", json={"Query": {}})
    assert bad.status_code == 400
    assert bad.json()["Details"] == 'Field "Level" is missing, or should be a string'


async def test_dicom_echo_refuses_other_bodies(gateway: Gateway) -> None:
    for body in (b"3", b'"AET"', b"", b'["A", "h"]'):
        response = await gateway.client.post("/tools/dicom-echo", content=body)
        assert response.status_code == 400, body


async def test_changes_of_deleted_resources_are_removed(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    mr = await gateway.upload(dicom_file("MR_small.dcm"))
    before = (await gateway.client.get("/changes")).json()
    ct_ids = {ct["ID"], ct["ParentSeries"], ct["ParentStudy"], ct["ParentPatient"]}
    assert ct_ids <= {change["ID"] for change in before["Changes"]}
    assert (await gateway.client.delete(f"/patients/{ct['ParentPatient']}")).status_code == 200
    after = (await gateway.client.get("/changes")).json()
    ids = {change["ID"] for change in after["Changes"]}
    assert not ids & ct_ids
    assert {mr["ID"], mr["ParentPatient"]} <= ids
    assert after["Done"] is True
    assert after["Last"] == after["Changes"][-1]["Seq"]
    first = (await gateway.client.get("/changes", params={"limit": 1})).json()
    assert first["Changes"] == after["Changes"][:1]
    assert first["Done"] is False
    rest = (await gateway.client.get("/changes", params={"since": first["Last"]})).json()
    assert rest["Changes"] == after["Changes"][1:]
    last = (await gateway.client.get("/changes", params={"last": ""})).json()
    assert last["Changes"] == after["Changes"][-1:]


async def test_deleting_a_child_updates_the_parents_last_update(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomkeep.common.index import hierarchy

    first = await gateway.upload(dicom_file("CT_small.dcm"))
    second = await gateway.upload(variant(SOPInstanceUID="1.2.3.4.5.6.7"))
    assert second["ParentSeries"] == first["ParentSeries"]
    monkeypatch.setattr(hierarchy, "now_stamp", lambda: "20300101T000000")
    assert (await gateway.client.delete(f"/instances/{second['ID']}")).status_code == 200
    for level, key in (("series", "ParentSeries"), ("studies", "ParentStudy"),
                       ("patients", "ParentPatient")):  # fmt: skip
        value = await gateway.client.get(f"/{level}/{first[key]}/metadata/LastUpdate")
        assert value.text == "20300101T000000", level


async def test_lookup_ignores_case_and_spaces(gateway: Gateway) -> None:
    answer = await gateway.upload(variant(PatientID="AbC-12x"))
    for text in ("AbC-12x", "abc-12X", "  ABC-12X \n"):
        found = (await gateway.client.post("/tools/lookup", content=text.encode())).json()
        assert found == [{"ID": answer["ParentPatient"], "Path": f"/patients/{answer['ParentPatient']}",
                          "Type": "Patient"}], text  # fmt: skip
    assert (await gateway.client.post("/tools/lookup", content=b"abc-12")).json() == []
