"""`dicomkeep cluster start|stop`: a local distributed deployment as processes.

2 gateways (HttpPort and HttpPort + 1), 2 indexers, one ingest, storage and jobs, and
`stability` stability replicas (1 by default), on the PostgreSQL, RabbitMQ and Redis that the configuration (or the
DICOMKEEP_* variables) names, and on an S3 endpoint: moto's server is started
when none is configured. `start` returns once every process is ready; `stop`
stops exactly the processes listed in the state folder; `kill_member` and
`restart_member` let tests crash and replace one of them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dicomkeep.common.option_support import check_options
from dicomkeep.common.settings import Settings, load_settings

STATE_FILE = "cluster.json"


@dataclass
class Member:
    """One process of the cluster."""

    name: str
    pid: int
    ready_url: str
    log: str
    argv: list[str] = field(default_factory=list)


@dataclass
class ClusterState:
    """What `start` launched (written to the state folder for `stop`)."""

    members: list[Member] = field(default_factory=list)
    http_ports: list[int] = field(default_factory=list)
    dicom_port: int = 0
    s3_endpoint: str = ""
    #: The variables `start` set for its members (a restart sets them again).
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    """Return a TCP port free on every interface now, chosen below the kernel's
    ephemeral range.

    A port from the ephemeral range (what binding port 0 gives) can be taken by
    any outgoing connection between this choice and the server's bind; below the
    range only another listener can take it.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(10000, low - 1) if low > 10001 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port")


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
            return bool(answer.status == 200)
    except OSError:
        return False


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _spawn(
    state_dir: Path, name: str, argv: list[str], env: dict[str, str], ready_url: str
) -> Member:
    log_path = state_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Member(
        name=name, pid=process.pid, ready_url=ready_url, log=str(log_path), argv=argv
    )


def start(
    config: str | None,
    state_dir: Path,
    *,
    gateways: int = 2,
    indexers: int = 2,
    stability: int = 1,
    timeout: float = 90.0,
    environ: Mapping[str, str] | None = None,
) -> ClusterState:
    """Launch the cluster and wait until every member is ready.

    Raises RuntimeError (after stopping what it started) when a member dies or
    does not become ready in time.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        stop(state_dir)
    base_env = os.environ if environ is None else environ
    overrides = {"ORTHANC__DICOM_KEEP__MODE": "distributed"}
    env = {**base_env, **overrides}
    settings: Settings = check_options(load_settings(config, environ=env), warn=lambda _: None)
    state = ClusterState(dicom_port=settings.dicom_port)
    try:
        endpoint = settings.aws_s3_storage.endpoint
        if not endpoint:
            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            state.members.append(
                _spawn(
                    state_dir, "s3", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                    env, f"{endpoint}/moto-api/",
                )
            )
            overrides["DICOMKEEP_S3_ENDPOINT"] = endpoint
            if not settings.aws_s3_storage.access_key:
                # moto refuses anonymous reads: give the services a key pair.
                overrides["DICOMKEEP_S3_ACCESS_KEY"] = "dicomkeep"
                overrides["DICOMKEEP_S3_SECRET_KEY"] = "dicomkeep-secret"
            env.update(overrides)
        state.s3_endpoint = endpoint
        state.env = overrides
        _wait(state, timeout)  # S3 first: services create the bucket on start
        base = [_bin("dicomkeep"), "--verbose", "run"]
        tail = [config] if config else []
        plan: list[tuple[str, list[str], str]] = []
        for n in range(indexers):
            ops = free_port()
            plan.append((f"indexer-{n + 1}", [*base, "indexer", *tail, "--ops-port", str(ops)],
                         f"http://127.0.0.1:{ops}/readyz"))
        names = ["storage", "jobs"]
        names += ["stability"] if stability == 1 else [
            f"stability-{n + 1}" for n in range(stability)
        ]
        for name in names:
            ops = free_port()
            service = name.split("-")[0]
            plan.append((name, [*base, service, *tail, "--ops-port", str(ops)],
                         f"http://127.0.0.1:{ops}/readyz"))
        for n in range(gateways):
            http = settings.http_port + n
            state.http_ports.append(http)
            ops = free_port()
            plan.append((f"gateway-{n + 1}",
                         [*base, "gateway", *tail, "--http-port", str(http), "--ops-port", str(ops)],
                         # the ops port answers once the REST API listens, whatever
                         # its TLS or authentication options
                         f"http://127.0.0.1:{ops}/readyz"))
        ops = free_port()
        plan.append(("ingest", [*base, "ingest", *tail, "--ops-port", str(ops)],
                     f"http://127.0.0.1:{ops}/readyz"))
        for name, argv, url in plan:
            state.members.append(_spawn(state_dir, name, argv, env, url))
        _save(state_dir, state)
        _wait(state, timeout)
    except BaseException:
        _save(state_dir, state)
        stop(state_dir)
        raise
    return state


def _wait(state: ClusterState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [m for m in state.members]
    while pending:
        for member in list(pending):
            if not _alive(member.pid):
                raise RuntimeError(f"{member.name} exited; see {member.log}")
            if _is_ready(member.ready_url):
                pending.remove(member)
        if pending and time.monotonic() > deadline:
            names = ", ".join(m.name for m in pending)
            raise RuntimeError(f"not ready in {timeout:.0f} s: {names}")
        if pending:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _save(state_dir: Path, state: ClusterState) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")


def load_state(state_dir: Path) -> ClusterState | None:
    """Read what `start` launched, if anything."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["members"] = [Member(**m) for m in raw["members"]]
    return ClusterState(**raw)


def stop(state_dir: Path, *, timeout: float = 20.0) -> int:
    """SIGTERM every recorded process (SIGKILL at the deadline); return how many."""
    state = load_state(state_dir)
    if state is None:
        return 0
    for member in reversed(state.members):
        if _alive(member.pid):
            os.kill(member.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for member in state.members:
        while _alive(member.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(member.pid):
            os.kill(member.pid, signal.SIGKILL)
    (state_dir / STATE_FILE).unlink()
    return len(state.members)


def _member(state: ClusterState, name: str) -> Member:
    for member in state.members:
        if member.name == name:
            return member
    raise KeyError(f"no cluster member {name}")


def kill_member(state_dir: Path, name: str) -> None:
    """SIGKILL one member (a crash: no clean shutdown) and wait until it is gone.

    Raises KeyError for an unknown name. The member stays in the state file, so
    `restart_member` can replace it and `stop` still knows it.
    """
    state = load_state(state_dir)
    if state is None:
        raise KeyError(f"no cluster in {state_dir}")
    member = _member(state, name)
    if _alive(member.pid):
        os.kill(member.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(member.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def restart_member(
    state_dir: Path,
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Member:
    """Start a member again with its argv (after `kill_member`), wait until ready.

    `environ` is the base environment given to `start` (the variables `start` set
    are added again). The state file records the new pid. Raises KeyError for an
    unknown name, RuntimeError if it does not become ready.
    """
    state = load_state(state_dir)
    if state is None:
        raise KeyError(f"no cluster in {state_dir}")
    old = _member(state, name)
    if _alive(old.pid):
        raise RuntimeError(f"{name} is still running (pid {old.pid})")
    env = {**(os.environ if environ is None else environ), **state.env}
    new = _spawn(state_dir, name, old.argv, env, old.ready_url)
    state.members[state.members.index(old)] = new
    _save(state_dir, state)
    _wait(ClusterState(members=[new]), timeout)
    return new
