"""DICOM tags as Orthanc's REST API shows them (ORTHANC_API.md §2.6).

`tags_json` mirrors FromDcmtkBridge::DatasetToJson with Orthanc's default flags
(binary values, private and unknown tags included; binary converted to null) and
a 256-byte limit on strings; `header_json` mirrors the `/header` route (file meta
group, binary and unknown tags left out, no length limit); `content_value` mirrors
ParsedDicomFile::SendPathValue behind `/instances/{id}/content/...`.

Decisions where DicomKeep cannot follow DCMTK exactly:
- Names are DCMTK's dictionary names rebuilt from pydicom's keywords: retired tags
  get the `RETIRED_` prefix, (gggg,0000) is `GenericGroupLength` (odd groups:
  `PrivateGroupLength`), private creators `PrivateCreator`, and every other private
  or unknown tag `Unknown Tag & Data` (DCMTK's private dictionary is not reproduced;
  the private creator is still reported in `PrivateCreator`).
- Binary values (OB, OW, OF, OD, OL, UN, UV, SV, OV, pixel data) are `Type: "Null"`,
  never `"Binary"`, exactly as Orthanc's default flags do.
- `simplify` keys unknown and private data elements by `gggg,eeee` rather than by
  the colliding name `Unknown Tag & Data`.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any, Literal

from dicomkeep.common.dicom.parsing import (
    DEFAULT_ENCODINGS,
    MAXIMUM_TAG_LENGTH,
    PIXEL_DATA,
    DicomFile,
    Element,
    element_text,
    encodings_of,
    read_dicom,
    standard_entry,
)
from dicomkeep.common.errors import ErrorCode, OrthancError, unknown_resource
from pydicom.datadict import tag_for_keyword

UNKNOWN_TAG_NAME = "Unknown Tag & Data"
_HEX_TAG = re.compile(r"([0-9a-fA-F]{4})[,-]?([0-9a-fA-F]{4})")
#: Item sizes of the VRs whose values DCMTK hands out in the machine's byte order.
_SWAP_SIZES = {
    "US": 2, "SS": 2, "OW": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4,
    "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8,
}  # fmt: skip
_ARRAY_CODES = {2: "H", 4: "I" if array("I").itemsize == 4 else "L", 8: "Q"}
_BINARY_VRS = frozenset({"OB", "OW", "UN"})

Format = Literal["full", "short", "simplify"]


@lru_cache(maxsize=8192)
def tag_name(tag: int) -> str:
    """Return DCMTK's name for a tag: the standard keyword, `RETIRED_...`, or a generic name."""
    group, number = tag >> 16, tag & 0xFFFF
    if group & 1:
        if number == 0:
            return "PrivateGroupLength" if group > 7 else "IllegalGroupLength"
        if 0x10 <= number <= 0xFF and group > 7:
            return "PrivateCreator"
        return UNKNOWN_TAG_NAME
    entry = standard_entry(tag)
    if entry is None and number == 0:
        return "GenericGroupLength"
    if entry is None or not entry[4]:
        return UNKNOWN_TAG_NAME
    return ("RETIRED_" if "retired" in entry[3].lower() else "") + entry[4]


def parse_tag(text: str) -> int:
    """Parse `gggg,eeee`, `gggg-eeee`, `ggggeeee` or a keyword into a tag.

    Raises KeyError for an unknown keyword (callers map it to their HTTP answer).
    """
    match = _HEX_TAG.fullmatch(text)
    if match:
        return int(match.group(1), 16) << 16 | int(match.group(2), 16)
    keyword = text.removeprefix("RETIRED_")
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(text)
    return tag


def _format_tag(tag: int, separator: str = ",") -> str:
    return f"{tag >> 16:04x}{separator}{tag & 0xFFFF:04x}"


