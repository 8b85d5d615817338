"""The indexer's use cases: commit StoreInstance commands, relay the outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from dicomkeep.common.events import CHANGES_EXCHANGE, SCHEMA_VERSION, OutboxEvent, StoreInstance
from dicomkeep.common.index import Index
from dicomkeep.common.metrics import CHANGES_PUBLISHED, STORE_TRANSACTIONS
from dicomkeep.common.ports.bus import Bus

log = logging.getLogger(__name__)


async def store(index: Index, body: bytes) -> bytes:
    """Run the store transaction for one encoded StoreInstance; return the StoreReply.

    A failure inside the transaction is answered (status Failure, with its Orthanc
    error code) rather than raised, so the sender gets a definite answer.
    """
    command = StoreInstance.model_validate_json(body)
    reply = await index.store_instance(command)
    STORE_TRANSACTIONS.labels(reply.status.value).inc()
    log.debug("stored instance=%s status=%s seq=%s", reply.instance_id, reply.status, reply.seq)
    return reply.model_dump_json().encode()


async def relay_outbox(
    index: Index, buses: Sequence[Bus], *, batch: int = 500, window: int = 64
) -> int:
    """Publish the oldest committed events on `dicomkeep.changes`, in Seq order.

    Returns how many were published. Publishes go out in windows whose confirms
    are awaited together (one confirm at a time caps RabbitMQ at ~150/s); within
    a window they are issued in Seq order on one channel. An event leaves the
    outbox only after the broker confirmed it: a crash in between republishes it
    (consumers deduplicate by Seq). Every bus gets every event (the all-in-one
    mode may mirror its in-process bus to RabbitMQ for external subscribers).
    """
    events = await index.outbox_batch(batch)
    published = 0
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        await asyncio.gather(*(_publish(bus, event) for event in chunk for bus in buses))
        await index.outbox_done([event.change.seq for event in chunk])
        CHANGES_PUBLISHED.inc(len(chunk))
        published += len(chunk)
    return published


async def _publish(bus: Bus, event: OutboxEvent) -> None:
    change = event.change
    headers: Mapping[str, str] = {
        **event.headers,
        "x-dicomkeep-type": "Change",
        "x-dicomkeep-schema": SCHEMA_VERSION,
        "Seq": str(change.seq),
    }
    await bus.publish(
        CHANGES_EXCHANGE,
        change.routing_key,
        change.model_dump_json(by_alias=True).encode(),
        headers,
    )
