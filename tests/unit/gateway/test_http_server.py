"""The uvicorn configuration follows Orthanc's HTTP options (`http_server.py`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from dicomkeep.common.settings import ConfigError, Settings
from dicomkeep.gateway.app import create_app
from dicomkeep.gateway.http_server import uvicorn_config
from gateway_support import Gateway
from tls_support import self_signed_pem


def _certificate(tmp_path: Path) -> Path:
    return self_signed_pem(tmp_path)


@pytest.mark.parametrize(
    ("version", "minimum"),
    [(4, ssl.TLSVersion.TLSv1_2), (3, ssl.TLSVersion.TLSv1_1), (2, ssl.TLSVersion.TLSv1)],
)
def test_tls_minimum_version_follows_the_option(tmp_path: Path, version: int, minimum: ssl.TLSVersion) -> None:
    pem = _certificate(tmp_path)
    settings = Settings(ssl_enabled=True, ssl_certificate=str(pem), ssl_minimum_protocol_version=version)
    config = uvicorn_config(create_app(settings=settings), settings, "127.0.0.1", 0)
    assert config.ssl is not None
    assert config.ssl.minimum_version == minimum


def test_tls_options_refused_with_their_names(tmp_path: Path) -> None:
    app = create_app(settings=Settings())
    missing = Settings(ssl_enabled=True, ssl_certificate=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match='"SslCertificate"'):
        uvicorn_config(app, missing, "127.0.0.1", 0)
    pem = _certificate(tmp_path)
    out_of_range = Settings(ssl_enabled=True, ssl_certificate=str(pem), ssl_minimum_protocol_version=7)
    with pytest.raises(ConfigError, match='"SslMinimumProtocolVersion"'):
        uvicorn_config(app, out_of_range, "127.0.0.1", 0)
    no_trust = Settings(
        ssl_enabled=True, ssl_certificate=str(pem), ssl_verify_peers=True,
        ssl_trusted_client_certificates=str(tmp_path / "none.pem"),
    )  # fmt: skip
    with pytest.raises(ConfigError, match='"SslTrustedClientCertificates"'):
        uvicorn_config(app, no_trust, "127.0.0.1", 0)
    verifying = Settings(
        ssl_enabled=True, ssl_certificate=str(pem), ssl_verify_peers=True,
        ssl_trusted_client_certificates=str(pem),
    )  # fmt: skip
    config = uvicorn_config(app, verifying, "127.0.0.1", 0)
    assert config.ssl is not None and config.ssl.verify_mode == ssl.CERT_REQUIRED


def test_plain_http_by_default() -> None:
    settings = Settings(keep_alive_timeout=7)
    config = uvicorn_config(create_app(settings=settings), settings, "127.0.0.1", 0)
    assert config.ssl is None
    assert config.timeout_keep_alive == 7


@pytest.fixture
def settings() -> Settings:
    return Settings(keep_alive=False, http_compression_enabled=True)


async def test_keep_alive_false_and_compression(gateway: Gateway) -> None:
    answer = await gateway.client.get("/system", headers={"Accept-Encoding": "gzip"})
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json()["Version"] == "1.12.4"
