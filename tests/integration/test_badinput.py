"""The bad-input suite (issue 15), in both modes: hostile names, fuzzed C-STORE, and
schemathesis against the gateway's own OpenAPI document.

- Path traversal (`..`, `%2e%2e`, an encoded `/` or `\\`, NUL) in every name
  parameter (modality, peer, metadata, attachment, label, job id, query id)
  answers 4xx, never 5xx (`DELETE /queries/{id}` of an unknown id answers 200,
  as Orthanc), and creates no file outside the server's folders.
- C-STORE of fuzzed datasets (pynetdicom SCU streaming mutated bytes of real
  files): each gets a DIMSE success or failure status on a live association, the
  server keeps answering C-ECHO, and every stored instance is a whole, readable
  file (nothing partial).
- schemathesis generates requests for every operation of `dicomkeep --openapi`
  (positive and negative cases): none answers a 5xx.

Example counts: tests/fuzzing.py (`quick` in `make test`, `long` in `make test-fuzz`).
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dicomfiles import sample_path
from fuzzing import fuzz_settings, mutated, profile_name, sample_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import Server

#: Hostile names, as they travel in the request target (already percent-encoded).
HOSTILE_NAMES = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fescape",
    "..%2F..%2F..%2Ftmp%2Fescape",
    "a%2Fb",
    "..%5C..%5Cescape",
    "a%00b",
    "%00",
    "nul%00..%2Fescape",
]


def _raw(server: Server, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send `target` verbatim (httpx would resolve `..` segments before sending)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request(method, target, body=body or None,
                     headers={"Content-Type": "application/json"} if body else {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _files_outside(server: Server) -> set[str]:
    """Every file under the server's temporary root and /tmp named like an escape."""
    root = (server.storage_dir.parent if server.storage_dir is not None
            else server.state_dir.parent if server.state_dir is not None else None)
    found = {str(p) for p in Path(tempfile.gettempdir()).glob("escape*")}
    if root is not None:
        found |= {str(p) for p in root.rglob("*escape*")}
        found |= {str(p) for p in root.rglob("*\0*")}
    return found


@pytest.fixture(scope="module")
def instance_id(server: Server) -> str:
    with server.client() as client:
        answer = client.post("/instances", content=sample_path("CT_small.dcm").read_bytes())
        assert answer.status_code == 200, answer.text
        return str(answer.json()["ID"])


def _routes(instance: str) -> Iterator[tuple[str, str, bytes]]:
    """(method, target template with {name}, body) for every name parameter."""
    modality = json.dumps(["X", "127.0.0.1", 104]).encode()
    peer = json.dumps({"Url": "http://127.0.0.1:1/"}).encode()
    for method, body in (("PUT", modality), ("GET", b""), ("DELETE", b"")):
        yield method, "/modalities/{name}", body
    yield "POST", "/modalities/{name}/echo", b"{}"
    for method, body in (("PUT", peer), ("GET", b""), ("DELETE", b"")):
        yield method, "/peers/{name}", body
    yield "GET", "/peers/{name}/system", b""
    base = f"/instances/{instance}"
    for method, body in (("PUT", b"value"), ("GET", b""), ("DELETE", b"")):
        yield method, base + "/metadata/{name}", body
        yield method, base + "/attachments/{name}", body
        yield method, base + "/labels/{name}", b""
    yield "GET", "/jobs/{name}", b""
    yield "POST", "/jobs/{name}/cancel", b""
    yield "GET", "/queries/{name}", b""
    yield "GET", "/queries/{name}/answers", b""
    yield "DELETE", "/queries/{name}", b""


def test_path_traversal_in_names_is_a_4xx(server: Server, instance_id: str) -> None:
    before = _files_outside(server)
    wrong = []
    for method, template, body in _routes(instance_id):
        for name in HOSTILE_NAMES:
            target = template.replace("{name}", name)
            status, answer = _raw(server, method, target, body)
            # Orthanc forgets an unknown query without error (SharedArchive::Remove).
            forgets = (method, template) == ("DELETE", "/queries/{name}") and status == 200
            if not 400 <= status < 500 and not forgets:
                wrong.append(f"{method} {target} -> {status} {answer[:120]!r}")
    assert wrong == [], "\n".join(wrong)
    assert _files_outside(server) == before
    with server.client() as client:
        assert client.get("/system").status_code == 200
        assert client.get("/modalities").json() == []
        assert client.get("/peers").json() == []
        labels = client.get(f"/instances/{instance_id}/labels").json()
        assert labels == []
        metadata = client.get(f"/instances/{instance_id}/metadata").json()
        assert not [m for m in metadata if "." in m or "\0" in m or "/" in m]


