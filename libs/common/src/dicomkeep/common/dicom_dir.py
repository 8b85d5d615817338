"""The DICOMDIR of a media archive, built with pydicom's FileSet.

pydicom makes the directory records (PATIENT, STUDY, SERIES, then IMAGE, RT DOSE,
SR DOCUMENT... by SOP class) and encodes the record offsets. Orthanc names the
files of a media `IMAGES/IM0`, `IMAGES/IM1`... where pydicom's own layout is
`PT000000/ST000000/...`: each record keeps the File ID given here, and the
DICOMDIR is encoded without moving files (FileSet's `_write_dicomdir`, the step
of `FileSet.write` that does not touch the file system). Only each file's
header (up to the pixel data) is kept, on disk in FileSet's staging folder.
"""

from __future__ import annotations

import io
import logging

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.fileset import FileSet

log = logging.getLogger(__name__)

#: Type 1 attributes of the PATIENT/STUDY/SERIES/IMAGE records, with the value a
#: file without them gets in its record (the file itself is not changed).
_FILLERS = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "0",
    "Modality": "OT",
    "SeriesNumber": "0",
    "InstanceNumber": "0",
}

#: Extra keys of an extended DICOMDIR (Orthanc's `Extended`), per record type.
_EXTENDED = {
    "PATIENT": ("PatientBirthDate", "PatientSex"),
    "STUDY": ("StudyDescription", "ReferringPhysicianName"),
    "SERIES": ("SeriesDescription", "SeriesDate", "SeriesTime", "BodyPartExamined"),
    "IMAGE": ("ImageType", "Rows", "Columns", "NumberOfFrames", "AcquisitionDate"),
}


class DicomDir:
    """Collect the files of a media, then encode their DICOMDIR."""

    def __init__(self, extended: bool = False) -> None:
        self.file_set = FileSet()
        self.extended = extended

    def add(self, data: bytes, file_id: list[str]) -> None:
        """Add a file stored at `file_id` (components, e.g. ["IMAGES", "IM0"]).

        A file pydicom cannot make a record for (no record type for its SOP
        class) is left out of the DICOMDIR, with a warning, but stays in the media.
        """
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        for keyword, value in _FILLERS.items():
            if keyword not in ds or ds[keyword].VM == 0:
                setattr(ds, keyword, value)
        try:
            instance = self.file_set.add(ds)
        except (ValueError, KeyError, AttributeError) as error:
            log.warning("file %s left out of the DICOMDIR: %s", "/".join(file_id), error)
            return
        node = instance.node
        node._record.ReferencedFileID = file_id
        if self.extended:
            while node is not None and not node.is_root:
                _extend(node._record, ds)
                node = node.parent

    def encode(self) -> bytes:
        """Return the DICOMDIR file (Explicit VR Little Endian)."""
        buffer = io.BytesIO()
        self.file_set._write_dicomdir(DicomFileLike(buffer))
        return buffer.getvalue()


def _extend(record: Dataset, ds: Dataset) -> None:
    for keyword in _EXTENDED.get(str(record.DirectoryRecordType), ()):
        if keyword in ds and keyword not in record:
            setattr(record, keyword, ds[keyword].value)
