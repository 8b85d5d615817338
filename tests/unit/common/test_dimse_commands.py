"""DIMSE command sets written by `common.dicom.commands`: byte for byte pydicom's."""

from __future__ import annotations

from typing import Any

import pytest
from dicomkeep.common.dicom import commands
from dicomkeep.common.orthanc import DimseStatus
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, dimse_primitives, dsutils

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _store_rq(**extra: Any) -> Any:
    request = dimse_primitives.C_STORE()
    request.MessageID = 7
    request.Priority = 2
    request.AffectedSOPClassUID = CT_IMAGE
    request.AffectedSOPInstanceUID = "1.2.3.4.5"  # odd length: NUL padding
    request.DataSet = None
    for key, value in extra.items():
        setattr(request, key, value)
    return request


def _store_rsp() -> Any:
    response = dimse_primitives.C_STORE()
    response.MessageIDBeingRespondedTo = 65535
    response.AffectedSOPClassUID = CT_IMAGE
    response.AffectedSOPInstanceUID = "1.2.3.4.56"
    response.Status = 0xB000
    response.ErrorComment = "odd"
    return response


def _move_rsp() -> Any:
    response = dimse_primitives.C_MOVE()
    response.MessageIDBeingRespondedTo = 3
    response.AffectedSOPClassUID = MOVE
    response.Status = DimseStatus.PENDING  # handlers answer IntEnums
    response.NumberOfRemainingSuboperations = 70000 % 65536
    response.NumberOfCompletedSuboperations = 1
    response.NumberOfFailedSuboperations = 0
    response.NumberOfWarningSuboperations = 0
    return response


def _move_rq() -> Any:
    request = dimse_primitives.C_MOVE()
    request.MessageID = 1
    request.AffectedSOPClassUID = MOVE
    request.Priority = 0
    request.MoveDestination = "STORESCP"
    return request


CASES = [
    (dimse_messages.C_STORE_RQ, _store_rq),
    (dimse_messages.C_STORE_RQ,
     lambda: _store_rq(MoveOriginatorApplicationEntityTitle="MOVESCU", MoveOriginatorMessageID=9)),
    (dimse_messages.C_STORE_RQ, lambda: _store_rq(MoveOriginatorApplicationEntityTitle="ODDAE")),
    (dimse_messages.C_STORE_RSP, _store_rsp),
    (dimse_messages.C_MOVE_RSP, _move_rsp),
    (dimse_messages.C_MOVE_RQ, _move_rq),
]


@pytest.mark.parametrize(("message_class", "primitive"), CASES)
def test_command_sets_are_pydicoms_bytes(message_class: Any, primitive: Any) -> None:
    message = message_class()
    message.primitive_to_message(primitive())
    expected = dsutils.encode(message.command_set, True, True)
    assert commands._encode_fast(message.command_set) == expected
    assert commands.encode_command(message.command_set, True, True) == expected


def test_what_it_does_not_write_goes_to_pydicom() -> None:
    dataset = Dataset()
    dataset.PatientName = "Doe^John"  # not group 0000
    assert commands._encode_fast(dataset) is None
    assert commands.encode_command(dataset, True, True) == dsutils.encode(dataset, True, True)
    assert commands.encode_command(dataset, False, True) == dsutils.encode(dataset, False, True)
    offending = Dataset()
    offending.Status = 0x0106
    offending.OffendingElement = [0x00100010, 0x00100020]  # AT, several values
    assert commands._encode_fast(offending) is None


def test_install_makes_pynetdicom_use_it() -> None:
    commands.install()
    assert dimse_messages.encode is commands.encode_command  # type: ignore[attr-defined]
    message = dimse_messages.C_STORE_RQ()
    message.primitive_to_message(_store_rq())
    fragments = list(message.encode_msg(1, 16382))
    assert fragments and fragments[0].presentation_data_value_list[0][1][0] & 0x01
