"""The Bus contract: LocalBus always, RabbitBus under `-m integration`.

The RabbitMQ suite uses unique exchange, queue and dead-letter names per test and
deletes them at teardown, so the broker is left as it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from subprocess import PIPE

import aio_pika
import pytest
from backends import backend_unreachable
from dicomkeep.common.adapters.bus_errors import BusError
from dicomkeep.common.adapters.local_bus import LocalBus, topic_matches
from dicomkeep.common.adapters.rabbit_bus import RabbitBus
from dicomkeep.common.errors import ErrorCode, unavailability
from dicomkeep.common.events import Change
from dicomkeep.common.ports.bus import Bus, BusNotSent, BusTimeout, BusUnavailable

AMQP_URL = os.environ.get("DICOMKEEP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DEADLINE = 5.0


async def eventually(check: Callable[[], bool], deadline: float = DEADLINE) -> None:
    """Poll `check` until it is true; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        if loop.time() > end:
            pytest.fail(f"condition not met within {deadline} s")
        await asyncio.sleep(0.005)


@dataclass
class Kit:
    """An adapter under test: builds buses and unique names, cleans up after the test."""

    kind: str
    prefix: str = field(default_factory=lambda: f"test.{uuid.uuid4().hex[:12]}")
    buses: list[Bus] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)
    local_bus: LocalBus | None = None

    def queue(self, label: str) -> str:
        name = f"{self.prefix}.{label}"
        self.queues.append(name)
        return name

    def exchange(self, label: str = "events") -> str:
        name = f"{self.prefix}.{label}"
        self.exchanges.append(name)
        return name

    async def bus(self, *, shared: bool = True) -> Bus:
        """Return a started bus; LocalBus is one bus per test (it is one process)."""
        if self.kind == "local":
            if self.local_bus is None or not shared:
                self.local_bus = LocalBus(retry_backoff=0.001)
                await self.local_bus.start()
                self.buses.append(self.local_bus)
            return self.local_bus
        bus = RabbitBus(
            AMQP_URL,
            name=f"{self.prefix}.bus",
            dead_letter_exchange=f"{self.prefix}.dlx",
            dead_letter_queue=f"{self.prefix}.dead-letters",
        )
        await bus.start()
        self.buses.append(bus)
        return bus

    async def dead_letter_bodies(self) -> list[bytes]:
        """Take the dead letters collected so far."""
        if self.local_bus is not None:
            return [letter.body for letter in self.local_bus.dead_letters]
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(f"{self.prefix}.dead-letters")
            bodies = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                bodies.append(message.body)
            return bodies

    async def cleanup(self) -> None:
        for bus in self.buses:
            await bus.close()
        if self.kind != "rabbit":
            return
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for queue in [*self.queues, f"{self.prefix}.dead-letters"]:
                await channel.queue_delete(queue)
            for exchange in [*self.exchanges, f"{self.prefix}.dlx"]:
                await channel.exchange_delete(exchange)


async def _open_kit(kind: str) -> Kit:
    if kind == "rabbit":
        try:
            connection = await aio_pika.connect(AMQP_URL, timeout=2)
        except (ConnectionError, OSError, TimeoutError) as exc:
            backend_unreachable(f"RabbitMQ unreachable at {AMQP_URL}: {exc}")
        await connection.close()
    return Kit(kind)


@pytest.fixture(params=["local", pytest.param("rabbit", marks=pytest.mark.integration)])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    opened = await _open_kit(request.param)
    yield opened
    await opened.cleanup()


@pytest.fixture
async def rabbit_kit() -> AsyncIterator[Kit]:
    opened = await _open_kit("rabbit")
    yield opened
    await opened.cleanup()


def recorder(into: list[tuple[bytes, Mapping[str, str]]]) -> Callable[..., Awaitable[None]]:
    async def handle(body: bytes, headers: Mapping[str, str]) -> None:
        into.append((body, headers))

    return handle


def test_topic_patterns_follow_amqp() -> None:
    assert topic_matches("Study.*", "Study.StableStudy")
    assert not topic_matches("Study.*", "Study.StableStudy.x")
    assert not topic_matches("Study.*", "Study")
    assert topic_matches("#", "Instance.NewInstance")
    assert topic_matches("Study.#", "Study")
    assert topic_matches("*.Stable#", "Study.Stable#")
    assert not topic_matches("*.Deleted", "Study.StableStudy")
    assert topic_matches("#.Deleted", "Deleted")
    assert topic_matches("a.#.z", "a.b.c.z")


