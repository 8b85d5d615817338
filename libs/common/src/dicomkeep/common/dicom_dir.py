"""The DICOMDIR of a media archive, built with pydicom's FileSet.

The directory records are Orthanc's (DicomDirWriter, itself after DCMTK's
DicomDirInterface): PATIENT, STUDY, SERIES and one IMAGE record per file, whatever
its SOP class, with the same keys; pydicom's FileSet merges them into the tree
and encodes the record offsets. Orthanc names the files of a media `IMAGES/IM0`,
`IMAGES/IM1`... where pydicom's own layout is `PT000000/ST000000/...`: each record
keeps the File ID given here, and the DICOMDIR is encoded without moving files
(`FileSet._write_dicomdir`, the step of `FileSet.write` that leaves the file
system alone). Only each file's header (up to the pixel data) is kept, in
FileSet's staging folder on disk.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.fileset import FileSet, RecordNode

#: Orthanc's File-set ID.
FILE_SET_ID = "ORTHANC_MEDIA"


def _text(ds: Dataset, keyword: str) -> str | None:
    """Return a value, or None when the element is absent or empty."""
    if keyword not in ds or ds[keyword].VM == 0:
        return None
    return ds[keyword].value  # type: ignore[no-any-return]


def _copy(record: Dataset, ds: Dataset, keyword: str, *, optional: bool, copy_empty: bool) -> None:
    """Orthanc's CopyString: type 1 (always, empty if missing), 1C (only with a
    value), 2 (always) and 3 (when present, even empty)."""
    value = _text(ds, keyword)
    if optional and value is None and not (copy_empty and keyword in ds):
        return
    setattr(record, keyword, value if value is not None else "")


def _record(record_type: str) -> Dataset:
    record = Dataset()
    record.DirectoryRecordType = record_type
    return record


def _first(ds: Dataset, keywords: tuple[str, ...], default: str) -> str:
    """The first of `keywords` the file has, even empty (as Orthanc's FillStudy)."""
    for keyword in keywords:
        if keyword in ds:
            return str(ds[keyword].value or "")
    return default


def _nodes(ds: Dataset, extended: bool) -> RecordNode:
    """Return the IMAGE node of a file, its STUDY/SERIES/PATIENT ancestors set."""
    now = datetime.now(UTC)
    patient = _record("PATIENT")
    # Orthanc leaves a missing PatientID out; pydicom needs it to merge records.
    _copy(patient, ds, "PatientID", optional=False, copy_empty=False)
    _copy(patient, ds, "PatientName", optional=False, copy_empty=True)
    study = _record("STUDY")
    study.StudyDate = _first(
        ds, ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"), now.strftime("%Y%m%d")
    )
    study.StudyTime = _first(
        ds, ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"), now.strftime("%H%M%S")
    )
    _copy(study, ds, "StudyDescription", optional=False, copy_empty=True)
    _copy(study, ds, "StudyInstanceUID", optional=False, copy_empty=False)
    _copy(study, ds, "StudyID", optional=True, copy_empty=False)
    _copy(study, ds, "AccessionNumber", optional=False, copy_empty=True)
    series = _record("SERIES")
    _copy(series, ds, "Modality", optional=False, copy_empty=False)
    _copy(series, ds, "SeriesInstanceUID", optional=False, copy_empty=False)
    _copy(series, ds, "SeriesNumber", optional=True, copy_empty=False)
    if extended:  # Orthanc's "extended SOP class": type 3 keys DCMTK does not write
        _copy(series, ds, "SeriesDescription", optional=True, copy_empty=True)
    image = _record("IMAGE")
    _copy(image, ds, "InstanceNumber", optional=False, copy_empty=False)
    # The key of the node; add_custom sets it (and the other Referenced*) again.
    image.ReferencedSOPInstanceUIDInFile = ds.SOPInstanceUID
    nodes = [RecordNode(record) for record in (patient, study, series, image)]
    for record in (patient, study, series, image):
        _copy(record, ds, "SpecificCharacterSet", optional=True, copy_empty=False)
    for parent, child in zip(nodes, nodes[1:], strict=False):
        child.parent = parent
    return nodes[-1]


class DicomDir:
    """Collect the files of a media, then encode their DICOMDIR."""

    def __init__(self, extended: bool = False) -> None:
        self.file_set = FileSet()
        self.file_set.ID = FILE_SET_ID
        self.extended = extended

    def add(self, data: bytes, file_id: list[str]) -> None:
        """Add a file stored at `file_id` (components, e.g. ["IMAGES", "IM0"])."""
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        instance = self.file_set.add_custom(ds, _nodes(ds, self.extended))
        instance.node._record.ReferencedFileID = file_id

    def encode(self) -> bytes:
        """Return the DICOMDIR file (Explicit VR Little Endian)."""
        buffer = io.BytesIO()
        self.file_set._write_dicomdir(DicomFileLike(buffer))
        return buffer.getvalue()
