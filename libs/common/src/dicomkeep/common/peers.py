"""Orthanc peers: the `OrthancPeers` entries, their validation and their public JSON.

Mirrors Orthanc's WebServiceParameters (ORTHANC_API.md §12): a peer is either the
array form `["url"]` / `["url", "user", "password"]` or the object form (`Url`,
`Username`, `Password`, `HttpHeaders`, client certificate, `Pkcs11`, `Timeout`,
string/bool/int user properties). Texts of validation errors are Orthanc 1.10.1's.

Where peers live: the `OrthancPeers` option is the base; `PUT`/`DELETE /peers/{name}`
write an override (or a deletion marker) into the index (`Index.peers`), so every
gateway replica and jobs worker sees the same peers and REST changes survive
restarts. The effective set is the configuration with the overrides applied, as
`DicomModalities` are handled (index/jobs.py). Unlike Orthanc with
`OrthancPeersInDatabase` false, a REST change is therefore never lost at restart;
a configuration change to a peer that was also changed through REST is shadowed
by the REST value until `DELETE` (then `PUT` again) clears it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import PeerStore

#: Longest modality or peer name accepted (an Orthanc name is a short identifier).
MAX_NAME_LENGTH = 256
_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Keys of the object form with a meaning; any other key is a user property.
_KNOWN_KEYS = frozenset(
    {
        "Url",
        "URL",
        "Username",
        "Password",
        "HttpHeaders",
        "CertificateFile",
        "CertificateKeyFile",
        "CertificateKeyPassword",
        "Pkcs11",
        "Timeout",
    }
)


def bad_format(details: str | None = None) -> OrthancError:
    """Return the 400 *Bad file format* error Orthanc raises for an invalid peer."""
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


@dataclass(frozen=True)
class Peer:
    """One Orthanc peer. `url` always ends with `/`; `timeout` 0 means `HttpTimeout`."""

    name: str
    url: str
    username: str = ""
    password: str = ""
    http_headers: dict[str, str] = field(default_factory=dict)
    certificate_file: str = ""
    certificate_key_file: str = ""
    certificate_key_password: str = ""
    pkcs11: bool = False
    timeout: int = 0
    user_properties: dict[str, str] = field(default_factory=dict)

    def public_json(self) -> dict[str, Any]:
        """Return the answer of `GET /peers/{name}/configuration` (secrets as null).

        Mirrors Orthanc 1.10.1: `Username`/`Password: null` only when a user is set,
        `CertificateFile` with null key file and password when a certificate is set,
        header names only, user properties as strings.
        """
        answer: dict[str, Any] = dict(self.user_properties)
        answer.update(
            {
                "Url": self.url,
                "HttpHeaders": sorted(self.http_headers),
                "Pkcs11": self.pkcs11,
                "Timeout": self.timeout,
            }
        )
        if self.username:
            answer["Username"] = self.username
            answer["Password"] = None
        if self.certificate_file:
            answer["CertificateFile"] = self.certificate_file
            answer["CertificateKeyFile"] = None
            answer["CertificateKeyPassword"] = None
        return answer

    def simple_json(self) -> list[str]:
        """Return the `Peer` field of a store job's content: `[url]` or `[url, user, ""]`.

        Orthanc 1.10.1 writes the password as an empty string (verified live).
        """
        return [self.url, self.username, ""] if self.username else [self.url]

    def to_json(self) -> dict[str, Any]:
        """Return the complete object form (passwords included): what the index keeps.

        `parse_peer(name, peer.to_json())` gives back an equal peer.
        """
        value: dict[str, Any] = dict(self.user_properties)
        value.update(
            {
                "Url": self.url,
                "Username": self.username,
                "Password": self.password,
                "HttpHeaders": dict(self.http_headers),
                "Pkcs11": self.pkcs11,
                "Timeout": self.timeout,
            }
        )
        if self.certificate_file:
            value["CertificateFile"] = self.certificate_file
            value["CertificateKeyFile"] = self.certificate_key_file
            value["CertificateKeyPassword"] = self.certificate_key_password
        return value


def check_name(name: str) -> None:
    """Raise 400 *Bad file format* unless `name` is made of `[A-Za-z0-9_-]` only,
    at most MAX_NAME_LENGTH characters."""
    if not _NAME.fullmatch(name):
        raise bad_format(
            "Only alphanumeric, dash characters and underscores are allowed in the names "
            f"of modalities/peers (at most {MAX_NAME_LENGTH}), but found: {name[:80]}"
        )


def parse_peer(name: str, value: Any, *, check_files: bool = True) -> Peer:
    """Validate one `OrthancPeers` entry (array or object form) and return the peer.

    Raises OrthancError 400 *Bad file format* for an invalid name or form, with
    Orthanc's details where it gives some ("Empty URL", "Bad URL: ftp://x/").
    With `check_files`, the client certificate and key files must be readable.
    """
    check_name(name)
    if isinstance(value, list):
        return _parse_array(name, value)
    if isinstance(value, dict):
        return _parse_object(name, value, check_files=check_files)
    raise bad_format("A peer must be a JSON array or a JSON object")


def _scalar_text(value: Any) -> str | None:
    """Convert a string, integer or boolean to Orthanc's text; None for other types."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | str):
        return str(value)
    return None


