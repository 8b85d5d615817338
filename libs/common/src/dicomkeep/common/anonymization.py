"""The basic profiles of DICOM PS3.15 Table E.1-1, applied as Orthanc 1.12 does.

Orthanc knows four editions of the table (`DicomVersion`: 2008, 2017c, 2021b and
the default 2023b); each one ships here as data, `anonymization_profiles/<version>.json`,
transcribed from Orthanc 1.12.4's sources (OrthancFramework/Sources/DicomParsing:
DicomModification.cpp SetupAnonymization2008(), and the generated
DicomModification_Anonymization<version>.impl.h files), with Orthanc's own sets:
- `Remove` -> the tag is removed;
- `Clear` -> the tag is emptied, when present (Orthanc "clears" rather than
  inventing dummy values);
- `MapUid` -> the UID is replaced by a new one, the same new one for every
  occurrence of the same original UID within the anonymized resource, inside
  sequences too;
- `RemoveRanges` -> repeating groups the table lists as X (curve data 50xx,
  overlay data and comments 60xx).
Referenced Image Sequence and Source Image Sequence (X/Z/U*) are kept with the
UIDs inside them mapped. Orthanc applies the ranges inside sequences only (its
IsRemoved(), never consulted for first-level tags); DicomKeep removes them at
the first level too, as the standard says (docs/rest.md).
PatientID and PatientName get new values; StudyInstanceUID, SeriesInstanceUID
and SOPInstanceUID are mapped by the modification itself (modification.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from dicomkeep.common.errors import ErrorCode, OrthancError

#: The DicomVersion Orthanc 1.12 applies when the request names none.
DEFAULT_VERSION = "2023b"
#: DicomVersion values Orthanc 1.12 knows, each shipped as a table.
ORTHANC_VERSIONS = ("2008", "2017c", "2021b", "2023b")

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
DEIDENTIFICATION_METHOD = 0x00120063
PATIENT_IDENTITY_REMOVED = 0x00120062
#: UIDs the modification maps itself, level by level.
HIERARCHY_UIDS = frozenset({STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})
#: The two X/Z/U* sequences: kept, their inner UIDs mapped.
RELATIONSHIP_SEQUENCES = frozenset({0x00081140, 0x00082112})


@dataclass(frozen=True)
class TagRange:
    """Tags whose group and element both fall within bounds (Orthanc's DicomTagRange)."""

    group_from: int
    group_to: int
    element_from: int
    element_to: int

    def __contains__(self, tag: object) -> bool:
        if not isinstance(tag, int):
            return False
        group, element = tag >> 16, tag & 0xFFFF
        return self.group_from <= group <= self.group_to and self.element_from <= element <= self.element_to


@dataclass(frozen=True)
class Profile:
    """What a basic profile does to a dataset: tags removed, emptied, UIDs mapped."""

    version: str
    removals: frozenset[int]
    clearings: frozenset[int]
    uids: frozenset[int]
    removed_ranges: tuple[TagRange, ...] = ()
    #: The table's name in the DeidentificationMethod, as Orthanc writes it.
    table: str = ""

    def is_removed(self, tag: int) -> bool:
        """Tell whether the profile removes a tag (listed, or in a removed repeating group)."""
        return tag in self.removals or any(tag in span for span in self.removed_ranges)

    @property
    def method(self) -> str:
        """The DeidentificationMethod (0012,0063) value written into anonymized files."""
        return f"DicomKeep - {self.table}"


def _tag(text: str) -> int:
    group, element = text.split(",")
    return int(group, 16) << 16 | int(element, 16)


def _range(entry: dict[str, Any]) -> TagRange:
    groups, elements = entry["Groups"], entry["Elements"]
    return TagRange(int(groups[0], 16), int(groups[1], 16), int(elements[0], 16), int(elements[1], 16))


@lru_cache(maxsize=len(ORTHANC_VERSIONS))
def basic_profile(version: str = DEFAULT_VERSION) -> Profile:
    """Return the basic profile of a DicomVersion, read from the package's tables.

    Raises OrthancError *Parameter out of range* for a version Orthanc does not
    know, with Orthanc's message (StringToDicomVersion).
    """
    if version not in ORTHANC_VERSIONS:
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            f"Unknown specific version of the DICOM standard: {version}",
        )
    source = resources.files("dicomkeep.common") / "anonymization_profiles" / f"{version}.json"
    table = json.loads(source.read_text(encoding="utf-8"))
    special = {PATIENT_NAME, PATIENT_ID} | HIERARCHY_UIDS | RELATIONSHIP_SEQUENCES
    return Profile(
        version=version,
        removals=frozenset(_tag(text) for text in table["Remove"]) - special,
        clearings=frozenset(_tag(text) for text in table["Clear"]) - special,
        uids=frozenset(_tag(text) for text in table["MapUid"]) - special,
        removed_ranges=tuple(_range(entry) for entry in table["RemoveRanges"]),
        table=table["DeidentificationMethod"],
    )
