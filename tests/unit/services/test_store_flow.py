"""The store flow on embedded adapters: receive, index, relay, purge, collect orphans."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.adapters.local_bus import LocalBus
from dicomkeep.common.adapters.sqlite_db import SqliteDatabase
from dicomkeep.common.dicom.receiving import Origin, Receiver, bus_submitter
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.events import (
    CHANGES_EXCHANGE,
    ISSUED_AT_HEADER,
    STORE_QUEUE,
    StoreInstance,
    StoreReply,
    StoreStatus,
)
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.ports.bus import BusError, BusNotSent
from dicomkeep.indexer.usecases import GroupCommit, relay_outbox, store
from dicomkeep.storage.usecases import collect_orphans, purge_released
from pydicom.data import get_testdata_file

CT = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
MR = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    idx = Index(SqliteDatabase(tmp_path / "index"))
    await idx.open()
    yield idx
    await idx.close()


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "storage")


async def keys(blobs: FileBlobStore) -> list[str]:
    return [key async for key in blobs.keys()]


async def test_receive_stores_blob_and_rows(index: Index, blobs: FileBlobStore) -> None:
    received = await Receiver(blobs, index.store_instance).receive(CT, Origin("RestApi", "10.0.0.1"))
    assert received.reply.status is StoreStatus.SUCCESS
    instance = await index.get_resource(Level.INSTANCE, received.parsed.ids[3])
    assert instance is not None and instance.dicom is not None
    assert await keys(blobs) == [instance.dicom.uuid]
    assert instance.metadata[8] == "RestApi" and instance.metadata[11] == "10.0.0.1"


async def test_compression_writes_zlib_and_prefix(index: Index, blobs: FileBlobStore) -> None:
    receiver = Receiver(blobs, index.store_instance, compression=True)
    received = await receiver.receive(CT, Origin("RestApi"))
    attachments = await index.list_attachments(Level.INSTANCE, received.parsed.ids[3])
    assert attachments is not None
    assert [a.content_type for a in attachments] == [1, 3]
    dicom = attachments[0]
    assert dicom.compression == 1 and dicom.uncompressed_size == len(CT)
    stored = await blobs.get(dicom.uuid)
    assert stored[:8] == len(CT).to_bytes(8, "little") and dicom.compressed_size == len(stored)


async def test_refused_store_leaves_no_blob(index: Index, blobs: FileBlobStore) -> None:
    async def refuse(command: StoreInstance) -> StoreReply:
        return StoreReply(status=StoreStatus.FAILURE, instance_id=command.instance_id,
                          error_code="FULL_STORAGE", details="full")

    with pytest.raises(OrthancError) as error:
        await Receiver(blobs, refuse).receive(CT, Origin("RestApi"))
    assert error.value.code is ErrorCode.FULL_STORAGE
    assert await keys(blobs) == []


async def test_bad_file_writes_nothing(index: Index, blobs: FileBlobStore) -> None:
    with pytest.raises(OrthancError):
        await Receiver(blobs, index.store_instance).receive(CT[:500], Origin("RestApi"))
    assert await keys(blobs) == []
    assert await index.list_resources(Level.INSTANCE) == []


async def test_relay_publishes_in_seq_order_once(index: Index, blobs: FileBlobStore) -> None:
    bus = LocalBus()
    await bus.start()
    got: list[tuple[str, Mapping[str, str]]] = []
    all_in = asyncio.Event()

    async def collect(body: bytes, headers: Mapping[str, str]) -> None:
        got.append((body.decode(), dict(headers)))
        if len(got) == 4:
            all_in.set()

    await bus.consume("test", [(CHANGES_EXCHANGE, "#")], collect, prefetch=1)
    await Receiver(blobs, index.store_instance).receive(CT, Origin("RestApi"))
    assert await relay_outbox(index, [bus]) == 4
    assert await relay_outbox(index, [bus]) == 0
    await asyncio.wait_for(all_in.wait(), 5)
    await bus.close()
    seqs = [int(headers["Seq"]) for _, headers in got]
    assert seqs == [1, 2, 3, 4]
    assert '"ChangeType":"NewInstance"' in got[0][0]


async def test_purge_and_orphan_collection(index: Index, blobs: FileBlobStore) -> None:
    received = await Receiver(blobs, index.store_instance).receive(CT, Origin("RestApi"))
    kept = (await keys(blobs))[0]
    stray = "0123abcd-0000-4000-8000-000000000000"
    await blobs.put(stray, b"crash leftover")
    old = time.time() - 3600
    for key in (kept, stray):
        os.utime(blobs.path_of(key), (old, old))
    assert await collect_orphans(index, blobs, grace_period=60) == 1
    assert await keys(blobs) == [kept]
    await index.delete_resource(Level.INSTANCE, received.parsed.ids[3])
    assert await purge_released(index, blobs) == 1
    assert await keys(blobs) == []
    assert await index.pending_blobs(10) == []


# An ambiguous failure of the command (issue 15): the blobs stay for the orphan
# collector, since the indexer may have committed (or may still commit) it.

AMBIGUOUS = {
    "connection lost after the publish": ConnectionResetError("connection reset by peer"),
    "the indexer raised": BusError("InterfaceError: connection lost during COMMIT"),
    "a nack": BusError("the broker nacked the message"),
    "a reply that cannot be read": ValueError("not a StoreReply"),
}


async def _readable(index: Index, blobs: FileBlobStore, instance_id: str) -> bytes:
    """The committed instance's file, read back through its attachment row."""
    instance = await index.get_resource(Level.INSTANCE, instance_id)
    assert instance is not None and instance.dicom is not None, "the instance is not indexed"
    return await blobs.get(instance.dicom.uuid)


