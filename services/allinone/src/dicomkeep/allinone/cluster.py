"""`dicomkeep cluster start|stop`: a local distributed deployment as processes.

2 gateways (HttpPort and HttpPort + 1), 2 indexers, one ingest, storage and jobs, and
`stability` stability replicas (1 by default), on the PostgreSQL, RabbitMQ and Redis
that the configuration (or the DICOMKEEP_* variables) names. Blobs go to the S3
endpoint the configuration names (`AwsS3Storage.Endpoint`, or `DicomKeep.BlobStore`
"s3"); without one, to a folder on disk that every member shares (`StorageDirectory`,
by default `<state dir>/storage`), so a stop and a start keep every file.

`start` returns once every process answers ready on its ops port (`/readyz`, no
authentication, so it works with `AuthenticationEnabled`); `stop` stops exactly the
processes listed in the state folder; `kill_member` and `restart_member` let tests
crash and replace one of them.
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
from typing import Protocol

from dicomkeep.common.option_support import check_options
from dicomkeep.common.secrets import create_key_file
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
    #: The folder of the blobs when they are kept on disk ("" with S3).
    storage_directory: str = ""
    #: The variables `start` set for its members (a restart sets them again).
    env: dict[str, str] = field(default_factory=dict)


class StartProgress(Protocol):
    """What `start` reports while the members come up (the CLI draws a bar)."""

    def begin(self, total: int) -> None:
        """`total` members were launched."""

    def ready(self, name: str) -> None:
        """Member `name` answered ready."""


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
    progress: StartProgress | None = None,
) -> ClusterState:
    """Launch the cluster and wait until every member is ready.

    Raises RuntimeError (after stopping what it started) when a member dies or
    does not become ready in time; ConfigError on a bad configuration.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        stop(state_dir)
    base_env = os.environ if environ is None else environ
    overrides = {"ORTHANC__DICOM_KEEP__MODE": "distributed"}
    env = {**base_env, **overrides}
    settings: Settings = check_options(load_settings(config, environ=env), warn=lambda _: None)
    overrides.update(_blob_overrides(settings, state_dir))
    overrides.update(_secret_overrides(settings, state_dir))
    env.update(overrides)
    state = ClusterState(dicom_port=settings.dicom_port, env=overrides)
    if "ORTHANC__STORAGE_DIRECTORY" in overrides:
        state.storage_directory = overrides["ORTHANC__STORAGE_DIRECTORY"]
    else:
        state.s3_endpoint = settings.aws_s3_storage.endpoint
    try:
        base = [_bin("dicomkeep"), "--verbose", "run"]
        tail = [config] if config else []
        plan: list[tuple[str, list[str]]] = []
        for n in range(indexers):
            plan.append((f"indexer-{n + 1}", [*base, "indexer", *tail]))
        names = ["storage", "jobs"]
        names += ["stability"] if stability == 1 else [
            f"stability-{n + 1}" for n in range(stability)
        ]
        plan += [(name, [*base, name.split("-")[0], *tail]) for name in names]
        for n in range(gateways):
            http = settings.http_port + n
            state.http_ports.append(http)
            plan.append((f"gateway-{n + 1}",
                         [*base, "gateway", *tail, "--http-port", str(http)]))
        plan.append(("ingest", [*base, "ingest", *tail]))
        for name, argv in plan:
            # Every member is ready when its ops port says so: no credentials needed.
            ops = free_port()
            state.members.append(_spawn(
                state_dir, name, [*argv, "--ops-port", str(ops)], env,
                f"http://127.0.0.1:{ops}/readyz",
            ))
        _save(state_dir, state)
        _wait(state, timeout, progress)
    except BaseException:
        _save(state_dir, state)
        stop(state_dir)
        raise
    return state


def _secret_overrides(settings: Settings, state_dir: Path) -> dict[str, str]:
    """Return the variable naming `<state_dir>/secret.key` (created once, kept across
    restarts) when the configuration gives no DicomKeep.SecretKey: every member then
    seals and opens the REST peers' passwords with the same key."""
    if settings.dicomkeep.secret_key or settings.dicomkeep.secret_key_file:
        return {}
    path = state_dir / "secret.key"
    create_key_file(path)
    return {"ORTHANC__DICOM_KEEP__SECRET_KEY_FILE": str(path)}


def _blob_overrides(settings: Settings, state_dir: Path) -> dict[str, str]:
    """Return the variables that put the blobs in a shared folder, or {} for S3.

    S3 when the configuration asks for it (`BlobStore` "s3", or an endpoint);
    otherwise files, under `StorageDirectory` when it is configured, else under
    `<state_dir>/storage` (never the all-in-one server's default `OrthancStorage`,
    whose orphans another index would collect).
    """
    chosen = settings.dicomkeep.blob_store
    if chosen == "s3" or (chosen is None and settings.aws_s3_storage.endpoint):
        return {}
    folder = Path(settings.storage_directory)
    if settings.storage_directory == Settings.model_fields["storage_directory"].default:
        folder = state_dir / "storage"
    return {
        "ORTHANC__DICOM_KEEP__BLOB_STORE": "files",
        "ORTHANC__STORAGE_DIRECTORY": str(folder.resolve()),
    }


def _wait(
    state: ClusterState, timeout: float, progress: StartProgress | None = None
) -> None:
    deadline = time.monotonic() + timeout
    pending = [m for m in state.members]
    if progress is not None:
        progress.begin(len(pending))
    while pending:
        for member in list(pending):
            if not _alive(member.pid):
                raise RuntimeError(f"{member.name} exited; see {member.log}")
            if _is_ready(member.ready_url):
                pending.remove(member)
                if progress is not None:
                    progress.ready(member.name)
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
