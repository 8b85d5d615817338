"""Distributed services and a link to RabbitMQ that fails (issue 15).

1. A store whose command reached the indexer but whose publish then failed. The gateway `gateway-1` and the ingest service reach RabbitMQ
through a relay of this test (tests/tcp_cut.py); the indexers reach it directly.
The relay holds back what the broker answers (the publisher confirm never comes
back), an upload and a C-STORE are sent, the indexer commits both (the commands
did reach the broker), then the relay is cut for longer than a publish waits for
a reconnection (30 s): both publishes fail with a connection error, an ambiguous
failure. The senders are told (no success), and the instances that the indexer
committed must read back whole: their blobs may not be removed on such an error
(before the fix they were, leaving indexed instances without their files).

StoreTimeout is above the publish's wait here, so that the connection error, not
the reply timeout (which always left the blobs), ends the store. The all-in-one
path (the in-process bus) is covered by tests/unit/services/test_store_flow.py.

2. A service started while the broker is unreachable: the indexer is started
again through the relay while it is cut, the relay healed a few seconds later;
the indexer retries its connection and consumer set-up (one warning line per
attempt) instead of exiting, and then commits what is stored. (The retry of a
broker error on basic.consume, and the exit on a configuration error:
tests/unit/contract/test_rabbit_setup.py.)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fault_streams import Item, dataset_bytes, make_items
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from servers import Server, cluster_server, wait_until
from tcp_cut import CuttableRelay, relays

SERVER_CONFIG = {"DicomKeep": {"StoreTimeout": 120}}
#: Longer than RabbitBus.PUBLISH_TIMEOUT: the publish gives up while the relay is cut.
CUT_SECONDS = 40.0
#: The members that send StoreInstance commands.
SENDERS = ("gateway-1", "ingest")


def _via(url: str, relay: CuttableRelay) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{relay.port}"))


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, CuttableRelay]]:
    from dicomkeep.allinone import cluster

    tmp: Path = tmp_path_factory.mktemp("ambiguous-store")
    with cluster_server(tmp, SERVER_CONFIG) as server:
        amqp = urlsplit(server.config["RabbitMQ"]["Url"])
        target = {"rabbitmq": (amqp.hostname or "127.0.0.1", amqp.port or 5672)}
        with relays(target) as started:
            relay = started["rabbitmq"]
            environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
            environ["DICOMKEEP_AMQP_URL"] = _via(server.config["RabbitMQ"]["Url"], relay)
            assert server.state_dir is not None
            for name in SENDERS:
                cluster.kill_member(server.state_dir, name)
                cluster.restart_member(server.state_dir, name, environ=environ, timeout=180)
            yield server, relay


def _indexed(client: httpx.Client, item: Item) -> bool:
    try:
        return client.get(f"/instances/{item.instance}").status_code == 200
    except httpx.HTTPError:
        return False


def _stored(client: httpx.Client, item: Item) -> bool:
    try:
        return client.post("/instances", content=item.data).status_code == 200
    except httpx.HTTPError:
        return False


def test_ambiguous_publish_failure_keeps_the_file(
    relayed: tuple[Server, CuttableRelay],
) -> None:
    server, relay = relayed
    warm_rest, warm_dicom, upload, c_store, later = make_items(5, seed=77)
    told: dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server.urls[0], timeout=300) as client:
            try:
                told["rest"] = client.post("/instances", content=upload.data).status_code
            except httpx.HTTPError as error:
                told["rest"] = type(error).__name__

    def send(item: Item) -> None:
        ae = AE(ae_title="AMBIGUOUS")
        ae.requested_contexts = StoragePresentationContexts[:100]
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(dcmread(BytesIO(item.data)))
            told["dicom"] = getattr(status, "Status", None)
        finally:
            if assoc.is_established:
                assoc.release()

    # Each sender has declared the request queue (a declare waits for the broker's
    # answer, which the relay is about to hold) by storing one instance first.
    with server.client(0) as client:
        assert client.post("/instances", content=warm_rest.data).status_code == 200
    send(warm_dicom)
    assert told.pop("dicom") == 0x0000
    relay.hold_replies()
    senders = [threading.Thread(target=post), threading.Thread(target=send, args=(c_store,))]
    for thread in senders:
        thread.start()
    # gateway-2 reaches RabbitMQ directly: it sees what the indexer committed.
    with server.client(1) as direct:
        wait_until(lambda: _indexed(direct, upload) and _indexed(direct, c_store),
                   timeout=120, what="the indexer to commit both commands")
        relay.cut()
        time.sleep(CUT_SECONDS)
        relay.restore()
        for thread in senders:
            thread.join(300)
        # Neither sender was told of a success it did not get.
        assert told["rest"] != 200, told
        assert told["dicom"] != 0x0000, told
        # Both instances are indexed, and their files read back whole.
        assert direct.get(f"/instances/{upload.instance}/file").content == upload.data
        answer = direct.get(f"/instances/{c_store.instance}/file")
        assert answer.status_code == 200, answer.text
        assert dataset_bytes(answer.content) == dataset_bytes(c_store.data)
    # gateway-1 stores again once its link is back.
    with server.client(0) as client:
        wait_until(lambda: _stored(client, later), timeout=120, what="gateway-1 to store again")
    assert server.state_dir is not None
    for name in SENDERS:
        log = (server.state_dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        assert "store outcome unknown" in log, f"{name} did not meet the ambiguous failure"


def test_service_started_while_the_broker_is_unreachable_waits_for_it(
    relayed: tuple[Server, CuttableRelay],
) -> None:
    from dicomkeep.allinone import cluster

    server, relay = relayed
    assert server.state_dir is not None
    (item,) = make_items(1, seed=78)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
    environ["DICOMKEEP_AMQP_URL"] = _via(server.config["RabbitMQ"]["Url"], relay)
    # Only indexer-1 may answer the store: it must be the one that waited.
    for name in ("indexer-2", "indexer-1"):
        cluster.kill_member(server.state_dir, name)
    relay.cut()
    started: dict[str, Any] = {}

    def restart() -> None:
        try:
            cluster.restart_member(server.state_dir, "indexer-1", environ=environ, timeout=240)
            started["ok"] = True
        except Exception as error:  # reported by the assertion below
            started["error"] = error

    thread = threading.Thread(target=restart)
    thread.start()
    log_path = server.state_dir / "indexer-1.log"
    wait_until(lambda: "broker unreachable or failing" in log_path.read_text(errors="replace"),
               timeout=120, what="indexer-1 to retry its connection")
    relay.restore()
    thread.join(300)
    assert started.get("ok"), started
    with server.client(1) as client:
        client.timeout = 120
        answer = client.post("/instances", content=item.data)
        assert answer.status_code == 200, answer.text
        assert client.get(f"/instances/{item.instance}/file").content == item.data
