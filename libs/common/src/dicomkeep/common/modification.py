"""Modify or anonymize DICOM datasets as Orthanc's DicomModification does.

`parse_modify_request` and `parse_anonymize_request` read Orthanc's request body
(`Replace`, `Remove`, `Keep`, `Force`, `RemovePrivateTags`/`KeepPrivateTags`,
`DicomVersion`, `PrivateCreator`) into a `Modification`; `Modification.apply`
changes one pydicom dataset. One `Modification` applied to every instance of a
resource maps each original UID to the same new UID everywhere (Orthanc's UID map),
so a modified study keeps one StudyInstanceUID and its series stay together.

Mirrors OrthancFramework/Sources/DicomParsing/DicomModification.cpp (1.12):
- the level decides which UIDs are regenerated: a patient or study modification
  maps StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID, a series one the
  last two, an instance one the SOPInstanceUID only; anonymization always works
  at the patient level;
- PatientID, StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID cannot be
  removed, kept or replaced without `Force`, and the level's parent identifiers
  cannot be replaced at all without it;
- the order of operations: private tags, clearings, removals, replacements,
  UIDs, then (anonymization) the UIDs referenced inside sequences.

Over 400 lines because request parsing and its application share Orthanc's
rules (what needs `Force`, which UIDs a level maps) and are checked together.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomkeep.common.anonymization import (
    DEFAULT_VERSION,
    HIERARCHY_UIDS,
    PATIENT_ID,
    PATIENT_IDENTITY_REMOVED,
    PATIENT_NAME,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    Profile,
    basic_profile,
)
from dicomkeep.common.dicom.orthanc_json import parse_tag
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

#: The four identifiers behind Orthanc's IDs (IsDatabaseKey).
DATABASE_KEYS = frozenset({PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})
_PATH_ITEM = re.compile(r"^(?P<tag>[^\[\]]+)\[(?P<index>\*|[0-9]+)\]$")
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
#: The VRs Orthanc's tag visitor hands over as strings (VisitString).
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_UID_TAGS_BY_LEVEL = {
    Level.STUDY: STUDY_INSTANCE_UID,
    Level.SERIES: SERIES_INSTANCE_UID,
    Level.INSTANCE: SOP_INSTANCE_UID,
}


@dataclass(frozen=True)
class TagPath:
    """A tag, possibly inside sequences: `prefix` holds (sequence tag, item index or None=*)."""

    prefix: tuple[tuple[int, int | None], ...]
    tag: int


def parse_path(text: str) -> TagPath:
    """Parse `PatientName`, `0010,0010` or `Seq[0].Other[*].Tag` (Orthanc's DicomPath).

    Raises OrthancError *Unknown DICOM tag* (500, as Orthanc) for a name no
    dictionary knows.
    """
    parts = text.strip().split(".")
    prefix: list[tuple[int, int | None]] = []
    for part in parts[:-1]:
        match = _PATH_ITEM.match(part.strip())
        if match is None:
            raise OrthancError(ErrorCode.BAD_REQUEST, f"Cannot parse this DICOM path: {text}")
        index = match.group("index")
        prefix.append((_tag(match.group("tag")), None if index == "*" else int(index)))
    return TagPath(tuple(prefix), _tag(parts[-1]))


def _tag(name: str) -> int:
    try:
        return parse_tag(name.strip())
    except KeyError as error:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from error


def _is_private(tag: int) -> bool:
    return bool((tag >> 16) & 1)


def _new_patient_identifier() -> str:
    return str(uuid.uuid4())


@dataclass
class Modification:
    """One modification or anonymization, with the UID map it builds while applied."""

    level: Level
    is_anonymization: bool = False
    removals: set[int] = field(default_factory=set)
    clearings: set[int] = field(default_factory=set)
    replacements: dict[int, Any] = field(default_factory=dict)
    keep: set[int] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    remove_private_tags: bool = False
    private_tags_to_keep: set[int] = field(default_factory=set)
    private_creator: str = ""
    profile: Profile | None = None
    removed_paths: list[TagPath] = field(default_factory=list)
    replaced_paths: list[tuple[TagPath, Any]] = field(default_factory=list)
    kept_paths: list[TagPath] = field(default_factory=list)
    uid_map: dict[tuple[Level, str], str] = field(default_factory=dict)
    new_identifier: Callable[[Level], str] | None = None

    # -- building ------------------------------------------------------------------
    def remove(self, path: TagPath) -> None:
        """Mark a tag (or a path in sequences) for removal."""
        if path.prefix:
            self.removed_paths.append(path)
            return
        self.removals.add(path.tag)
        self.clearings.discard(path.tag)
        self.uids.discard(path.tag)
        self.replacements.pop(path.tag, None)
        self.private_tags_to_keep.discard(path.tag)

    def replace(self, path: TagPath, value: Any) -> None:
        """Mark a tag (or a path in sequences) to be set to a JSON value."""
        if path.prefix:
            self.replaced_paths.append((path, value))
            return
        self.clearings.discard(path.tag)
        self.removals.discard(path.tag)
        self.uids.discard(path.tag)
        self.private_tags_to_keep.discard(path.tag)
        self.replacements[path.tag] = value

    def replace_tag(self, tag: int, value: Any) -> None:
        """Mark a top-level tag to be set to a JSON value."""
        self.replace(TagPath((), tag), value)

    def keep_tag(self, path: TagPath) -> None:
        """Mark a tag as kept unchanged (for the hierarchy UIDs: not regenerated)."""
        self.kept_paths.append(path)
        if path.prefix:
            return
        self.keep.add(path.tag)
        self.removals.discard(path.tag)
        self.clearings.discard(path.tag)
        self.uids.discard(path.tag)
        self.replacements.pop(path.tag, None)
        if _is_private(path.tag):
            self.private_tags_to_keep.add(path.tag)

    def is_removed(self, tag: int) -> bool:
        """Tell whether a tag is removed (explicitly, or by the anonymization profile)."""
        if tag in self.removals:
            return True
        return (
            self.profile is not None
            and tag not in self.keep
            and tag not in self.replacements
            and tag not in self.clearings
            and tag not in self.uids
            and self.profile.is_removed(tag)
        )

    def is_manual(self, tag: int) -> bool:
        """Tell whether the request itself removes, clears or replaces a tag."""
        return tag in self.replacements or tag in self.clearings or self.is_removed(tag)

    # -- applying ------------------------------------------------------------------
    def map_identifier(self, original: str, level: Level) -> str:
        """Return the new identifier of an original one, the same one every time."""
        key = (level, original.strip(" \x00"))
        mapped = self.uid_map.get(key)
        if mapped is None:
            if self.new_identifier is not None:
                mapped = self.new_identifier(level)
            elif level is Level.PATIENT:
                mapped = _new_patient_identifier()
            else:
                mapped = generate_uid(prefix=None)
            self.uid_map[key] = mapped
        return mapped

    def apply(self, ds: Dataset) -> None:
        """Modify one dataset in place (its file meta follows the new SOPInstanceUID).

        Raises OrthancError *Bad request* when a replacement value cannot be
        written (wrong JSON type or a number that does not parse).
        """
        if self.is_anonymization:
            for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID):
                if tag in self.replacements and tag in ds:
                    level = _level_of_uid(tag)
                    self.uid_map.setdefault(
                        (level, str(ds[tag].value).strip(" \x00")), str(self.replacements[tag])
                    )
        if self.remove_private_tags:
            for element in list(ds):
                if _is_private(element.tag) and element.tag not in self.private_tags_to_keep:
                    del ds[element.tag]
        for tag in self.clearings:
            if tag in ds:
                _clear(ds, tag)
        for element in list(ds):
            if self.is_removed(element.tag):
                del ds[element.tag]
        for tag in self.removals:
            if tag in ds:
                del ds[tag]
        for tag, value in self.replacements.items():
            set_json_value(ds, tag, value, self.private_creator)
        for level, tag in _UID_TAGS_BY_LEVEL.items():
            if level.depth >= self.level.depth or level is Level.INSTANCE:
                if tag not in self.replacements and tag not in self.keep:
                    original = str(ds[tag].value) if tag in ds else ""
                    ds[tag] = DataElement(tag, "UI", self.map_identifier(original, level))
        if self.is_anonymization:
            self._map_relationships(ds, top_level=True)
        for path in self.removed_paths:
            _walk_path(ds, path, _remove_from)
        for path, value in self.replaced_paths:
            _walk_path(ds, path, _setter(value, self.private_creator))
        file_meta = getattr(ds, "file_meta", None)
        if file_meta is not None and SOP_INSTANCE_UID in ds:
            file_meta.MediaStorageSOPInstanceUID = ds[SOP_INSTANCE_UID].value

    def _map_relationships(self, ds: Dataset, *, top_level: bool) -> None:
        """Map UIDs everywhere (Orthanc's RelationshipsVisitor), and within sequences
        remove private/removed tags and empty cleared ones."""
        for element in list(ds):
            tag = element.tag
            if not top_level:
                if self.remove_private_tags and _is_private(tag):
                    del ds[tag]
                    continue
                if self.is_removed(tag):
                    del ds[tag]
                    continue
                if tag in self.clearings:
                    # Orthanc's visitor empties a cleared string in a sequence and
                    # removes any other cleared element (GetDefaultAction).
                    if element.VR in _STRING_VRS:
                        _clear(ds, tag)
                    else:
                        del ds[tag]
                    continue
            if element.VR == "SQ":
                for item in element.value or []:
                    self._map_relationships(item, top_level=False)
                continue
            if top_level:
                if tag in self.uids and not self.is_manual(tag):
                    element.value = self._mapped(element.value, _identifier_level(tag))
                continue
            if tag in HIERARCHY_UIDS:
                element.value = self._mapped(element.value, _level_of_uid(tag))
            elif tag in self.uids:
                element.value = self._mapped(element.value, _identifier_level(tag))

    def _mapped(self, value: Any, level: Level) -> Any:
        """Map one value or each of several values (Orthanc's MapDicomIdentifier)."""
        if value is None or value == "":
            return self.map_identifier("", level)  # Orthanc maps an empty identifier too
        if isinstance(value, str):
            return self.map_identifier(value, level)
        try:
            return [self.map_identifier(str(item), level) for item in value]
        except TypeError:
            return self.map_identifier(str(value), level)


def _level_of_uid(tag: int) -> Level:
    return {
        STUDY_INSTANCE_UID: Level.STUDY,
        SERIES_INSTANCE_UID: Level.SERIES,
        SOP_INSTANCE_UID: Level.INSTANCE,
    }[tag]


def _identifier_level(tag: int) -> Level:
    """PatientID and PatientName map as patient identifiers, other UIDs as instance ones."""
    return Level.PATIENT if tag in (PATIENT_ID, PATIENT_NAME) else Level.INSTANCE


def _remove_from(ds: Dataset, tag: int) -> None:
    if tag in ds:
        del ds[tag]


def _setter(value: Any, private_creator: str) -> Callable[[Dataset, int], None]:
    def set_value(ds: Dataset, tag: int) -> None:
        set_json_value(ds, tag, value, private_creator)

    return set_value


def _clear(ds: Dataset, tag: int) -> None:
    element = ds[tag]
    element.value = [] if element.VR == "SQ" else None


def _walk_path(ds: Dataset, path: TagPath, action: Callable[[Dataset, int], object]) -> None:
    """Run `action(dataset, tag)` on every dataset the path's prefix leads to."""
    targets = [ds]
    for sequence_tag, index in path.prefix:
        following: list[Dataset] = []
        for target in targets:
            if sequence_tag not in target or target[sequence_tag].VR != "SQ":
                continue
            items = list(target[sequence_tag].value or [])
            if index is None:
                following.extend(items)
            elif index < len(items):
                following.append(items[index])
        targets = following
    for target in targets:
        action(target, path.tag)


def _element_vr(ds: Dataset, tag: int, private_creator: str) -> str:
    if tag in ds:
        return str(ds[tag].VR)
    if _is_private(tag):
        if private_creator:
            try:
                return str(private_dictionary_VR(tag, private_creator)).split(" ")[0]
            except KeyError:
                pass
        return "UN"
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError as error:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from error


def decode_data_uri(text: str) -> tuple[str, bytes] | None:
    """Return (MIME type, content) of a base64 `data:` URI, None if the text is not one."""
    match = re.match(r"^data:([^;,]*)(?:;[^;,]*)*;base64,(.*)$", text, re.DOTALL)
    if match is None:
        return None
    try:
        return match.group(1), base64.b64decode(match.group(2), validate=False)
    except (binascii.Error, ValueError):
        return None


def set_json_value(ds: Dataset, tag: int, value: Any, private_creator: str = "") -> None:
    """Insert or replace one element from a JSON value (Orthanc's FromJson)."""
    vr = _element_vr(ds, tag, private_creator)
    if isinstance(value, list):
        if vr not in ("SQ", "UN"):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Tag {tag:08x} is not a sequence")
        items = Sequence([_json_item(item, private_creator) for item in value])
        ds[tag] = DataElement(tag, "SQ", items)
        return
    if not isinstance(value, str):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad JSON value for tag {tag:08x}")
    decoded = decode_data_uri(value) if value.startswith("data:") else None
    if vr in _BINARY_VRS:
        content = decoded[1] if decoded else value.encode("utf-8")
        if len(content) % 2:
            content += b"\x00"
        ds[tag] = DataElement(tag, vr, content)
        return
    text = decoded[1].decode("latin-1") if decoded else value
    converted: Any = text
    try:
        if vr in _INT_VRS:
            numbers = [int(part) for part in text.split("\\") if part.strip()]
            converted = numbers[0] if len(numbers) == 1 else numbers
        elif vr in _FLOAT_VRS:
            floats = [float(part) for part in text.split("\\") if part.strip()]
            converted = floats[0] if len(floats) == 1 else floats
        elif vr == "AT":
            converted = parse_tag(text)
        elif vr == "SQ":
            raise ValueError("a sequence needs an array")
    except (ValueError, KeyError) as error:
        raise OrthancError(
            ErrorCode.BAD_PARAMETER_TYPE, f"Cannot convert {text!r} to the VR {vr} of tag {tag:08x}"
        ) from error
    ds[tag] = DataElement(tag, vr, converted)


def _json_item(item: Any, private_creator: str) -> Dataset:
    if not isinstance(item, Mapping):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "A sequence item must be a JSON object")
    dataset = Dataset()
    for name, value in item.items():
        set_json_value(dataset, _tag(str(name)), value, private_creator)
    return dataset


# -- request bodies ----------------------------------------------------------------------
def boolean_member(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """Read an optional Boolean member; anything else -> 400 *Bad file format* (Orthanc)."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f'Member "{name}" should be a Boolean value')
    return value


def _list_of_tags(
    body: Mapping[str, Any], name: str, force: bool, verb: str
) -> list[tuple[str, TagPath]]:
    names = body.get(name, [])
    if not isinstance(names, list) or not all(isinstance(item, str) for item in names):
        raise OrthancError(ErrorCode.BAD_REQUEST)
    paths = [(item, parse_path(item)) for item in names]
    for item, path in paths:
        if not path.prefix and not force and path.tag in DATABASE_KEYS:
            raise OrthancError(
                ErrorCode.BAD_REQUEST,
                f'Marking tag "{item}" as to be {verb} requires the "Force" option to be set to true',
            )
    return paths


def _parse_common(modification: Modification, body: Mapping[str, Any], force: bool) -> None:
    for _, path in _list_of_tags(body, "Remove", force, "removed"):
        modification.remove(path)
    replacements = body.get("Replace", {})
    if not isinstance(replacements, dict):
        raise OrthancError(ErrorCode.BAD_REQUEST)
    for name, value in replacements.items():
        path = parse_path(name)
        if not path.prefix and not force and path.tag in DATABASE_KEYS:
            raise OrthancError(
                ErrorCode.BAD_REQUEST,
                f'Marking tag "{name}" as to be replaced requires the "Force" option to be set to true',
            )
        modification.replace(path, value)
    for _, path in _list_of_tags(body, "Keep", force, "kept"):
        modification.keep_tag(path)
    if "PrivateCreator" in body:
        creator = body["PrivateCreator"]
        if not isinstance(creator, str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Member "PrivateCreator" should be a string')
        modification.private_creator = creator
    for tag in HIERARCHY_UIDS | {PATIENT_ID}:
        if tag in modification.removals:
            raise OrthancError(
                ErrorCode.BAD_REQUEST, "It is forbidden to remove one of the main Dicom identifiers"
            )


_PARENT_CHECKS = {
    Level.STUDY: ((PATIENT_ID, "When modifying a study, the parent PatientID cannot be manually modified"),),
    Level.SERIES: (
        (PATIENT_ID, "When modifying a series, the parent PatientID cannot be manually modified"),
        (STUDY_INSTANCE_UID, "When modifying a series, the parent StudyInstanceUID cannot be manually modified"),
    ),
    Level.INSTANCE: (
        (PATIENT_ID, "When modifying an instance, the parent PatientID cannot be manually modified"),
        (STUDY_INSTANCE_UID, "When modifying an instance, the parent StudyInstanceUID cannot be manually modified"),
        (SERIES_INSTANCE_UID, "When modifying an instance, the parent SeriesInstanceUID cannot be manually modified"),
    ),
}  # fmt: skip


def parse_modify_request(body: Any, level: Level) -> Modification:
    """Read the body of `POST /{level}/{id}/modify` (and `/tools/bulk-modify`).

    Raises OrthancError with Orthanc's codes and messages: body not an object ->
    *Bad file format*; wrong member types -> *Bad request* / *Bad file format*;
    unknown tag name -> *Unknown DICOM tag*; a database identifier touched
    without `Force`, or a patient modified without a new PatientID -> *Bad request*.
    """
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    force = boolean_member(body, "Force", False)
    modification = Modification(level=level)
    modification.remove_private_tags = boolean_member(body, "RemovePrivateTags", False)
    _parse_common(modification, body, force)
    if not force:
        patient_replaced = PATIENT_ID in modification.replacements
        if level is Level.PATIENT and not patient_replaced:
            raise OrthancError(
                ErrorCode.BAD_REQUEST,
                "When modifying a patient, her PatientID is required to be modified",
            )
        for tag, message in _PARENT_CHECKS.get(level, ()):
            if tag in modification.replacements:
                raise OrthancError(ErrorCode.BAD_REQUEST, message)
    return modification


def parse_anonymize_request(body: Any) -> tuple[Modification, bool]:
    """Read the body of `POST /{level}/{id}/anonymize` (and `/tools/bulk-anonymize`).

    Returns the modification and whether the request set PatientName itself (else
    the caller names the patient, as Orthanc's "Anonymized<N>"). Errors as
    `parse_modify_request`; an unknown `DicomVersion` -> *Parameter out of range*.
    """
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    force = boolean_member(body, "Force", False)
    version = body.get("DicomVersion", DEFAULT_VERSION)
    if not isinstance(version, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    profile = basic_profile(version)
    modification = Modification(
        level=Level.PATIENT,
        is_anonymization=True,
        clearings=set(profile.clearings),
        uids=set(profile.uids) | {PATIENT_ID, PATIENT_NAME},
        remove_private_tags=True,
        profile=profile,
    )
    modification.replacements[0x00120063] = profile.method
    modification.replacements[PATIENT_IDENTITY_REMOVED] = "YES"
    if boolean_member(body, "KeepPrivateTags", False):
        modification.remove_private_tags = False
    _parse_common(modification, body, force)
    name_overridden = PATIENT_NAME not in modification.uids
    return modification, name_overridden
