"""RabbitBus set-up at start: broker errors are retried, configuration errors are not.

Seen in a whole-suite run: RabbitMQ answered 541 INTERNAL_ERROR (`badmatch
{error,noproc}`) to an indexer's first basic.consume, and the indexer exited.
`start`, `consume` and `serve` now retry such errors (and an unreachable broker)
on a new channel or connection, with one warning line per attempt, for up to
`setup_within` seconds; bad credentials and a queue declared with other arguments
still raise at once. The tests with a broker need RabbitMQ (`integration`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest
from dicomkeep.common.adapters.rabbit_bus import RabbitBus
from tcp_cut import CuttableRelay

AMQP_URL = os.environ.get("DICOMKEEP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RETRY_LINE = "broker unreachable or failing"


@pytest.fixture
async def names() -> AsyncIterator[dict[str, str]]:
    """Unique queue and dead-letter names; deleted afterwards."""
    prefix = f"test.setup.{uuid.uuid4().hex[:12]}"
    made = {"prefix": prefix, "queue": f"{prefix}.q", "dlq": f"{prefix}.dead-letters",
            "dlx": f"{prefix}.dlx"}
    yield made
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (made["queue"], made["dlq"]):
            await channel.queue_delete(queue)
        await channel.exchange_delete(made["dlx"])


def _bus(names: dict[str, str], url: str = AMQP_URL, **options: Any) -> RabbitBus:
    return RabbitBus(url, name=f"{names['prefix']}.bus", dead_letter_exchange=names["dlx"],
                     dead_letter_queue=names["dlq"], **options)


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and RETRY_LINE in r.getMessage()]


async def _echo(body: bytes, headers: Mapping[str, str]) -> bytes:
    return body


@pytest.mark.integration
async def test_start_waits_for_an_unreachable_broker(
    names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(AMQP_URL)
    relay = CuttableRelay(target.hostname or "127.0.0.1", target.port or 5672)
    relay.start()
    try:
        relay.cut()
        userinfo = target.netloc.rpartition("@")[0]
        via = urlunsplit(target._replace(netloc=f"{userinfo}@127.0.0.1:{relay.port}"))
        bus = _bus(names, via, setup_within=60)
        starting = asyncio.create_task(bus.start())
        while len(_retries(caplog)) < 2:  # two attempts refused, each one logged
            assert not starting.done(), starting
            await asyncio.sleep(0.05)
        relay.restore()
        await starting
        try:
            await bus.serve(names["queue"], _echo)
            assert await bus.request(names["queue"], b"ping", {}, timeout=10) == b"ping"
        finally:
            await bus.close()
    finally:
        relay.close()
    assert all("RabbitMQ connection" in line for line in _retries(caplog))


@pytest.mark.integration
async def test_consume_retries_a_broker_error_on_a_new_channel(
    names: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = _bus(names)
    await bus.start()
    real = RabbitBus._start_consumer
    channels: list[Any] = []

    async def failing_once(self: RabbitBus, queue: Any, callback: Any) -> None:
        channels.append(queue.channel)
        if len(channels) == 1:  # what RabbitMQ answered the indexer
            raise aiormq.exceptions.ChannelClosed(541, "INTERNAL_ERROR - badmatch {error,noproc}")
        await real(self, queue, callback)

    monkeypatch.setattr(RabbitBus, "_start_consumer", failing_once)
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def handle(body: bytes, headers: Mapping[str, str]) -> None:
        got.append(body)
        arrived.set()

    exchange = f"{names['prefix']}.events"
    try:
        await bus.consume(names["queue"], [(exchange, "#")], handle)
        await bus.publish(exchange, "Study.NewStudy", b"after", {})
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await bus.close()
        async with await aio_pika.connect(AMQP_URL) as connection:
            await (await connection.channel()).exchange_delete(exchange)
    assert got == [b"after"]
    assert len(channels) == 2 and channels[0] is not channels[1], "not a new channel"
    (line,) = _retries(caplog)
    assert f"consumer of {names['queue']}" in line and "541" in line


@pytest.mark.integration
async def test_bad_credentials_raise_at_once(
    names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(AMQP_URL)
    wrong = urlunsplit(target._replace(
        netloc=f"guest:not-the-password@{target.hostname}:{target.port or 5672}"))
    bus = _bus(names, wrong, setup_within=60)
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await bus.start()
    assert _retries(caplog) == []


@pytest.mark.integration
async def test_queue_with_other_arguments_raises_at_once(
    names: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.declare_queue(names["queue"], durable=True)  # classic, not quorum
    bus = _bus(names, setup_within=60)
    await bus.start()
    try:
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await bus.serve(names["queue"], _echo)
    finally:
        await bus.close()
    assert _retries(caplog) == []


@pytest.mark.parametrize(("error", "retried"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError(), True),
    (aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR - badmatch {error,noproc}"), True),
    (aiormq.exceptions.ChannelClosed(541, "INTERNAL_ERROR"), True),
    (aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no queue"), True),
    (aiormq.exceptions.ChannelInvalidStateError("No active transport in channel"), True),
    (RuntimeError("No active transport for connection"), True),
    (aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"), False),
    (aiormq.exceptions.AuthenticationError(["AMQPLAIN"], ["PLAIN"]), False),
    (aiormq.exceptions.ConnectionNotAllowed("NOT_ALLOWED - vhost / not found"), False),
    (aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - no configure permission"), False),
    (aiormq.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED - x-queue-type"), False),
    (ValueError("cannot bind a queue to the default exchange"), False),
])  # fmt: skip
def test_which_set_up_errors_are_retried(error: BaseException, retried: bool) -> None:
    bus = RabbitBus(AMQP_URL)
    bus._connection = object()  # type: ignore[assignment]  # connected: aio-pika's RuntimeErrors
    assert bus._is_setup_outage(error) is retried


def test_not_started_is_not_retried() -> None:
    assert RabbitBus(AMQP_URL)._is_setup_outage(RuntimeError("RabbitBus is not started")) is False
