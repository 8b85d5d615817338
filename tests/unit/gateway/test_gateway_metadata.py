"""Metadata writes, ETags and revisions (ORTHANC_API.md §3, §5)."""

from __future__ import annotations

import hashlib

import pytest
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.api.metadata import MAX_METADATA_BYTES
from gateway_support import Gateway, dicom_file

USER = Settings(user_metadata={"Reading": 1024, "AiResult": 1025})
CHECKED = Settings(user_metadata={"Reading": 1024}, check_revisions=True)


def tag(revision: int, value: str) -> str:
    return f'"{revision}-{hashlib.md5(value.encode()).hexdigest()}"'


async def instance_of(gateway: Gateway) -> str:
    return str((await gateway.upload(dicom_file("CT_small.dcm")))["ID"])


@pytest.mark.parametrize("settings", [USER])
async def test_round_trip_by_name_and_number(gateway: Gateway) -> None:
    instance = await instance_of(gateway)
    client = gateway.client
    path = f"/instances/{instance}/metadata"
    put = await client.put(f"{path}/Reading", content="draft é".encode())
    assert (put.status_code, put.content) == (200, b"")
    assert put.headers["etag"] == tag(0, "draft é")
    by_number = await client.get(f"{path}/1024")
    assert (by_number.text, by_number.headers["content-type"]) == ("draft é", "text/plain")
    assert by_number.headers["etag"] == tag(0, "draft é")
    second = await client.put(f"{path}/1024", content=b"final")
    assert second.headers["etag"] == tag(1, "final")
    assert (await client.get(f"{path}/Reading")).text == "final"
    # An unnamed user key works by number, and lists as its number.
    assert (await client.put(f"{path}/2000", content=b"x")).status_code == 200
    names = (await client.get(path)).json()
    assert names[-2:] == ["Reading", "2000"]
    assert (await client.get(f"{path}?expand")).json()["Reading"] == "final"
    cached = await client.get(f"{path}/Reading", headers={"If-None-Match": tag(1, "final")})
    assert (cached.status_code, cached.content) == (304, b"")
    stale = await client.get(f"{path}/Reading", headers={"If-None-Match": tag(0, "final")})
    assert (stale.status_code, stale.text) == (200, "final")
    deleted = await client.delete(f"{path}/Reading")
    assert (deleted.status_code, deleted.content) == (200, b"")
    gone = await client.get(f"{path}/Reading")
    assert (gone.status_code, gone.content) == (404, b"")
    again = await client.delete(f"{path}/Reading")
    assert again.status_code == 404
    assert again.json()["OrthancError"] == "Unknown resource"
    changes = [c["ChangeType"] for c in (await client.get("/changes")).json()["Changes"]]
    assert changes.count("UpdatedMetadata") == 4


@pytest.mark.parametrize("settings", [USER])
async def test_every_level_has_metadata(gateway: Gateway) -> None:
    stored = await gateway.upload(dicom_file("CT_small.dcm"))
    client = gateway.client
    for plural, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                        ("series", "ParentSeries"), ("instances", "ID")):
        path = f"/{plural}/{stored[key]}/metadata/AiResult"
        assert (await client.put(path, content=plural.encode())).status_code == 200
        assert (await client.get(path)).text == plural


@pytest.mark.parametrize("settings", [USER])
async def test_core_keys_are_read_only(gateway: Gateway) -> None:
    instance = await instance_of(gateway)
    client = gateway.client
    path = f"/instances/{instance}/metadata"
    for name in ("Origin", "8", "ReceptionDate", "1023", "0"):
        put = await client.put(f"{path}/{name}", content=b"forged")
        assert (put.status_code, put.content) == (403, b""), name
        delete = await client.delete(f"{path}/{name}")
        assert (delete.status_code, delete.content) == (403, b""), name
    assert (await client.get(f"{path}/Origin")).text == "RestApi"


