"""Read DICOM Part-10 files as Orthanc does on store (ORTHANC_API.md §1, §2.1, §2.3, §3).

`parse_instance` is on the hot path of every store: it validates the whole file
(see `dicom.parsing`), then decodes only the tags the index needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dicomkeep.common.dicom.parsing import (
    DEFAULT_ENCODINGS,
    MAXIMUM_TAG_LENGTH,
    DicomFile,
    Element,
    element_text,
    encodings_of,
    read_dicom,
)
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level, hierarchy_ids
from pydicom.datadict import tag_for_keyword

_INTEGER = re.compile(r"[+-]?[0-9]+")

_MAIN_TAG_KEYWORDS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: tuple(
        "PatientName PatientID PatientBirthDate PatientSex OtherPatientIDs".split()
    ),
    Level.STUDY: tuple(
        "StudyDate StudyTime AccessionNumber InstitutionName ReferringPhysicianName "
        "StudyDescription StudyInstanceUID StudyID RequestingPhysician "
        "RequestedProcedureDescription".split()
    ),
    Level.SERIES: tuple(
        "SeriesDate SeriesTime Modality Manufacturer StationName SeriesDescription "
        "OperatorsName ContrastBolusAgent BodyPartExamined SequenceName "
        "CardiacNumberOfImages ProtocolName AcquisitionDeviceProcessingDescription "
        "SeriesInstanceUID SeriesNumber ImageOrientationPatient NumberOfTemporalPositions "
        "ImagesInAcquisition PerformedProcedureStepDescription NumberOfSlices "
        "NumberOfTimeSlices SeriesType".split()
    ),
    Level.INSTANCE: tuple(
        "SOPInstanceUID InstanceCreationDate InstanceCreationTime AcquisitionNumber "
        "InstanceNumber ImagePositionPatient ImageOrientationPatient "
        "TemporalPositionIdentifier ImageComments NumberOfFrames ImageIndex".split()
    ),
}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"not a DICOM keyword: {keyword}")
    return tag


#: Orthanc's default main DICOM tags per level (ORTHANC_API.md §2.1), as (keyword, tag).
MAIN_DICOM_TAGS: dict[Level, tuple[tuple[str, int], ...]] = {
    level: tuple((keyword, _tag(keyword)) for keyword in keywords)
    for level, keywords in _MAIN_TAG_KEYWORDS.items()
}
_PATIENT_ID = _tag("PatientID")
_STUDY_UID = _tag("StudyInstanceUID")
_SERIES_UID = _tag("SeriesInstanceUID")
_SOP_UID = _tag("SOPInstanceUID")
_SOP_CLASS_UID = _tag("SOPClassUID")
_INSTANCE_NUMBER = _tag("InstanceNumber")
_IMAGE_INDEX = _tag("ImageIndex")
_EXPECTED_RULES = (
    (_tag("ImagesInAcquisition"), _tag("NumberOfTemporalPositions")),
    (_tag("NumberOfSlices"), _tag("NumberOfTimeSlices")),
    (_tag("CardiacNumberOfImages"),),
)


@dataclass(frozen=True)
class ParsedInstance:
    """What the store path needs from one DICOM instance (ORTHANC_API.md §1, §2.1, §2.3, §3)."""

    patient_uid: str
    study_uid: str
    series_uid: str
    sop_uid: str
    #: public IDs of the patient, study, series and instance.
    ids: tuple[str, str, str, str]
    #: keyword -> string per level; absent, binary and TooLong tags are omitted.
    main_tags: dict[Level, dict[str, str]]
    transfer_syntax: str
    sop_class_uid: str
    #: byte offset in the file of the top-level (7fe0,0010) tag; None if absent or deflated.
    pixel_data_offset: int | None
    index_in_series: int | None
    expected_instances: int | None


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse a DICOM Part-10 file into what the index stores for it.

    Mirrors Orthanc's store path: the whole file is validated (truncated or
    malformed -> BAD_FILE_FORMAT, empty -> BAD_FILE_FORMAT `Received an empty DICOM
    file`); StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID absent or
    empty -> BAD_FILE_FORMAT `missing StudyInstanceUID, SeriesInstanceUID or
    SOPInstanceUID` (Orthanc 1.12's 400; 1.10.1 answered 404 *Inexistent tag*
    for an absent one). Missing PatientID hashes
    as "". Values are decoded with the Specific Character Set and lose their
    trailing padding (leading spaces are kept); a known string tag stored with VR UN
    keeps its raw ASCII bytes, padding included, as DCMTK gives them to Orthanc.
    Main tags follow Orthanc's summary: strings of at most 256 UTF-8 bytes.
    IndexInSeries = InstanceNumber (spaces stripped) if the tag is present, else
    ImageIndex; ExpectedNumberOfInstances per §2.3, kept only if > 0.
    """
    dicom = read_dicom(data)
    top = {element.tag: element for element in dicom.dataset}
    encodings = encodings_of(dicom, dicom.dataset, DEFAULT_ENCODINGS)

    def summary(tag: int) -> str | None:
        element = top.get(tag)
        if element is None:
            return None
        text = element_text(dicom, element, encodings)
        if text is None or len(text.encode("utf-8")) > MAXIMUM_TAG_LENGTH:
            return None
        return text

    uids = [
        _full_text(dicom, top[tag], encodings) if tag in top else ""
        for tag in (_STUDY_UID, _SERIES_UID, _SOP_UID)
    ]
    if not all(uids):
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT,
            "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID",
        )
    patient = top.get(_PATIENT_ID)
    patient_uid = "" if patient is None else _full_text(dicom, patient, encodings)
    main_tags: dict[Level, dict[str, str]] = {}
    for level, tags in MAIN_DICOM_TAGS.items():
        values = main_tags[level] = {}
        for keyword, tag in tags:
            text = summary(tag)
            if text is not None:
                values[keyword] = text
    index_tag = _INSTANCE_NUMBER if _INSTANCE_NUMBER in top else _IMAGE_INDEX
    index_text = summary(index_tag)
    index = None if index_text is None else _integer(index_text.strip(), 32)
    return ParsedInstance(
        patient_uid=patient_uid,
        study_uid=uids[0],
        series_uid=uids[1],
        sop_uid=uids[2],
        ids=hierarchy_ids(patient_uid, uids[0], uids[1], uids[2]),
        main_tags=main_tags,
        transfer_syntax=dicom.transfer_syntax,
        sop_class_uid=summary(_SOP_CLASS_UID) or "",
        pixel_data_offset=dicom.pixel_data_offset,
        index_in_series=index,
        expected_instances=_expected_instances(summary),
    )


def _full_text(dicom: DicomFile, element: Element, encodings: Sequence[str]) -> str:
    return element_text(dicom, element, encodings) or ""


def _integer(text: str, bits: int) -> int | None:
    """Parse like boost::lexical_cast to a signed integer of `bits` bits; None if invalid."""
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    limit = 1 << (bits - 1)
    return value if -limit <= value < limit else None


def _expected_instances(summary: Callable[[int], str | None]) -> int | None:
    """Apply Orthanc's ComputeExpectedNumberOfInstances: the first rule whose tags all exist."""
    for rule in _EXPECTED_RULES:
        texts = [summary(tag) for tag in rule]
        if all(text is not None for text in texts):
            product = 1
            for text in texts:
                value = _integer(text or "", 64)
                if value is None:
                    return None
                product *= value
            return product if product > 0 else None
    return None


def dicom_prefix(data: bytes, parsed: ParsedInstance) -> bytes | None:
    """Return the file up to (not including) the pixel data element, or None without one.

    This is Orthanc's "DICOM until pixel data" attachment: enough to answer /tags.
    """
    if parsed.pixel_data_offset is None:
        return None
    return data[: parsed.pixel_data_offset]
