"""The public change-event contract (ARCHITECTURE.md, docs/events.md), seen by a subscriber.

In both modes: the distributed cluster publishes on its RabbitMQ, and the
all-in-one mirrors its in-process bus there when `RabbitMQ.PublishChanges` is on.
A subscriber binds its own queue to `dicomkeep.changes` on a RabbitMQ virtual
host of the test's and
checks what an application relies on: routing keys, bodies equal to `GET /changes`
entries, filtering headers, Seq order, at-least-once with the Seq as the key,
Deleted events that `/changes` does not list; then runs examples/subscriber.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from dicomkeep.common.ids import Level, hierarchy_ids, resource_path
from servers import Server, allinone_server, cluster_server, rabbit_vhost, wait_until
from synthetic import GeneratedInstance, generate_study

EXCHANGE = "dicomkeep.changes"
SUBSCRIBER = Path(__file__).resolve().parents[2] / "examples" / "subscriber.py"
UID_HEADERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.fixture(scope="module", params=["allinone", "distributed"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server for this module: a cluster (two gateways), or an all-in-one that
    publishes its changes on RabbitMQ."""
    tmp = tmp_path_factory.mktemp(f"events-{request.param}")
    if request.param == "distributed":
        with cluster_server(tmp) as running:
            yield running
        return
    with rabbit_vhost(f"dk_events_{uuid.uuid4().hex[:8]}") as url:
        config = {"RabbitMQ": {"Url": url, "PublishChanges": True}}
        with allinone_server(tmp, config) as running:
            yield running


@dataclass
class Event:
    """One delivery: the routing key, the decoded body, the string headers."""

    routing_key: str
    body: dict[str, Any]
    headers: dict[str, str]
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return int(self.body["Seq"])


@dataclass
class Recorder:
    """A test subscriber: an exclusive queue bound to `dicomkeep.changes`."""

    url: str
    bindings: tuple[str, ...] = ("#",)
    events: list[Event] = field(default_factory=list)
    _connection: Any = None

    async def __aenter__(self) -> Recorder:
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for pattern in self.bindings:
            await queue.bind(exchange, routing_key=pattern)
        await queue.consume(self._on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in message.headers.items()}
        properties = {
            "message_id": message.message_id, "timestamp": message.timestamp,
            "type": message.type, "app_id": message.app_id,
            "content_type": message.content_type,
        }
        self.events.append(
            Event(message.routing_key or "", json.loads(message.body), headers, properties)
        )
        await message.ack()

    def of(self, change_type: str) -> list[Event]:
        return [e for e in self.events if e.body["ChangeType"] == change_type]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `predicate` on the event loop until true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def store(client: httpx.AsyncClient, study: list[GeneratedInstance]) -> list[str]:
    """POST every instance; return their Orthanc IDs."""
    ids = []
    for item in study:
        answer = await client.post("/instances", content=item.data)
        assert answer.status_code == 200, answer.text
        assert answer.json()["Status"] == "Success"
        ids.append(answer.json()["ID"])
    return ids


