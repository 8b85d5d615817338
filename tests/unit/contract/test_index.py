"""Contract of the index: the same cases on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import AttachmentInfo, ChangeType, StoreInstance, StoreStatus
from dicomkeep.common.ids import Level, hierarchy_ids
from dicomkeep.common.index import Expected, Index
from dicomkeep.common.ports.database import Tx


def make_command(
    patient: str = "P1",
    study: str = "1.2.3",
    series: str = "1.2.3.4",
    sop: str = "1.2.3.4.5",
    *,
    index_in_series: int | None = 1,
    expected: int | None = None,
    size: int = 100,
    overwrite: bool = False,
) -> StoreInstance:
    ids = hierarchy_ids(patient, study, series, sop)
    md5 = hashlib.md5(sop.encode()).hexdigest()
    instance_meta = {9: "1.2.840.10008.1.2.1", 10: "1.2.840.10008.5.1.4.1.1.2"}
    if index_in_series is not None:
        instance_meta[1] = str(index_in_series)
    series_meta = {} if expected is None else {4: str(expected)}
    return StoreInstance(
        patient_id=ids[0], study_id=ids[1], series_id=ids[2], instance_id=ids[3],
        patient_uid=patient, study_uid=study, series_uid=series, sop_uid=sop,
        main_tags={
            Level.PATIENT: {"PatientID": patient, "PatientName": "DOE^JOHN"},
            Level.STUDY: {"StudyInstanceUID": study, "StudyDescription": "KNEE"},
            Level.SERIES: {"SeriesInstanceUID": series, "Modality": "CT"},
            Level.INSTANCE: {"SOPInstanceUID": sop, "InstanceNumber": str(index_in_series)},
        },
        metadata={Level.INSTANCE: instance_meta, Level.SERIES: series_meta},
        attachments=[AttachmentInfo(
            content_type=1, uuid=f"uuid-{sop}-{overwrite}", uncompressed_size=size,
            uncompressed_md5=md5, compressed_size=size, compressed_md5=md5,
        )],
        overwrite=overwrite,
    )


async def test_store_creates_hierarchy_and_changes(index: Index) -> None:
    command = make_command(expected=1)
    reply = await index.store_instance(command)
    assert reply.status is StoreStatus.SUCCESS
    patient = await index.get_resource(Level.PATIENT, command.patient_id)
    assert patient is not None and patient.children == [command.study_id]
    study = await index.get_resource(Level.STUDY, command.study_id)
    assert study is not None
    assert study.parent_id == command.patient_id
    assert study.main_tags == {"StudyDescription": "KNEE", "StudyInstanceUID": "1.2.3"}
    assert study.patient_main_tags == {"PatientID": "P1", "PatientName": "DOE^JOHN"}
    instance = await index.get_resource(Level.INSTANCE, command.instance_id)
    assert instance is not None and instance.dicom is not None
    assert instance.dicom.uuid == "uuid-1.2.3.4.5-False"
    assert instance.metadata[1] == "1"
    assert 2 in instance.metadata  # ReceptionDate
    page = await index.get_changes(0, 100)
    assert [c.change_type for c in page.changes] == [
        ChangeType.NEW_INSTANCE, ChangeType.NEW_SERIES, ChangeType.NEW_STUDY,
        ChangeType.NEW_PATIENT, ChangeType.COMPLETED_SERIES,
    ]
    assert [c.seq for c in page.changes] == [1, 2, 3, 4, 5]
    assert page.done and page.last == 5
    assert page.changes[0].path == f"/instances/{command.instance_id}"


async def test_already_stored_changes_nothing(index: Index) -> None:
    await index.store_instance(make_command())
    again = make_command(overwrite=False)
    again = again.model_copy(update={"attachments": [again.attachments[0].model_copy(update={"uuid": "other"})]})
    reply = await index.store_instance(again)
    assert reply.status is StoreStatus.ALREADY_STORED
    assert (await index.get_changes(0, 100)).last == 4
    assert await index.pending_blobs(10) == ["other"]
    instance = await index.get_resource(Level.INSTANCE, again.instance_id)
    assert instance is not None and instance.dicom is not None and instance.dicom.uuid != "other"


async def test_overwrite_replaces_instance_and_releases_old_blob(index: Index) -> None:
    await index.store_instance(make_command())
    reply = await index.store_instance(make_command(overwrite=True, size=200))
    assert reply.status is StoreStatus.SUCCESS
    instance = await index.get_resource(Level.INSTANCE, make_command().instance_id)
    assert instance is not None and instance.dicom is not None
    assert instance.dicom.uncompressed_size == 200
    assert await index.pending_blobs(10) == ["uuid-1.2.3.4.5-False"]
    types = [c.change_type for c in (await index.get_changes(0, 100)).changes]
    # the replaced instance's change rows went with it (Orthanc's cascade): one left
    assert types.count(ChangeType.NEW_INSTANCE) == 1
    assert types.count(ChangeType.NEW_PATIENT) == 1


async def test_delete_walks_up_and_reports_remaining(index: Index) -> None:
    first = make_command(sop="1.1")
    second = make_command(sop="1.2", index_in_series=2)
    await index.store_instance(first)
    await index.store_instance(second)
    outcome = await index.delete_resource(Level.INSTANCE, first.instance_id)
    assert outcome is not None and outcome.remaining is not None
    assert outcome.remaining.level is Level.SERIES
    outcome = await index.delete_resource(Level.INSTANCE, second.instance_id)
    assert outcome is not None and outcome.remaining is None
    assert [lvl for lvl, _ in outcome.deleted] == [
        Level.INSTANCE, Level.SERIES, Level.STUDY, Level.PATIENT
    ]
    assert await index.list_resources(Level.PATIENT) == []
    assert sorted(await index.pending_blobs(10)) == ["uuid-1.1-False", "uuid-1.2-False"]
    assert await index.delete_resource(Level.INSTANCE, second.instance_id) is None
    # Deleted events go to the outbox, not to /changes.
    logged = [c.change_type for c in (await index.get_changes(0, 100)).changes]
    assert ChangeType.DELETED not in logged
    outbox = [e.change.change_type for e in await index.outbox_batch(100)]
    assert outbox.count(ChangeType.DELETED) == 5


async def test_list_since_limit_and_lookup(index: Index) -> None:
    for n in range(5):
        await index.store_instance(make_command(patient=f"P{n}", study=f"1.{n}", series=f"1.{n}.1", sop=f"1.{n}.1.1"))
    all_ids = await index.list_resources(Level.PATIENT)
    assert len(all_ids) == 5
    assert await index.list_resources(Level.PATIENT, since=1, limit=2) == all_ids[1:3]
    assert await index.list_resources(Level.PATIENT, since=0, limit=0) == []
    found = await index.lookup("1.3")
    assert found == [(Level.STUDY, hierarchy_ids("P3", "1.3", "x", "y")[1])]


async def test_statistics(index: Index) -> None:
    await index.store_instance(make_command(sop="1.1", size=1000))
    await index.store_instance(make_command(sop="1.2", size=3000))
    stats = await index.statistics()
    assert (stats.count_patients, stats.count_instances, stats.disk_size) == (1, 2, 4000)
    series = await index.statistics(Level.SERIES, make_command().series_id)
    assert series.count_instances == 2 and series.dicom_uncompressed_size == 4000
    with pytest.raises(OrthancError):
        await index.statistics(Level.SERIES, "nope")


async def test_metadata_revisions(index: Index) -> None:
    command = make_command()
    await index.store_instance(command)
    args = (Level.STUDY, command.study_id, 1024)
    assert await index.set_metadata(*args, "a", None, check_revisions=True) == 0
    with pytest.raises(OrthancError) as error:
        await index.set_metadata(*args, "b", None, check_revisions=True)
    assert error.value.code is ErrorCode.REVISION
    md5 = hashlib.md5(b"a").hexdigest()
    with pytest.raises(OrthancError):
        await index.set_metadata(*args, "b", Expected(5, md5), check_revisions=True)
    assert await index.set_metadata(*args, "b", Expected(0, md5), check_revisions=True) == 1
    values = await index.get_metadata(Level.STUDY, command.study_id)
    assert values is not None and values[1024].value == "b" and values[1024].revision == 1
    with pytest.raises(OrthancError):
        await index.delete_metadata(*args, None, check_revisions=True)
    await index.delete_metadata(*args, None, check_revisions=False)
    with pytest.raises(OrthancError) as error:
        await index.delete_metadata(*args, None, check_revisions=False)
    assert error.value.code is ErrorCode.UNKNOWN_RESOURCE
    types = [c.change_type for c in (await index.get_changes(0, 100)).changes]
    assert types.count(ChangeType.UPDATED_METADATA) == 3


async def test_changes_paging_and_clear(index: Index) -> None:
    for n in range(3):
        await index.store_instance(make_command(sop=f"1.{n}", index_in_series=n + 1))
    page = await index.get_changes(0, 2)
    assert [c.seq for c in page.changes] == [1, 2] and not page.done and page.last == 2
    page = await index.get_changes(2, 100)
    assert page.done and page.last == 6
    assert (await index.last_change()).changes[0].seq == 6
    await index.clear_changes()
    page = await index.get_changes(0, 100)
    assert page.changes == [] and page.last == 6
    await index.store_instance(make_command(sop="1.9", index_in_series=9))
    assert (await index.get_changes(0, 100)).changes[0].seq == 7


async def test_concurrent_stores_of_one_study(index: Index) -> None:
    commands = [make_command(sop=f"1.{n}", index_in_series=n + 1) for n in range(20)]
    replies = await asyncio.gather(*(index.store_instance(c) for c in commands + commands))
    statuses = [r.status for r in replies]
    assert statuses.count(StoreStatus.SUCCESS) == 20
    assert statuses.count(StoreStatus.ALREADY_STORED) == 20
    assert len(await index.list_resources(Level.PATIENT)) == 1
    assert len(await index.list_resources(Level.INSTANCE)) == 20
    seqs = [c.seq for c in (await index.get_changes(0, 1000)).changes]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 23


async def test_outbox_round_trip(index: Index) -> None:
    await index.store_instance(make_command())
    events = await index.outbox_batch(100)
    assert [e.change.seq for e in events] == [1, 2, 3, 4]
    # No patient data in the outbox: the parents' Orthanc IDs, the store's trace
    # context when traced.
    command = make_command()
    assert events[0].headers == {
        "ParentPatient": command.patient_id, "ParentStudy": command.study_id,
        "ParentSeries": command.series_id,
    }
    assert events[3].headers == {}  # NewPatient
    traced = make_command(sop="1.2.3.4.6").model_copy(update={
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    })
    await index.store_instance(traced)
    last = (await index.outbox_batch(100))[-1]
    assert last.headers["traceparent"] == traced.traceparent
    await index.outbox_done([1, 2])
    assert [e.change.seq for e in await index.outbox_batch(100)] == [3, 4, 5]


async def test_protection_and_properties(index: Index) -> None:
    command = make_command()
    await index.store_instance(command)
    await index.set_protected(command.patient_id, True)
    patient = await index.get_resource(Level.PATIENT, command.patient_id)
    assert patient is not None and patient.is_protected
    await index.set_protected(command.patient_id, False)
    patient = await index.get_resource(Level.PATIENT, command.patient_id)
    assert patient is not None and not patient.is_protected
    with pytest.raises(OrthancError):
        await index.set_protected("unknown", True)
    assert await index.get_property("x") is None
    await index.set_property("x", "1")
    await index.set_property("x", "2")
    assert await index.get_property("x") == "2"


class CountingTx:
    """A `Tx` that counts the statements run through it."""

    def __init__(self, tx: Tx, counts: list[str]) -> None:
        self._tx, self._counts = tx, counts

    def __getattr__(self, name: str) -> Any:
        self._counts.append(name)
        return getattr(self._tx, name)


async def test_attachment_lookup_in_one_query(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = make_command()
    await index.store_instance(stored)
    statements: list[str] = []
    transaction = index.db.transaction

    @asynccontextmanager
    async def counted(
        *, readonly: bool = False, durable: bool = True, point: bool = False
    ) -> AsyncIterator[Any]:
        async with transaction(readonly=readonly, durable=durable, point=point) as tx:
            yield CountingTx(tx, statements)

    monkeypatch.setattr(index.db, "transaction", counted)
    dicom = await index.attachment(Level.INSTANCE, stored.instance_id, 1)
    assert statements == ["fetchrow"]
    # A resource, whatever its level, is read in two statements (each one a round
    # trip; /tools/find with Expand reads one per match).
    for level, public_id in (
        (Level.PATIENT, stored.patient_id), (Level.STUDY, stored.study_id),
        (Level.SERIES, stored.series_id), (Level.INSTANCE, stored.instance_id),
    ):
        statements.clear()
        assert await index.get_resource(level, public_id) is not None
        assert statements == ["fetchrow", "fetch"]
    monkeypatch.undo()
    assert dicom == stored.attachments[0]
    resource = await index.get_resource(Level.INSTANCE, stored.instance_id)
    assert resource is not None and dicom == resource.dicom
    assert await index.attachment(Level.INSTANCE, stored.instance_id, 1025) is None
    assert await index.attachment(Level.SERIES, stored.instance_id, 1) is None
    assert await index.attachment(Level.INSTANCE, "unknown", 1) is None
    user = AttachmentInfo(
        content_type=1025, uuid="user", uncompressed_size=1, uncompressed_md5="u",
        compressed_size=1, compressed_md5="u",
    )
    await index.set_attachment(Level.SERIES, stored.series_id, user, None, check_revisions=False)
    await index.set_attachment(Level.SERIES, stored.series_id, user, None, check_revisions=False)
    found = await index.attachment(Level.SERIES, stored.series_id, 1025)
    assert found is not None and found.uuid == "user" and found.revision == 1


async def test_increment_property_gives_each_concurrent_caller_its_own_value(index: Index) -> None:
    """Orthanc's IncrementGlobalSequence (the "Anonymized<N>" counter) under contention."""
    assert await index.increment_property("seq") == 1
    values = await asyncio.gather(*(index.increment_property("seq") for _ in range(20)))
    assert sorted(values) == list(range(2, 22))
    assert await index.get_property("seq") == "21"