# -- C-STORE of fuzzed datasets ---------------------------------------------------

#: (sample, SOP class): an explicit VR LE image and an implicit VR LE plan.
_CSTORE_SAMPLES = ["CT_small.dcm", "rtplan.dcm"]


def _split(data: bytes) -> tuple[bytes, bytes]:
    """Return (preamble + meta group, dataset) of a Part-10 file."""
    import struct

    group_length = struct.unpack_from("<L", data, 132 + 8)[0]
    end = 132 + 12 + group_length
    return data[:end], data[end:]


def test_fuzzed_cstore_answers_a_status_and_stores_nothing_partial(
    server: Server, tmp_path: Path
) -> None:
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage, RTPlanStorage, Verification

    ae = AE(ae_title="FUZZSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class in (CTImageStorage, RTPlanStorage, Verification):
        for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):  # one context each
            ae.add_requested_context(sop_class, syntax)
    samples = {name: _split(sample_bytes(name)) for name in _CSTORE_SAMPLES}
    state: dict[str, object] = {"assoc": None, "stored": 0, "refused": 0}

    def association():  # type: ignore[no-untyped-def]
        assoc = state["assoc"]
        if assoc is None or not assoc.is_established:  # type: ignore[attr-defined]
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
            assert assoc.is_established, "the server refused a new association"
            state["assoc"] = assoc
        return assoc

    strategy = st.sampled_from(_CSTORE_SAMPLES).flatmap(
        lambda name: mutated(samples[name][1]).map(lambda body: (name, body))
    )

    @fuzz_settings(quick_examples=25, scale=0.1)
    @given(strategy)
    def send(case: tuple[str, bytes]) -> None:
        name, body = case
        path = tmp_path / "fuzzed.dcm"
        path.write_bytes(samples[name][0] + body)
        assoc = association()
        status = assoc.send_c_store(path)
        # An answered request has a Status; an empty Dataset means the
        # association was aborted or timed out: the SCP must answer instead.
        assert "Status" in status, f"no C-STORE response (aborted: {assoc.is_aborted})"
        code = int(status.Status)
        assert code == 0 or code & 0xF000 in (0xA000, 0xC000, 0xB000), hex(code)
        state["stored" if code in (0, 0xB000, 0xB006, 0xB007) else "refused"] += 1  # type: ignore[operator]

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # stream the file's bytes, undecoded
    try:
        send()
        assert association().send_c_echo().Status == 0
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        if state["assoc"] is not None:
            state["assoc"].release()  # type: ignore[attr-defined]
    with server.client() as client:
        for instance in client.get("/instances").json():
            # Every stored instance is whole: its file answers and parses.
            tags = client.get(f"/instances/{instance}/tags")
            assert tags.status_code == 200, tags.text[:300]
        assert client.get("/system").status_code == 200


# -- schemathesis against the OpenAPI document ------------------------------------

#: Operations that stop or empty the server under test.
_NOT_FUZZED = {"/tools/shutdown", "/tools/reset"}


def _openapi() -> dict[str, object]:
    from dicomkeep.common.settings import Settings
    from dicomkeep.gateway import main as gateway

    return gateway.build(Settings()).app.openapi()  # type: ignore[no-any-return]


def test_schemathesis_finds_no_server_error(server: Server) -> None:
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(_openapi())
    # Negative cases (values outside the schema) only in the long run: with free
    # strings most operations have none, and the quick run must stay short.
    modes = [GenerationMode.POSITIVE]
    if profile_name() != "quick":
        modes.append(GenerationMode.NEGATIVE)
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in _NOT_FUZZED:
            continue
        for mode in modes:

            @settings(fuzz_settings(quick_examples=2, scale=0.01),
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                nonlocal count
                count += 1
                response = case.call(base_url=server.url, timeout=60)
                if response.status_code >= 500 and response.status_code != 503:
                    failures.append(
                        f"{response.status_code} {case.as_curl_command(base_url=server.url)}"
                        f" -> {response.text[:200]}"
                    )

            try:
                call()
            except Unsatisfiable:  # no negative case exists for a free string
                pass
    assert count > 150
    assert failures == [], "\n".join(failures[:30])
    with server.client() as client:
        assert client.get("/system").status_code == 200

