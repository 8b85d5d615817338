"""Orthanc's enumerations, declared once with Orthanc's numbers and names.

Mirrors `OrthancFramework/Sources/Enumerations.h` and `OrthancServer/Sources/
ServerEnumerations.h` of Orthanc 1.12: the numbers are the ones Orthanc keeps in
its database and plugins see, the names the ones its REST API shows. Every module
that needs a metadata key, an attachment content type, a compression type or a
DIMSE status takes it from here. Change types (`ChangeType`) live in `events`,
beside the change messages that carry them; levels are `ids.Level`.
"""

from __future__ import annotations

from enum import IntEnum


class MetadataType(IntEnum):
    """The core metadata keys (Orthanc's MetadataType); user keys are 1024..65535."""

    INDEX_IN_SERIES = 1
    RECEPTION_DATE = 2
    REMOTE_AET = 3
    EXPECTED_NUMBER_OF_INSTANCES = 4
    MODIFIED_FROM = 5
    ANONYMIZED_FROM = 6
    LAST_UPDATE = 7
    ORIGIN = 8
    TRANSFER_SYNTAX = 9
    SOP_CLASS_UID = 10
    REMOTE_IP = 11
    CALLED_AET = 12
    HTTP_USERNAME = 13
    PIXEL_DATA_OFFSET = 14
    MAIN_DICOM_TAGS_SIGNATURE = 15
    MAIN_DICOM_SEQUENCES = 16
    PIXEL_DATA_VR = 17

    @property
    def orthanc_name(self) -> str:
        """Return the name Orthanc's REST API uses for this key (`ReceptionDate`)."""
        return _METADATA_NAMES[self]


_METADATA_NAMES: dict[MetadataType, str] = {
    MetadataType.INDEX_IN_SERIES: "IndexInSeries",
    MetadataType.RECEPTION_DATE: "ReceptionDate",
    MetadataType.REMOTE_AET: "RemoteAET",
    MetadataType.EXPECTED_NUMBER_OF_INSTANCES: "ExpectedNumberOfInstances",
    MetadataType.MODIFIED_FROM: "ModifiedFrom",
    MetadataType.ANONYMIZED_FROM: "AnonymizedFrom",
    MetadataType.LAST_UPDATE: "LastUpdate",
    MetadataType.ORIGIN: "Origin",
    MetadataType.TRANSFER_SYNTAX: "TransferSyntax",
    MetadataType.SOP_CLASS_UID: "SopClassUid",
    MetadataType.REMOTE_IP: "RemoteIP",
    MetadataType.CALLED_AET: "CalledAET",
    MetadataType.HTTP_USERNAME: "HttpUsername",
    MetadataType.PIXEL_DATA_OFFSET: "PixelDataOffset",
    MetadataType.MAIN_DICOM_TAGS_SIGNATURE: "MainDicomTagsSignature",
    MetadataType.MAIN_DICOM_SEQUENCES: "MainDicomSequences",
    MetadataType.PIXEL_DATA_VR: "PixelDataVR",
}

#: Core metadata by Orthanc name (`"ReceptionDate" -> MetadataType.RECEPTION_DATE`).
CORE_METADATA: dict[str, MetadataType] = {name: key for key, name in _METADATA_NAMES.items()}
#: The range of user metadata keys (Orthanc's MetadataType_StartUser..EndUser).
FIRST_USER_METADATA = 1024
LAST_USER_METADATA = 65535


class FileContentType(IntEnum):
    """The core attachment types (Orthanc's FileContentType); user types are 1024..65535."""

    UNKNOWN = 0
    DICOM = 1
    DICOM_AS_JSON = 2
    DICOM_UNTIL_PIXEL_DATA = 3

    @property
    def orthanc_name(self) -> str:
        """Return the name Orthanc's REST API uses (`dicom-until-pixel-data`)."""
        return _CONTENT_NAMES[self]


_CONTENT_NAMES: dict[FileContentType, str] = {
    FileContentType.UNKNOWN: "unknown",
    FileContentType.DICOM: "dicom",
    FileContentType.DICOM_AS_JSON: "dicom-as-json",
    FileContentType.DICOM_UNTIL_PIXEL_DATA: "dicom-until-pixel-data",
}

#: Core attachments by REST name (`"dicom" -> FileContentType.DICOM`); `unknown` is no name.
CORE_CONTENT_TYPES: dict[str, FileContentType] = {
    name: kind for kind, name in _CONTENT_NAMES.items() if kind is not FileContentType.UNKNOWN
}
#: The range of user content types (Orthanc's FileContentType_StartUser..EndUser).
FIRST_USER_CONTENT_TYPE = 1024
LAST_USER_CONTENT_TYPE = 65535


class CompressionType(IntEnum):
    """How an attachment is stored (Orthanc's CompressionType, as kept in its index)."""

    NONE = 0
    #: Orthanc's "zlib with size": the uncompressed size as 8 bytes little-endian, then zlib.
    ZLIB_WITH_SIZE = 1


class DimseStatus(IntEnum):
    """The DIMSE status codes DicomKeep sends or tests (PS3.7 Annex C, PS3.4 Annexes B, C).

    Some codes mean different things to different services (0xC000 is "cannot
    understand" to a C-STORE and "unable to process" to a C-FIND): both names
    are given, as aliases of one value.
    """

    SUCCESS = 0x0000
    #: C-FIND/C-MOVE/C-GET: a match or sub-operation report follows.
    PENDING = 0xFF00
    #: C-FIND: pending, with optional keys the SCP does not support.
    PENDING_WARNING = 0xFF01
    #: C-FIND matching or C-MOVE/C-GET sub-operations ended by a C-CANCEL.
    CANCEL = 0xFE00
    #: C-MOVE/C-GET: sub-operations complete, one or more failures or warnings.
    WARNING = 0xB000
    #: C-STORE: refused, out of resources (Orthanc's answer to a full storage).
    OUT_OF_RESOURCES = 0xA700
    #: C-MOVE/C-GET: out of resources, unable to perform sub-operations.
    SUB_OPERATIONS_FAILED = 0xA702
    #: C-MOVE: move destination unknown.
    MOVE_DESTINATION_UNKNOWN = 0xA801
    #: C-FIND/C-MOVE: identifier does not match SOP class.
    IDENTIFIER_DOES_NOT_MATCH = 0xA900
    #: C-STORE: error, cannot understand (an unparsable dataset).
    CANNOT_UNDERSTAND = 0xC000
    #: C-FIND/C-MOVE/C-GET: unable to process (same code as CANNOT_UNDERSTAND).
    UNABLE_TO_PROCESS = 0xC000
    #: General failure: processing failure.
    PROCESSING_FAILURE = 0x0110
    #: General failure: SOP class not supported.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: General failure: refused, not authorized.
    NOT_AUTHORIZED = 0x0124

    @staticmethod
    def is_stored(status: int) -> bool:
        """Tell whether a C-STORE status means the peer kept the instance (success or 0xBxxx)."""
        return status == DimseStatus.SUCCESS or status & 0xF000 == DimseStatus.WARNING
