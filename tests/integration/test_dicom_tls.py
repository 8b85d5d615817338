"""DICOM TLS on the SCP (Orthanc 1.9+ options), tested with DCMTK's `+tls` in both modes.

A test CA signs the server's and a client's certificates; a self-signed "rogue"
client certificate must be refused (DicomTlsRemoteCertificateRequired, default
true), and so must a plain TCP caller.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomfiles import sample_path
from servers import DCMTK_ENV, Server, allinone_server, cluster_server, dcmtk


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    """Write ca.crt, server.{key,crt}, client.{key,crt} (CA-signed), rogue.{key,crt}."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=DicomKeep test CA", cwd=folder)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", cwd=folder)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key",
             "-out", "rogue.crt", "-days", "2", "-subj", "/CN=rogue", cwd=folder)


@pytest.fixture(scope="module", params=["allinone", "distributed"])
def tls_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    make_certificates(certs)
    config = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(certs / "server.crt"),
        "DicomTlsPrivateKey": str(certs / "server.key"),
        "DicomTlsTrustedCertificates": str(certs / "ca.crt"),
    }
    start = allinone_server if request.param == "allinone" else cluster_server
    with start(tmp_path_factory.mktemp(f"tls-{request.param}"), config) as running:
        yield running, certs


def _run(tool: str, server: Server, tls: list[str], *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk(tool), "-v", *tls, "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
         *map(str, files)],
        capture_output=True, text=True, timeout=60, env=DCMTK_ENV,
    )


def _instances(server: Server) -> list[str]:
    with server.client() as client:
        found: list[str] = client.get("/instances").json()
        return found


def test_tls_store_and_echo_with_a_trusted_certificate(tls_server: tuple[Server, Path]) -> None:
    server, certs = tls_server
    tls = ["+tls", str(certs / "client.key"), str(certs / "client.crt"), "+cf", str(certs / "ca.crt")]
    echo = _run("echoscu", server, tls)
    assert "Received Echo Response (Success)" in echo.stdout + echo.stderr, echo.stderr
    stored = _run("storescu", server, tls, sample_path("CT_small.dcm"))
    assert stored.returncode == 0, stored.stderr
    assert len(_instances(server)) == 1


def test_plain_tcp_and_untrusted_certificates_are_refused(tls_server: tuple[Server, Path]) -> None:
    server, certs = tls_server
    before = _instances(server)
    plain = _run("storescu", server, [], sample_path("MR_small.dcm"))
    assert plain.returncode != 0
    rogue = ["+tls", str(certs / "rogue.key"), str(certs / "rogue.crt"), "+cf", str(certs / "ca.crt")]
    refused = _run("storescu", server, rogue, sample_path("MR_small.dcm"))
    assert refused.returncode != 0
    anonymous = _run("storescu", server, ["+tla", "+cf", str(certs / "ca.crt")], sample_path("MR_small.dcm"))
    assert anonymous.returncode != 0
    assert _instances(server) == before
