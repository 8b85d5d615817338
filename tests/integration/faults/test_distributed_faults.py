"""Faults in the distributed mode, while two senders stream instances (C-STORE and REST).

In turn: kill -9 of ingest, of an indexer, of a gateway, of storage and of
stability (each started again after a second); then outages of PostgreSQL,
RabbitMQ and Redis, made by cutting this cluster's own relays to them for a few
seconds (the shared servers are never stopped). After each fault
(fault_streams.check_after_fault): every acknowledged instance is there, byte for byte;
nothing was indexed twice; /changes has no Seq gap or duplicate; every study
became stable; no message was dead-lettered. At the end, no orphan blob survives
the collector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from backends import AMQP_URL, PG_ADMIN_DSN, REDIS_URL
from dicomkeep.common.adapters.rabbit_dead_letters import handle_dead_letters
from fault_streams import (
    Report,
    check_after_fault,
    check_no_orphan_blob,
    last_seq,
    make_items,
    stream_through,
)
from servers import Server, cluster_server, kill_member, restart_member
from tcp_cut import CuttableRelay, relays

#: StoreTimeout below the orphan grace period: an in-flight store is never robbed.
SERVER_CONFIG = {
    "StableAge": 1,
    "DicomKeep": {"StoreTimeout": 10, "OrphanGracePeriod": 12},
}
DEFAULT_PORTS = {"postgresql": 5432, "amqp": 5672, "redis": 6379}
#: How long a killed process stays down, and a backend cut.
DOWN_SECONDS = 1.0
CUT_SECONDS = 3.0


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[parts.scheme]


def _via(url: str, relay: CuttableRelay) -> str:
    """`url` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{relay.port}"))


class Cluster:
    """The cluster under test, its relays, and its direct AMQP URL."""

    def __init__(self, server: Server, relays: dict[str, CuttableRelay], amqp_url: str) -> None:
        self.server = server
        self.relays = relays
        self.amqp_url = amqp_url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp: Path = tmp_path_factory.mktemp("faults-distributed")
    targets = {"postgresql": _target(PG_ADMIN_DSN), "rabbitmq": _target(AMQP_URL),
               "redis": _target(REDIS_URL)}
    direct: dict[str, str] = {}
    with relays(targets) as cut:
        def route(config: dict[str, Any]) -> None:
            direct["amqp"] = config["RabbitMQ"]["Url"]
            config["PostgreSQL"]["ConnectionUri"] = _via(
                config["PostgreSQL"]["ConnectionUri"], cut["postgresql"])
            config["RabbitMQ"]["Url"] = _via(config["RabbitMQ"]["Url"], cut["rabbitmq"])
            config["Redis"]["Url"] = _via(config["Redis"]["Url"], cut["redis"])

        with cluster_server(tmp, SERVER_CONFIG, route=route) as server:
            yield Cluster(server, cut, direct["amqp"])


def _kill(name: str) -> Callable[[Cluster], None]:
    def fault(cluster: Cluster) -> None:
        kill_member(cluster.server, name)
        time.sleep(DOWN_SECONDS)
        restart_member(cluster.server, name)
    return fault


def _cut(backend: str) -> Callable[[Cluster], None]:
    def fault(cluster: Cluster) -> None:
        cluster.relays[backend].cut()
        time.sleep(CUT_SECONDS)
        cluster.relays[backend].restore()
    return fault


FAULTS: dict[str, Callable[[Cluster], None]] = {
    "kill-ingest": _kill("ingest"),
    "kill-indexer": _kill("indexer-1"),
    "kill-gateway": _kill("gateway-1"),
    "kill-storage": _kill("storage"),
    "kill-stability": _kill("stability"),
    "cut-postgresql": _cut("postgresql"),
    "cut-rabbitmq": _cut("rabbitmq"),
    "cut-redis": _cut("redis"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_nothing_acknowledged_is_lost(
    cluster: Cluster, fault: str, fault_instances: int, fault_report: Report
) -> None:
    server = cluster.server
    with server.client() as client:
        since = last_seq(client)
    items = make_items(fault_instances, seed=list(FAULTS).index(fault) + 1)
    ledger = stream_through(server, items, lambda: FAULTS[fault](cluster))
    check_after_fault(server, items, ledger, since)
    dead = asyncio.run(handle_dead_letters(cluster.amqp_url, "list"))
    assert dead == [], f"{len(dead)} dead letters, e.g. {dead[:3]}"
    if fault == "cut-redis":
        # The stability service did meet the outage, and retried instead of
        # dead-lettering (the issue: 162 dead letters in a 3-second outage).
        assert server.state_dir is not None
        log = (server.state_dir / "stability.log").read_text(encoding="utf-8", errors="replace")
        assert "bus handler of dicomkeep.stability.changes (backend unavailable)" in log
    if fault in ("kill-ingest", "cut-postgresql"):
        # The write path broke: the senders were told, not left believing. (A
        # RabbitMQ cut of a few seconds only delays the stores: a publish waits
        # for the reconnection.)
        assert ledger.failures, "the fault did not reach the senders"
    fault_report(f"distributed/{fault}", len(items), len(ledger.acked), len(ledger.failures))


def test_no_orphan_blob_survives_the_faults(cluster: Cluster) -> None:
    """Blobs written by stores that crashed or failed are collected; stored ones stay."""
    check_no_orphan_blob(cluster.server)
