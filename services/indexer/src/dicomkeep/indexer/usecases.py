"""The indexer's use cases: commit StoreInstance commands, relay the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from dicomkeep.common.events import (
    CHANGES_EXCHANGE,
    ISSUED_AT_HEADER,
    SCHEMA_VERSION,
    Envelope,
    OutboxEvent,
    StoreInstance,
    StoreReply,
)
from dicomkeep.common.index import Index
from dicomkeep.common.metrics import (
    CHANGES_PUBLISHED,
    OUTBOX_LAG,
    OUTBOX_LAST_PUBLISHED,
    STORE_GROUP_SIZE,
    STORE_TRANSACTIONS,
)
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.telemetry import SpanKind, current_traceparent, span_from, tracer

log = logging.getLogger(__name__)

#: The parents' Orthanc IDs that events of a store carry (no patient data).
PARENT_HEADERS = ("ParentPatient", "ParentStudy", "ParentSeries")

#: The global property naming this database in every event's `message_id`.
DATABASE_ID_PROPERTY = "DicomKeepDatabaseId"


class GroupCommit:
    """Commit concurrent StoreInstance commands together: one transaction, one flush.

    A command waits while the group before it commits; the commands that arrived
    meanwhile (up to `max_group`) then run in the next transaction
    (`Index.store_instances`, a savepoint each). A lone sender pays no delay: its
    command starts at once. Concurrent senders (several associations, clients or
    ingest processes) share the disk flush of the commit, which bounds a store on
    one flush per transaction rather than per instance.

    `max_age`: commands older than this many seconds are refused, inside the
    transaction (`Index.store_instances`; index/staleness.py); None judges none.
    """

    def __init__(
        self, index: Index, *, max_group: int = 64, max_age: float | None = None
    ) -> None:
        self.index = index
        self.max_group = max_group
        self.max_age = max_age
        self._waiting: list[tuple[StoreInstance, asyncio.Future[StoreReply]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    async def store(self, command: StoreInstance) -> StoreReply:
        """Store one command within the next group; return its reply."""
        if self._closed:
            raise RuntimeError("the indexer stopped")
        reply: asyncio.Future[StoreReply] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, reply))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_groups(), name="group-commit")
        return await reply

    async def close(self) -> None:
        """Stop committing; commands still waiting fail."""
        self._closed = True
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        for _, reply in self._waiting:
            if not reply.done():
                reply.set_exception(RuntimeError("the indexer stopped"))
        self._waiting.clear()

    async def _commit_groups(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                try:
                    replies = await self.index.store_instances(
                        [c for c, _ in group], max_age=self.max_age
                    )
                except BaseException as error:
                    for _, reply in group:
                        if not reply.done():
                            reply.set_exception(error if isinstance(error, Exception)
                                                else RuntimeError("the indexer stopped"))
                    raise
                for (_, reply), answer in zip(group, replies, strict=True):
                    if not reply.done():
                        reply.set_result(answer)
                if len(group) > 1:
                    STORE_GROUP_SIZE.observe(len(group))
        except Exception:
            log.exception("group commit failed")
        finally:
            self._committer = None
            if self._waiting and not self._closed:  # arrived as the last group failed
                self._committer = asyncio.create_task(
                    self._commit_groups(), name="group-commit"
                )


async def store(
    commit: Callable[[StoreInstance], Awaitable[StoreReply]],
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Run the store transaction for one encoded StoreInstance; return the StoreReply.

    A failure inside the transaction is answered (status Failure, with its Orthanc
    error code) rather than raised, so the sender gets a definite answer. With
    tracing on, the transaction is one span, and the changes it appends remember
    it (their publication continues the trace). `commit` is `Index.store_instance`
    or, to share the transaction with concurrent commands, `GroupCommit.store`.
    The `ISSUED_AT_HEADER` header of the message, when there is one, gives the
    command's `issued_at` (by which a command too old is refused).
    """
    command = StoreInstance.model_validate_json(body)
    issued_at = _issued_at(headers or {})
    if issued_at is not None and command.issued_at is None:
        command = command.model_copy(update={"issued_at": issued_at})
    with tracer().start_as_current_span(
        "store transaction", attributes={"dicomkeep.instance_id": command.instance_id}
    ) as span:
        traceparent = current_traceparent()
        if traceparent is not None:
            command = command.model_copy(update={"traceparent": traceparent})
        reply = await commit(command)
        span.set_attribute("dicomkeep.store_status", reply.status.value)
        if reply.seq is not None:
            span.set_attribute("dicomkeep.seq", reply.seq)
    STORE_TRANSACTIONS.labels(reply.status.value).inc()
    log.debug("stored instance=%s status=%s seq=%s", reply.instance_id, reply.status, reply.seq)
    return reply.model_dump_json().encode()


