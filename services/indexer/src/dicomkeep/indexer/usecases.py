"""The indexer's use cases: commit StoreInstance commands, relay the outbox."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dicomkeep.common.events import CHANGES_EXCHANGE, SCHEMA_VERSION, StoreInstance
from dicomkeep.common.metrics import CHANGES_PUBLISHED, STORE_TRANSACTIONS
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.ports.index import Index

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


async def relay_outbox(index: Index, bus: Bus, *, batch: int = 500) -> int:
    """Publish the oldest committed events on `dicomkeep.changes`, in Seq order.

    Returns how many were published. An event is removed from the outbox only
    after the broker confirmed it: a crash in between republishes it (consumers
    deduplicate by Seq).
    """
    events = await index.outbox_batch(batch)
    done: list[int] = []
    try:
        for event in events:
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
            done.append(change.seq)
            CHANGES_PUBLISHED.inc()
    finally:
        await index.outbox_done(done)
    return len(done)
