"""The operator's side of RabbitMQ's dead letters: list, replay, purge.

RabbitBus dead-letters a message (to the quorum queue `dicomkeep.dead-letters`,
through the fanout exchange `dicomkeep.dlx`) when it is undecodable or failed past
the delivery limit; an outage of Redis or the database never dead-letters
(rabbit_bus.py). What is there stays until an operator decides, with
`dicomkeep dlq list|replay|purge [--queue NAME]`:

- `list` shows each dead letter (original queue, reason, routing key, type, size)
  and leaves them all in place;
- `replay` publishes each one again to the queue it died in (RabbitMQ's default
  exchange, routed by queue name), with its body, headers and properties but
  without the death headers, and removes it from the dead letters only once the
  broker confirmed the new copy; a dead letter whose queue no longer exists stays;
- `purge` removes them.

`queue` restricts any of the three to the dead letters of one original queue.
Messages are taken with basic.get and not acked until handled; those left are
returned to the dead-letter queue when the channel closes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from dicomkeep.common.adapters.rabbit_bus import DEAD_LETTER_QUEUE

Action = Literal["list", "replay", "purge"]

#: Headers RabbitMQ adds when it dead-letters, and the redelivery counter: a replayed
#: message starts afresh.
_DEATH_HEADERS = (
    "x-death", "x-first-death-queue", "x-first-death-reason", "x-first-death-exchange",
    "x-last-death-queue", "x-last-death-reason", "x-last-death-exchange",
    "x-delivery-count",
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as `dicomkeep dlq list` shows it."""

    queue: str
    """The queue it died in (where `replay` sends it)."""
    reason: str
    """RabbitMQ's reason: `rejected` (undecodable, or nacked without requeue),
    `delivery_limit` (failed on every delivery), `expired`, `maxlen`."""
    routing_key: str
    type: str
    size: int
    died_at: str
    outcome: str = "kept"
    """What the command did: `kept`, `replayed`, `purged`, or `kept (no queue)`."""


async def handle_dead_letters(
    url: str,
    action: Action,
    *,
    queue: str | None = None,
    dead_letter_queue: str = DEAD_LETTER_QUEUE,
) -> list[DeadLetter]:
    """Apply `action` to the dead letters (of original queue `queue`, if given).

    Returns what was found, with the outcome of each. A broker without the
    dead-letter queue has none. Raises the connection error when the broker is
    unreachable.
    """
    connection = await aio_pika.connect(url, client_properties={"connection_name": "dicomkeep-dlq"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            source = await channel.declare_queue(dead_letter_queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return []
        # Only what was there at the start: a replayed message that dies again
        # meanwhile waits for the next command instead of looping here.
        waiting = source.declaration_result.message_count or 0
        taken: list[AbstractIncomingMessage] = []
        found: list[DeadLetter] = []
        while len(taken) < waiting:
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
            letter = _describe(message)
            if queue is not None and letter.queue != queue:
                continue
            if action == "purge":
                await message.ack()
                letter = _with(letter, "purged")
            elif action == "replay":
                letter = _with(letter, await _replay(connection, message, letter.queue))
            found.append(letter)
        # What was not acked goes back to the dead-letter queue with the channel.
    return found


async def _replay(
    connection: aio_pika.abc.AbstractConnection, message: AbstractIncomingMessage, queue: str
) -> str:
    probe = await connection.channel()
    try:
        await probe.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return "kept (no queue)"
    finally:
        if not probe.is_closed:
            await probe.close()
    channel = await connection.channel(publisher_confirms=True)
    try:
        headers = {k: v for k, v in message.headers.items() if k not in _DEATH_HEADERS}
        copy = aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type,
            content_encoding=message.content_encoding, app_id=message.app_id,
            message_id=message.message_id, timestamp=message.timestamp, type=message.type,
            correlation_id=message.correlation_id, reply_to=message.reply_to,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(copy, routing_key=queue)
    finally:
        await channel.close()
    await message.ack()
    return "replayed"


def _with(letter: DeadLetter, outcome: str) -> DeadLetter:
    return DeadLetter(**{**letter.__dict__, "outcome": outcome})


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return "" if value is None else str(value)


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    deaths = message.headers.get("x-death") or []
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    last: Mapping[str, Any] = first if isinstance(first, Mapping) else {}
    keys = last.get("routing-keys") or [message.routing_key or ""]
    return DeadLetter(
        queue=_text(last.get("queue") or message.headers.get("x-first-death-queue")),
        reason=_text(last.get("reason") or message.headers.get("x-first-death-reason")),
        routing_key=_text(keys[0] if keys else ""),
        type=_text(message.type),
        size=len(message.body),
        died_at=_text(last.get("time")),
    )
