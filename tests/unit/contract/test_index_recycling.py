"""Contract of the index on recycling and protection (ORTHANC_API.md §8),
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import AttachmentInfo, ChangeType, StoreStatus
from dicomkeep.common.ids import Level, orthanc_id
from dicomkeep.common.index import Index, StorageLimits
from index_support import MB, command, open_index, reopen


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pid(patient: str) -> str:
    return orthanc_id(patient)


async def patients(index: Index) -> set[str]:
    return set(await index.list_resources(Level.PATIENT))


async def store_ok(index: Index, *args: object, **kwargs: object) -> None:
    reply = await index.store_instance(command(*args, **kwargs))  # type: ignore[arg-type]
    assert reply.status is StoreStatus.SUCCESS, reply


async def test_patient_count_keeps_the_most_recent(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_patients=3)) as index:
        for n in range(1, 6):
            await store_ok(index, f"P{n}")
        assert await patients(index) == {pid("P3"), pid("P4"), pid("P5")}
        # Recycled patients leave Deleted events (every level) and pending blobs.
        deleted = [
            (e.change.resource_type, e.change.id)
            for e in await index.outbox_batch(1000)
            if e.change.change_type is ChangeType.DELETED
        ]
        assert ("Patient", pid("P1")) in deleted and ("Patient", pid("P2")) in deleted
        assert {level for level, _ in deleted} == {"Patient", "Study", "Series", "Instance"}
        pending = set(await index.pending_blobs(100))
        assert {command("P1").attachments[0].uuid, command("P2").attachments[0].uuid} <= pending
        assert command("P3").attachments[0].uuid not in pending
        # Recycled resources wait for no Stable* change any more.
        unstable = {r.public_id for r in await index.unstable_resources()}
        assert pid("P1") not in unstable and pid("P5") in unstable


async def test_new_instance_makes_its_patient_most_recent(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_patients=3)) as index:
        for n in range(1, 4):
            await store_ok(index, f"P{n}")
        first = command("P1")
        await store_ok(index, "P1", first.study_uid, first.series_uid, f"{first.sop_uid}.2")
        await store_ok(index, "P4")
        assert await patients(index) == {pid("P1"), pid("P3"), pid("P4")}
        # AlreadyStored changes nothing, not even the recycling order.
        again = await index.store_instance(command("P3"))
        assert again.status is StoreStatus.ALREADY_STORED
        await store_ok(index, "P5")
        assert await patients(index) == {pid("P1"), pid("P4"), pid("P5")}


async def test_protected_patients_are_never_recycled(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_patients=3)) as index:
        for n in range(1, 4):
            await store_ok(index, f"P{n}")
        await index.set_protected(pid("P1"), True)
        await store_ok(index, "P4")
        assert await patients(index) == {pid("P1"), pid("P3"), pid("P4")}
        await store_ok(index, "P5")
        assert await patients(index) == {pid("P1"), pid("P4"), pid("P5")}
        # Unprotecting puts the patient at the end of the recycling order.
        await index.set_protected(pid("P1"), False)
        await store_ok(index, "P6")
        assert await patients(index) == {pid("P1"), pid("P5"), pid("P6")}
        resource = await index.get_resource(Level.PATIENT, pid("P1"))
        assert resource is not None and resource.is_protected is False


async def test_nothing_to_recycle_refuses_and_writes_nothing(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_patients=1)) as index:
        await store_ok(index, "P1")
        await index.set_protected(pid("P1"), True)
        last = (await index.last_change()).last
        outbox = len(await index.outbox_batch(1000))
        reply = await index.store_instance(command("P2"))
        assert reply.status is StoreStatus.FAILURE
        assert reply.error_code == ErrorCode.FULL_STORAGE.name
        assert await patients(index) == {pid("P1")}
        assert (await index.last_change()).last == last
        assert len(await index.outbox_batch(1000)) == outbox
        assert await index.referenced_blobs([command("P2").attachments[0].uuid]) == set()
        assert await index.get_resource(Level.STUDY, command("P2").study_id) is None


async def test_reject_mode_refuses_new_patients(kind: str, tmp_path: Path) -> None:
    limits = StorageLimits(maximum_patients=2, reject=True)
    async with open_index(kind, tmp_path, "recycling", limits) as index:
        await store_ok(index, "P1")
        await store_ok(index, "P2")
        reply = await index.store_instance(command("P3"))
        assert (reply.status, reply.error_code) == (StoreStatus.FAILURE, "FULL_STORAGE")
        assert await patients(index) == {pid("P1"), pid("P2")}
        # The count is not exceeded by a new instance of a stored patient.
        first = command("P1")
        await store_ok(index, "P1", first.study_uid, first.series_uid, f"{first.sop_uid}.2")
        assert (await index.statistics()).count_instances == 3


async def test_size_counts_stored_compressed_bytes(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_size=MB)) as index:
        # 3 x 600 KB uncompressed exceeds 1 MB, but only 3 x 200 KB are stored.
        for n in range(1, 4):
            await store_ok(index, f"P{n}", size=600_000, compressed_size=200_000)
        assert len(await patients(index)) == 3
        # 600 KB more: 1.2 MB would be stored, the oldest goes (then 1.0 MB fits).
        await store_ok(index, "P4", size=600_000, compressed_size=600_000)
        assert await patients(index) == {pid("P2"), pid("P3"), pid("P4")}
        assert (await index.statistics()).disk_size == 1_000_000


async def test_size_never_recycles_the_receiving_patient(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_size=MB)) as index:
        await store_ok(index, "P2", size=300_000)
        await store_ok(index, "P1", size=600_000)
        first = command("P1")
        # 1.2 MB with the new instance: P2 goes, not P1 (which receives it).
        await store_ok(index, "P1", first.study_uid, first.series_uid, "9.1", size=300_000)
        assert await patients(index) == {pid("P1")}
        # Only P1 is left to recycle, and it receives the instance: storage full.
        reply = await index.store_instance(
            command("P1", first.study_uid, first.series_uid, "9.2", size=300_000)
        )
        assert (reply.status, reply.error_code) == (StoreStatus.FAILURE, "FULL_STORAGE")
        assert (await index.statistics()).count_instances == 2
        # An instance larger than the whole quota is refused at once.
        reply = await index.store_instance(command("P9", size=2 * MB))
        assert (reply.status, reply.error_code) == (StoreStatus.FAILURE, "FULL_STORAGE")
        assert await patients(index) == {pid("P1")}


async def test_user_attachment_recycles_other_patients(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_size=MB)) as index:
        await store_ok(index, "P1", size=400_000)
        await store_ok(index, "P2", size=400_000)
        study = command("P2").study_id
        info = AttachmentInfo(
            content_type=1025, uuid="user-blob", uncompressed_size=400_000,
            uncompressed_md5="x", compressed_size=400_000, compressed_md5="x",
        )
        await index.set_attachment(Level.STUDY, study, info, None, check_revisions=False)
        assert await patients(index) == {pid("P2")}
        too_big = info.model_copy(update={"uuid": "big", "compressed_size": 2 * MB})
        with pytest.raises(OrthancError) as raised:
            await index.set_attachment(Level.STUDY, study, too_big, None, check_revisions=False)
        assert raised.value.code is ErrorCode.FULL_STORAGE
        attachments = await index.list_attachments(Level.STUDY, study)
        assert attachments is not None and [a.uuid for a in attachments] == ["user-blob"]


async def test_enforce_limits_at_start(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling") as unlimited:
        assert await unlimited.enforce_limits() == []
        for n in range(1, 6):
            await store_ok(unlimited, f"P{n}")
        await unlimited.set_protected(pid("P1"), True)
        rejecting = reopen(unlimited, StorageLimits(maximum_patients=2, reject=True))
        assert await rejecting.enforce_limits() == []
        lowered = reopen(unlimited, StorageLimits(maximum_patients=2))
        deleted = await lowered.enforce_limits()
        assert [public_id for level, public_id in deleted if level is Level.PATIENT] == [
            pid("P2"), pid("P3"), pid("P4"),
        ]
        assert await patients(unlimited) == {pid("P1"), pid("P5")}
        # Only protected patients left above the limit: it stops without error.
        await unlimited.set_protected(pid("P5"), True)
        assert await reopen(unlimited, StorageLimits(maximum_patients=1)).enforce_limits() == []
        assert await patients(unlimited) == {pid("P1"), pid("P5")}


async def test_concurrent_stores_never_exceed_the_count(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "recycling", StorageLimits(maximum_patients=3)) as index:
        counts: list[int] = []

        async def store_then_count(n: int) -> None:
            await store_ok(index, f"C{n}")
            counts.append((await index.statistics()).count_patients)

        await asyncio.gather(*(store_then_count(n) for n in range(40)))
        assert len(counts) == 40 and max(counts) <= 3
        assert (await index.statistics()).count_patients == 3
