"""Group commit: several StoreInstance commands in one transaction (`Index.store_instances`),
each in its own savepoint, answering exactly as one transaction per command would;
and the indexer's `GroupCommit`, which groups concurrent commands. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from dicomkeep.common.events import ChangeType, StoreStatus
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index, StorageLimits
from dicomkeep.indexer.usecases import GroupCommit
from index_support import command, open_index


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_group_answers_each_command_as_alone(kind: str, tmp_path: Path) -> None:
    limits = StorageLimits(maximum_patients=2, reject=True)
    async with open_index(kind, tmp_path, "group_commit", limits) as index:
        first = command("P1")
        commands = [
            first,
            command("P2"),
            command("P1", first.study_uid, first.series_uid, f"{first.sop_uid}.2"),
            command("P3"),  # a third patient: refused (reject mode), the others stay
            first,  # the same instance again in the group: AlreadyStored
        ]
        replies = await index.store_instances(commands)
        assert [r.status for r in replies] == [
            StoreStatus.SUCCESS, StoreStatus.SUCCESS, StoreStatus.SUCCESS,
            StoreStatus.FAILURE, StoreStatus.ALREADY_STORED,
        ]
        assert replies[3].error_code == "FULL_STORAGE"
        assert [r.instance_id for r in replies] == [c.instance_id for c in commands]
        # Seq follow the order of the commands; the refused one left nothing behind.
        seqs = [r.seq for r in replies[:3]]
        assert all(s is not None for s in seqs) and seqs == sorted(seqs)
        assert await index.get_resource(Level.PATIENT, command("P3").patient_id) is None
        assert await index.referenced_blobs([command("P3").attachments[0].uuid]) == set()
        page = await index.get_changes(0, 100)
        new_instances = [c.id for c in page.changes if c.change_type is ChangeType.NEW_INSTANCE]
        assert new_instances == [c.instance_id for c in commands[:3]]
        assert (await index.statistics()).count_instances == 3


class CountingIndex:
    """An index whose `store_instances` calls are recorded (group sizes)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.groups: list[int] = []

    async def store_instances(self, commands: Any, **options: Any) -> Any:
        self.groups.append(len(commands))
        return await self.index.store_instances(commands, **options)


async def test_concurrent_commands_share_transactions(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "group_commit") as index:
        counting = CountingIndex(index)
        group = GroupCommit(counting, max_group=4)  # type: ignore[arg-type]
        commands = [command(f"P{n}") for n in range(10)]
        replies = await asyncio.gather(*(group.store(c) for c in commands))
        await group.close()
        assert [r.status for r in replies] == [StoreStatus.SUCCESS] * 10
        assert [r.instance_id for r in replies] == [c.instance_id for c in commands]
        # Ten concurrent commands, groups of at most four: three transactions.
        assert counting.groups == [4, 4, 2]
        assert (await index.statistics()).count_instances == 10
        with pytest.raises(RuntimeError):
            await group.store(command("P11"))


async def test_a_lone_command_runs_at_once_and_alone(kind: str, tmp_path: Path) -> None:
    async with open_index(kind, tmp_path, "group_commit") as index:
        counting = CountingIndex(index)
        group = GroupCommit(counting)  # type: ignore[arg-type]
        for n in range(3):
            reply = await group.store(command(f"P{n}"))
            assert reply.status is StoreStatus.SUCCESS
        await group.close()
        assert counting.groups == [1, 1, 1]




async def test_stale_commands_are_refused_and_leave_nothing(kind: str, tmp_path: Path) -> None:
    """A command older than `max_age` (its blobs may be collected) is answered
    Failure TIMEOUT and changes nothing, alone or in a group, where the fresh
    commands around it commit; without `max_age` nothing is judged."""
    async with open_index(kind, tmp_path, "group_commit") as index:
        now = time.time()
        stale = command("P1").model_copy(update={"issued_at": now - 600})
        fresh = command("P2").model_copy(update={"issued_at": now})
        old_format = command("P3").model_copy(update={"received_at": "20200101T000000"})
        (alone,) = await index.store_instances([stale], max_age=60)
        assert alone.status is StoreStatus.FAILURE and alone.error_code == "TIMEOUT"
        replies = await index.store_instances([stale, fresh, old_format], max_age=60)
        assert [r.status for r in replies] == [
            StoreStatus.FAILURE, StoreStatus.SUCCESS, StoreStatus.FAILURE
        ]
        for refused in (stale, old_format):
            assert await index.get_resource(Level.INSTANCE, refused.instance_id) is None
            assert await index.get_resource(Level.PATIENT, refused.patient_id) is None
            assert await index.referenced_blobs([refused.attachments[0].uuid]) == set()
        page = await index.get_changes(0, 100)
        assert {c.id for c in page.changes if c.change_type is ChangeType.NEW_INSTANCE} == {
            fresh.instance_id
        }
        group = GroupCommit(index, max_age=60)
        assert (await group.store(stale)).status is StoreStatus.FAILURE
        await group.close()
        # No bound: the stale command commits (what a caller without one gets).
        assert (await index.store_instance(stale)).status is StoreStatus.SUCCESS