@pytest.mark.parametrize("settings", [USER])
async def test_bad_input_changes_nothing(gateway: Gateway) -> None:
    instance = await instance_of(gateway)
    client = gateway.client
    path = f"/instances/{instance}/metadata"
    await client.put(f"{path}/Reading", content=b"kept")
    before = (await client.get("/changes")).json()["Last"]
    cases = [
        ("NoSuchName", b"v", {}, 404, 7),
        ("65536", b"v", {}, 400, 3),
        ("Reading", b"\xff\xfebinary", {}, 400, 8),
        ("Reading", b"a\x00b", {}, 400, 8),
        ("Reading", b"x" * (MAX_METADATA_BYTES + 1), {}, 413, 3),
        ("Reading", b"v", {"If-Match": '"0"'}, 400, 3),
        ("Reading", b"v", {"If-Match": "abc-def"}, 400, 3),
        ("Reading", b"v", {"If-Match": "-1-abc"}, 400, 3),
    ]
    for name, body, headers, status, orthanc_status in cases:
        answer = await client.put(f"{path}/{name}", content=body, headers=headers)
        assert answer.status_code == status, (name, body[:10], headers)
        assert answer.json()["OrthancStatus"] == orthanc_status, (name, headers)
        assert answer.json()["Details"], name
    bad_delete = await client.delete(f"{path}/Reading", headers={"If-Match": "nope"})
    assert bad_delete.status_code == 400
    bad_get = await client.get(f"{path}/Reading", headers={"If-None-Match": "*"})
    assert bad_get.status_code == 400
    assert (await client.get(f"{path}/Reading")).text == "kept"
    assert (await client.get("/changes")).json()["Last"] == before
    unknown = await client.put("/instances/nope/metadata/Reading", content=b"v")
    assert (unknown.status_code, unknown.json()["OrthancError"]) == (404, "Unknown resource")


@pytest.mark.parametrize("settings", [USER])
async def test_if_match_without_check_revisions(gateway: Gateway) -> None:
    instance = await instance_of(gateway)
    client = gateway.client
    path = f"/instances/{instance}/metadata/Reading"
    # On a new item the header is ignored; the item starts at revision 0.
    first = await client.put(path, content=b"1", headers={"If-Match": tag(7, "whatever")})
    assert first.headers["etag"] == tag(0, "1")
    conflict = await client.put(path, content=b"2", headers={"If-Match": tag(0, "other")})
    assert conflict.status_code == 409
    assert conflict.json()["OrthancStatus"] == 43
    assert conflict.json()["HttpError"] == "Conflict"
    # Quotes and spaces are optional.
    unquoted = tag(0, "1").strip('"')
    ok = await client.put(path, content=b"2", headers={"If-Match": f"  {unquoted} "})
    assert ok.headers["etag"] == tag(1, "2")
    # Without If-Match and CheckRevisions off, writes are unconditional.
    assert (await client.put(path, content=b"3")).headers["etag"] == tag(2, "3")
    stale_delete = await client.delete(path, headers={"If-Match": tag(1, "2")})
    assert stale_delete.status_code == 409
    assert (await client.delete(path, headers={"If-Match": tag(2, "3")})).status_code == 200


@pytest.mark.parametrize("settings", [CHECKED])
async def test_check_revisions(gateway: Gateway) -> None:
    instance = await instance_of(gateway)
    client = gateway.client
    path = f"/instances/{instance}/metadata/Reading"
    assert (await client.put(path, content=b"a")).status_code == 200
    overwrite = await client.put(path, content=b"b")
    assert overwrite.status_code == 409
    assert overwrite.json()["OrthancStatus"] == 43
    delete = await client.delete(path)
    assert delete.status_code == 409
    assert delete.json()["Details"] == 'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"'
    # Missing If-Match on DELETE is a 409 even for an unknown resource, as in Orthanc.
    assert (await client.delete("/instances/nope/metadata/Reading")).status_code == 409
    assert (await client.get(path)).text == "a"
    updated = await client.put(path, content=b"b", headers={"If-Match": tag(0, "a")})
    assert updated.headers["etag"] == tag(1, "b")
    assert (await client.delete(path, headers={"If-Match": tag(1, "b")})).status_code == 200
    assert (await client.get(path)).status_code == 404


async def test_allowed_methods_of_a_metadata_item(gateway: Gateway) -> None:
    answer = await gateway.client.post("/instances/x/metadata/Origin")
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET,DELETE,PUT")
