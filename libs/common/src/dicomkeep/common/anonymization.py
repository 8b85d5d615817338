"""The basic profile of DICOM PS3.15 Annex E (Table E.1-1), applied as Orthanc does.

The table itself comes from the `dicom-anonymizer` package (its 2023 edition of
the standard's table). Orthanc turns the table's action codes into three sets
(OrthancFramework DicomModification::SetupAnonymization2023b), and so does this
module:
- every code that allows removal (X, X/Z, X/D, X/Z/D) -> the tag is removed;
- Z, D and Z/D -> the tag is emptied, when present (Orthanc "clears" rather than
  inventing dummy values);
- U -> the UID is replaced by a new one, the same new one for every occurrence
  of the same original UID within the anonymized resource, inside sequences too;
- X/Z/U* (Referenced Image Sequence, Source Image Sequence) -> kept, with the
  UIDs inside them mapped.
Repeating groups the table lists as X (curve data 50xx, overlay data and comments
60xx) are removed too: Orthanc leaves them (a TODO in its table), DicomKeep
follows the standard there.
PatientID and PatientName get new values; StudyInstanceUID, SeriesInstanceUID
and SOPInstanceUID are mapped by the modification itself (modification.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from dicomkeep.common.errors import ErrorCode, OrthancError
from pydicom.datadict import dictionary_VR

#: The DicomVersion Orthanc 1.12 applies when the request names none.
DEFAULT_VERSION = "2023b"
#: DicomVersion values Orthanc knows; DicomKeep implements only the 2023 table.
ORTHANC_VERSIONS = ("2008", "2017c", "2021b", "2023b")
_TABLES = {"2023b": "dicomfields_2023"}

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
class Profile:
    """What the basic profile does to a dataset: tags removed, emptied, UIDs mapped."""

    version: str
    removals: frozenset[int]
    clearings: frozenset[int]
    uids: frozenset[int]
    #: (value, mask) pairs of repeating-group tags to remove: tag & mask == value.
    removed_masks: tuple[tuple[int, int], ...] = ()

    def is_removed(self, tag: int) -> bool:
        """Tell whether the profile removes a tag (listed, or in a removed repeating group)."""
        return tag in self.removals or any(tag & mask == value for value, mask in self.removed_masks)

    @property
    def method(self) -> str:
        """The DeidentificationMethod (0012,0063) value written into anonymized files."""
        return f"DicomKeep - PS 3.15-{self.version} Table E.1-1 Basic Profile"


def _tags(entries: list[tuple[int, ...]]) -> set[int]:
    return {entry[0] << 16 | entry[1] for entry in entries if len(entry) == 2}


def _masks(entries: list[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    """Return the (value, mask) pairs of `(group, element, group mask, element mask)` entries."""
    return tuple(
        (entry[0] << 16 | entry[1], entry[2] << 16 | entry[3]) for entry in entries if len(entry) == 4
    )


def _is_uid(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "UI"
    except KeyError:
        return False


@lru_cache(maxsize=4)
def basic_profile(version: str = DEFAULT_VERSION) -> Profile:
    """Return the basic profile of a DicomVersion.

    Raises OrthancError *Parameter out of range* for a version Orthanc does not
    know (Orthanc's message), and *Bad request* for one Orthanc knows but
    DicomKeep does not implement (only the 2023 table ships with DicomKeep).
    """
    if version not in ORTHANC_VERSIONS:
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            f"Unknown specific version of the DICOM standard: {version}",
        )
    if version not in _TABLES:
        raise OrthancError(
            ErrorCode.BAD_REQUEST,
            f"DicomVersion {version} is not supported by DicomKeep: use "
            + ", ".join(sorted(_TABLES)),
        )
    table = dicom_anonymization_database_selector(_TABLES[version])
    removable = table["X_TAGS"] + table["X_Z_TAGS"] + table["X_D_TAGS"] + table["X_Z_D_TAGS"]
    removals = _tags(removable)
    clearings = _tags(table["D_TAGS"] + table["Z_TAGS"] + table["Z_D_TAGS"])
    uids: set[int] = set()
    for tag in _tags(table["U_TAGS"]):
        if tag >> 16 in (0x0000, 0x0002) or tag in HIERARCHY_UIDS:
            continue  # command/file-meta groups; the hierarchy is mapped level by level
        (uids if _is_uid(tag) else removals).add(tag)
    special = {PATIENT_NAME, PATIENT_ID} | HIERARCHY_UIDS | RELATIONSHIP_SEQUENCES
    return Profile(
        version=version,
        removals=frozenset(removals - special - uids),
        clearings=frozenset(clearings - special - uids - removals),
        uids=frozenset(uids),
        removed_masks=_masks(removable),
    )
