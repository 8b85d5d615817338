"""Validate and index DICOM Part-10 files; decode element values as Orthanc shows them.

A small structural reader walks every element of the file once, nested sequences
and encapsulated pixel fragments included, and refuses any file whose structure
does not add up (an element or item running past the end, a missing delimiter):
that is how a truncated upload is caught even when it is cut inside the pixel
data, which pydicom would read silently. Values are decoded only on demand.
Tag names, dictionary VRs and character sets come from pydicom's tables.
The module is over 400 lines because the reader, its element walk and the
value decoders share one buffer layout and are easiest to check side by side.

String values follow DCMTK as Orthanc sees them: the value stops at the first NUL,
trailing spaces are dropped, leading spaces are kept, text VRs are decoded with
the Specific Character Set; binary numbers (US, SS, UL, SL, FL, FD) are rendered
as decimal strings joined by `\\`, floats with 9 (FL) or 17 (FD) significant
digits like boost::lexical_cast.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from dicomkeep.common.errors import ErrorCode, OrthancError
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import get_entry, private_dictionary_VR

PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
#: Orthanc's ORTHANC_MAXIMUM_TAG_LENGTH: longer strings are "TooLong" (null).
MAXIMUM_TAG_LENGTH = 256

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_REPRESENTATION = 0x00280103
_TRANSFER_SYNTAX = 0x00020010

IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

_ALL_VRS = (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
    "UC UI UL UN UR US UT UV"
).split()
_VR_CODES = {vr.encode("ascii"): vr for vr in _ALL_VRS}
#: Explicit VRs with 2 reserved bytes and a 4-byte length.
_LONG_VRS = frozenset("OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
_TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C}
#: VRs decoded with the Specific Character Set, and the bytes that reset ISO 2022 escapes.
_CHARSET_DELIMITERS: dict[str, set[int]] = {
    "PN": {0x5C, 0x3D, 0x5E},
    "LO": {0x5C},
    "SH": {0x5C},
    "UC": {0x5C},
    "LT": _TEXT_DELIMITERS,
    "ST": _TEXT_DELIMITERS,
    "UT": _TEXT_DELIMITERS,
}
#: struct code, item size, printf format (lexical_cast precision for floats).
_NUMBERS: dict[str, tuple[str, int, str]] = {
    "US": ("H", 2, "%d"),
    "SS": ("h", 2, "%d"),
    "UL": ("L", 4, "%d"),
    "SL": ("l", 4, "%d"),
    "FL": ("f", 4, "%.9g"),
    "FD": ("d", 8, "%.17g"),
}
#: pydicom's name for the default repertoire (ISO_IR 6), read as Latin-1 like Orthanc's default.
DEFAULT_ENCODINGS = ("iso8859",)


class _Malformed(Exception):
    """Internal: the bytes are not a well-formed DICOM file."""


class Element:
    """One data element: where its value lies in the dataset buffer, or its content.

    `offset` is the position of the element's tag, `start`/`length` its value; a
    sequence has `items` (one element list per item), encapsulated pixel data has
    `fragments` ((start, length) of every item, the basic offset table first).
    """

    __slots__ = ("tag", "vr", "offset", "start", "length", "items", "fragments")

    def __init__(
        self,
        tag: int,
        vr: str,
        offset: int,
        start: int,
        length: int,
        items: list[list[Element]] | None = None,
        fragments: list[tuple[int, int]] | None = None,
    ) -> None:
        self.tag = tag
        self.vr = vr
        self.offset = offset
        self.start = start
        self.length = length
        self.items = items
        self.fragments = fragments


@dataclass(frozen=True)
class DicomFile:
    """A structurally valid DICOM file: its meta group and dataset, not yet decoded.

    `buffer` holds the dataset bytes (the file itself, or the inflated dataset of a
    deflated transfer syntax); `meta` elements point into the file bytes.
    """

    data: bytes
    meta: list[Element]
    dataset: list[Element]
    buffer: bytes
    little_endian: bool
    transfer_syntax: str
    pixel_data_offset: int | None

    def value(self, element: Element) -> bytes:
        """Return the raw value bytes of a dataset element (padding included)."""
        return self.buffer[element.start : element.start + element.length]


class _Reader:
    """Walks elements of one encoding over a buffer, validating every length."""

    def __init__(self, buf: bytes, *, little: bool, implicit: bool) -> None:
        self.buf = buf
        self.little = little
        self.implicit = implicit
        order = "<" if little else ">"
        self._tag = struct.Struct(order + "HH").unpack_from
        self._head = struct.Struct(order + "HH2sH").unpack_from
        self._u16 = struct.Struct(order + "H").unpack_from
        self._u32 = struct.Struct(order + "L").unpack_from
        self.pixel_representation = 0

    def dataset(
        self, pos: int, end: int, *, in_item: bool = False, meta: bool = False
    ) -> tuple[list[Element], int]:
        """Read elements from `pos` to `end` (or the item delimiter); return them and the end."""
        buf = self.buf
        implicit = self.implicit
        elements: list[Element] = []
        creators: dict[int, str] = {}
        while pos < end:
            if pos + 8 > end:
                raise _Malformed("truncated element header")
            # Explicit VR: tag, VR, 2-byte length; the hot path is inlined.
            group, number, code, length = self._head(buf, pos)
            if meta and group != 2:
                return elements, pos
            tag = group << 16 | number
            if group == 0xFFFE:
                if tag == _ITEM_END and in_item:
                    return elements, pos + 8
                raise _Malformed(f"unexpected item tag {tag:08x}")
            vr = None if implicit else _VR_CODES.get(code)
            if vr is None:
                vr, length, start = self._odd_header(pos, tag, code, creators)
            elif vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _Malformed("truncated element header")
                length = self._u32(buf, pos + 8)[0]
                start = pos + 12
            else:
                start = pos + 8
            if length == _UNDEFINED:
                element, pos = self._undefined(tag, vr, pos, start, end)
            else:
                stop = start + length
                if stop > end:
                    raise _Malformed("value runs past the end")
                items = self._items(start, stop, undefined=False)[0] if vr == "SQ" else None
                element = Element(tag, vr, pos, start, length, items)
                pos = stop
                if group & 1 and 0x10 <= number <= 0xFF:
                    creators[tag] = _ascii(buf[start:stop])
                elif tag == _PIXEL_REPRESENTATION and length == 2:
                    self.pixel_representation = self._u16(buf, start)[0]
            elements.append(element)
        if in_item:
            raise _Malformed("missing item delimiter")
        return elements, pos

    def _odd_header(
        self, pos: int, tag: int, code: bytes, creators: dict[int, str]
    ) -> tuple[str, int, int]:
        """Decode an implicit VR header, or an explicit one with a non-standard VR."""
        if not self.implicit and code.isalpha() and code.isupper():
            return "UN", self._u16(self.buf, pos + 6)[0], pos + 8  # as DCMTK's UNKNOWN2B
        # Implicit VR, or not a VR: the writer switched to implicit VR (pydicom's leniency).
        return self._implicit_vr(tag, creators), self._u32(self.buf, pos + 4)[0], pos + 8

    def _implicit_vr(self, tag: int, creators: dict[int, str]) -> str:
        entry = standard_entry(tag)
        if entry is not None:
            vr = entry[0]
        else:
            group, number = tag >> 16, tag & 0xFFFF
            if number == 0:
                return "UL"
            if group & 1:
                if number <= 0xFF:
                    return "LO" if number >= 0x10 else "UN"
                creator = creators.get(tag & 0xFFFF0000 | tag >> 8 & 0xFF)  # (gggg,00xx)
                vr = _private_vr(tag, creator) if creator else "UN"
            else:
                vr = "UN"
        if len(vr) > 2:
            if vr.startswith("US or SS"):
                return "SS" if self.pixel_representation == 1 else "US"
            return "OW" if vr == "OB or OW" else vr[:2]
        return vr

    def _undefined(self, tag: int, vr: str, pos: int, start: int, end: int) -> tuple[Element, int]:
        if vr == "SQ":
            items, stop = self._items(start, end, undefined=True)
            return Element(tag, "SQ", pos, start, stop - start, items), stop
        if tag == PIXEL_DATA or vr in ("OB", "OW"):
            fragments, stop = self._fragments(start, end)
            return Element(tag, vr, pos, start, stop - start, fragments=fragments), stop
        if vr == "UN":
            # PS3.5 §6.2.2: a UN of undefined length is a sequence in implicit VR LE.
            reader = self if self.implicit and self.little else self._implicit_le()
            items, stop = reader._items(start, end, undefined=True)
            return Element(tag, "SQ", pos, start, stop - start, items), stop
        raise _Malformed(f"undefined length for VR {vr}")

    def _implicit_le(self) -> _Reader:
        return _Reader(self.buf, little=True, implicit=True)

    def _items(self, pos: int, end: int, *, undefined: bool) -> tuple[list[list[Element]], int]:
        buf = self.buf
        items: list[list[Element]] = []
        while undefined or pos < end:
            if pos + 8 > end:
                raise _Malformed("truncated sequence")
            group, number = self._tag(buf, pos)
            length = self._u32(buf, pos + 4)[0]
            tag = group << 16 | number
            pos += 8
            if tag == _SEQUENCE_END and undefined:
                return items, pos
            if tag != _ITEM:
                raise _Malformed(f"expected an item, found {tag:08x}")
            if length == _UNDEFINED:
                elements, pos = self.dataset(pos, end, in_item=True)
            else:
                stop = pos + length
                if stop > end:
                    raise _Malformed("item runs past the end")
                elements = self.dataset(pos, stop)[0]
                pos = stop
            items.append(elements)
        return items, pos

    def _fragments(self, pos: int, end: int) -> tuple[list[tuple[int, int]], int]:
        buf = self.buf
        fragments: list[tuple[int, int]] = []
        while True:
            if pos + 8 > end:
                raise _Malformed("truncated pixel data")
            group, number = self._tag(buf, pos)
            length = self._u32(buf, pos + 4)[0]
            pos += 8
            if group << 16 | number == _SEQUENCE_END:
                return fragments, pos
            if group << 16 | number != _ITEM or pos + length > end:
                raise _Malformed("bad pixel data fragment")
            fragments.append((pos, length))
            pos += length


def _ascii(raw: bytes) -> str:
    nul = raw.find(0)
    return (raw if nul < 0 else raw[:nul]).decode("latin-1").strip()


def _private_vr(tag: int, creator: str) -> str:
    try:
        return private_dictionary_VR(tag, creator)
    except KeyError:
        return "UN"


def read_dicom(data: bytes) -> DicomFile:
    """Validate the structure of a Part-10 file and index its elements (values not decoded).

    Accepts the 128-byte preamble + `DICM`, a file starting directly with the
    (0002,xxxx) meta group, or (as Orthanc, through DCMTK) a bare data set without
    file meta, whose transfer syntax is then guessed (implicit or explicit VR, little
    or big endian) and whose first element must be of an even group from 0004 on.
    Truncated or malformed files are refused. Raises `OrthancError(BAD_FILE_FORMAT)` with
    Orthanc's details (`Received an empty DICOM file`, `Cannot parse an invalid
    DICOM file (size: N bytes)`).
    """
    if not data:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
    try:
        return _read(data)
    except (_Malformed, struct.error, zlib.error, RecursionError) as exc:
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT,
            f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)",
        ) from exc


def _read(data: bytes) -> DicomFile:
    if len(data) >= 132 and data[128:132] == b"DICM":
        pos = 132
    elif data[:2] == b"\x02\x00":
        pos = 0
    elif _is_bare_dataset(data):
        syntax = _guess_syntax(data, 0)
        little = syntax != EXPLICIT_BIG_ENDIAN
        reader = _Reader(data, little=little, implicit=syntax == IMPLICIT_LITTLE_ENDIAN)
        dataset = reader.dataset(0, len(data))[0]
        offset = next((e.offset for e in dataset if e.tag == PIXEL_DATA), None)
        return DicomFile(data, [], dataset, data, little, syntax, offset)
    else:
        raise _Malformed("not a DICOM Part-10 file")
    meta, pos = _Reader(data, little=True, implicit=False).dataset(pos, len(data), meta=True)
    syntax = ""
    for element in meta:
        if element.tag == _TRANSFER_SYNTAX:
            syntax = _ascii(data[element.start : element.start + element.length])
    if syntax in _DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        buffer = inflater.decompress(data[pos:])
        if not inflater.eof:
            raise _Malformed("truncated deflated dataset")
        reader = _Reader(buffer, little=True, implicit=False)
        dataset = reader.dataset(0, len(buffer))[0]
        return DicomFile(data, meta, dataset, buffer, True, syntax, None)
    if not syntax:
        syntax = _guess_syntax(data, pos)
    little = syntax != EXPLICIT_BIG_ENDIAN
    reader = _Reader(data, little=little, implicit=syntax == IMPLICIT_LITTLE_ENDIAN)
    dataset = reader.dataset(pos, len(data))[0]
    offset = next((e.offset for e in dataset if e.tag == PIXEL_DATA), None)
    return DicomFile(data, meta, dataset, data, little, syntax, offset)


def _is_bare_dataset(data: bytes) -> bool:
    """Tell whether the data may be a data set without file meta: its first tag's group
    (read in either byte order) is even and from 0004 on, as a data set's first
    element is (usually 0008); anything else is not DICOM."""
    if len(data) < 8:
        return False
    little, big = int.from_bytes(data[:2], "little"), int.from_bytes(data[:2], "big")
    return any(group >= 0x0004 and group % 2 == 0 for group in (little, big))


def _guess_syntax(data: bytes, pos: int) -> str:
    """Detect the encoding of a dataset whose meta lacks TransferSyntaxUID (as DCMTK does)."""
    head = data[pos : pos + 6]
    if len(head) < 6:
        return EXPLICIT_LITTLE_ENDIAN
    if not (head[4:6].isalpha() and head[4:6].isupper()):
        return IMPLICIT_LITTLE_ENDIAN
    return EXPLICIT_BIG_ENDIAN if head[0] == 0 and head[1] != 0 else EXPLICIT_LITTLE_ENDIAN


@lru_cache(maxsize=256)
def _encodings(raw: bytes) -> tuple[str, ...]:
    terms = [_ascii(term) for term in raw.split(b"\\")]
    try:
        return tuple(convert_encodings(terms))
    except LookupError:
        return DEFAULT_ENCODINGS


def encodings_of(
    dicom: DicomFile, elements: Sequence[Element], inherited: Sequence[str]
) -> Sequence[str]:
    """Return the Python encodings for a dataset or item: its own (0008,0005), else `inherited`."""
    for element in elements:
        if element.tag == SPECIFIC_CHARACTER_SET:
            return _encodings(dicom.value(element))
        if element.tag > SPECIFIC_CHARACTER_SET:
            break
    return inherited


def element_text(
    dicom: DicomFile,
    element: Element,
    encodings: Sequence[str],
    creator: str | None = None,
) -> str | None:
    """Return a leaf value as Orthanc's UTF-8 string, or None where Orthanc has a null value.

    Mirrors FromDcmtkBridge::ConvertLeafElement with binary values converted to
    null: strings decoded (padding stripped), numbers and AT rendered as text, a UN
    value whose dictionary VR is a string kept if ASCII; sequences, pixel data and
    other binary VRs (OB, OW, OF, OD, OL, UN, UV, SV, OV) give None.
    """
    vr = element.vr
    if element.items is not None or element.fragments is not None:
        return None
    raw = dicom.value(element)
    if vr in _STRING_VRS:
        return _decode_string(raw, vr, encodings)
    number = _NUMBERS.get(vr)
    if number is not None:
        return _format_numbers(raw, number, dicom.little_endian)
    if vr == "AT":
        if len(raw) < 4:
            return None
        group, elem = struct.unpack_from("<HH" if dicom.little_endian else ">HH", raw)
        return f"{group:04x},{elem:04x}"
    if vr == "UN" and raw.isascii() and dictionary_vr(element.tag, creator) in _STRING_VRS:
        return raw.decode("ascii")
    return None


def dictionary_vr(tag: int, creator: str | None = None) -> str:
    """Return the dictionary VR of a tag ("UN" when unknown; private tags need their creator)."""
    entry = standard_entry(tag)
    if entry is not None:
        return entry[0]
    if tag >> 16 & 1:
        return _private_vr(tag, creator) if creator else "UN"
    return "UN"


@lru_cache(maxsize=8192)
def standard_entry(tag: int) -> tuple[str, str, str, str, str] | None:
    """Return the standard dictionary's (VR, VM, name, retired, keyword) for a tag.

    Repeating groups (`50xx,xxxx`, `60xx,...`) are matched; private tags and
    unknown ones give None. A cached front of `pydicom.datadict.get_entry`.
    """
    try:
        return get_entry(tag)
    except KeyError:
        return None


def _decode_string(raw: bytes, vr: str, encodings: Sequence[str]) -> str:
    nul = raw.find(0)
    if nul >= 0:
        raw = raw[:nul]
    raw = raw.rstrip(b" ")
    if raw.isascii() and 0x1B not in raw:
        return raw.decode("ascii")
    delimiters = _CHARSET_DELIMITERS.get(vr)
    if delimiters is None:
        return raw.decode("latin-1")
    # No warnings.catch_warnings() here: it is not thread-safe, and this runs in threads.
    try:
        if 0x1B not in raw:  # no ISO 2022 escape: pydicom's own shortcut, minus its warning
            return raw.decode(encodings[0], errors="replace")
        return decode_bytes(raw, encodings, delimiters)
    except (UnicodeError, LookupError):
        return raw.decode("latin-1")


def _format_numbers(raw: bytes, number: tuple[str, int, str], little: bool) -> str | None:
    code, size, pattern = number
    order = "<" if little else ">"
    if len(raw) > size and len(raw) % size == 0:
        values = struct.unpack(f"{order}{len(raw) // size}{code}", raw)
    elif len(raw) >= size:
        values = struct.unpack_from(order + code, raw)
    else:
        return None
    return "\\".join(pattern % value for value in values)
