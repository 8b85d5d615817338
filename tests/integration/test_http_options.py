"""Orthanc's HTTP server options do what they say, in both modes: TLS on the REST API
(`SslEnabled`, `SslCertificate`), `KeepAlive`, `HttpCompressionEnabled`,
`HttpRequestTimeout`, `RestApiWriteToFileSystemEnabled`; and `HttpServerEnabled`
false serves DICOM only (all-in-one; refused in the distributed mode)."""

from __future__ import annotations

import gzip
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from dicomfiles import expected_ids, sample_path
from servers import DICOMKEEP, Server, dcmtk, free_port, wait_until, write_config
from tls_support import self_signed_pem

CERTIFICATE = self_signed_pem(Path(tempfile.mkdtemp(prefix="dk-tls-")))
REQUEST_TIMEOUT = 2
SERVER_CONFIG = {
    "SslEnabled": True,
    "SslCertificate": str(CERTIFICATE),
    "KeepAlive": False,
    "HttpCompressionEnabled": True,
    "HttpRequestTimeout": REQUEST_TIMEOUT,
    "RestApiWriteToFileSystemEnabled": True,
}


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_rest_api_is_served_over_tls_only(server: Server) -> None:
    assert server.url.startswith("https://")
    with server.client() as client:
        answer = client.get("/system")
        assert answer.status_code == 200
        assert answer.json()["Version"] == "1.12.4"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{_port(server)}/system", timeout=5)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
        httpx.get(f"{server.url}/system", timeout=5)


def test_keep_alive_false_closes_each_connection(server: Server) -> None:
    with server.client() as client:
        answer = client.get("/system")
        assert answer.headers["connection"] == "close"


def test_answers_are_gzipped_for_clients_accepting_gzip(clean: Server) -> None:
    ct = sample_path("CT_small.dcm")
    instance_id = expected_ids(ct)[3]
    with clean.client() as client:
        assert client.post("/instances", content=ct.read_bytes()).status_code == 200
        raw = client.get(f"/instances/{instance_id}/file", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == ct.read_bytes()  # httpx decodes it
        plain = client.get(f"/instances/{instance_id}/file", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == ct.read_bytes()
        assert gzip.compress(ct.read_bytes())  # sanity: the sample compresses


def test_a_stalled_request_body_gets_408_after_the_timeout(server: Server) -> None:
    context = ssl.create_default_context(cafile=str(CERTIFICATE))
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(
                b"POST /tools/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial"
            )
            started = time.monotonic()
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
            elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert REQUEST_TIMEOUT - 0.5 < elapsed < REQUEST_TIMEOUT + 10


def test_instance_export_writes_the_file(clean: Server, tmp_path: Path) -> None:
    ct = sample_path("CT_small.dcm")
    instance_id = expected_ids(ct)[3]
    target = tmp_path / "exported.dcm"
    with clean.client() as client:
        assert client.post("/instances", content=ct.read_bytes()).status_code == 200
        answer = client.post(f"/instances/{instance_id}/export", content=str(target).encode())
        assert (answer.status_code, answer.json()) == (200, {})
        assert target.read_bytes() == ct.read_bytes()
        unwritable = client.post(f"/instances/{instance_id}/export", content=b"/nonexistent/dir/x.dcm")
        assert unwritable.status_code == 500
        assert unwritable.json()["OrthancStatus"] == 14


def test_http_server_disabled_serves_dicom_only(tmp_path: Path) -> None:
    http_port, dicom_port = free_port(), free_port()
    config = {
        "HttpServerEnabled": False, "HttpPort": http_port, "DicomPort": dicom_port,
        "StorageDirectory": str(tmp_path / "storage"), "DicomAet": "DICOMKEEP",
    }  # fmt: skip
    path = write_config(tmp_path, config)
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen([DICOMKEEP, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT)
        try:
            def echoes() -> bool:
                echo = [dcmtk("echoscu"), "-aec", "DICOMKEEP", "127.0.0.1", str(dicom_port)]
                return subprocess.run(echo, capture_output=True, timeout=20).returncode == 0

            wait_until(echoes, timeout=180, what="the DICOM server")  # a loaded machine
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{http_port}/system", timeout=5)
        finally:
            process.terminate()
            process.wait(20)
