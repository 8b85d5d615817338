"""Cross-cutting HTTP behaviour: 404/405, error bodies, security (ORTHANC_API.md §0, §14, §16)."""

from __future__ import annotations

import base64

import pytest
from dicomkeep.common.errors import Forbidden, NoAnswer
from dicomkeep.common.settings import Settings
from dicomkeep.gateway.app import attach_context, create_app
from gateway_support import Gateway, client_for, dicom_file

ERROR_KEYS = {
    "HttpError", "HttpStatus", "Message", "Method", "OrthancError", "OrthancStatus", "Uri",
}  # fmt: skip
REALM = 'Basic realm="Orthanc Secure Area"'


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_unknown_route_is_an_empty_404(gateway: Gateway) -> None:
    for path in ("/nope", "/patients/a/b/c/d", "/tools/nothing"):
        response = await gateway.client.get(path)
        assert (response.status_code, response.content) == (404, b""), path


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/patients", "GET"),
        ("DELETE", "/instances", "GET,POST"),
        ("PUT", "/studies/x", "GET,DELETE"),
        ("POST", "/patients/x/protected", "GET,PUT"),
        ("PUT", "/changes", "GET,DELETE"),
        ("GET", "/tools/lookup", "POST"),
        ("POST", "/instances/x/file", "GET"),
    ],
)
async def test_wrong_method_is_an_empty_405_with_allow(
    gateway: Gateway, method: str, path: str, allow: str
) -> None:
    response = await gateway.client.request(method, path)
    assert response.status_code == 405
    assert response.content == b""
    assert response.headers["allow"] == allow


async def test_bad_upload_has_orthanc_error_body(gateway: Gateway) -> None:
    response = await gateway.client.post("/instances?ignored=1", content=b"garbage")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == ERROR_KEYS | {"Details"}
    assert body["HttpError"] == "Bad Request"
    assert body["HttpStatus"] == 400
    assert body["Message"] == body["OrthancError"] == "Bad file format"
    assert body["OrthancStatus"] == 15
    assert body["Method"] == "POST"
    assert body["Uri"] == "/instances"
    assert body["Details"] == "Cannot parse an invalid DICOM file (size: 7 bytes)"
    assert response.text.startswith('{\n   "Details"')


@pytest.mark.parametrize("settings", [Settings(http_describe_errors=False)])
async def test_error_body_is_omitted_without_http_describe_errors(gateway: Gateway) -> None:
    response = await gateway.client.post("/instances", content=b"garbage")
    assert (response.status_code, response.content) == (400, b"")


async def test_error_without_details_has_no_details_key(gateway: Gateway) -> None:
    response = await gateway.client.get("/patients/nope/studies")
    assert response.status_code == 404
    assert set(response.json()) == ERROR_KEYS


async def test_trailing_slash_is_ignored(gateway: Gateway) -> None:
    await gateway.upload(dicom_file("CT_small.dcm"))
    response = await gateway.client.get("/patients/")
    assert response.status_code == 200
    assert len(response.json()) == 1


async def test_routes_answer_503_until_the_context_is_attached(gateway: Gateway) -> None:
    app = create_app(settings=Settings())
    async with client_for(app) as client:
        response = await client.get("/patients")
        assert response.status_code == 503
        assert response.json()["OrthancStatus"] == 36
        attach_context(app, gateway.ctx)
        assert (await client.get("/patients")).json() == []


async def test_remote_client_is_refused_without_remote_access(gateway: Gateway) -> None:
    remote = gateway.make_client(("10.1.2.3", 5555))
    response = await remote.get("/system")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == REALM
    assert response.content == b""
    assert (await gateway.make_client(("::1", 5555)).get("/system")).status_code == 200


@pytest.mark.parametrize("settings", [Settings(remote_access_allowed=True)])
async def test_remote_access_implies_authentication_with_default_user(gateway: Gateway) -> None:
    remote = gateway.make_client(("10.1.2.3", 5555))
    assert (await remote.get("/system")).status_code == 401
    response = await remote.get("/system", headers=basic("orthanc", "orthanc"))
    assert response.status_code == 200
    assert response.json()["IsHttpServerSecure"] is False


@pytest.mark.parametrize(
    "settings",
    [Settings(authentication_enabled=True, registered_users={"alice": "s3cret:x"})],
)
async def test_authentication_against_registered_users(gateway: Gateway) -> None:
    client = gateway.client
    for headers in (
        {},
        basic("alice", "wrong"),
        basic("bob", "s3cret:x"),
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": "Bearer token"},
    ):
        response = await client.get("/patients", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == REALM
    good = basic("alice", "s3cret:x")
    assert (await client.get("/patients", headers=good)).status_code == 200
    stored = await client.post("/instances", content=dicom_file("CT_small.dcm"), headers=good)
    instance = stored.json()["ID"]
    response = await client.get(f"/instances/{instance}/metadata/HttpUsername", headers=good)
    assert response.text == "alice"
    system = (await client.get("/system", headers=good)).json()
    assert system["IsHttpServerSecure"] is True


async def test_request_validation_error_is_an_orthanc_bad_request(gateway: Gateway) -> None:
    app = create_app(gateway.ctx)

    async def typed(count: int) -> dict[str, int]:
        return {"count": count}

    app.add_api_route("/typed", typed, methods=["GET"])
    async with client_for(app) as client:
        assert (await client.get("/typed?count=2")).json() == {"count": 2}
        response = await client.get("/typed?count=two")
        assert response.status_code == 400
        body = response.json()
        assert (body["OrthancError"], body["OrthancStatus"], body["Uri"]) == ("Bad request", 8, "/typed")


async def test_no_answer_forbidden_and_internal_errors(gateway: Gateway) -> None:
    app = create_app(gateway.ctx)

    async def no_answer() -> None:
        raise NoAnswer()

    async def forbidden() -> None:
        raise Forbidden()

    async def broken() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/no-answer", no_answer, methods=["GET", "POST"])
    app.add_api_route("/forbidden", forbidden, methods=["PUT"])
    app.add_api_route("/broken", broken, methods=["GET"])
    async with client_for(app, raise_app_exceptions=False) as client:
        for method, path, status in (
            ("GET", "/no-answer", 404),
            ("POST", "/no-answer", 400),
            ("PUT", "/forbidden", 403),
        ):
            response = await client.request(method, path)
            assert (response.status_code, response.content) == (status, b""), path
        response = await client.get("/broken")
        assert response.status_code == 500
        assert response.json()["OrthancError"] == "Internal error"
