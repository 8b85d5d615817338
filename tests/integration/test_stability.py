"""Stable resources cluster-wide (ORTHANC_API.md §7): each quiet period yields one
StableSeries, StableStudy and StablePatient, after StableAge, whichever replica
is asked, and whatever happens to the stability replicas or to Redis.

On a loaded machine two stores of one study may come more than StableAge apart:
the resources then go stable in between and again after the next store, as in
Orthanc. So the checks read quiet periods from /changes (the NewInstance changes
under a resource, then its Stable* change) rather than counting Stable* changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from servers import (
    Server,
    allinone_server,
    cluster_server,
    kill_member,
    restart_member,
    wait_until,
)
from synthetic import generate_study

STABLE_AGE = 3
SERVER_CONFIG = {"StableAge": STABLE_AGE}
STABLE = ("StableSeries", "StableStudy", "StablePatient")
STABLE_OF = {"patients": "StablePatient", "studies": "StableStudy", "series": "StableSeries"}


@pytest.fixture(scope="module", params=["allinone", "distributed"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server: the distributed cluster runs 2 stability replicas."""
    tmp = tmp_path_factory.mktemp(f"stability-{request.param}")
    if request.param == "allinone":
        with allinone_server(tmp, SERVER_CONFIG) as running:
            yield running
    else:
        with cluster_server(tmp, SERVER_CONFIG, stability=2) as running:
            yield running


@dataclass
class StoredStudy:
    patient: str
    study: str
    series: list[str]  # the series of the last instance first
    last_sent: float  # time.monotonic() just before the last instance was sent
    instances: dict[str, str]  # instance public id -> its series' public id

    @property
    def resources(self) -> list[tuple[str, str]]:
        """(level path, public id) of every resource that must become stable."""
        return [("patients", self.patient), ("studies", self.study)] + [
            ("series", s) for s in self.series
        ]

    def instances_under(self, public_id: str) -> set[str]:
        """The instances of one of the study's resources."""
        if public_id in self.series:
            return {i for i, s in self.instances.items() if s == public_id}
        return set(self.instances)


def store_study(server: Server, seed: int, part: slice = slice(None)) -> StoredStudy:
    """Store one study of 2 series x 3 instances (or `part` of its instances, series
    after series) over REST, alternating the replicas."""
    answers: list[dict[str, Any]] = []
    last_sent = 0.0
    items = generate_study(series=2, instances_per_series=3, seed=seed)[part]
    for n, item in enumerate(items):
        with server.client(n) as client:
            last_sent = time.monotonic()
            answer = client.post("/instances", content=item.data)
        assert answer.status_code == 200 and answer.json()["Status"] == "Success"
        answers.append(answer.json())
    return StoredStudy(
        patient=answers[0]["ParentPatient"],
        study=answers[0]["ParentStudy"],
        series=list(dict.fromkeys(a["ParentSeries"] for a in reversed(answers))),
        last_sent=last_sent,
        instances={a["ID"]: a["ParentSeries"] for a in answers},
    )


def all_changes(client: httpx.Client) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    since = 0
    while True:
        page = client.get(f"/changes?since={since}&limit=1000").json()
        changes += page["Changes"]
        since = page["Last"]
        if page["Done"]:
            return changes


def stable_changes(server: Server, public_ids: set[str]) -> list[dict[str, Any]]:
    with server.client() as client:
        return [
            c for c in all_changes(client)
            if c["ChangeType"] in STABLE and c["ID"] in public_ids
        ]


def quiet_periods(server: Server, stored: StoredStudy) -> dict[str, str]:
    """Each resource's history in /changes order: "N" for a run of NewInstance changes
    of instances under it, "S" for each of its Stable* changes (public id -> history).

    Exactly one Stable* change per quiet period is "NSNS...": "SS" is a duplicate,
    a trailing "N" a quiet period still open (or lost)."""
    with server.client() as client:
        changes = all_changes(client)
    histories: dict[str, str] = {}
    for level, public_id in stored.resources:
        under = stored.instances_under(public_id)
        history = "".join(
            "N" if c["ChangeType"] == "NewInstance" and c["ID"] in under
            else "S" if c["ChangeType"] == STABLE_OF[level] and c["ID"] == public_id
            else ""
            for c in changes
        )
        histories[public_id] = re.sub("N+", "N", history)
    return histories


def is_stable_everywhere(
    server: Server, stored: StoredStudy, resources: list[tuple[str, str]] | None = None
) -> list[bool]:
    """IsStable of the study's resources, as every gateway replica answers it."""
    answers = []
    for replica in range(len(server.urls)):
        with server.client(replica) as client:
            for level, public_id in resources or stored.resources:
                answers.append(client.get(f"/{level}/{public_id}").json()["IsStable"])
    return answers


def wait_until_stable(server: Server, stored: StoredStudy, timeout: float = 30) -> float:
    """Wait for the Stable* change that closes the last quiet period of every resource
    of the study; return when seen."""
    wait_until(
        lambda: all(h.endswith("S") for h in quiet_periods(server, stored).values()),
        timeout=timeout, what="Stable* changes",
    )
    return time.monotonic()


def assert_each_stable_once(server: Server, studies: list[StoredStudy], seed: int) -> None:
    """Check exactly one Stable* change per resource, in order series, study, patient.

    A later study going stable is the barrier: a duplicate would have come by then.
    """
    barrier = store_study(server, seed)
    wait_until_stable(server, barrier)
    for stored in studies:
        _assert_once(server, stored)
    assert all(is_stable_everywhere(server, barrier))


