"""Bounded uploads (issue 15): a body over `MaximumUploadSize` answers 413 before
it is read, a body trickled slower than `HttpRequestTimeout` answers 408, and the
server keeps serving; nothing is stored. Both modes."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from dicomfiles import sample_path
from servers import Server

SERVER_CONFIG = {"DicomKeep": {"MaximumUploadSize": 1}, "HttpRequestTimeout": 2}


def _raw_request(server: Server, head: str, body: bytes = b"", pause: float = 0) -> bytes:
    """Send a request by hand (declared length, slow body) and return the answer."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        if pause:
            time.sleep(pause)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"Uri"' in b"".join(chunks):
                break
    return b"".join(chunks)


def test_declared_excess_is_a_413_before_reading(server: Server) -> None:
    head = (
        "POST /instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
        f"Content-Length: {50 * 1024**3}\r\n"
    )
    started = time.monotonic()
    answer = _raw_request(server, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"OrthancStatus" : 3' in answer or b'"OrthancStatus": 3' in answer
    assert time.monotonic() - started < 10
    with server.client() as client:
        assert client.get("/system").status_code == 200


def test_body_over_the_limit_without_length_is_a_413(server: Server) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield b"\0" * (1024 * 1024)

    with server.client() as client:
        before = client.get("/instances").json()
        response = client.post("/instances", content=chunks())
        assert response.status_code == 413
        assert response.json()["HttpStatus"] == 413
        assert client.get("/instances").json() == before


def test_trickled_body_times_out(server: Server) -> None:
    data = sample_path("CT_small.dcm").read_bytes()
    head = (
        "POST /instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
        f"Content-Length: {len(data)}\r\n"
    )
    started = time.monotonic()
    answer = _raw_request(server, head, data[:1000], pause=0)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 < time.monotonic() - started < 20
    with server.client() as client:
        assert client.get("/instances").json() == []
        # A body under the limit still goes in.
        assert client.post("/instances", content=data).status_code == 200
