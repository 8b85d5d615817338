"""What the index answers: resources, metadata values, pages of changes, statistics.

Plain frozen dataclasses returned by `dicomkeep.common.index.Index`; they carry
no database state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomkeep.common.events import AttachmentInfo, Change, RemainingAncestor
from dicomkeep.common.ids import Level


@dataclass(frozen=True)
class Resource:
    """One resource as the index knows it (the raw material of `GET /{level}/{id}`)."""

    level: Level
    public_id: str
    parent_id: str | None
    children: list[str]
    main_tags: dict[str, str]
    metadata: dict[int, str]
    is_protected: bool = False
    labels: list[str] = field(default_factory=list)
    # Only for studies: the patient tags copied at study creation.
    patient_main_tags: dict[str, str] | None = None
    # Only for instances: the DICOM attachment.
    dicom: AttachmentInfo | None = None
    # Patients, studies, series: False from a new instance until its Stable* change.
    is_stable: bool = True


@dataclass(frozen=True)
class UnstableResource:
    """A resource waiting for its Stable* change (ORTHANC_API.md §7)."""

    level: Level
    public_id: str
    touched_at: float  # UNIX time of its last new instance


@dataclass(frozen=True)
class MetadataValue:
    """A metadata value with its revision (ETag is `"<revision>-<md5(value)>"`)."""

    value: str
    revision: int


@dataclass(frozen=True)
class Expected:
    """An If-Match condition: the item must exist with this revision and MD5."""

    revision: int
    md5: str


@dataclass(frozen=True)
class ChangesPage:
    """An answer of `GET /changes`."""

    changes: list[Change]
    done: bool
    last: int


@dataclass(frozen=True)
class DeleteOutcome:
    """What `delete_resource` did."""

    remaining: RemainingAncestor | None
    deleted: list[tuple[Level, str]]


@dataclass(frozen=True)
class Statistics:
    """Counts and sizes for `/statistics` and `/{level}/{id}/statistics`."""

    count_patients: int = 0
    count_studies: int = 0
    count_series: int = 0
    count_instances: int = 0
    disk_size: int = 0
    uncompressed_size: int = 0
    dicom_disk_size: int = 0
    dicom_uncompressed_size: int = 0


@dataclass(frozen=True)
class InstanceFile:
    """An instance to send: its SOP class and transfer syntax (core metadata) and the
    row of its DICOM attachment (None if it has none)."""

    public_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    dicom: AttachmentInfo | None