def _assert_once(server: Server, stored: StoredStudy) -> None:
    """One Stable* change per quiet period; the last ones series, then study, then patient."""
    histories = quiet_periods(server, stored)
    for public_id, history in histories.items():
        assert re.fullmatch("(NS)+", history), (public_id, history)
    ids = {public_id for _, public_id in stored.resources}
    seq: dict[str, int] = {}
    for change in stable_changes(server, ids):
        seq[change["ID"]] = change["Seq"]  # the last one of each resource
    assert max(seq[s] for s in stored.series) < seq[stored.study] < seq[stored.patient]


def test_stable_changes_once_after_the_age(clean: Server) -> None:
    stored = store_study(clean, seed=101)
    # Right after the store, every replica says unstable (the index decides) and the
    # study's last quiet period is open. The first series may be stable already on a
    # slow machine: its instances came first. A machine so slow that StableAge has
    # passed since the last store by the end of the checks cannot tell.
    last = stored.resources[:3]
    answers = is_stable_everywhere(clean, stored, last)
    history = quiet_periods(clean, stored)[stored.study]
    if time.monotonic() - stored.last_sent < STABLE_AGE:
        assert answers == [False] * (3 * len(clean.urls))
        assert history.endswith("N"), history
    seen = wait_until_stable(clean, stored)
    assert seen - stored.last_sent > STABLE_AGE
    assert all(is_stable_everywhere(clean, stored))
    # AlreadyStored does not reset the timer.
    first = generate_study(series=2, instances_per_series=3, seed=101)[0]
    with clean.client(1) as client:
        assert client.post("/instances", content=first.data).json()["Status"] == "AlreadyStored"
    assert all(is_stable_everywhere(clean, stored))
    assert_each_stable_once(clean, [stored], seed=102)


def test_a_new_instance_makes_a_stable_resource_unstable_again(clean: Server) -> None:
    """Orthanc's semantics: a stable series, study and patient that receive a new
    instance become unstable and get another Stable* change after StableAge (a new
    quiet period, not a duplicate); the series left alone gets none."""
    first = store_study(clean, seed=501, part=slice(0, 4))  # series A, then one of B
    wait_until_stable(clean, first)
    rest = store_study(clean, seed=501, part=slice(4, None))  # the rest of series B
    if time.monotonic() - rest.last_sent < STABLE_AGE:
        assert is_stable_everywhere(clean, rest) == [False] * (3 * len(clean.urls))
    stored = StoredStudy(
        patient=first.patient, study=first.study, series=rest.series[:1] + first.series[1:],
        last_sent=rest.last_sent, instances=first.instances | rest.instances,
    )
    wait_until_stable(clean, stored)
    assert quiet_periods(clean, stored) == {
        stored.patient: "NSNS", stored.study: "NSNS", stored.series[0]: "NSNS",
        stored.series[1]: "NS",
    }
    assert_each_stable_once(clean, [stored], seed=502)


def test_a_crashed_stability_replica_loses_nothing(clean: Server) -> None:
    stored = store_study(clean, seed=201)
    # All-in-one: the whole process (and its in-memory clock) goes; distributed: one
    # of the two stability replicas, possibly with NewInstance messages in flight.
    kill_member(clean, "stability-1")
    if clean.mode == "allinone":
        restart_member(clean)
    wait_until_stable(clean, stored)
    assert all(is_stable_everywhere(clean, stored))
    if clean.mode == "distributed":
        restart_member(clean, "stability-1")
    assert_each_stable_once(clean, [stored], seed=202)


def lose_every_clock(clean: Server) -> None:
    """Lose the stability clock entirely, then come back.

    All-in-one: the in-memory clock goes with the process; the index rebuilds it.
    Distributed: every stability replica dies and Redis loses the clock; then
    the replicas come back.
    """
    if clean.mode == "allinone":
        kill_member(clean)
        restart_member(clean)
    else:
        kill_member(clean, "stability-1")
        kill_member(clean, "stability-2")
        redis.Redis.from_url(clean.config["Redis"]["Url"]).flushdb()
        restart_member(clean, "stability-1")
        restart_member(clean, "stability-2")


def test_a_lost_clock_loses_nothing(clean: Server) -> None:
    stored = store_study(clean, seed=301)
    lose_every_clock(clean)
    wait_until_stable(clean, stored)
    # Redis flushed while the replicas run.
    second = store_study(clean, seed=302)
    if clean.mode == "distributed":
        redis.Redis.from_url(clean.config["Redis"]["Url"]).flushdb()
    wait_until_stable(clean, second)
    assert_each_stable_once(clean, [stored, second], seed=303)


def test_a_crash_while_a_study_goes_stable_loses_and_repeats_nothing(clean: Server) -> None:
    """The stability replicas (all-in-one: the process) die right after the first
    Stable* change of a study, Redis losing the clock too: what was emitted stays,
    the rest comes once."""
    stored = store_study(clean, seed=401)
    wait_until(
        lambda: stable_changes(clean, {s for _, s in stored.resources}) != [],
        timeout=30, what="a first Stable* change",
    )
    lose_every_clock(clean)
    wait_until_stable(clean, stored)
    assert all(is_stable_everywhere(clean, stored))
    assert_each_stable_once(clean, [stored], seed=402)
