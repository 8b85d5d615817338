"""Send stored DICOM files with C-STORE as they are: no decoding, no re-encoding.

pynetdicom's `Association.send_c_store` takes a pydicom `Dataset` and encodes it
again for the accepted transfer syntax; for a stored file that is a full parse
and a full write per instance, the largest cost of a C-MOVE. A stored file
already holds its data set encoded in the transfer syntax of its file meta, so
when the peer accepted a presentation context with that very syntax, the bytes
after the meta go out unchanged (Orthanc's DicomStoreUserConnection does the
same). Otherwise the file is decoded and transcoded to an uncompressed syntax
the peer accepted (Explicit VR Little Endian first, Orthanc's
DicomScuPreferredTransferSyntax), when the modality allows transcoding;
uncompressed files are always converted between the little-endian syntaxes,
as pynetdicom does.

The raw path drives pynetdicom's DIMSE layer the way `send_c_store` does
(pynetdicom 3.0: pause the reactor, send, wait for the response); it uses the
association's private helpers `_get_valid_context`, `_handle_no_response` and
`_check_received_status`, which the lock file pins.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from dicomkeep.common import transcoding
from dicomkeep.common.errors import OrthancError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE

#: Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: The syntaxes pynetdicom converts between by itself.
_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


@dataclass(frozen=True)
class FileMeta:
    """What the file meta of a Part-10 file says, and where its data set starts."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    offset: int


def read_file_meta(data: bytes, sop_class: str = "", sop_instance: str = "") -> FileMeta | None:
    """Return the SOP class, SOP instance, transfer syntax and data set offset of a
    Part-10 file, from its file meta alone; None if it has no (complete) meta.

    `sop_class` and `sop_instance`, when given, win over the meta's: the index
    keeps those of the data set, which a sloppy writer's meta may contradict.
    """
    if data[128:132] != b"DICM":
        return None
    values: dict[int, str] = {}
    position = 132
    while position + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8)
            start = position + 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            start = position + 8
        if element in (0x0002, 0x0003, 0x0010):
            values[element] = data[start : start + length].decode("ascii", "replace").strip("\0 ")
        position = start + length
    if position > len(data) or len(values) < 3:
        return None
    return FileMeta(
        sop_class or values[0x0002], sop_instance or values[0x0003], values[0x0010], position
    )


class EncodedInstance(Dataset):  # type: ignore[misc]
    """A stored DICOM file to send with C-STORE, carried where pynetdicom wants a Dataset.

    pynetdicom's C-MOVE and C-GET SCPs take the instances to send as `Dataset`s
    and read `SOPInstanceUID` of those that failed; the file itself rides along
    and `send_file` sends it (see the module docstring).
    """

    def __init__(self, data: bytes, meta: FileMeta | None = None) -> None:
        super().__init__()
        self.dicomkeep_file = data
        self.dicomkeep_meta = meta if meta is not None else read_file_meta(data)
        if self.dicomkeep_meta is not None:
            self.SOPClassUID = self.dicomkeep_meta.sop_class
            self.SOPInstanceUID = self.dicomkeep_meta.sop_instance


def _accepted(assoc: Any, sop_class: str, syntax: str) -> Any | None:
    try:
        return assoc._get_valid_context(sop_class, syntax, "scu", allow_conversion=False)
    except ValueError:
        return None


def send_raw(
    assoc: Any, data: bytes, meta: FileMeta, context: Any, msg_id: int,
    originator: tuple[str, int] | None,
) -> Dataset:
    """Send the data set bytes of a Part-10 file in an accepted context whose transfer
    syntax is the file's; return the peer's status (empty Dataset without answer)."""
    request = C_STORE()
    request.MessageID = msg_id
    request.Priority = 2
    request.MoveOriginatorApplicationEntityTitle = originator[0] if originator else None
    request.MoveOriginatorMessageID = originator[1] if originator else None
    request.AffectedSOPClassUID = meta.sop_class
    request.AffectedSOPInstanceUID = meta.sop_instance
    request.DataSet = BytesIO(memoryview(data)[meta.offset :])
    # As Association.send_c_store: keep the reactor off the DIMSE queue meanwhile,
    # unless scu.keep_responses_for_caller already did (our requestor associations):
    # waiting for the reactor to pause costs up to its 1 ms loop per instance.
    pause = not getattr(assoc, "dicomkeep_responses_kept", False)
    if pause:
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        if pause:
            assoc._reactor_checkpoint.set()
    if response is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(response)