def _checked_url(value: Any) -> str:
    if not isinstance(value, str):
        raise bad_format("The URL of a peer must be a string")
    if not value:
        raise bad_format("Empty URL")
    # Orthanc compares the scheme case-sensitively: "HTTPS://x" is refused.
    if not value.startswith(("http://", "https://")):
        raise bad_format(f"Bad URL: {value}")
    return value if value.endswith("/") else value + "/"


def _parse_array(name: str, value: list[Any]) -> Peer:
    items = [_scalar_text(item) for item in value]
    if len(items) not in (1, 3) or any(item is None for item in items):
        raise bad_format("A peer in array form is [url] or [url, username, password]")
    url = _checked_url(value[0])
    if len(items) == 1:
        return Peer(name=name, url=url)
    return Peer(name=name, url=url, username=items[1] or "", password=items[2] or "")


def _optional_text(value: Mapping[str, Any], key: str) -> str:
    item = value.get(key, "")
    if not isinstance(item, str):
        raise bad_format(f"String value expected in field: {key}")
    return item


def _parse_object(name: str, value: Mapping[str, Any], *, check_files: bool) -> Peer:
    url = _checked_url(value.get("Url", value.get("URL", "")))
    username = _optional_text(value, "Username")
    password = _optional_text(value, "Password")
    if password and not username:
        raise bad_format("A peer with a Password needs a Username")
    certificate, key, key_password = _certificate(value, check_files=check_files)
    pkcs11 = value.get("Pkcs11", False)
    if not isinstance(pkcs11, bool):
        raise bad_format("Boolean value expected in field: Pkcs11")
    return Peer(
        name=name,
        url=url,
        username=username,
        password=password,
        http_headers=_headers(value.get("HttpHeaders", {})),
        certificate_file=certificate,
        certificate_key_file=key,
        certificate_key_password=key_password,
        pkcs11=pkcs11,
        timeout=_timeout(value.get("Timeout", 0)),
        user_properties=_user_properties(value),
    )


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_format("HttpHeaders must be a JSON object of strings")
    return {str(k): v for k, v in value.items()}


def _timeout(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_format("Integer value expected in field: Timeout")
    if value < 0:
        raise bad_format("Unsigned integer value expected in field: Timeout")
    return value


def _certificate(value: Mapping[str, Any], *, check_files: bool) -> tuple[str, str, str]:
    """Return (certificate, key, key password) of the client certificate options."""
    certificate = _optional_text(value, "CertificateFile")
    key = _optional_text(value, "CertificateKeyFile")
    key_password = _optional_text(value, "CertificateKeyPassword")
    if (key or key_password) and not certificate:
        raise bad_format("CertificateKeyFile and CertificateKeyPassword need a CertificateFile")
    if check_files and certificate and not os.access(certificate, os.R_OK):
        raise bad_format(f"Cannot open certificate file: {certificate}")
    if check_files and key and not os.access(key, os.R_OK):
        raise bad_format(f"Cannot open key file: {key}")
    return certificate, key, key_password


def _user_properties(value: Mapping[str, Any]) -> dict[str, str]:
    properties: dict[str, str] = {}
    for key, item in value.items():
        if key in _KNOWN_KEYS:
            continue
        text = _scalar_text(item)
        if text is None:
            raise bad_format(
                f"User-defined properties associated with a Web service must be strings: {key}"
            )
        properties[key] = text
    return properties


def config_peers(entries: Mapping[str, Any]) -> dict[str, Peer]:
    """Parse the `OrthancPeers` option; raise 400 naming the faulty entry if invalid."""
    peers: dict[str, Peer] = {}
    for name, value in entries.items():
        try:
            peers[name] = parse_peer(name, value)
        except OrthancError as error:
            raise bad_format(f"OrthancPeers.{name}: {error.details or error.code.message}") from error
    return peers


def merge_peers(
    configured: Mapping[str, Peer], overrides: Mapping[str, dict[str, Any] | None]
) -> dict[str, Peer]:
    """Apply the REST overrides (None = deleted) to the configured peers, sorted by name.

    Overrides were validated when written; their certificate files are not checked
    again here (a missing file surfaces when a request is sent).
    """
    peers = dict(configured)
    for name, value in overrides.items():
        if value is None:
            peers.pop(name, None)
        else:
            peers[name] = parse_peer(name, value, check_files=False)
    return {name: peers[name] for name in sorted(peers)}


async def load_peers(entries: Mapping[str, Any], store: PeerStore) -> dict[str, Peer]:
    """Return the effective peers: the `OrthancPeers` option with the index's overrides."""
    return merge_peers(config_peers(entries), await store.peer_overrides())


async def find_peer(entries: Mapping[str, Any], store: PeerStore, name: str) -> Peer | None:
    """Return one effective peer, or None if no peer has this name."""
    return (await load_peers(entries, store)).get(name)