async def test_publish_reaches_every_queue_bound_by_pattern(kit: Kit) -> None:
    bus = await kit.bus()
    exchange = kit.exchange()
    received: dict[str, list[tuple[bytes, Mapping[str, str]]]] = {}
    for label, pattern in [
        ("studies", "Study.*"),
        ("all", "#"),
        ("new", "Instance.NewInstance"),
    ]:
        received[label] = []
        bindings = [(exchange, pattern), (exchange, "Control.End")]
        await bus.consume(kit.queue(label), bindings, recorder(received[label]), prefetch=1)
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    for key in ["Study.StableStudy", "Instance.NewInstance", "Series.NewSeries", "Study.A.B"]:
        await bus.publish(exchange, key, key.encode(), headers)
    await bus.publish(exchange, "Control.End", b"end", {})

    # Each queue is consumed in order, so once "end" arrived nothing else will.
    await eventually(lambda: all(r and r[-1][0] == b"end" for r in received.values()))
    bodies = {label: [body for body, _ in r[:-1]] for label, r in received.items()}
    assert bodies == {
        "studies": [b"Study.StableStudy"],
        "all": [b"Study.StableStudy", b"Instance.NewInstance", b"Series.NewSeries", b"Study.A.B"],
        "new": [b"Instance.NewInstance"],
    }
    first_headers = received["new"][0][1]
    assert first_headers["traceparent"] == headers["traceparent"]
    assert first_headers["x-dicomkeep-schema"] == "1"


async def test_competing_consumers_share_the_messages(kit: Kit) -> None:
    bus = await kit.bus()
    exchange, queue = kit.exchange(), kit.queue("work")
    got: dict[int, list[bytes]] = {0: [], 1: []}

    def consumer(index: int) -> Callable[..., Awaitable[None]]:
        async def handle(body: bytes, headers: Mapping[str, str]) -> None:
            got[index].append(body)
            await asyncio.sleep(0)

        return handle

    await bus.consume(queue, [(exchange, "job.*")], consumer(0), prefetch=1)
    await bus.consume(queue, [(exchange, "job.*")], consumer(1), prefetch=1)
    sent = [f"m{i}".encode() for i in range(40)]
    for body in sent:
        await bus.publish(exchange, "job.run", body, {})

    await eventually(lambda: len(got[0]) + len(got[1]) >= len(sent))
    assert got[0] and got[1]
    assert sorted(got[0] + got[1]) == sorted(sent)


async def test_message_is_redelivered_when_the_handler_raises(kit: Kit) -> None:
    bus = await kit.bus()
    exchange = kit.exchange()
    attempts: list[Mapping[str, str]] = []
    handled: list[bytes] = []

    async def flaky(body: bytes, headers: Mapping[str, str]) -> None:
        attempts.append(headers)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        handled.append(body)

    await bus.consume(kit.queue("flaky"), [(exchange, "x")], flaky, prefetch=1)
    await bus.publish(exchange, "x", b"payload", {"k": "v"})

    await eventually(lambda: handled == [b"payload"])
    assert len(attempts) == 2
    assert attempts[1]["k"] == "v"
    assert attempts[1]["x-delivery-count"] == "1"


async def test_poison_message_is_dead_lettered(kit: Kit) -> None:
    bus = await kit.bus()
    exchange = kit.exchange()
    attempts: list[bytes] = []
    handled: list[bytes] = []

    async def poison_aware(body: bytes, headers: Mapping[str, str]) -> None:
        if body == b"poison":
            attempts.append(body)
            raise ValueError("cannot parse")
        handled.append(body)

    await bus.consume(kit.queue("poison"), [(exchange, "x")], poison_aware, prefetch=1)
    await bus.publish(exchange, "x", b"poison", {})
    await bus.publish(exchange, "x", b"fine", {})

    dead: list[bytes] = []

    async def collect() -> None:
        dead.extend(await kit.dead_letter_bodies())

    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not dead:
        assert loop.time() < end, "no dead letter within the deadline"
        await collect()
        await asyncio.sleep(0.01)
    assert dead == [b"poison"]
    assert len(attempts) == 6  # the first delivery and 5 redeliveries
    await eventually(lambda: handled == [b"fine"])