def _transcoded(data: bytes, transcode: bool) -> Dataset:
    """Decode the file for pynetdicom's `send_c_store`, in an uncompressed syntax.

    Little-endian files are left as they are: pynetdicom converts them between
    Explicit and Implicit VR. Others are transcoded to Explicit VR Little Endian
    (compressed ones only when `transcode`). Raises ValueError when that fails.
    """
    dataset = dcmread(BytesIO(data))
    source = UID(str(dataset.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if source in _LITTLE_ENDIAN:
        return dataset
    if source.is_compressed and not transcode:
        raise ValueError(f"the peer does not accept {source} and transcoding is not allowed")
    uid = dataset.get("SOPInstanceUID")
    try:
        dataset = transcoding.transcode(dataset, ExplicitVRLittleEndian)
    except OrthancError as error:
        raise ValueError(error.details or error.code.message) from error
    # pydicom's decompress() gives the instance a new UID; the receiver asked for this one.
    if uid is not None:
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
    # Big-endian sources come back decoded: say what they are now.
    dataset.set_original_encoding(False, True, dataset.original_character_set)
    return dataset


def send_file(
    assoc: Any,
    data: bytes,
    *,
    msg_id: int,
    originator: tuple[str, int] | None = None,
    transcode: bool = True,
    meta: FileMeta | None = None,
) -> Dataset:
    """Send a stored Part-10 file with C-STORE; return the peer's status dataset.

    As it is when the peer accepted its SOP class in its transfer syntax; else
    decoded and transcoded (see the module docstring). Raises ValueError when no
    accepted context fits (the caller counts a failed sub-operation).
    """
    meta = meta if meta is not None else read_file_meta(data)
    if meta is not None:
        context = _accepted(assoc, meta.sop_class, meta.transfer_syntax)
        if context is not None:
            return send_raw(assoc, data, meta, context, msg_id, originator)
    dataset = _transcoded(data, transcode)
    # pynetdicom's own method (send_files_on may have replaced the attribute).
    send = getattr(assoc, "dicomkeep_send_c_store", assoc.send_c_store)
    status: Dataset = send(
        dataset, msg_id=msg_id,
        originator_aet=originator[0] if originator else None,
        originator_id=originator[1] if originator else None,
    )  # fmt: skip
    return status


def send_files_on(assoc: Any, *, transcode: bool = True) -> None:
    """Make `assoc.send_c_store` send EncodedInstance objects with `send_file`.

    For the C-GET SCP, whose sub-operations pynetdicom sends on the requestor's
    association with `send_c_store(dataset, msg_id=...)`. Idempotent; other
    datasets still go through pynetdicom's own method.
    """
    if hasattr(assoc, "dicomkeep_send_c_store"):
        return
    original = assoc.send_c_store
    assoc.dicomkeep_send_c_store = original

    def send_c_store(dataset: Any, msg_id: int = 1, priority: int = 2, **kwargs: Any) -> Dataset:
        if isinstance(dataset, EncodedInstance):
            originator = None
            if kwargs.get("originator_aet") is not None:
                originator = (kwargs["originator_aet"], int(kwargs["originator_id"]))
            return send_file(
                assoc, dataset.dicomkeep_file, msg_id=msg_id, originator=originator,
                transcode=transcode, meta=dataset.dicomkeep_meta,
            )  # fmt: skip
        return original(dataset, msg_id, priority, **kwargs)

    assoc.send_c_store = send_c_store
