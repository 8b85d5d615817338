"""Contract of the index on stability (ORTHANC_API.md §7), on SQLite and PostgreSQL:
the index records which resources wait for their Stable* change and emits each
change once per quiet period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dicomkeep.common.events import ChangeType, StoreStatus
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from index_support import command, open_index


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Index]:
    async with open_index(request.param, tmp_path, "stability") as opened:
        yield opened


async def is_stable(index: Index, level: Level, public_id: str) -> bool:
    resource = await index.get_resource(level, public_id)
    assert resource is not None
    return resource.is_stable


async def stable_changes(index: Index) -> list[tuple[ChangeType, str]]:
    page = await index.get_changes(0, 1000)
    return [(c.change_type, c.id) for c in page.changes if c.change_type.value.startswith("Stable")]


async def test_store_marks_parents_unstable_until_emitted_once(index: Index) -> None:
    before = time.time()
    stored = command("P1")
    assert (await index.store_instance(stored)).status is StoreStatus.SUCCESS
    after = time.time()
    parents = [
        (Level.PATIENT, stored.patient_id),
        (Level.STUDY, stored.study_id),
        (Level.SERIES, stored.series_id),
    ]
    for level, public_id in parents:
        assert await is_stable(index, level, public_id) is False
    unstable = await index.unstable_resources()
    assert {(r.level, r.public_id) for r in unstable} == set(parents)
    assert all(before <= r.touched_at <= after for r in unstable)
    # Not due yet: the last instance is not older than the cutoff.
    assert await index.emit_stable(before) == []
    changes = await index.emit_stable(after + 0.001)
    assert [(c.change_type, c.id) for c in changes] == [
        (ChangeType.STABLE_SERIES, stored.series_id),
        (ChangeType.STABLE_STUDY, stored.study_id),
        (ChangeType.STABLE_PATIENT, stored.patient_id),
    ]
    assert [c.path for c in changes][0] == f"/series/{stored.series_id}"
    assert await stable_changes(index) == [(c.change_type, c.id) for c in changes]
    assert [e.change.seq for e in await index.outbox_batch(100)][-3:] == [c.seq for c in changes]
    for level, public_id in parents:
        assert await is_stable(index, level, public_id) is True
    # Exactly once per quiet period.
    assert await index.emit_stable(time.time() + 100) == []
    assert await index.unstable_resources() == []


async def test_already_stored_does_not_reset_the_timer(index: Index) -> None:
    await index.store_instance(command("P1"))
    first = {r.public_id: r.touched_at for r in await index.unstable_resources()}
    assert (await index.store_instance(command("P1"))).status is StoreStatus.ALREADY_STORED
    assert {r.public_id: r.touched_at for r in await index.unstable_resources()} == first


async def test_new_instance_starts_a_new_quiet_period(index: Index) -> None:
    stored = command("P1")
    await index.store_instance(stored)
    cutoff = time.time() + 0.001
    await index.emit_stable(cutoff)
    await asyncio.sleep(0.01)  # the next store is later than the cutoff, even when it takes < 1 ms
    second = command("P1", stored.study_uid, stored.series_uid, f"{stored.sop_uid}.2")
    await index.store_instance(second)
    assert await is_stable(index, Level.STUDY, stored.study_id) is False
    # The new instance is after the old cutoff: not due then, due later.
    assert await index.emit_stable(cutoff) == []
    assert len(await index.emit_stable(time.time() + 0.001)) == 3
    assert len(await stable_changes(index)) == 6


async def test_deleted_resources_get_no_stable_change(index: Index) -> None:
    kept, gone = command("P1"), command("P2")
    await index.store_instance(kept)
    await index.store_instance(gone)
    await index.delete_resource(Level.PATIENT, gone.patient_id)
    changes = await index.emit_stable(time.time() + 0.001)
    assert {c.id for c in changes} == {kept.patient_id, kept.study_id, kept.series_id}


async def test_concurrent_emitters_emit_each_change_once(index: Index) -> None:
    commands = [command(f"P{n}") for n in range(20)]
    for stored in commands:
        await index.store_instance(stored)
    cutoff = time.time() + 0.001
    results = await asyncio.gather(*(index.emit_stable(cutoff, limit=7) for _ in range(6)))
    while any(len(result) == 7 for result in results):
        results = await asyncio.gather(*(index.emit_stable(cutoff, limit=7) for _ in range(6)))
    emitted = await stable_changes(index)
    assert len(emitted) == 60 and len(set(emitted)) == 60
    # Per hierarchy: series, then study, then patient.
    for stored in commands:
        order = [public_id for _, public_id in emitted if public_id in (
            stored.series_id, stored.study_id, stored.patient_id)]
        assert order == [stored.series_id, stored.study_id, stored.patient_id]
