"""The distributed Bus: RabbitMQ through aio-pika.

Topology:

- Exchanges: every exchange named in `publish` or `consume` is declared on first use,
  durable, type `topic`. The public one, `dicomkeep.changes` (events.CHANGES_EXCHANGE),
  is declared at `start()`; external subscribers bind their own queues to it with
  routing keys `<ResourceType>.<ChangeType>`. Exchange `""` is RabbitMQ's default
  exchange (routes to the queue named by the routing key).
- Work queues: `consume(queue, ...)` and `serve(queue, ...)` declare `queue` as a
  durable quorum queue (`x-queue-type: quorum`) with `x-dead-letter-exchange:
  dicomkeep.dlx` and `x-delivery-limit: 5`. Each `consume`/`serve` call opens its own
  channel, whose QoS is the consumer's prefetch; consumers of one queue compete. A
  message is acked after the handler returned. A handler that failed because a
  backend is unreachable (bus_errors.FailureKind.TRANSIENT: Redis or the database
  down) is run again in place, with backoff and without limit, the message held
  unacked: an outage never dead-letters. A poison message (undecodable) is nacked
  without requeue: dead-lettered at once. Any other failure is nacked with
  requeue; past the delivery limit the broker dead-letters it.
- Dead letters: fanout exchange `dicomkeep.dlx` (durable) bound to the durable
  quorum queue `dicomkeep.dead-letters`, both declared at `start()`. Dead-lettered
  messages keep their body, headers and an `x-death` header (see
  https://www.rabbitmq.com/docs/dlx).
- Request/reply: a request goes through the default exchange to the work queue
  `queue` (declared by the requester too, so it is never unroutable), with
  `reply_to` = this process's reply queue `<name>.reply.<uuid>` (classic, exclusive,
  auto-delete, consumed without acks) and a `correlation_id`. The responder publishes
  the reply there, then acks the request. A responder that raised replies with an
  empty body and the header `x-dicomkeep-error`, which the requester raises as
  BusError.

Every message is persistent, `content_type="application/json"`, `app_id="dicomkeep"`,
carries the header `x-dicomkeep-schema` and the caller's headers as AMQP string
headers; a publish given an `Envelope` also sets `message_id`, `timestamp` and
`type`. With tracing on, aio-pika's OpenTelemetry instrumentation (telemetry.py)
writes the W3C `traceparent`/`tracestate` of a producer span into the headers of
every message and runs each handler in a consumer span continuing it. Publishing uses publisher confirms. The connection
is robust (`connect_robust`): after a broker restart it reconnects, re-declares the
queues and bindings and resumes the consumers.
At start (`start`, `consume`, `serve`), an unreachable or failing broker is
retried with backoff for up to `SETUP_WITHIN` seconds; a configuration error
(credentials, permissions, queue arguments) raises at once.

Over 400 lines because the topology above (exchanges, quorum queues, dead
letters, request/reply) and the reconnect handling it needs are one driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Self, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ConsumerTag,
)
from dicomkeep.common.adapters.bus_errors import (
    BusError,
    FailureKind,
    describe,
    failure_kind,
    requester_error,
    responder_error,
)
from dicomkeep.common.events import APP_ID, CHANGES_EXCHANGE, SCHEMA_VERSION, Envelope
from dicomkeep.common.ports.bus import BusNotSent, BusTimeout, Consumer, Responder
from dicomkeep.common.retries import retrying

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "dicomkeep.dlx"
DEAD_LETTER_QUEUE = "dicomkeep.dead-letters"
#: Redeliveries before the broker dead-letters a message (`x-delivery-limit`).
DELIVERY_LIMIT = 5
#: Seconds between reconnection attempts after the connection dropped.
RECONNECT_INTERVAL = 1.0
#: Seconds a publish waits for the connection to come back before it raises.
PUBLISH_TIMEOUT = 30.0
#: Seconds `start`, `consume` and `serve` keep trying while the broker is unreachable
#: or fails (then they raise, and the service exits).
SETUP_WITHIN = 120.0
#: Seconds a set-up retry waits at most for a robust connection to come back.
RECONNECT_WAIT = 30.0
#: The reply header carrying a responder's exception.
ERROR_HEADER = "x-dicomkeep-error"
SCHEMA_HEADER = "x-dicomkeep-schema"
CONTENT_TYPE = "application/json"

_T = TypeVar("_T")
_Callback = Callable[[AbstractIncomingMessage], Awaitable[None]]
#: What a publish raises while the robust connection is down (retried after `ready()`).
_CONNECTION_LOST = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
)
#: Broker answers that no retry can change, raised at once by `start`, `consume` and
#: `serve`: bad credentials (or a user refused the virtual host), an entity the user
#: may not use, a queue that exists with other arguments.
_CONFIGURATION_ERRORS = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.IncompatibleProtocolError,
    aiormq.exceptions.ConnectionNotAllowed,
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
)


class RabbitBus:
    """The Bus on RabbitMQ (see the module docstring for the topology).

    `prefetch` caps the prefetch of every consumer of this process; `name` is the
    connection name shown by RabbitMQ and the prefix of the reply queue.
    `dead_letter_exchange`/`dead_letter_queue` exist to isolate tests. A queue that
    already exists with other arguments (e.g. a classic queue) makes the declaration
    fail with RabbitMQ's PRECONDITION_FAILED: queue arguments cannot change in place.
    `publish_timeout` bounds how long a publish waits for a reconnection,
    `setup_within` how long `start`, `consume` and `serve` retry a broker that is
    unreachable or fails (see `start`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 64,
        name: str = "dicomkeep",
        dead_letter_exchange: str = DEAD_LETTER_EXCHANGE,
        dead_letter_queue: str = DEAD_LETTER_QUEUE,
        delivery_limit: int = DELIVERY_LIMIT,
        reconnect_interval: float = RECONNECT_INTERVAL,
        publish_timeout: float = PUBLISH_TIMEOUT,
        setup_within: float = SETUP_WITHIN,
    ) -> None:
        self._url = url
        self._prefetch = prefetch
        self._name = name
        self._dead_letter_exchange = dead_letter_exchange
        self._dead_letter_queue = dead_letter_queue
        self._delivery_limit = delivery_limit
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._setup_within = setup_within
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._request_queues: set[str] = set()
        self._reply_queue = ""
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._consumers: list[tuple[AbstractQueue, ConsumerTag]] = []
        #: The queues consumed or served, in order (a dict as an ordered set).
        self._consumed: dict[str, None] = {}
        self._sample_channel: AbstractRobustChannel | None = None
        self._handling: set[asyncio.Task[Any]] = set()

    @property
    def work_queue_arguments(self) -> dict[str, Any]:
        """The arguments of every work and request queue (quorum, DLX, delivery limit)."""
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self._dead_letter_exchange,
            "x-delivery-limit": self._delivery_limit,
        }

    async def start(self) -> None:
        """Connect; declare `dicomkeep.changes`, the dead-letter topology, the reply queue.

        While the broker is unreachable or answers an error (e.g. 541
        INTERNAL_ERROR), it connects and declares again, with the project's backoff
        and one warning line per attempt, for up to `setup_within` seconds; then it
        raises the last error. A configuration error (bad credentials, a refused
        virtual host or entity, a queue declared with other arguments) raises at
        once. Once connected, reconnection is automatic.
        """
        async for attempt in self._setting_up("RabbitMQ connection"):
            with attempt:
                try:
                    await self._connect()
                except BaseException:
                    await self._drop_connection()
                    raise

    async def _connect(self) -> None:
        connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self._name},
            reconnect_interval=self._reconnect_interval,
            timeout=self._publish_timeout,
        )
        self._connection = connection
        channel = await connection.channel(publisher_confirms=True)
        self._channel = channel
        await self._exchange(CHANGES_EXCHANGE)
        dead_letters = await channel.declare_exchange(
            self._dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_letter_queue = await channel.declare_queue(
            self._dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_letter_queue.bind(dead_letters, routing_key="")
        reply_channel = await connection.channel(publisher_confirms=False)
        reply_queue = await reply_channel.declare_queue(
            f"{self._name}.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        self._reply_queue = reply_queue.name
        await reply_queue.consume(self._on_reply, no_ack=True)

    async def _drop_connection(self) -> None:
        """Close a connection that failed half-way through `start`."""
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges.clear()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def _setting_up(self, what: str) -> Any:
        """The retry policy of `start`, `consume` and `serve` (see `start`)."""

        async def until_reconnected(backoff: float) -> None:
            await asyncio.sleep(backoff)
            if self._connection is not None:  # a robust connection comes back by itself
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connection.ready(), RECONNECT_WAIT)

        return retrying(
            f"{what} (broker unreachable or failing)",
            within=self._setup_within,
            first=0.5,
            longest=5.0,
            when=self._is_setup_outage,
            sleep=until_reconnected,
        )

    def _is_setup_outage(self, error: BaseException) -> bool:
        """Tell whether a set-up error may go away by itself (see `start`)."""
        if isinstance(error, _CONFIGURATION_ERRORS):
            return False
        if isinstance(error, aiormq.exceptions.AMQPError | ConnectionError | OSError | TimeoutError):
            return True
        # aio-pika's RuntimeErrors while a robust connection reconnects
        # ("No active transport", "Connection is not ready"); not "not started".
        return isinstance(error, RuntimeError) and self._connection is not None

    async def __aenter__(self) -> Self:
        """Enter the adapter's life: start it; `async with` closes it on exit."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel consumers and running handlers, fail pending requests, disconnect.

        Idempotent. Messages whose handler did not finish are not acked: the broker
        delivers them again (to another consumer or after a restart).
        """
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # the channel may already be gone
                log.debug("bus cancel failed queue=%s error=%s", queue.name, describe(exc))
        self._consumers.clear()
        self._consumed.clear()
        self._sample_channel = None
        handling = list(self._handling)
        for task in handling:
            task.cancel()
        await asyncio.gather(*handling, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusError("bus closed"))
        self._pending.clear()
        self._exchanges.clear()
        self._request_queues.clear()
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        envelope: Envelope | None = None,
    ) -> None:
        """Publish a persistent message; returns once the broker confirmed it.

        While the connection is down it waits for the reconnection, up to
        `publish_timeout` seconds, then raises the connection error; a publish
        interrupted before its confirm is sent again (at least once). Raises BusError
        if the broker nacks it. A message no queue is bound for is dropped by the
        broker (and confirmed), as AMQP specifies.
        """
        await self._publish(exchange, routing_key, _message(body, headers, envelope=envelope))

    async def consume(
        self,
        queue: str,
        bindings: Sequence[tuple[str, str]],
        handler: Consumer,
        *,
        prefetch: int = 16,
    ) -> None:
        """Declare the quorum queue `queue`, bind it, and consume it on its own channel.

        The set-up is retried on a new channel while the broker is unreachable or
        fails, as `start` is. Acks after `handler` returned. While it fails because a
        backend is unreachable it runs again (backoff, no limit); an undecodable
        message is dead-lettered at once; another failure is nacked with requeue (the
        broker dead-letters the message after the delivery limit).
        """
        if any(exchange == "" for exchange, _ in bindings):
            raise ValueError("cannot bind a queue to the default exchange")

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                await _while_unavailable(
                    queue, lambda: handler(message.body, _string_headers(message.headers))
                )
            except Exception as exc:
                poison = failure_kind(exc) is FailureKind.POISON
                log.warning(
                    "bus handler failed queue=%s deliveries=%s poison=%s error=%s",
                    queue,
                    message.headers.get("x-delivery-count", 0),
                    poison,
                    describe(exc),
                )
                # Poison goes to the dead letters at once; another failure is
                # redelivered until the delivery limit.
                await _settle(message.nack(requeue=not poison), queue)
                return
            await _settle(message.ack(), queue)

        await self._set_up_consumer(queue, prefetch, bindings, on_message)

    async def request(
        self, queue: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> bytes:
        """Send a request to the quorum queue `queue` and wait for the correlated reply.

        Raises BusTimeout after `timeout` seconds (the request stays queued and may
        still be processed), BusError when the responder raised, BusNotSent when the
        request queue could not be declared (nothing was published). Any other
        failure (a connection lost, a confirm never received, a nack) comes once the
        publish began: the broker may hold the request, and its responder may still
        act on it.
        """
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = reply
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._declare_request_queue(queue)
                except Exception as error:  # nothing was published yet
                    raise BusNotSent(describe(error)) from error
                message = _message(
                    body, headers, correlation_id=correlation_id, reply_to=self._reply_queue
                )
                await self._publish("", queue, message)
                return await reply
        except TimeoutError:
            raise BusTimeout(f"no reply from {queue!r} within {timeout} s") from None
        finally:
            self._pending.pop(correlation_id, None)

    async def serve(self, queue: str, handler: Responder, *, prefetch: int = 64) -> None:
        """Answer requests on the quorum queue `queue`; ack each once its reply is sent.

        An exception of `handler` is replied as an error (BusError for the requester),
        and the request is acked: it is not retried. The set-up is retried as
        `consume`'s is.
        """

        async def on_request(message: AbstractIncomingMessage) -> None:
            reply_headers: dict[str, str] = {}
            try:
                answer = await handler(message.body, _string_headers(message.headers))
            except Exception as exc:
                log.warning("bus responder failed queue=%s error=%s", queue, describe(exc))
                answer, reply_headers = b"", {ERROR_HEADER: responder_error(exc)}
            if message.reply_to:
                reply = _message(answer, reply_headers, correlation_id=message.correlation_id)
                await self._publish("", message.reply_to, reply)
            await _settle(message.ack(), queue)

        await self._set_up_consumer(queue, prefetch, (), on_request)

    async def queue_depths(self) -> dict[str, int]:
        """Return each consumed queue's ready messages, from a passive queue declare.

        The declares run on a channel of their own: a passive declare of a queue that
        is gone (deleted by an operator) makes the broker close its channel, which
        must not be a publishing or consuming one. Such a queue, or any queue while
        the broker is unreachable, is left out.
        """
        if self._connection is None or not self._consumed:
            return {}
        depths: dict[str, int] = {}
        for queue in list(self._consumed):
            try:
                if self._sample_channel is None:
                    self._sample_channel = await self._connection.channel(
                        publisher_confirms=False
                    )
                channel = await self._sample_channel.get_underlay_channel()
                declared = await channel.queue_declare(queue, passive=True)
            except (aio_pika.AMQPException, ConnectionError, RuntimeError, TimeoutError) as exc:
                log.debug("bus queue depth unknown queue=%s error=%s", queue, describe(exc))
                continue
            if declared.message_count is not None:
                depths[queue] = declared.message_count
        return depths

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        reply = self._pending.get(message.correlation_id or "")
        if reply is None or reply.done():
            return  # the requester timed out or closed
        error = message.headers.get(ERROR_HEADER)
        if error is not None:
            reply.set_exception(requester_error(_text(error)))
        else:
            reply.set_result(message.body)

    async def _publish(self, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
        async def publish_once() -> Any:
            target = await self._exchange(exchange)
            return await target.publish(message, routing_key, mandatory=False)

        confirmation = await self._outlasting_reconnects(publish_once)
        if isinstance(confirmation, aiormq.spec.Basic.Nack):
            raise BusError("the broker nacked the message")

    async def _outlasting_reconnects(self, action: Callable[[], Awaitable[_T]]) -> _T:
        """Run `action`, again after each reconnection, for up to `publish_timeout` s.

        The project's retry policy (`retries.retrying`) on connection losses; between
        attempts it waits for the robust channel to be ready again, not a fixed time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        channel = self._open_channel()

        async def until_reconnected(backoff: float) -> None:
            await asyncio.sleep(backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.ready(), max(deadline - loop.time(), 0.0))

        async for attempt in retrying(
            "bus publish (waiting for the broker)",
            within=self._publish_timeout,
            first=0.05,
            longest=1.0,
            on=_CONNECTION_LOST,
            sleep=until_reconnected,
        ):
            with attempt:
                return await action()
        raise AssertionError("the retry policy neither returned nor raised")

    def _open_channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise RuntimeError("RabbitBus is not started")
        return self._channel

    def _default_exchange(self) -> AbstractExchange:
        return self._open_channel().default_exchange

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self._default_exchange()
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._open_channel().declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._exchanges[name] = exchange
        return exchange

    async def _declare_request_queue(self, queue: str) -> None:
        if queue not in self._request_queues:
            await self._outlasting_reconnects(
                lambda: self._open_channel().declare_queue(
                    queue, durable=True, arguments=self.work_queue_arguments
                )
            )
            self._request_queues.add(queue)

    async def _set_up_consumer(
        self,
        queue: str,
        prefetch: int,
        bindings: Sequence[tuple[str, str]],
        callback: _Callback,
    ) -> None:
        """Open a channel, declare and bind `queue`, consume it with `callback`;
        on a broker error close that channel and start again on a new one."""
        async for attempt in self._setting_up(f"consumer of {queue}"):
            with attempt:
                channel = await self._consumer_channel(prefetch)
                try:
                    work_queue = await channel.declare_queue(
                        queue, durable=True, arguments=self.work_queue_arguments
                    )
                    for exchange, pattern in bindings:
                        await self._exchange(exchange)
                        await work_queue.bind(exchange, routing_key=pattern)
                    await self._start_consumer(work_queue, callback)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await channel.close()
                    raise
        self._consumed[queue] = None

    async def _consumer_channel(self, prefetch: int) -> AbstractChannel:
        if self._connection is None:
            raise RuntimeError("RabbitBus is not started")
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=max(1, min(prefetch, self._prefetch)))
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        return channel

    async def _start_consumer(self, queue: AbstractQueue, callback: _Callback) -> None:
        async def tracked(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handling.add(task)
            try:
                await callback(message)
            finally:
                if task is not None:
                    self._handling.discard(task)

        tag = await queue.consume(tracked)
        self._consumers.append((queue, tag))


def _message(
    body: bytes,
    headers: Mapping[str, str],
    *,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    envelope: Envelope | None = None,
) -> aio_pika.Message:
    amqp_headers: dict[str, Any] = {str(key): str(value) for key, value in headers.items()}
    amqp_headers.setdefault(SCHEMA_HEADER, SCHEMA_VERSION)
    return aio_pika.Message(
        body,
        headers=amqp_headers,
        content_type=CONTENT_TYPE,
        app_id=APP_ID,
        message_id=envelope.message_id if envelope is not None else None,
        timestamp=envelope.timestamp if envelope is not None else None,
        type=envelope.type if envelope is not None else None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=correlation_id,
        reply_to=reply_to,
    )


async def _while_unavailable(queue: str, action: Callable[[], Awaitable[None]]) -> None:
    """Run a consumer's handler, again (with the project's backoff, without limit)
    while it fails because a backend is unreachable (`FailureKind.TRANSIENT`).

    The message stays unacked meanwhile: it is never dead-lettered for an outage,
    and a process stopped during the wait leaves it to the broker to redeliver.
    """
    async for attempt in retrying(
        f"bus handler of {queue} (backend unavailable)",
        first=0.05,
        longest=2.0,
        when=lambda error: failure_kind(error) is FailureKind.TRANSIENT,
    ):
        with attempt:
            await action()


async def _settle(settling: Awaitable[None], queue: str) -> None:
    """Ack or nack; a lost channel is not an error: the broker redelivers the message."""
    try:
        await settling
    except (aio_pika.AMQPException, ConnectionError, RuntimeError) as exc:
        log.warning("bus settle failed queue=%s error=%s", queue, describe(exc))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _string_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """AMQP headers as strings; tables and arrays (such as `x-death`) are left out."""
    strings: dict[str, str] = {}
    for key, value in headers.items():
        if isinstance(value, str | bytes | bool | int | float | Decimal):
            strings[key] = _text(value)
    return strings
