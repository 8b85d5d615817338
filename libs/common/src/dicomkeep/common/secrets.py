"""Encryption at rest of the peer credentials set over REST (issue 15).

`PUT /peers/{name}` keeps the peer in the index (index/peers.py) so that every
replica sees it. Its secrets (`Password`, `CertificateKeyPassword`, the values of
`HttpHeaders`) are stored sealed with Fernet (AES-128-CBC + HMAC-SHA256, from
`cryptography`) as `fernet:<token>`; the rest of the row stays readable. Peers of
the `OrthancPeers` option stay in the configuration and are never written.

Where the key comes from (`key_source`):
- `DicomKeep.SecretKey` (or `DICOMKEEP_SECRET_KEY`): a Fernet key, 44 url-safe
  base64 characters (`python -c "from cryptography.fernet import Fernet;
  print(Fernet.generate_key().decode())"`);
- else `DicomKeep.SecretKeyFile`: a file holding such a key;
- else, all-in-one only: `<IndexDirectory>/dicomkeep-secret.key`, created (mode
  0600) at the first start. The distributed mode then has no key, and a REST
  peer with a secret is refused (400) rather than stored in clear;
  `dicomkeep cluster start` gives its members a key file of its state folder.

Rows written in clear by an older DicomKeep still work: a value without the
`fernet:` prefix is used as it is, and `Index.open` seals such rows when a key
is configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from dicomkeep.common.config_files import ConfigError
from dicomkeep.common.settings import Settings

#: Prefix of a sealed value in the index.
SEALED_PREFIX = "fernet:"
#: The key file the all-in-one mode creates in its index folder.
DEFAULT_KEY_FILE = "dicomkeep-secret.key"
#: Fields of a peer's object form that hold secrets.
SECRET_FIELDS = ("Password", "CertificateKeyPassword")


class SecretBox:
    """Seal and open short texts with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except ValueError as error:
            raise ConfigError(
                "DicomKeep.SecretKey must be a Fernet key (32 url-safe base64-encoded bytes)"
            ) from error

    def seal(self, text: str) -> str:
        """Return `text` sealed (`fernet:<token>`); an empty or sealed text is kept."""
        if not text or text.startswith(SEALED_PREFIX):
            return text
        return SEALED_PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, text: str) -> str:
        """Return the clear text of a sealed value; a value in clear (an older row)
        is returned as it is. Raises ValueError if the key does not match."""
        if not text.startswith(SEALED_PREFIX):
            return text
        try:
            return self._fernet.decrypt(text[len(SEALED_PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken as error:
            raise ValueError("a peer secret was sealed with another DicomKeep.SecretKey") from error


def has_secret(value: Mapping[str, Any]) -> bool:
    """True when a peer's object form carries a password or header values."""
    headers = value.get("HttpHeaders") or {}
    return any(value.get(name) for name in SECRET_FIELDS) or any(headers.values())


def is_sealed(value: Mapping[str, Any]) -> bool:
    """True when every secret of a peer's object form is sealed (or absent)."""
    texts = [value.get(name) or "" for name in SECRET_FIELDS]
    texts += list((value.get("HttpHeaders") or {}).values())
    return all(not text or str(text).startswith(SEALED_PREFIX) for text in texts)


def seal_peer(box: SecretBox, value: Mapping[str, Any]) -> dict[str, Any]:
    """Return the object form with its secrets sealed."""
    return _map_secrets(value, box.seal)


def open_peer(box: SecretBox | None, value: Mapping[str, Any]) -> dict[str, Any]:
    """Return the object form with its secrets in clear (clear rows as they are)."""
    if box is None:
        if not is_sealed(value) or not has_secret(value):
            return dict(value)
        raise ValueError("a peer secret is sealed but DicomKeep.SecretKey is not configured")
    return _map_secrets(value, box.open)


def _map_secrets(value: Mapping[str, Any], change: Any) -> dict[str, Any]:
    result = dict(value)
    for name in SECRET_FIELDS:
        if isinstance(result.get(name), str):
            result[name] = change(result[name])
    headers = result.get("HttpHeaders")
    if isinstance(headers, dict):
        result["HttpHeaders"] = {k: change(v) if isinstance(v, str) else v
                                 for k, v in headers.items()}
    return result


@dataclass(frozen=True)
class KeySource:
    """Where the key is: a text, or a file (created at the first load if `create`)."""

    key: str = ""
    file: Path | None = None
    create: bool = False

    def load(self) -> SecretBox:
        """Return the box of this key, creating the key file first if asked.

        Raises ConfigError for a text that is not a Fernet key or an unreadable file."""
        if self.file is None:
            return SecretBox(self.key)
        if self.create:
            create_key_file(self.file)
        try:
            return SecretBox(self.file.read_text(encoding="ascii").strip())
        except OSError as error:
            raise ConfigError(f"Cannot read the secret key file {self.file}: {error}") from error


def key_source(settings: Settings) -> KeySource | None:
    """Return where the key comes from, or None (distributed mode without a key).

    Reads nothing and creates nothing: `KeySource.load` does, when the index opens."""
    options = settings.dicomkeep
    if options.secret_key:
        return KeySource(key=options.secret_key)
    if options.secret_key_file:
        return KeySource(file=Path(options.secret_key_file))
    if options.mode == "distributed":
        return None
    return KeySource(file=Path(settings.effective_index_directory) / DEFAULT_KEY_FILE,
                     create=True)


def create_key_file(path: Path) -> None:
    """Write a new Fernet key to `path` (mode 0600) unless the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as file:
        file.write(Fernet.generate_key() + b"\n")
