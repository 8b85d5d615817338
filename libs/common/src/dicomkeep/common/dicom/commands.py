"""DIMSE command sets encoded without pydicom's writer.

pynetdicom encodes every command set (the small group-0000 header of each DIMSE
message, Implicit VR Little Endian) with pydicom's `write_dataset`, twice per
message (once to measure CommandGroupLength, once to send). For a C-MOVE that is
two C-STORE requests and two Pending C-MOVE responses per instance, about a fifth
of the CPU of a sub-operation (issue 13). `install()` puts `encode_command` in
pynetdicom's `dimse_messages` module, whose only uses of `encode` are those
command sets; data sets are encoded elsewhere and never come here.

`encode_command` writes the elements a command set holds (UI, AE, CS, SH, LO, ST,
LT, US, UL, one value each, or none) itself and hands anything else (another group,
another VR, several values, another encoding) to pydicom's encoder: its output is
byte for byte pydicom's (tests/unit/common/test_dimse_commands.py).
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, dsutils

#: VRs written as text: UI is padded with NUL to an even length, the others with a space.
_TEXT_VRS = frozenset({"UI", "AE", "CS", "SH", "LO", "ST", "LT"})
_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")


def _encode_fast(dataset: Dataset) -> bytes | None:
    """The Implicit VR Little Endian bytes of a command set, or None to let pydicom do it."""
    parts: list[bytes] = []
    for element in dataset:
        tag = element.tag
        if tag >> 16 != 0:
            return None
        vr = element.VR
        value = element.value
        if value is None or value == "":
            data = b""
        elif vr in _TEXT_VRS:
            if not isinstance(value, str):  # a UID is a str
                return None
            try:
                data = value.encode("ascii")
            except UnicodeEncodeError:
                return None
            if len(data) % 2:
                data += b"\0" if vr == "UI" else b" "
        elif vr == "US" and isinstance(value, int) and 0 <= value <= 0xFFFF:
            data = _US.pack(value)  # an int or an IntEnum (a handler's status)
        elif vr == "UL" and isinstance(value, int) and 0 <= value <= 0xFFFFFFFF:
            data = _UL.pack(value)
        else:
            return None
        parts.append(_HEADER.pack(0, tag & 0xFFFF, len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_command(
    dataset: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's `dsutils.encode`, with command sets written by `_encode_fast`."""
    if is_implicit_vr and is_little_endian and not deflated:
        encoded = _encode_fast(dataset)
        if encoded is not None:
            return encoded
    return dsutils.encode(dataset, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    """Make pynetdicom encode DIMSE command sets with `encode_command` (idempotent)."""
    module: Any = dimse_messages
    module.encode = encode_command