async def test_outage_failures_are_retried_past_the_delivery_limit(kit: Kit) -> None:
    """A handler failing because a backend is unreachable (Redis, the database) gets
    the message again until the backend is back: never dead-lettered for it."""
    bus = await kit.bus()
    exchange = kit.exchange()
    attempts: list[bytes] = []
    handled: list[bytes] = []

    async def during_outage(body: bytes, headers: Mapping[str, str]) -> None:
        attempts.append(body)
        if len(attempts) <= 7:  # more failures than the delivery limit (5)
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        handled.append(body)

    await bus.consume(kit.queue("outage"), [(exchange, "x")], during_outage, prefetch=1)
    await bus.publish(exchange, "x", b"payload", {})

    await eventually(lambda: handled == [b"payload"], deadline=30)  # backoff up to 2 s
    assert len(attempts) == 8
    assert await kit.dead_letter_bodies() == []


async def test_undecodable_message_is_dead_lettered_at_once(kit: Kit) -> None:
    bus = await kit.bus()
    exchange = kit.exchange()
    attempts: list[bytes] = []
    handled: list[bytes] = []

    async def decoding(body: bytes, headers: Mapping[str, str]) -> None:
        attempts.append(body)
        handled.append(Change.model_validate_json(body).id.encode())

    await bus.consume(kit.queue("undecodable"), [(exchange, "x")], decoding, prefetch=1)
    await bus.publish(exchange, "x", b"not a change", {})

    dead: list[bytes] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not dead:
        assert loop.time() < end, "no dead letter within the deadline"
        dead.extend(await kit.dead_letter_bodies())
        await asyncio.sleep(0.01)
    assert dead == [b"not a change"]
    assert attempts == [b"not a change"]  # no redelivery: it cannot get better


async def test_queue_depths_count_the_waiting_messages(kit: Kit) -> None:
    bus = await kit.bus()
    exchange, queue = kit.exchange(), kit.queue("backlog")
    release = asyncio.Event()
    handled: list[bytes] = []

    async def slow(body: bytes, headers: Mapping[str, str]) -> None:
        await release.wait()
        handled.append(body)

    assert await bus.queue_depths() == {}
    await bus.consume(queue, [(exchange, "x")], slow, prefetch=1)
    for index in range(4):
        await bus.publish(exchange, "x", f"m{index}".encode(), {})

    # One message is with the handler (unacked): three wait.
    depths: dict[str, int] = {}

    async def sample() -> None:
        depths.update(await bus.queue_depths())

    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while depths != {queue: 3}:
        assert loop.time() < end, f"depths {depths} never reached 3"
        await sample()
        await asyncio.sleep(0.02)
    release.set()
    await eventually(lambda: len(handled) == 4)
    while depths != {queue: 0}:
        assert loop.time() < end + DEADLINE, f"depths {depths} never drained"
        await sample()
        await asyncio.sleep(0.02)


async def test_request_reply_round_trip(kit: Kit) -> None:
    bus = await kit.bus()
    queue = kit.queue("rpc")

    async def shout(body: bytes, headers: Mapping[str, str]) -> bytes:
        return body.upper() + b"/" + headers["who"].encode()

    await bus.serve(queue, shout)
    reply = await bus.request(queue, b"hello", {"who": "ingest"}, timeout=DEADLINE)
    assert reply == b"HELLO/ingest"


async def test_concurrent_requests_get_their_own_replies(kit: Kit) -> None:
    bus = await kit.bus()
    requester = await kit.bus(shared=False) if kit.kind == "rabbit" else bus
    queue = kit.queue("rpc")

    async def double(body: bytes, headers: Mapping[str, str]) -> bytes:
        await asyncio.sleep(0)
        return body + body

    await bus.serve(queue, double, prefetch=32)
    await bus.serve(queue, double, prefetch=32)
    bodies = [f"r{i}.".encode() for i in range(100)]
    replies = await asyncio.gather(
        *(requester.request(queue, body, {}, timeout=DEADLINE) for body in bodies)
    )
    assert replies == [body + body for body in bodies]


async def test_request_without_responder_times_out(kit: Kit) -> None:
    bus = await kit.bus()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BusTimeout):
        await bus.request(kit.queue("nobody"), b"?", {}, timeout=0.2)
    assert loop.time() - started < 2


async def test_responder_exception_reaches_the_requester(kit: Kit) -> None:
    bus = await kit.bus()
    queue = kit.queue("rpc")

    async def refuse(body: bytes, headers: Mapping[str, str]) -> bytes:
        raise ValueError(f"bad request {body.decode()}")

    await bus.serve(queue, refuse)
    with pytest.raises(BusError, match="ValueError: bad request 42"):
        await bus.request(queue, b"42", {}, timeout=DEADLINE)
    # The responder keeps serving after a failure.
    with pytest.raises(BusError, match="bad request 43"):
        await bus.request(queue, b"43", {}, timeout=DEADLINE)


