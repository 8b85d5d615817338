"""The DICOM server's options that REST can change at run time (Orthanc 1.9+).

`AcceptedTransferSyntaxes`, `UnknownSopClassAccepted` and `DefaultEncoding`
start from the configuration; `PUT /tools/accepted-transfer-syntaxes`,
`/tools/unknown-sop-class-accepted` and `/tools/default-encoding` change them.
The change is kept in the index (a global property), so that every ingest
replica and gateway of a cluster reads the same value at its next association or
request. A stored value remembers the configured value it replaced: when the
configuration file says something else later, the configuration wins again
(Orthanc forgets such changes at restart; we forget them when the file changes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dicomkeep.common.encodings import parse_encoding
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import Index
from dicomkeep.common.settings import Settings
from pydicom.uid import UID_dictionary

#: Every transfer syntax DicomKeep knows, in UID order (Orthanc's `DicomTransferSyntax`).
KNOWN_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(
    uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"
)

_PROPERTY = {
    "accepted_transfer_syntaxes": "DicomKeep.AcceptedTransferSyntaxes",
    "unknown_sop_class_accepted": "DicomKeep.UnknownSopClassAccepted",
    "default_encoding": "DicomKeep.DefaultEncoding",
}


@dataclass(frozen=True)
class ScpOptions:
    """The values in effect now."""

    accepted_transfer_syntaxes: frozenset[str]
    unknown_sop_class_accepted: bool
    default_encoding: str


def _pattern(text: str) -> re.Pattern[str]:
    """Compile an Orthanc wildcard (`*` any run, `?` one character) to a regex."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text))


def expand_transfer_syntaxes(patterns: Iterable[str]) -> frozenset[str]:
    """Return the known transfer syntaxes matched by `patterns` (wildcards `*` and `?`)."""
    compiled = [_pattern(p.strip()) for p in patterns]
    return frozenset(ts for ts in KNOWN_TRANSFER_SYNTAXES if any(c.fullmatch(ts) for c in compiled))


def sorted_syntaxes(syntaxes: Iterable[str]) -> list[str]:
    """Return `syntaxes` in the order of KNOWN_TRANSFER_SYNTAXES (the REST answers' order)."""
    chosen = set(syntaxes)
    return [ts for ts in KNOWN_TRANSFER_SYNTAXES if ts in chosen]


def parse_boolean(text: str) -> bool:
    """Parse a boolean body as Orthanc's ParseBooleanBody: `1`/`true` or `0`/`false`."""
    value = text.strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise OrthancError(ErrorCode.BAD_REQUEST, "The body must contain a Boolean, found: " + text)


def parse_syntaxes_body(body: bytes) -> list[str]:
    """Read a PUT body: a JSON string or array of strings, else the plain text (one pattern)."""
    text = body.decode("utf-8", "replace")
    try:
        value: Any = json.loads(text)
    except ValueError:
        return [text.strip()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise OrthancError(
        ErrorCode.BAD_FILE_FORMAT,
        "Configuration option \"AcceptedTransferSyntaxes\" must be a string or a list of strings",
    )


def _configured(settings: Settings, name: str) -> Any:
    value = getattr(settings, name)
    return list(value) if isinstance(value, list) else value


async def _value(settings: Settings, index: Index | None, name: str) -> Any:
    configured = _configured(settings, name)
    if index is None:
        return configured
    stored = await index.get_property(_PROPERTY[name])
    if stored is None:
        return configured
    record = json.loads(stored)
    if record.get("configured") != configured:
        return configured  # the configuration changed since: it wins
    return record["value"]


async def current(settings: Settings, index: Index | None) -> ScpOptions:
    """Return the options in effect: the configuration, or the value set over REST."""
    patterns = await _value(settings, index, "accepted_transfer_syntaxes")
    return ScpOptions(
        accepted_transfer_syntaxes=expand_transfer_syntaxes(patterns),
        unknown_sop_class_accepted=bool(await _value(settings, index, "unknown_sop_class_accepted")),
        default_encoding=parse_encoding(str(await _value(settings, index, "default_encoding"))),
    )


async def store(settings: Settings, index: Index, name: str, value: Any) -> None:
    """Set one option (a key of ScpOptions) for every replica, until the configuration changes."""
    record = {"value": value, "configured": _configured(settings, name)}
    await index.set_property(_PROPERTY[name], json.dumps(record))