def tags_json(
    data: bytes,
    fmt: Format = "full",
    *,
    whole: bool = False,
    ignore_length: Collection[str] = (),
    assume_pixel_data: bool = False,
) -> dict[str, Any]:
    """Return the dataset (file meta excluded) as Orthanc's `/instances/{id}/tags` JSON.

    `full`: `{"gggg,eeee": {"Name", "Type", "Value"[, "PrivateCreator"]}}` with Type
    `String` (Value str), `Sequence` (Value = list of objects of the same shape),
    `Null` (Value None: binary data, pixel data, empty numbers) or `TooLong` (a
    string over 256 UTF-8 bytes, unless its tag is in `ignore_length`, given as
    `gggg,eeee` or keywords). `short`: `{"gggg,eeee": value}`; `simplify`:
    `{Name: value}` (unknown/private data elements keyed `gggg,eeee`), both with
    strings, lists for sequences and None for Null/TooLong.
    Unless `whole`, top-level elements after the pixel data are left out, as
    Orthanc does when it reads the file only up to the pixel data. Pass
    `assume_pixel_data` when `data` is such a prefix (`dicom_prefix`): the missing
    `7fe0,0010` entry is then added as Null, as Orthanc's InjectEmptyPixelData does.
    Raises BAD_FILE_FORMAT for an invalid file, BAD_REQUEST for an unknown tag name.
    """
    dicom = read_dicom(data)
    ignored = set()
    for name in ignore_length:
        try:
            ignored.add(parse_tag(name))
        except KeyError:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Unknown DICOM tag: {name}") from None
    encodings = encodings_of(dicom, dicom.dataset, DEFAULT_ENCODINGS)
    limit = 0 if whole else PIXEL_DATA
    full = _dataset_json(dicom, dicom.dataset, encodings, ignored, MAXIMUM_TAG_LENGTH, limit)
    if assume_pixel_data and "7fe0,0010" not in full:
        full["7fe0,0010"] = {"Name": "PixelData", "Type": "Null", "Value": None}
    if fmt == "full":
        return full
    return _simplify(full, by_name=fmt == "simplify")


def header_json(data: bytes) -> dict[str, Any]:
    """Return the file meta group (0002,xxxx) in `full` format, as `/instances/{id}/header`.

    Mirrors ExtractHeaderAsJson with no flags: binary (OB/OW/UN), private and
    unknown tags are omitted and strings are never `TooLong`.
    """
    dicom = read_dicom(data)
    meta_view = DicomFile(
        dicom.data, dicom.meta, dicom.meta, dicom.data, True, dicom.transfer_syntax, None
    )
    kept = [
        element
        for element in dicom.meta
        if element.vr not in _BINARY_VRS
        and not element.tag >> 16 & 1
        and tag_name(element.tag) != UNKNOWN_TAG_NAME
    ]
    return _dataset_json(meta_view, kept, DEFAULT_ENCODINGS, set(), 0, 0)


def _dataset_json(
    dicom: DicomFile,
    elements: Sequence[Element],
    encodings: Sequence[str],
    ignored: set[int],
    max_length: int,
    stop_after: int,
) -> dict[str, Any]:
    """Render elements in `full` format; `stop_after` > 0 skips tags above it."""
    result: dict[str, Any] = {}
    creators = _creators(dicom, elements)
    for element in elements:
        tag = element.tag
        if stop_after and tag > stop_after:
            continue
        node: dict[str, Any] = {"Name": tag_name(tag)}
        # A private data element (gggg,xxyy) belongs to the creator (gggg,00xx).
        creator = creators.get(tag >> 8) if tag >> 16 & 1 and tag & 0xFFFF > 0xFF else None
        if creator is not None:
            node["PrivateCreator"] = creator
        if element.items is not None:
            node["Type"] = "Sequence"
            node["Value"] = [
                _dataset_json(
                    dicom, item, encodings_of(dicom, item, encodings), ignored, max_length, 0
                )
                for item in element.items
            ]
        else:
            text = element_text(dicom, element, encodings, creator)
            if text is None:
                node["Type"], node["Value"] = "Null", None
            elif max_length and tag not in ignored and len(text.encode("utf-8")) > max_length:
                node["Type"], node["Value"] = "TooLong", None
            else:
                node["Type"], node["Value"] = "String", text
        result[_format_tag(tag)] = node
    return result