@pytest.mark.parametrize("error", list(AMBIGUOUS))
async def test_ambiguous_failure_keeps_the_blobs(
    index: Index, blobs: FileBlobStore, error: str
) -> None:
    async def commit_then_fail(command: StoreInstance) -> StoreReply:
        await index.store_instance(command)  # the command did reach the indexer
        raise AMBIGUOUS[error]

    receiver = Receiver(blobs, commit_then_fail)
    with pytest.raises(type(AMBIGUOUS[error])):
        await receiver.receive(CT, Origin("RestApi"))
    (instance,) = await index.list_resources(Level.INSTANCE)
    assert await _readable(index, blobs, instance) == CT


async def test_command_never_sent_removes_the_blobs(index: Index, blobs: FileBlobStore) -> None:
    async def refuse_before_publishing(command: StoreInstance) -> StoreReply:
        raise BusNotSent("ChannelInvalidStateError: the queue could not be declared")

    with pytest.raises(BusNotSent):
        await Receiver(blobs, refuse_before_publishing).receive(CT, Origin("RestApi"))
    assert await keys(blobs) == []


async def test_local_bus_ambiguous_and_unsent(index: Index, blobs: FileBlobStore) -> None:
    """The all-in-one path (bus_submitter over the in-process bus): a responder
    that committed and then failed keeps the blob; a closed bus removes it."""
    bus = LocalBus()
    await bus.start()

    async def commit_then_fail(body: bytes, headers: Mapping[str, str]) -> bytes:
        await index.store_instance(StoreInstance.model_validate_json(body))
        raise ConnectionError("lost after the commit")

    await bus.serve(STORE_QUEUE, commit_then_fail)
    receiver = Receiver(blobs, bus_submitter(bus, timeout=10))
    with pytest.raises(BusError):
        await receiver.receive(CT, Origin("RestApi"))
    (instance,) = await index.list_resources(Level.INSTANCE)
    assert await _readable(index, blobs, instance) == CT
    before = await keys(blobs)
    await bus.close()
    with pytest.raises(BusNotSent):
        await receiver.receive(MR, Origin("RestApi"))
    assert await keys(blobs) == before


async def test_timed_out_store_committed_later_is_readable(
    index: Index, blobs: FileBlobStore
) -> None:
    """The reply comes after StoreTimeout (a slow indexer): the sender is told
    TIMEOUT, the commit happens anyway, and the file is there."""
    bus = LocalBus()
    await bus.start()
    release = asyncio.Event()
    committed = asyncio.Event()

    async def slow(body: bytes, headers: Mapping[str, str]) -> bytes:
        await release.wait()
        reply = await index.store_instance(StoreInstance.model_validate_json(body))
        committed.set()
        return reply.model_dump_json().encode()

    await bus.serve(STORE_QUEUE, slow)
    receiver = Receiver(blobs, bus_submitter(bus, timeout=0.2))
    with pytest.raises(OrthancError) as refused:
        await receiver.receive(CT, Origin("RestApi"))
    assert refused.value.code is ErrorCode.TIMEOUT
    release.set()
    await asyncio.wait_for(committed.wait(), 10)
    await bus.close()
    (instance,) = await index.list_resources(Level.INSTANCE)
    assert await _readable(index, blobs, instance) == CT


async def test_store_older_than_the_grace_period_is_refused(
    index: Index, blobs: FileBlobStore
) -> None:
    """The indexer is stuck past StoreTimeout, the collector removes the blob, then
    the command arrives: the indexer refuses it (the sender was told TIMEOUT), so
    no instance without its file is indexed. `max_age=0` stands for a command
    older than OrphanGracePeriod allows, without waiting that long."""
    bus = LocalBus()
    await bus.start()
    release = asyncio.Event()
    answered: list[StoreReply] = []
    done = asyncio.Event()
    group = GroupCommit(index, max_age=0.0)

    async def stuck(body: bytes, headers: Mapping[str, str]) -> bytes:
        await release.wait()
        assert b"issued_at" not in body  # in a header: earlier indexers read the body
        assert float(headers[ISSUED_AT_HEADER]) > 0
        reply = await store(group.store, body, headers)
        answered.append(StoreReply.model_validate_json(reply))
        done.set()
        return reply

    await bus.serve(STORE_QUEUE, stuck)
    receiver = Receiver(blobs, bus_submitter(bus, timeout=0.2))
    with pytest.raises(OrthancError) as refused:
        await receiver.receive(CT, Origin("RestApi"))
    assert refused.value.code is ErrorCode.TIMEOUT
    assert await collect_orphans(index, blobs, grace_period=0) == 1
    release.set()
    await asyncio.wait_for(done.wait(), 10)
    await group.close()
    await bus.close()
    assert answered[0].status is StoreStatus.FAILURE and answered[0].error_code == "TIMEOUT"
    assert await index.list_resources(Level.INSTANCE) == []
    assert (await index.get_changes(0, 10)).changes == []
    assert await keys(blobs) == []
