"""The decision to refuse a StoreInstance older than OrphanGracePeriod allows."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import AttachmentInfo, StoreInstance
from dicomkeep.common.ids import Level
from dicomkeep.common.index.staleness import command_age, refuse_if_stale, stale_limit

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC).timestamp()


def command(**fields: object) -> StoreInstance:
    base = StoreInstance(
        patient_id="p", study_id="s", series_id="e", instance_id="i",
        patient_uid="P", study_uid="1.2", series_uid="1.2.3", sop_uid="1.2.3.4",
        main_tags={Level.PATIENT: {}}, metadata={Level.INSTANCE: {}},
        attachments=[AttachmentInfo(
            content_type=1, uuid="u", uncompressed_size=1, uncompressed_md5="m",
            compressed_size=1, compressed_md5="m", compression=0,
        )],
    )
    return base.model_copy(update=fields)


def test_limit_keeps_a_margin_of_a_tenth_at_most_a_minute() -> None:
    assert stale_limit(600) == 540
    assert stale_limit(3600) == 3540
    assert stale_limit(12) == pytest.approx(10.8)
    assert stale_limit(0) == 0


def test_age_from_issued_at_then_received_at() -> None:
    assert command_age(command(issued_at=NOW - 30.5), NOW) == 30.5
    # The earlier format: the UTC second at which the command was built.
    old = command(received_at="20261203T115000")
    assert command_age(old, NOW) == 600
    # issued_at wins over received_at.
    assert command_age(command(issued_at=NOW - 1, received_at="20261203T115000"), NOW) == 1
    assert command_age(command(), NOW) is None
    assert command_age(command(received_at="garbage"), NOW) is None


def test_a_message_of_the_earlier_format_is_read() -> None:
    body = command(received_at="20261203T115000").model_dump_json(exclude={"issued_at"})
    assert "issued_at" not in body
    parsed = StoreInstance.model_validate_json(body)
    assert parsed.issued_at is None and command_age(parsed, NOW) == 600


def test_refuse_beyond_the_limit_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    refuse_if_stale(command(issued_at=NOW - 540), max_age=540, now=NOW)
    refuse_if_stale(command(issued_at=NOW - 10_000), max_age=None, now=NOW)
    refuse_if_stale(command(), max_age=0, now=NOW)  # age unknown: not judged
    with caplog.at_level(logging.WARNING), pytest.raises(OrthancError) as refused:
        refuse_if_stale(command(issued_at=NOW - 541), max_age=540, now=NOW)
    assert refused.value.code is ErrorCode.TIMEOUT
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "instance=i" in warnings[0].getMessage()


def test_a_built_command_carries_the_time_before_its_blobs() -> None:
    from dicomkeep.common.dicom.instance import parse_instance
    from dicomkeep.common.dicom.receiving import Origin, build_command
    from pydicom.data import get_testdata_file

    with open(str(get_testdata_file("CT_small.dcm")), "rb") as source:
        parsed = parse_instance(source.read())
    built = build_command(parsed, [], Origin("RestApi"), overwrite=False, issued_at=NOW)
    assert built.issued_at == NOW
    assert build_command(parsed, [], Origin("RestApi"), overwrite=False).issued_at is not None


async def test_the_indexer_takes_issued_at_from_the_header() -> None:
    from dicomkeep.common.events import ISSUED_AT_HEADER, StoreReply, StoreStatus
    from dicomkeep.indexer.usecases import store

    seen: list[StoreInstance] = []

    async def commit(received: StoreInstance) -> StoreReply:
        seen.append(received)
        return StoreReply(status=StoreStatus.SUCCESS, instance_id=received.instance_id)

    body = command().model_dump_json(exclude={"issued_at"}).encode()
    await store(commit, body, {ISSUED_AT_HEADER: repr(NOW - 1.5)})
    await store(commit, body, {ISSUED_AT_HEADER: "not a time"})
    await store(commit, body)  # a message of the earlier format
    assert [c.issued_at for c in seen] == [NOW - 1.5, None, None]
