"""Peer passwords set over REST are stored encrypted, never answered, never logged
(issue 15), in both modes.

The index row is read behind the server's back (the SQLite file; the cluster's
PostgreSQL database): the password is not there in clear. The peer still
authenticates against an HTTP server that requires it, and a wrong password
is still refused.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server

PASSWORD = "s3cret-Peer-Passw0rd"
HEADER = "Bearer hdr-T0ken-9"


class _Guarded(http.server.BaseHTTPRequestHandler):
    """An Orthanc-like `/system` that needs alice's password and the token header."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        allowed = (self.headers.get("Authorization") == expected
                   and self.headers.get("X-Token") == HEADER)
        body = json.dumps({"DicomAet": "GUARD"} if allowed else {}).encode()
        self.send_response(200 if allowed else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def guarded() -> Iterator[str]:
    """The URL of an HTTP server that requires basic authentication and a header."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Guarded)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _index_rows(server: Server) -> list[str]:
    """Every value of the peers table, read directly from the index."""
    if server.mode == "allinone":
        path = Path(server.config["IndexDirectory"]) / "index"
        with sqlite3.connect(path) as conn:
            return [str(row[0]) for row in conn.execute("SELECT value FROM peers")]

    import asyncpg

    async def read() -> list[str]:
        conn = await asyncpg.connect(server.config["PostgreSQL"]["ConnectionUri"])
        try:
            return [str(r[0]) for r in await conn.fetch("SELECT value FROM peers")]
        finally:
            await conn.close()

    return asyncio.run(read())


def _logs(server: Server) -> str:
    if server.state_dir is not None:
        files = list(server.state_dir.glob("**/*.log"))
    else:
        assert server.storage_dir is not None
        files = [server.storage_dir.parent / "server.log"]
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def test_rest_peer_password_is_sealed_and_still_authenticates(
    server: Server, guarded: str
) -> None:
    peer = {"Url": guarded, "Username": "alice", "Password": PASSWORD,
            "HttpHeaders": {"X-Token": HEADER}}
    with server.client() as client:
        assert client.put("/peers/guarded", json=peer).status_code == 200
        try:
            rows = _index_rows(server)
            assert any("fernet:" in row for row in rows), rows
            assert not [row for row in rows if PASSWORD in row or HEADER in row]
            # Never answered: Orthanc's null password, header names only.
            configuration = client.get("/peers/guarded/configuration").json()
            assert configuration["Password"] is None
            assert configuration["HttpHeaders"] == ["X-Token"]
            expanded = client.get("/peers?expand").text
            assert PASSWORD not in expanded and HEADER not in expanded
            # The sealed password still opens the guarded server.
            system = client.get("/peers/guarded/system")
            assert system.status_code == 200, system.text[:300]
            assert "DicomAet" in system.json()
            wrong = {**peer, "Password": "wrong"}
            assert client.put("/peers/guarded", json=wrong).status_code == 200
            assert client.get("/peers/guarded/system").status_code != 200
        finally:
            client.delete("/peers/guarded")
    assert PASSWORD not in _logs(server)
    assert HEADER not in _logs(server)
