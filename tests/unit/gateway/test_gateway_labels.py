"""Labels (Orthanc 1.12): per resource, all labels, and Labels in /tools/find."""

from __future__ import annotations

from gateway_support import Gateway, dicom_file


async def test_label_life_cycle_and_find(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    mr = await gateway.upload(dicom_file("MR_small.dcm"))
    study = ct["ParentStudy"]
    assert (await gateway.client.put(f"/studies/{study}/labels/cohort_A", content=b"")).status_code == 200
    await gateway.client.put(f"/studies/{study}/labels/cohort_A", content=b"")
    await gateway.client.put(f"/studies/{mr['ParentStudy']}/labels/other-1", content=b"")
    assert (await gateway.client.get(f"/studies/{study}/labels")).json() == ["cohort_A"]
    assert (await gateway.client.get(f"/studies/{study}/labels/cohort_A")).status_code == 200
    assert (await gateway.client.get(f"/studies/{study}/labels/nope")).status_code == 404
    assert (await gateway.client.get("/tools/labels")).json() == ["cohort_A", "other-1"]
    assert (await gateway.client.get(f"/studies/{study}")).json()["Labels"] == ["cohort_A"]

    async def find(labels: list[str], constraint: str) -> list[str]:
        body = {"Level": "Study", "Query": {}, "Labels": labels, "LabelsConstraint": constraint}
        response = await gateway.client.post("/tools/find", json=body)
        assert response.status_code == 200, response.text
        return sorted(response.json())

    assert await find(["cohort_A"], "All") == [study]
    assert await find(["cohort_A", "other-1"], "Any") == sorted([study, mr["ParentStudy"]])
    assert await find(["cohort_A"], "None") == [mr["ParentStudy"]]

    assert (await gateway.client.delete(f"/studies/{study}/labels/cohort_A")).status_code == 200
    assert (await gateway.client.get(f"/studies/{study}/labels")).json() == []
    await gateway.client.delete(f"/patients/{mr['ParentPatient']}")
    assert (await gateway.client.get("/tools/labels")).json() == []


async def test_label_errors(gateway: Gateway) -> None:
    ct = await gateway.upload(dicom_file("CT_small.dcm"))
    bad = await gateway.client.put(f"/instances/{ct['ID']}/labels/with space", content=b"")
    assert bad.status_code == 400 and bad.json()["OrthancStatus"] == 3
    too_long = await gateway.client.put(f"/instances/{ct['ID']}/labels/{'a' * 65}", content=b"")
    assert too_long.status_code == 400
    unknown = await gateway.client.put("/series/nope/labels/ok", content=b"")
    assert unknown.status_code == 404
    assert (await gateway.client.get("/tools/labels")).json() == []