def _creators(dicom: DicomFile, elements: Sequence[Element]) -> dict[int, str]:
    """Map `group << 8 | block` (= data element tag >> 8) to the block's private creator."""
    creators: dict[int, str] = {}
    for element in elements:
        group, number = element.tag >> 16, element.tag & 0xFFFF
        if group & 1 and 0x10 <= number <= 0xFF and element.items is None:
            value = dicom.value(element).split(b"\0")[0]
            creators[group << 8 | number] = value.decode("latin-1").strip()
    return creators


def _simplify(full: dict[str, Any], *, by_name: bool) -> dict[str, Any]:
    """Mirror Toolbox::SimplifyDicomAsJson (short or human keys)."""
    result: dict[str, Any] = {}
    for key, node in full.items():
        name = node["Name"] if by_name and node["Name"] != UNKNOWN_TAG_NAME else key
        if node["Type"] == "Sequence":
            result[name] = [_simplify(item, by_name=by_name) for item in node["Value"]]
        elif node["Type"] == "String":
            result[name] = node["Value"]
        else:
            result[name] = None
    return result


def content_value(data: bytes, path: Sequence[str]) -> bytes | list[str]:
    """Resolve `/instances/{id}/content/{path...}` as Orthanc's SendPathValue does.

    An even-length path names a dataset (`[]` = top level; `[seq, index]` = one item)
    and answers its tags as `gggg-eeee`; an odd-length path names an element: a
    sequence answers its item indices (`["0", "1"]`), a leaf its raw value bytes as
    DCMTK hands them out (padding kept, numbers in little endian). The pixel data
    answers its block indices, and `[7fe0-0010, n]` the n-th fragment (or the native
    pixel bytes for n = 0). Unknown tag, index or path -> UNKNOWN_RESOURCE.
    """
    dicom = read_dicom(data)
    try:
        tags = [parse_tag(part) if i % 2 == 0 else -1 for i, part in enumerate(path)]
    except KeyError:
        raise unknown_resource() from None
    if tags and tags[0] == PIXEL_DATA and len(path) <= 2:
        return _pixel_data(dicom, path[1] if len(path) == 2 else None)
    elements: Sequence[Element] = dicom.dataset
    for position in range(0, len(path) - 1, 2):
        element = _find(elements, tags[position])
        index = path[position + 1]
        if element.items is None or not index.isdigit() or int(index) >= len(element.items):
            raise unknown_resource()
        elements = element.items[int(index)]
    if len(path) % 2 == 0:
        return [_format_tag(element.tag, "-") for element in elements]
    element = _find(elements, tags[-1])
    if element.items is not None:
        return [str(i) for i in range(len(element.items))]
    return _raw_value(dicom, element)


def content_list(data: bytes, path: Sequence[str]) -> list[str]:
    """Return the listing of `content_value` for a dataset, item or sequence path.

    Raises UNKNOWN_RESOURCE if the path is unknown, BAD_REQUEST if it names a leaf.
    """
    value = content_value(data, path)
    if isinstance(value, bytes):
        raise OrthancError(ErrorCode.BAD_REQUEST, "This path designates a value, not a list")
    return value


def _find(elements: Sequence[Element], tag: int) -> Element:
    for element in elements:
        if element.tag == tag:
            return element
    raise unknown_resource()


def _raw_value(dicom: DicomFile, element: Element) -> bytes:
    raw = dicom.value(element)
    size = _SWAP_SIZES.get(element.vr)
    if dicom.little_endian == (sys.byteorder == "little") or size is None or len(raw) % size:
        return raw
    values = array(_ARRAY_CODES[size], raw)
    values.byteswap()
    return values.tobytes()


def _pixel_data(dicom: DicomFile, block: str | None) -> bytes | list[str]:
    element = _find(dicom.dataset, PIXEL_DATA)
    fragments = element.fragments
    count = len(fragments) if fragments is not None else 1
    if block is None:
        return [str(i) for i in range(count)]
    if not block.isdigit() or int(block) >= count:
        raise unknown_resource()
    if fragments is None:
        return _raw_value(dicom, element)
    start, length = fragments[int(block)]
    return dicom.buffer[start : start + length]
