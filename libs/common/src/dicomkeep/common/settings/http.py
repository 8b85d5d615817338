"""HTTP options: the REST server, its security, peers and outgoing HTTP (§12, §14)."""

from __future__ import annotations

from typing import Annotated, Any

from dicomkeep.common.settings.base import MODEL_CONFIG as _MODEL_CONFIG
from dicomkeep.common.settings.base import Count, Port, Positive
from pydantic import BaseModel, Field


class HttpOptions(BaseModel):
    """The REST server and its security, Orthanc peers and outgoing HTTP."""

    model_config = _MODEL_CONFIG

    # -- HTTP server and security (§14) --
    http_server_enabled: bool = True
    """Serve the REST API. Default true."""
    http_port: Port = 8042
    """REST API port. Default 8042."""
    http_describe_errors: bool = True
    """Send JSON error bodies. Default true."""
    http_compression_enabled: bool = False
    """Gzip the HTTP answers. Default false."""
    remote_access_allowed: bool = False
    """Accept HTTP clients other than localhost. Default false."""
    authentication_enabled: Annotated[bool | None, Field(examples=[True])] = None
    """Require HTTP Basic authentication. Default: RemoteAccessAllowed."""
    registered_users: dict[str, str] = {}
    """HTTP users: name -> password. Default {}."""
    ssl_enabled: bool = False
    """HTTPS on HttpPort. Default false."""
    ssl_certificate: str = "certificate.pem"
    """PEM file with the certificate and its key. Default "certificate.pem"."""
    ssl_minimum_protocol_version: Count = 4
    """Minimum TLS version; 4 = TLS 1.2. Default 4."""
    ssl_verify_peers: bool = False
    """Require client certificates. Default false."""
    ssl_trusted_client_certificates: str = "trustedClientCertificates.pem"
    """Trusted client certificates. Default "trustedClientCertificates.pem"."""
    http_threads_count: Positive = 50
    """HTTP worker threads. Default 50."""
    http_request_timeout: Count = 30
    """Seconds to receive an HTTP request. Default 30."""
    keep_alive: bool = True
    """HTTP keep-alive. Default true."""
    keep_alive_timeout: Count = 1
    """Keep-alive in seconds. Default 1."""
    execute_lua_enabled: bool = False
    """Allow /tools/execute-script. Default false."""
    rest_api_write_to_file_system_enabled: bool = False
    """Allow POST /instances/{id}/export. Default false."""
    web_dav_enabled: bool = True
    """WebDAV share (not served by DicomKeep). Default true."""

    # -- peers and outgoing HTTP (§12) --
    orthanc_peers: dict[str, list[Any] | dict[str, Any]] = {}
    """Peers: name -> ["url"], ["url", "user", "password"] or an object. Default {}."""
    orthanc_peers_in_database: bool = False
    """Keep the peers in the database. Default false."""
    http_timeout: Count = 60
    """Seconds of an outgoing HTTP request; 0 = none. Default 60."""
    https_verify_peers: bool = True
    """Verify the certificates of HTTPS peers. Default true."""
    https_ca_certificates: str = ""
    """CA bundle of outgoing HTTPS; "" = the system's. Default ""."""
    http_proxy: str = ""
    """Proxy of outgoing HTTP. Default ""."""
    http_verbose: bool = False
    """Log outgoing HTTP. Default false."""

    @property
    def effective_authentication(self) -> bool:
        """Whether HTTP authentication is on: AuthenticationEnabled, else RemoteAccessAllowed."""
        if self.authentication_enabled is None:
            return self.remote_access_allowed
        return self.authentication_enabled