async def database_identity(index: Index) -> str:
    """Return this database's identity (created once), the prefix of `message_id`s."""
    found = await index.get_property(DATABASE_ID_PROPERTY)
    if found:
        return found
    await index.set_property(DATABASE_ID_PROPERTY, uuid.uuid4().hex)
    return await index.get_property(DATABASE_ID_PROPERTY) or ""


async def relay_outbox(
    index: Index,
    buses: Sequence[Bus],
    *,
    batch: int = 500,
    window: int = 64,
    database_id: str | None = None,
) -> int:
    """Publish the oldest committed events on `dicomkeep.changes`, in Seq order.

    Returns how many were published. Publishes go out in windows whose confirms
    are awaited together (one confirm at a time caps RabbitMQ at ~150/s); within
    a window they are issued in Seq order on one channel. An event leaves the
    outbox only after the broker confirmed it: a crash in between republishes it,
    with the same `message_id` (`<database_id>:<Seq>`; looked up when not given),
    for consumers to deduplicate. Every bus gets every event (the all-in-one mode
    may mirror its in-process bus to RabbitMQ for external subscribers).
    """
    events = await index.outbox_batch(batch)
    OUTBOX_LAG.set(_age(events[0].change.date) if events else 0.0)
    if not events:
        return 0
    if database_id is None:
        database_id = await database_identity(index)
    published = 0
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        await asyncio.gather(
            *(_publish(bus, event, database_id) for event in chunk for bus in buses)
        )
        await index.outbox_done([event.change.seq for event in chunk])
        CHANGES_PUBLISHED.inc(len(chunk))
        OUTBOX_LAST_PUBLISHED.set(chunk[-1].change.seq)
        published += len(chunk)
    return published


def _issued_at(headers: Mapping[str, str]) -> float | None:
    """The `ISSUED_AT_HEADER` of a StoreInstance message; None if absent or unreadable
    (the command is then judged by its `received_at`)."""
    value = headers.get(ISSUED_AT_HEADER)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        log.warning("unreadable %s header: %r", ISSUED_AT_HEADER, value)
        return None


def _age(date: str) -> float:
    """Seconds since a change's `Date` (UTC, `YYYYMMDDTHHMMSS`)."""
    committed = datetime.strptime(date, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - committed).total_seconds())


async def _publish(bus: Bus, event: OutboxEvent, database_id: str) -> None:
    """Publish one change: the body, its envelope, and headers with no patient data.

    The headers carry the change type, level and resource id (and, for the events
    of a store, its parents' Orthanc IDs, which the stability service uses); the trace
    context of the transaction that committed the change is the parent of the
    publication span.
    """
    change = event.change
    headers: Mapping[str, str] = {
        "x-dicomkeep-type": "Change",
        "x-dicomkeep-schema": SCHEMA_VERSION,
        "Seq": str(change.seq),
        "ChangeType": change.change_type.value,
        "ResourceType": change.resource_type,
        "ID": change.id,
        **{name: value for name, value in event.headers.items() if name in PARENT_HEADERS},
    }
    with span_from(
        event.headers.get("traceparent"),
        "publish change",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.destination.name": CHANGES_EXCHANGE,
            "messaging.rabbitmq.destination.routing_key": change.routing_key,
            "messaging.operation.type": "send",
            "dicomkeep.seq": change.seq,
            "dicomkeep.change_type": change.change_type.value,
            "dicomkeep.resource_id": change.id,
        },
    ):
        await bus.publish(
            CHANGES_EXCHANGE,
            change.routing_key,
            change.model_dump_json(by_alias=True).encode(),
            headers,
            envelope=Envelope.of_change(change, database_id),
        )
