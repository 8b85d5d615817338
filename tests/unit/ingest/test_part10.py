"""The C-STORE SCP's DICOM file: the same bytes as pynetdicom's `encoded_dataset`."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pytest
from dicomkeep.ingest.scp import part10
from pydicom import dcmread
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event


@pytest.mark.filterwarnings("ignore::UserWarning")  # an implicit VR syntax, explicit body
@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", "1.2.840.10008.1.2.1"),  # odd lengths
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2"),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.1", "1.2.840.10008.1.2.4.50"),
    ],
)
def test_part10_matches_encoded_dataset(sop_class: str, sop_instance: str, syntax: str) -> None:
    request = C_STORE()
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.DataSet = BytesIO(b"\x08\x00\x16\x00UI\x02\x001\x00")
    event = Event(
        SimpleNamespace(), SimpleNamespace(name="EVT_C_STORE", description="", is_intervention=True),
        {"request": request, "context": SimpleNamespace(transfer_syntax=syntax)},
    )
    data = part10(event)
    assert data == event.encoded_dataset(include_meta=True)
    meta = dcmread(BytesIO(data)).file_meta
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID) == (
        sop_class, sop_instance, syntax,
    )
