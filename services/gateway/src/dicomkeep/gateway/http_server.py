"""The HTTP server of the REST API: uvicorn configured from Orthanc's HTTP options.

- `SslEnabled`: HTTPS on HttpPort with `SslCertificate`, a PEM file holding the
  certificate and its private key (Orthanc's format); `SslMinimumProtocolVersion`
  (Orthanc's 0..4, 4 = TLS 1.2) sets the lowest TLS version; `SslVerifyPeers`
  requires client certificates signed by `SslTrustedClientCertificates`.
- `KeepAliveTimeout`: idle seconds before a kept-alive connection is closed
  (`KeepAlive` itself is applied by the app, see `http_options.py`).
An unreadable certificate is a ConfigError naming the option, at start.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import uvicorn
from dicomkeep.common.config_files import ConfigError
from dicomkeep.common.ops import AsgiServer
from dicomkeep.common.settings import Settings

#: Orthanc's SslMinimumProtocolVersion -> the lowest TLS version Python allows.
#: 0 and 1 admit SSL 2/3 in Orthanc; Python's ssl never speaks them.
MINIMUM_TLS = {
    0: ssl.TLSVersion.MINIMUM_SUPPORTED,
    1: ssl.TLSVersion.MINIMUM_SUPPORTED,
    2: ssl.TLSVersion.TLSv1,
    3: ssl.TLSVersion.TLSv1_1,
    4: ssl.TLSVersion.TLSv1_2,
}


def uvicorn_config(app: Any, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """Return the loaded uvicorn configuration of the REST API on host:port.

    Raises ConfigError when `SslMinimumProtocolVersion` is out of 0..4 or a
    certificate file cannot be used.
    """
    options: dict[str, Any] = {}
    if settings.ssl_enabled:
        if settings.ssl_minimum_protocol_version not in MINIMUM_TLS:
            raise ConfigError(
                f'"SslMinimumProtocolVersion" must be 0 to 4, got {settings.ssl_minimum_protocol_version}'
            )
        options = {"ssl_certfile": settings.ssl_certificate}
        if settings.ssl_verify_peers:
            trusted = settings.ssl_trusted_client_certificates
            if not Path(trusted).is_file():
                raise ConfigError(f'"SslTrustedClientCertificates": no such file: {trusted}')
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            options["ssl_ca_certs"] = settings.ssl_trusted_client_certificates
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_level="warning", access_log=False,
        timeout_keep_alive=max(settings.keep_alive_timeout, 1), **options,
    )  # fmt: skip
    try:
        config.load()
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f'"SslCertificate": cannot use {settings.ssl_certificate} (a PEM file with the '
            f"certificate and its private key): {error}"
        ) from error
    if config.ssl is not None:
        config.ssl.minimum_version = MINIMUM_TLS[settings.ssl_minimum_protocol_version]
    return config


class HttpServer(AsgiServer):
    """The REST API's uvicorn inside the caller's event loop (start/stop), configured
    by `uvicorn_config` from the settings."""

    def __init__(self, app: Any, settings: Settings, host: str, port: int) -> None:
        super().__init__(app, host, port)
        self.server.config = uvicorn_config(app, settings, host, port)

    async def listening(self) -> None:
        """Readiness check: raise until the server listens."""
        if not self.server.started:
            raise RuntimeError("the REST API is not listening yet")
