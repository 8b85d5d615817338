"""The embedded Bus: in-process asyncio queues with RabbitMQ's semantics.

Used by the all-in-one mode. It mirrors `RabbitBus` closely enough that both pass
the same contract suite: topic exchanges (`*` one word, `#` zero or more), named
queues whose consumers compete round-robin with at most `prefetch` handlers in
flight each, redelivery when a handler raises (then a logged dead letter; never
for an unreachable backend, at once for an undecodable message), and
request/reply over a named queue. Nothing survives the process.

The W3C trace context travels in the headers as on RabbitMQ: each publish and
request is a producer span injected into the headers, each handler runs in a
consumer span whose parent is extracted from them (telemetry.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from dicomkeep.common.adapters.bus_errors import (
    BusError,
    FailureKind,
    describe,
    failure_kind,
    requester_error,
    responder_error,
)
from dicomkeep.common.events import SCHEMA_VERSION, Envelope
from dicomkeep.common.ports.bus import BusNotSent, BusTimeout, Consumer, Responder
from dicomkeep.common.retries import retrying
from dicomkeep.common.telemetry import LOCAL_MESSAGING_SYSTEM, consumer_span, producer_span

log = logging.getLogger(__name__)

#: Redeliveries after the first failed delivery, like `x-delivery-limit` on RabbitMQ.
DELIVERY_LIMIT = 5
#: The first redelivery delay in seconds; it doubles on each further attempt.
RETRY_BACKOFF = 0.05
#: How many dead letters `LocalBus.dead_letters` keeps (the oldest go first).
DEAD_LETTERS_KEPT = 1000


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """Tell whether an AMQP topic binding pattern matches a routing key.

    Words are separated by dots; `*` matches exactly one word and `#` zero or more,
    as on a RabbitMQ topic exchange.
    """
    words = routing_key.split(".")
    # reached[j]: the pattern words seen so far match the first j words of the key.
    reached = [True] + [False] * len(words)
    for token in pattern.split("."):
        if token == "#":
            seen = False
            for j, value in enumerate(reached):
                seen = seen or value
                reached[j] = seen
        else:
            reached = [False] + [
                reached[j] and token in ("*", word) for j, word in enumerate(words)
            ]
    return reached[-1]


@dataclass(frozen=True)
class DeadLetter:
    """A message dropped after its handler kept raising."""

    queue: str
    body: bytes
    headers: Mapping[str, str]
    error: str


@dataclass
class _Delivery:
    body: bytes
    headers: dict[str, str]
    reply: asyncio.Future[bytes] | None = None


_Work = Callable[[_Delivery], Awaitable[None]]


@dataclass
class _Consumer:
    work: _Work
    prefetch: int
    in_flight: int = 0


@dataclass
class _Queue:
    """A named queue: pending messages and the consumers competing for them."""

    name: str
    messages: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    consumers: list[_Consumer] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    turn: int = 0
    #: A message taken off `messages` by the dispatcher, waiting for a free consumer.
    held: int = 0
    dispatcher: asyncio.Task[None] | None = None

    async def free_consumer(self) -> _Consumer:
        """Wait for the next consumer, round-robin, with room under its prefetch."""
        while True:
            count = len(self.consumers)
            for offset in range(count):
                index = (self.turn + offset) % count
                consumer = self.consumers[index]
                if consumer.in_flight < consumer.prefetch:
                    self.turn = index + 1
                    return consumer
            self.changed.clear()
            await self.changed.wait()


class LocalBus:
    """The in-process Bus of the all-in-one mode.

    Publishing never waits for consumers (queues are unbounded). Delivery is at least
    once; a handler that raises gets the message again after a backoff, up to
    `delivery_limit` redeliveries (with header `x-delivery-count`), then the message
    is logged and kept in `dead_letters`; without limit while a backend is
    unreachable, and not at all when the message is undecodable. A responder's exception reaches the
    requester as `BusError`.
    """

    def __init__(
        self, *, delivery_limit: int = DELIVERY_LIMIT, retry_backoff: float = RETRY_BACKOFF
    ) -> None:
        self._delivery_limit = delivery_limit
        self._retry_backoff = retry_backoff
        self._bindings: dict[str, set[tuple[str, str]]] = {}
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Future[bytes]] = set()
        self._dead_letters: deque[DeadLetter] = deque(maxlen=DEAD_LETTERS_KEPT)
        self._is_closed = False

    @property
    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """The most recent messages dropped after repeated handler failures."""
        return tuple(self._dead_letters)

    async def start(self) -> None:
        """Nothing to connect; exchanges exist on first use."""
        self._is_closed = False

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: start it; `async with` closes it on exit."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel dispatchers and running handlers; fail pending requests with BusError.

        Idempotent. Messages still queued are lost (nothing is durable in-process).
        """
        self._is_closed = True
        for queue in self._queues.values():
            if queue.dispatcher is not None:
                self._tasks.add(queue.dispatcher)
                queue.dispatcher = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for future in self._requests:
            if not future.done():
                future.set_exception(BusError("bus closed"))
        self._requests.clear()
        self._queues.clear()
        self._bindings.clear()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        envelope: Envelope | None = None,
    ) -> None:
        """Put the message on every queue bound with a matching pattern; never waits.

        Exchange `""` is the default exchange: it routes to the queue named
        `routing_key`. A message that matches no binding is dropped, as on RabbitMQ.
        In-process consumers see headers only: the `envelope` (AMQP properties on
        RabbitMQ) adds nothing they would read.
        """
        self._check_open()
        stamped = _stamp(headers)
        with producer_span(LOCAL_MESSAGING_SYSTEM, exchange, routing_key, stamped):
            for queue_name in self._route(exchange, routing_key):
                self._queues[queue_name].messages.put_nowait(_Delivery(body, dict(stamped)))

    async def consume(
        self,
        queue: str,
        bindings: Sequence[tuple[str, str]],
        handler: Consumer,
        *,
        prefetch: int = 16,
    ) -> None:
        """Bind `queue` to each (exchange, pattern) and add a competing consumer.

        At most `prefetch` handlers of this consumer run at once; a message counts as
        handled when `handler` returns.
        """
        self._check_open()
        for exchange, pattern in bindings:
            self._bindings.setdefault(exchange, set()).add((pattern, queue))

        async def work(delivery: _Delivery) -> None:
            await self._handle(queue, handler, delivery)

        self._add_consumer(queue, work, prefetch)

    async def request(
        self, queue: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> bytes:
        """Queue a request on `queue` and wait for a responder's reply.

        Raises BusTimeout when no reply comes within `timeout` seconds (the request
        stays queued, as on RabbitMQ), BusError when the responder raised or the bus
        closed meanwhile, BusNotSent when the bus was already closed.
        """
        if self._is_closed:
            raise BusNotSent("LocalBus is closed")
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._requests.add(reply)
        stamped = _stamp(headers)
        with producer_span(LOCAL_MESSAGING_SYSTEM, "", queue, stamped):
            self._queue(queue).messages.put_nowait(_Delivery(body, stamped, reply))
        try:
            async with asyncio.timeout(timeout):
                return await reply
        except TimeoutError:
            raise BusTimeout(f"no reply from {queue!r} within {timeout} s") from None
        finally:
            self._requests.discard(reply)

    async def serve(self, queue: str, handler: Responder, *, prefetch: int = 64) -> None:
        """Answer requests on `queue`; a raised exception is replied as BusError."""
        self._check_open()

        async def work(delivery: _Delivery) -> None:
            try:
                with consumer_span(LOCAL_MESSAGING_SYSTEM, queue, delivery.headers):
                    answer = await handler(delivery.body, delivery.headers)
            except Exception as exc:
                log.warning("bus responder failed queue=%s error=%s", queue, describe(exc))
                if delivery.reply is not None and not delivery.reply.done():
                    delivery.reply.set_exception(requester_error(responder_error(exc)))
                return
            if delivery.reply is not None and not delivery.reply.done():
                delivery.reply.set_result(answer)

        self._add_consumer(queue, work, prefetch)

    async def queue_depths(self) -> dict[str, int]:
        """Return the messages waiting in each in-process queue that has a consumer.

        Messages whose handler runs are not counted, as unacked ones on RabbitMQ.
        """
        return {
            name: queue.messages.qsize() + queue.held
            for name, queue in self._queues.items()
            if queue.consumers
        }

    def _check_open(self) -> None:
        if self._is_closed:
            raise RuntimeError("LocalBus is closed")

    def _route(self, exchange: str, routing_key: str) -> set[str]:
        if exchange == "":
            return {routing_key} if routing_key in self._queues else set()
        return {
            queue
            for pattern, queue in self._bindings.get(exchange, ())
            if topic_matches(pattern, routing_key)
        }

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def _add_consumer(self, name: str, work: _Work, prefetch: int) -> None:
        queue = self._queue(name)
        queue.consumers.append(_Consumer(work, max(1, prefetch)))
        queue.changed.set()
        if queue.dispatcher is None:
            queue.dispatcher = asyncio.create_task(self._dispatch(queue))

    async def _dispatch(self, queue: _Queue) -> None:
        while True:
            delivery = await queue.messages.get()
            queue.held = 1
            consumer = await queue.free_consumer()
            queue.held = 0
            consumer.in_flight += 1
            task = asyncio.create_task(self._run(queue, consumer, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, queue: _Queue, consumer: _Consumer, delivery: _Delivery) -> None:
        try:
            await consumer.work(delivery)
        finally:
            consumer.in_flight -= 1
            queue.changed.set()

    async def _handle(self, queue: str, handler: Consumer, delivery: _Delivery) -> None:
        """Run `handler`, redelivering in place so that prefetch=1 keeps the order.

        Redeliveries follow the project's retry policy (`retries.retrying`): the
        n-th waits `retry_backoff * 2**(n-1)` s (capped) and carries
        `x-delivery-count: n`. Failures because a backend is unreachable are retried
        without limit; an undecodable (poison) message is dead-lettered at once; after
        `delivery_limit` other failures the message is dead-lettered
        (bus_errors.failure_kind).
        """
        failures = 0

        def redeliverable(error: BaseException) -> bool:
            nonlocal failures
            kind = failure_kind(error)
            if kind is FailureKind.TRANSIENT:
                return True
            failures += 1
            return kind is FailureKind.FAILED and failures <= self._delivery_limit

        # The first delivery runs outside tenacity (building its policy cost
        # ~100 us per event, several events per stored instance); the policy takes
        # over after a redeliverable failure, with the same schedule.
        try:
            with consumer_span(LOCAL_MESSAGING_SYSTEM, queue, delivery.headers):
                await handler(delivery.body, delivery.headers)
            return
        except Exception as exc:
            if not redeliverable(exc):
                self._dead_letter(queue, delivery, failures, exc)
                return
            log.warning(
                "retrying bus handler of %s attempt=1 wait=%.2fs error=%s: %s",
                queue, self._retry_backoff, type(exc).__name__, exc,
            )
        await asyncio.sleep(self._retry_backoff)
        policy = retrying(
            f"bus handler of {queue}",
            first=2 * self._retry_backoff,
            longest=self._retry_backoff * 2 ** max(self._delivery_limit - 1, 0),
            when=redeliverable,
        )
        try:
            async for attempt in policy:
                with attempt:
                    redelivery = attempt.retry_state.attempt_number
                    headers = {**delivery.headers, "x-delivery-count": str(redelivery)}
                    with consumer_span(LOCAL_MESSAGING_SYSTEM, queue, headers):
                        await handler(delivery.body, headers)
        except Exception as exc:
            self._dead_letter(queue, delivery, failures, exc)

    def _dead_letter(
        self, queue: str, delivery: _Delivery, failures: int, exc: Exception
    ) -> None:
        log.error(
            "bus dead letter queue=%s deliveries=%d error=%s", queue, failures, describe(exc)
        )
        self._dead_letters.append(DeadLetter(queue, delivery.body, delivery.headers, describe(exc)))


def _stamp(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy the headers and add the schema version, as RabbitBus does."""
    stamped = dict(headers)
    stamped.setdefault("x-dicomkeep-schema", SCHEMA_VERSION)
    return stamped
