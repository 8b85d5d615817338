"""Orthanc identifiers and resource levels (ORTHANC_API.md §1)."""

from __future__ import annotations

import hashlib
from enum import Enum

from dicomkeep.common.errors import ErrorCode, OrthancError


class Level(str, Enum):
    """A level of the DICOM hierarchy, with Orthanc's spelling in JSON (`Type`)."""

    PATIENT = "Patient"
    STUDY = "Study"
    SERIES = "Series"
    INSTANCE = "Instance"

    @property
    def plural(self) -> str:
        """The URI segment: `patients`, `studies`, `series`, `instances`."""
        return _PLURALS[self]

    @property
    def depth(self) -> int:
        """0 for patients down to 3 for instances."""
        return _ORDER.index(self)

    @property
    def parent(self) -> Level | None:
        """The level above, or None for patients."""
        return _ORDER[self.depth - 1] if self.depth > 0 else None

    @property
    def child(self) -> Level | None:
        """The level below, or None for instances."""
        return _ORDER[self.depth + 1] if self.depth < 3 else None

    @classmethod
    def from_plural(cls, segment: str) -> Level:
        """Map a URI segment (`studies`) to its level; raise KeyError if unknown."""
        return _FROM_PLURAL[segment]

    @classmethod
    def parse(cls, text: str) -> Level:
        """Parse a `Level` field as Orthanc does: case-insensitive, singular or plural.

        Accepts Patient(s), Study/Studies, Series, Instance(s), Image(s); raises a
        400 *Parameter out of range* otherwise.
        """
        level = _LOOSE.get(text.strip().lower())
        if level is None:
            raise OrthancError(
                ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown resource type: {text}"
            )
        return level


_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]
_PLURALS = {
    Level.PATIENT: "patients",
    Level.STUDY: "studies",
    Level.SERIES: "series",
    Level.INSTANCE: "instances",
}
_FROM_PLURAL = {v: k for k, v in _PLURALS.items()}
_LOOSE = {
    "patient": Level.PATIENT,
    "patients": Level.PATIENT,
    "study": Level.STUDY,
    "studies": Level.STUDY,
    "series": Level.SERIES,
    "instance": Level.INSTANCE,
    "instances": Level.INSTANCE,
    "image": Level.INSTANCE,
    "images": Level.INSTANCE,
}


def orthanc_id(*parts: str) -> str:
    """Return Orthanc's identifier: the SHA-1 of the `|`-joined parts, as 5 groups of 8.

    Mirrors DicomInstanceHasher: the caller passes values already stripped of DICOM
    trailing padding (leading spaces are significant).
    """
    digest = hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def hierarchy_ids(
    patient_id: str, study_uid: str, series_uid: str, sop_uid: str
) -> tuple[str, str, str, str]:
    """Return the (patient, study, series, instance) public IDs of one instance."""
    return (
        orthanc_id(patient_id),
        orthanc_id(patient_id, study_uid),
        orthanc_id(patient_id, study_uid, series_uid),
        orthanc_id(patient_id, study_uid, series_uid, sop_uid),
    )


def resource_path(level: Level, public_id: str) -> str:
    """Return the REST path of a resource, e.g. `/studies/<id>`."""
    return f"/{level.plural}/{public_id}"