async def changes_since(client: httpx.AsyncClient, since: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = (await client.get(f"/changes?since={since}&limit=1000")).json()
        found += page["Changes"]
        if page["Done"] or not page["Changes"]:
            return found
        since = page["Last"]


def assert_once_per_seq_in_order(events: list[Event]) -> None:
    """Duplicates carry the same Seq and body; first deliveries come in Seq order."""
    first: dict[int, Event] = {}
    order: list[int] = []
    for event in events:
        if event.seq in first:
            assert event.body == first[event.seq].body
            assert event.routing_key == first[event.seq].routing_key
            assert event.properties == first[event.seq].properties
        else:
            first[event.seq] = event
            order.append(event.seq)
    assert order == sorted(order)


def amqp_url(server: Server) -> str:
    return str(server.config["RabbitMQ"]["Url"])


async def test_store_publishes_changes_equal_to_the_changes_log(cluster: Server) -> None:
    study = generate_study(series=2, instances_per_series=3, modality="MR", seed=101)
    sample = study[0]
    patient_id, study_id, _, _ = hierarchy_ids(
        sample.patient_id, sample.study_uid, sample.series_uid, sample.sop_uid
    )
    async with (
        Recorder(amqp_url(cluster)) as recorder,
        httpx.AsyncClient(base_url=cluster.urls[0], timeout=30) as first,
        httpx.AsyncClient(base_url=cluster.urls[-1], timeout=30) as second,
    ):
        before = (await first.get("/changes?last")).json()["Last"]
        instance_ids = await store(first, study)
        await until(
            lambda: {e.body["ID"] for e in recorder.of("NewInstance")} >= set(instance_ids),
            "a NewInstance event for every stored instance",
        )
        await until(
            lambda: any(e.body["ID"] == study_id for e in recorder.of("StableStudy")),
            "the StableStudy event (StableAge 2 s)",
        )
        events = [e for e in recorder.events if e.seq > before]
        assert_once_per_seq_in_order(events)

        # Once per Seq: one Seq per stored instance.
        new_instances = {e.seq: e.body["ID"] for e in events if e.routing_key.endswith(".NewInstance")}
        assert sorted(new_instances.values()) == sorted(instance_ids)
        assert {e.body["ID"] for e in events if e.body["ChangeType"] == "NewStudy"} == {study_id}
        assert {e.body["ID"] for e in events if e.body["ChangeType"] == "NewPatient"} == {patient_id}
        assert len([e for e in events if e.body["ChangeType"] == "NewSeries"]) == 2

        # The body is the GET /changes entry of the same Seq, through either gateway.
        logged = {c["Seq"]: c for c in await changes_since(second, before)}
        last = max(e.seq for e in events)
        # Nothing lost: every logged change up to the last one delivered was delivered.
        assert {s for s in logged if s <= last} == {e.seq for e in events}
        for event in events:
            assert event.body == logged[event.seq]
            assert event.routing_key == f"{event.body['ResourceType']}.{event.body['ChangeType']}"
            assert_envelope(event)

        # No patient data in the headers: the change type, level, resource id, and
        # the parents' Orthanc IDs for the events of a store.
        patient_values = {
            value for item in study
            for value in (item.patient_id, item.study_uid, item.series_uid, item.sop_uid)
        }
        for event in events:
            assert not set(event.headers.values()) & patient_values
            assert not set(event.headers) & set(UID_HEADERS)
        (new_study,) = [e for e in events if e.body["ChangeType"] == "NewStudy"]
        assert new_study.headers["ParentPatient"] == patient_id
        assert "ParentStudy" not in new_study.headers
        new_instance = next(e for e in events if e.body["ChangeType"] == "NewInstance")
        assert new_instance.headers["ParentStudy"] == study_id


def assert_envelope(event: Event) -> None:
    """The AMQP properties of docs/events.md, and the headers that identify the change."""
    body, properties = event.body, event.properties
    assert properties["app_id"] == "dicomkeep"
    assert properties["content_type"] == "application/json"
    assert properties["type"] == body["ChangeType"]
    assert properties["message_id"].endswith(f":{body['Seq']}")
    stamp = properties["timestamp"]
    assert stamp.strftime("%Y%m%dT%H%M%S") == body["Date"]
    assert event.headers["Seq"] == str(body["Seq"])
    assert event.headers["x-dicomkeep-type"] == "Change"
    assert event.headers["x-dicomkeep-schema"] == "1"
    assert event.headers["ChangeType"] == body["ChangeType"]
    assert event.headers["ResourceType"] == body["ResourceType"]
    assert event.headers["ID"] == body["ID"]


async def test_delete_publishes_deleted_events_not_logged(cluster: Server) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=202)
    sample = study[0]
    patient_id, study_id, series_id, _ = hierarchy_ids(
        sample.patient_id, sample.study_uid, sample.series_uid, sample.sop_uid
    )
    async with (
        Recorder(amqp_url(cluster), bindings=("*.Deleted",)) as recorder,
        httpx.AsyncClient(base_url=cluster.urls[-1], timeout=30) as client,
    ):
        instance_ids = await store(client, study)
        before = (await client.get("/changes?last")).json()["Last"]
        answer = await client.delete(f"/studies/{study_id}")
        assert answer.status_code == 200
        expected = {
            ("Study", study_id), ("Series", series_id), ("Patient", patient_id),
            *(("Instance", i) for i in instance_ids),
        }
        await until(
            lambda: {(e.body["ResourceType"], e.body["ID"]) for e in recorder.events} >= expected,
            "Deleted events for the study, its series, instances and its patient",
        )
        assert_once_per_seq_in_order(recorder.events)
        for event in recorder.events:
            level = event.body["ResourceType"]
            assert event.routing_key == f"{level}.Deleted"
            assert event.body["ChangeType"] == "Deleted"
            assert event.body["Path"] == resource_path(Level(level), event.body["ID"])
            assert event.seq > before
            assert_envelope(event)
        # GET /changes keeps Orthanc's logged set: no Deleted entry, no Deleted Seq.
        logged = await changes_since(client, before)
        assert all(c["ChangeType"] != "Deleted" for c in logged)
        assert not {c["Seq"] for c in logged} & {e.seq for e in recorder.events}


def run_subscriber(
    cluster: Server, state: Path, log: Path, queue: str, *options: str
) -> subprocess.Popen[str]:
    """Start examples/subscriber.py on Instance.NewInstance; stderr goes to `log`."""
    with log.open("w") as errors:
        return subprocess.Popen(
            [sys.executable, str(SUBSCRIBER), "Instance.NewInstance",
             "--amqp-url", amqp_url(cluster), "--rest-url", cluster.urls[0],
             "--queue", queue, "--state", str(state), *options],
            stdout=subprocess.PIPE, stderr=errors, text=True,
        )


