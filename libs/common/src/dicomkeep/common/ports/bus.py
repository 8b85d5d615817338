"""The Bus port: publish events, competing consumers, request/reply.

Embedded: an in-process asyncio bus. Distributed: RabbitMQ (durable queues,
publisher confirms, manual acks after the handler returns).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from dicomkeep.common.errors import RemoteUnavailable
from dicomkeep.common.events import Envelope

__all__ = ["Bus", "BusError", "BusNotSent", "BusTimeout", "BusUnavailable", "Consumer",
           "Responder"]

#: A consumer: gets the body and headers; raising makes the message be redelivered
#: (and dead-lettered after repeated failures).
Consumer = Callable[[bytes, Mapping[str, str]], Awaitable[None]]
#: A request handler: returns the reply body.
Responder = Callable[[bytes, Mapping[str, str]], Awaitable[bytes]]


class BusTimeout(Exception):
    """No reply came within the timeout."""


class BusError(Exception):
    """The bus could not deliver what was asked.

    Raised by `Bus.request` when the remote responder raised (the message is the
    responder's `"<ExceptionType>: <message>"`) or the bus closed meanwhile, and by
    `RabbitBus.publish` when the broker nacks a message.

    Raised by `Bus.request`, it leaves the command's fate open (the responder may
    have acted on it before failing, or may still act on it), unless it is a
    `BusNotSent`.
    """


class BusNotSent(BusError):
    """`Bus.request` failed before the command left: no responder can ever see it.

    The one request failure after which a sender may undo what it prepared for the
    command (e.g. the blobs of a store): every other failure (BusTimeout, BusError,
    a connection lost after the publish began) is ambiguous.
    """


class BusUnavailable(BusError, RemoteUnavailable):
    """The responder failed because a backend it needs (the database, the broker, the
    clock) was unreachable: the requester answers 503 (retry later), as if it had
    met the outage itself. Ambiguous like any BusError (the commit may have happened
    before the failure).
    """


class Bus(Protocol):
    """Messages between services. Delivery is at least once."""

    async def start(self) -> None:
        """Connect; declare the exchanges."""

    async def close(self) -> None:
        """Stop consumers and disconnect."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        envelope: Envelope | None = None,
    ) -> None:
        """Publish durably; returns once the broker has confirmed the message.

        `envelope` gives the message's AMQP properties (`message_id`, `timestamp`,
        `type`); every message has `app_id` "dicomkeep" and `content_type`
        "application/json".
        """

    async def consume(
        self,
        queue: str,
        bindings: Sequence[tuple[str, str]],
        handler: Consumer,
        *,
        prefetch: int = 16,
    ) -> None:
        """Start consuming a durable queue bound to (exchange, routing-key pattern) pairs.

        Several consumers of one queue compete (each message goes to one of them).
        A message is acknowledged only after `handler` returned.
        """

    async def request(
        self, queue: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> bytes:
        """Send a command to `queue` and wait for its reply.

        Raises BusTimeout when no reply came in time, BusNotSent when the command
        certainly never left (e.g. the queue could not be declared, the bus is
        closed), BusError or a connection error otherwise: then the command may
        have been, or may still be, acted on.
        """

    async def serve(self, queue: str, handler: Responder, *, prefetch: int = 64) -> None:
        """Answer the requests sent to `queue` (competing responders)."""

    async def queue_depths(self) -> dict[str, int]:
        """Return the messages waiting in each queue this process consumes or serves.

        One cheap query per queue (a monitoring sample: call it at scrape time, never
        per message). Messages delivered to a handler and not yet acked are not
        counted. A queue whose depth cannot be read is left out.
        """
