"""Sending stored files as they are: the file meta reader and the proposed contexts."""

from __future__ import annotations

from io import BytesIO

from dicomkeep.common.dicom import scu as dicom_scu
from dicomkeep.common.dicom.sending import EncodedInstance, read_file_meta
from pydicom import dcmread
from pydicom.filereader import read_dataset
from synthetic import generate_study

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT, IMPLICIT, JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"


def test_file_meta_gives_uids_syntax_and_where_the_data_set_starts() -> None:
    data = generate_study(series=1, instances_per_series=1, seed=3)[0].data
    meta = read_file_meta(data)
    parsed = dcmread(BytesIO(data))
    assert meta is not None
    assert (meta.sop_class, meta.sop_instance, meta.transfer_syntax) == (
        parsed.SOPClassUID, parsed.SOPInstanceUID, parsed.file_meta.TransferSyntaxUID,
    )
    body = read_dataset(BytesIO(data[meta.offset :]), is_implicit_VR=False, is_little_endian=True)
    assert body.SOPInstanceUID == parsed.SOPInstanceUID and "TransferSyntaxUID" not in body
    # The index's UIDs win over a contradicting meta; no meta, no answer.
    assert read_file_meta(data, "1.2", "3.4") == meta.__class__("1.2", "3.4", meta.transfer_syntax, meta.offset)
    assert read_file_meta(data[128:]) is None
    assert read_file_meta(data[:140]) is None
    encoded = EncodedInstance(data)
    assert encoded.SOPInstanceUID == parsed.SOPInstanceUID and encoded.dicomkeep_file is data


def test_compressed_files_are_proposed_uncompressed_too_when_transcoding() -> None:
    pairs = [(CT_IMAGE, JPEG), ("1.2.840.10008.5.1.4.1.1.4", IMPLICIT)]
    proposed = [(c.abstract_syntax, c.transfer_syntax) for c in dicom_scu.store_contexts(pairs)]
    assert proposed == [
        (CT_IMAGE, [JPEG]), (CT_IMAGE, [EXPLICIT, IMPLICIT]),
        ("1.2.840.10008.5.1.4.1.1.4", [EXPLICIT, IMPLICIT]),
    ]
    strict = dicom_scu.store_contexts(pairs, transcode=False)
    assert [(c.abstract_syntax, c.transfer_syntax) for c in strict] == [proposed[0], proposed[2]]