async def test_instance_files_in_one_read(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a C-MOVE sends, for a whole study in one query per matched resource."""
    stored = [make_command(sop=f"1.2.3.4.{n}", index_in_series=n) for n in (1, 2, 3)]
    for command in stored:
        await index.store_instance(command)
    statements: list[str] = []
    transaction = index.db.transaction

    @asynccontextmanager
    async def counted(**options: Any) -> AsyncIterator[Any]:
        async with transaction(**options) as tx:
            yield CountingTx(tx, statements)

    monkeypatch.setattr(index.db, "transaction", counted)
    files = await index.instance_files(Level.STUDY, [stored[0].study_id, "unknown"])
    assert len(statements) == 3  # the study's internal id and its instances; "unknown"'s id
    monkeypatch.undo()
    assert [f.public_id for f in files] == [c.instance_id for c in stored]
    assert [f.sop_instance_uid for f in files] == [c.sop_uid for c in stored]
    assert {(f.sop_class_uid, f.transfer_syntax) for f in files} == {
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    }
    assert [f.dicom for f in files] == [c.attachments[0] for c in stored]
    # Instance IDs: in the order given, each once, unknown ones skipped.
    wanted = [stored[2].instance_id, "unknown", stored[0].instance_id, stored[2].instance_id]
    files = await index.instance_files(Level.INSTANCE, wanted)
    assert [f.public_id for f in files] == [stored[2].instance_id, stored[0].instance_id]
    assert await index.instance_files(Level.PATIENT, []) == []
