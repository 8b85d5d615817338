"""The stability service on embedded adapters: clock as the timer, index as the ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.memory_clock import MemoryClock
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.events import ChangeType, StoreInstance
from dicomkeep.common.ids import Level, hierarchy_ids
from dicomkeep.common.index import Index, StorageLimits
from dicomkeep.common.settings import Settings
from dicomkeep.stability import main as stability
from dicomkeep.stability.usecases import emit_due, on_change, rebuild_clock, reconcile

AGE = 1.0


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    opened = Index(SqliteDatabase(tmp_path / "index"))
    await opened.open()
    yield opened
    await opened.close()


def command(patient: str, sop: str = "1.2.3.4.5") -> StoreInstance:
    ids = hierarchy_ids(patient, "1.2.3", "1.2.3.4", sop)
    return StoreInstance(
        patient_id=ids[0], study_id=ids[1], series_id=ids[2], instance_id=ids[3],
        patient_uid=patient, study_uid="1.2.3", series_uid="1.2.3.4", sop_uid=sop,
        main_tags={Level.SERIES: {"Modality": "CT"}}, metadata={}, attachments=[],
    )


async def store_and_relay(index: Index, clock: MemoryClock, stored: StoreInstance) -> float:
    """Store, then hand the outbox to `on_change` as the relay and the bus would;
    return the time just after the store."""
    await index.store_instance(stored)
    after = time.time()
    for event in await index.outbox_batch(100):
        body = event.change.model_dump_json(by_alias=True).encode()
        await on_change(clock, body, event.headers, time.time())
    await index.outbox_done([e.change.seq for e in await index.outbox_batch(100)])
    return after


def stable_kinds(changes: list[object]) -> list[tuple[ChangeType, str]]:
    return [(c.change_type, c.id) for c in changes]  # type: ignore[attr-defined]


async def test_new_instance_touches_parents_and_deleted_forgets(index: Index) -> None:
    clock = MemoryClock()
    stored = command("P1")
    await store_and_relay(index, clock, stored)
    for level, public_id in (
        (Level.SERIES, stored.series_id), (Level.STUDY, stored.study_id),
        (Level.PATIENT, stored.patient_id),
    ):
        assert await clock.is_unstable(level, public_id)
    await index.delete_resource(Level.PATIENT, stored.patient_id)
    await store_and_relay(index, clock, command("P2"))  # relays the Deleted events too
    assert not await clock.is_unstable(Level.STUDY, stored.study_id)


async def test_emit_due_once_after_the_age(index: Index) -> None:
    clock = MemoryClock()
    stored = command("P1")
    after = await store_and_relay(index, clock, stored)
    assert await emit_due(index, clock, now=after + AGE - 0.5, stable_age=AGE) == []
    changes = await emit_due(index, clock, now=time.time() + AGE + 0.01, stable_age=AGE)
    assert stable_kinds(changes) == [
        (ChangeType.STABLE_SERIES, stored.series_id),
        (ChangeType.STABLE_STUDY, stored.study_id),
        (ChangeType.STABLE_PATIENT, stored.patient_id),
    ]
    assert await clock.count() == 0
    assert await emit_due(index, clock, now=time.time() + 100, stable_age=AGE) == []
    assert await reconcile(index, clock, now=time.time() + 100, stable_age=AGE, grace=1) == []


async def test_a_replica_that_popped_then_died_loses_nothing(index: Index) -> None:
    clock = MemoryClock()
    after = await store_and_relay(index, clock, command("P1"))
    # A replica pops the due resources and dies before the index emits them.
    assert len(await clock.pop_due(time.time() + 5)) == 3
    late = after + AGE + 0.01
    assert await emit_due(index, clock, now=late, stable_age=AGE) == []
    # Within the grace period the clock is trusted; past it the index repairs.
    assert await reconcile(index, clock, now=late, stable_age=AGE, grace=1.0) == []
    changes = await reconcile(index, clock, now=late + 1.0, stable_age=AGE, grace=1.0)
    assert [c.change_type for c in changes] == [
        ChangeType.STABLE_SERIES, ChangeType.STABLE_STUDY, ChangeType.STABLE_PATIENT,
    ]
    assert await reconcile(index, clock, now=late + 9, stable_age=AGE, grace=1.0) == []


async def test_a_lost_clock_is_rebuilt_from_the_index(index: Index) -> None:
    after = await store_and_relay(index, MemoryClock(), command("P1"))
    fresh = MemoryClock()  # Redis flushed, or the process restarted
    assert await reconcile(index, fresh, now=after, stable_age=AGE, grace=1.0) == []
    assert await fresh.count() == 3
    assert await emit_due(index, fresh, now=after - 0.5, stable_age=AGE) == []
    assert len(await emit_due(index, fresh, now=after + AGE + 0.01, stable_age=AGE)) == 3
    assert await rebuild_clock(index, fresh) == 0


async def test_concurrent_replicas_emit_once(index: Index) -> None:
    clock = MemoryClock()
    for n in range(5):
        await store_and_relay(index, clock, command(f"P{n}"))
    now = time.time() + AGE + 0.01
    results = await asyncio.gather(
        emit_due(index, clock, now=now, stable_age=AGE),
        emit_due(index, clock, now=now, stable_age=AGE),
        reconcile(index, clock, now=now + 5, stable_age=AGE, grace=1.0),
    )
    assert sum(len(result) for result in results) == 15
    page = await index.get_changes(0, 1000)
    stable = [c for c in page.changes if c.change_type.value.startswith("Stable")]
    assert len({(c.change_type, c.id) for c in stable}) == len(stable) == 15


async def test_service_start_enforces_limits_rebuilds_and_emits(tmp_path: Path) -> None:
    unlimited = Index(SqliteDatabase(tmp_path / "index"))
    await unlimited.open()
    try:
        for patient in ("P1", "P2", "P3"):
            await unlimited.store_instance(command(patient))
        index = Index(unlimited.db, limits=StorageLimits(maximum_patients=2))
        clock, bus = MemoryClock(), LocalBus()
        await bus.start()
        service = stability.build(
            Settings(stable_age=1), index=index, clock=clock, bus=bus
        )
        await service.start()
        try:
            assert await index.list_resources(Level.PATIENT) == [
                command("P2").patient_id, command("P3").patient_id,
            ]
            assert await clock.count() == 6  # rebuilt: 2 patients x 3 levels
            for _ in range(200):  # poll for up to 10 s
                if not await index.unstable_resources():
                    break
                await asyncio.sleep(0.05)
            page = await index.get_changes(0, 1000)
            stable = [c for c in page.changes if c.change_type.value.startswith("Stable")]
            assert len(stable) == 6
        finally:
            await service.stop()
            await bus.close()
    finally:
        await unlimited.close()


def test_parents_from_headers_old_and_new() -> None:
    from dicomkeep.common.ids import orthanc_id
    from dicomkeep.stability.usecases import parents_of

    new = {"ParentSeries": "s", "ParentStudy": "t", "ParentPatient": "p"}
    assert parents_of(new) == [(Level.SERIES, "s"), (Level.STUDY, "t"), (Level.PATIENT, "p")]
    # Published before the upgrade: the DICOM identifiers give the same IDs.
    old = {"PatientID": "P1", "StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3"}
    assert parents_of(old) == [
        (Level.SERIES, orthanc_id("P1", "1.2", "1.2.3")),
        (Level.STUDY, orthanc_id("P1", "1.2")),
        (Level.PATIENT, orthanc_id("P1")),
    ]