async def test_a_responder_outage_reaches_the_requester_as_unavailable(kit: Kit) -> None:
    """A responder that failed because its backend was unreachable makes the requester
    answer 503 (as if it had met the outage itself); any other failure stays a 500."""
    bus = await kit.bus()
    queue = kit.queue("rpc")

    async def cut_off(body: bytes, headers: Mapping[str, str]) -> bytes:
        if body == b"outage":
            raise ConnectionResetError(104, "Connection reset by peer")
        raise ValueError("a bug")

    await bus.serve(queue, cut_off)
    with pytest.raises(BusUnavailable, match="Connection reset by peer") as outage:
        await bus.request(queue, b"outage", {}, timeout=DEADLINE)
    unavailable = unavailability(outage.value)
    assert unavailable is not None and unavailable.code is ErrorCode.DATABASE_UNAVAILABLE
    with pytest.raises(BusError, match="a bug") as bug:
        await bus.request(queue, b"bug", {}, timeout=DEADLINE)
    assert not isinstance(bug.value, BusUnavailable)
    assert unavailability(bug.value) is None


async def test_request_on_a_closed_bus_was_never_sent(kit: Kit) -> None:
    """BusNotSent: the one request failure after which a sender may undo what it
    prepared (the blobs of a store); it never reaches a responder."""
    bus = await kit.bus()
    await bus.close()
    with pytest.raises(BusNotSent):
        await bus.request(kit.queue("rpc"), b"?", {}, timeout=DEADLINE)


async def test_prefetch_one_keeps_the_publish_order(kit: Kit) -> None:
    bus = await kit.bus()
    exchange = kit.exchange()
    got: list[bytes] = []

    async def slow_first(body: bytes, headers: Mapping[str, str]) -> None:
        if body == b"0":
            for _ in range(50):  # a slow handler must not let later messages overtake it
                await asyncio.sleep(0)
        got.append(body)

    sent = [str(i).encode() for i in range(50)]
    await bus.consume(kit.queue("ordered"), [(exchange, "Seq.*")], slow_first, prefetch=1)
    for body in sent:
        await bus.publish(exchange, "Seq.Change", body, {})

    await eventually(lambda: len(got) >= len(sent))
    assert got == sent


@pytest.mark.integration
async def test_rabbit_keeps_messages_published_while_no_consumer_runs(rabbit_kit: Kit) -> None:
    exchange, queue = rabbit_kit.exchange(), rabbit_kit.queue("durable")
    first = await rabbit_kit.bus(shared=False)
    await first.consume(queue, [(exchange, "Study.*")], recorder([]))
    await first.close()

    publisher = await rabbit_kit.bus(shared=False)
    await publisher.publish(exchange, "Study.StableStudy", b"kept", {"h": "1"})

    later: list[tuple[bytes, Mapping[str, str]]] = []
    consumer = await rabbit_kit.bus(shared=False)
    await consumer.consume(queue, [(exchange, "Study.*")], recorder(later))
    await eventually(lambda: len(later) == 1)
    assert later[0][0] == b"kept"
    assert later[0][1]["h"] == "1"


async def _rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl; fail the test when it is missing or not allowed to talk to the node."""
    if shutil.which("rabbitmqctl") is None:
        backend_unreachable("rabbitmqctl (RabbitMQ's server tools) is not installed")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        backend_unreachable(f"rabbitmqctl {args[0]} failed: {err.decode().strip()}")
    return out.decode()


@pytest.mark.integration
async def test_rabbit_reconnects_after_the_broker_drops_the_connection(rabbit_kit: Kit) -> None:
    exchange, queue, rpc = rabbit_kit.exchange(), rabbit_kit.queue("q"), rabbit_kit.queue("rpc")
    bus = await rabbit_kit.bus()
    got: list[tuple[bytes, Mapping[str, str]]] = []

    async def echo(body: bytes, headers: Mapping[str, str]) -> bytes:
        return body

    await bus.consume(queue, [(exchange, "#")], recorder(got))
    await bus.serve(rpc, echo)
    connections = await _rabbitmqctl("list_connections", "pid", "client_properties")
    pids = [line.split("\t")[0] for line in connections.splitlines() if rabbit_kit.prefix in line]
    assert len(pids) == 1
    await _rabbitmqctl("close_connection", pids[0], "contract test: simulated broker restart")

    # The publish waits for the reconnection, then the restored consumer gets it.
    await bus.publish(exchange, "Study.StableStudy", b"after", {})
    await eventually(lambda: [body for body, _ in got] == [b"after"])
    assert await bus.request(rpc, b"ping", {}, timeout=DEADLINE) == b"ping"