def printed(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_example_subscriber(cluster: Server, tmp_path: Path) -> None:
    state, log = tmp_path / "state.json", tmp_path / "subscriber.log"
    queue = f"example-{uuid.uuid4().hex[:8]}"
    study = generate_study(series=1, instances_per_series=3, seed=303)
    with httpx.Client(base_url=cluster.urls[0], timeout=30) as client:
        since = client.get("/changes?last").json()["Last"]
        # Live: the subscriber listens, two instances arrive through its queue.
        process = run_subscriber(
            cluster, state, log, queue, "--since", str(since),
            "--max-messages", "2", "--timeout", "60",
        )
        wait_until(lambda: "listening" in log.read_text(), 30, "the subscriber to listen")
        for item in study[:2]:
            assert client.post("/instances", content=item.data).status_code == 200
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, log.read_text()
        live = printed(output)
        assert [line["source"] for line in live] == ["queue", "queue"]
        assert [line["change"]["ID"] for line in live] == [
            hierarchy_ids(i.patient_id, i.study_uid, i.series_uid, i.sop_uid)[3]
            for i in study[:2]
        ]
        assert all(line["envelope"]["type"] == "NewInstance" for line in live)
        assert all(line["routing_key"] == "Instance.NewInstance" for line in live)
        assert json.loads(state.read_text())["last"] == live[-1]["change"]["Seq"]

        # Down: the third instance is in its durable queue AND in /changes; the next
        # run handles it exactly once (deduplicated by Seq), then stops at its timeout.
        stored = client.post("/instances", content=study[2].data).json()
        process = run_subscriber(cluster, state, log, queue, "--timeout", "4")
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, log.read_text()
        (again,) = printed(output)
        assert again["change"]["ID"] == stored["ID"]
        assert again["change"] == next(
            c for c in client.get(f"/changes?since={since}&limit=1000").json()["Changes"]
            if c["Seq"] == again["change"]["Seq"]
        )


def test_example_subscriber_envelope_and_duplicates(cluster: Server, tmp_path: Path) -> None:
    """NewInstance and StableStudy arrive with the full envelope; a redelivered copy
    (same message_id) is ignored."""
    state, log = tmp_path / "state.json", tmp_path / "subscriber.log"
    queue = f"example-{uuid.uuid4().hex[:8]}"
    (item,) = generate_study(series=1, instances_per_series=1, seed=304)
    _, study_id, _, instance_id = hierarchy_ids(
        item.patient_id, item.study_uid, item.series_uid, item.sop_uid
    )
    with httpx.Client(base_url=cluster.urls[0], timeout=30) as client, log.open("w") as errors:
        since = client.get("/changes?last").json()["Last"]
        process = subprocess.Popen(
            [sys.executable, str(SUBSCRIBER), "Instance.NewInstance", "Study.StableStudy",
             "--amqp-url", amqp_url(cluster), "--rest-url", cluster.urls[0],
             "--queue", queue, "--state", str(state), "--since", str(since),
             "--max-messages", "2", "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=errors, text=True,
        )
        wait_until(lambda: "listening" in log.read_text(), 30, "the subscriber to listen")
        assert client.post("/instances", content=item.data).status_code == 200
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        # The broker delivers the same message again (as after a lost ack).
        asyncio.run(_redeliver(amqp_url(cluster), queue, first))
        wait_until(lambda: "duplicate ignored" in log.read_text(), 30, "the duplicate")
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, log.read_text()
    lines = [first, *printed(rest)]
    assert [(line["change"]["ChangeType"], line["change"]["ID"]) for line in lines] == [
        ("NewInstance", instance_id), ("StableStudy", study_id)
    ]
    for line in lines:
        envelope, change = line["envelope"], line["change"]
        assert envelope["app_id"] == "dicomkeep"
        assert envelope["content_type"] == "application/json"
        assert envelope["type"] == change["ChangeType"]
        assert envelope["message_id"].endswith(f":{change['Seq']}")
        assert envelope["timestamp"].startswith(
            f"{change['Date'][:4]}-{change['Date'][4:6]}-{change['Date'][6:8]}"
        )
    assert f"message_id={first['envelope']['message_id']}" in log.read_text()


async def _redeliver(url: str, queue: str, line: dict[str, Any]) -> None:
    """Put a copy of a delivered change back on the subscriber's queue."""
    from datetime import datetime

    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        envelope = line["envelope"]
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(line["change"]).encode(), headers=line["headers"],
                message_id=envelope["message_id"], type=envelope["type"],
                app_id=envelope["app_id"], content_type=envelope["content_type"],
                timestamp=datetime.fromisoformat(envelope["timestamp"]),
            ),
            routing_key=queue,
        )
    finally:
        await connection.close()
