"""The servers compared: DicomKeep in three modes, Debian's Orthanc in the matching three.

DicomKeep runs on the host's loopback (tests/servers.py starts it as the tests do).
Orthanc 1.10.1 listens on every interface whatever its configuration says, so it
runs in a network namespace that has only loopback (INFRA.md), and so does the
worker that measures it; its PostgreSQL index reaches the host's PostgreSQL through
the Unix socket, which crosses namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import ProcessGroup, pids_matching, pids_named, with_descendants

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from backends import PG_ADMIN_DSN  # noqa: E402
from servers import (  # noqa: E402
    DICOMKEEP,
    _pg,
    cluster_server,
    free_port,
    stop_processes,
    wait_http,
    write_config,
)

ORTHANC = "/usr/sbin/Orthanc"
PG_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"
PG_SOCKET_DIR = "/var/run/postgresql"
#: (DicomKeep mode, Orthanc mode) pairs: each DicomKeep figure is divided by its pair's.
PAIRS = [("allinone", "sqlite"), ("compression", "compression"), ("distributed", "postgresql")]
MOVE_AET = "BENCHSCP"
CLIENT_AET = "BENCH"
#: Seconds a server may take to answer after its start (a loaded machine is slow).
START_TIMEOUT = 300


@dataclass
class Target:
    """A running server as the worker and the measurement see it."""

    name: str
    netns: str | None
    endpoint: dict[str, Any]  # url, dicom_port, aet, move_port: what the worker needs
    processes: ProcessGroup


def _common(move_port: int) -> dict[str, Any]:
    # The benchmark's client AET is a known modality on both sides: C-FIND and
    # C-MOVE from unknown AETs are refused by default.
    return {"UserMetadata": {"Sample": 1024},
            "DicomModalities": {"benchscp": [MOVE_AET, "127.0.0.1", move_port],
                                "bench": [CLIENT_AET, "127.0.0.1", 104]}}


#: PostgreSQL's own processes that work for every client's writes (WAL, checkpoints,
#: dirty buffers): counted with the target's backends, on both sides.
PG_WORKERS = ("walwriter", "checkpointer", "background writer")


def _pg_backends(database: str) -> list[int]:
    """The backends connected to `database` (autovacuum's workers on it too) and the
    server's WAL writer, checkpointer and background writer."""
    workers = ", ".join(f"'{name}'" for name in PG_WORKERS)
    done = subprocess.run(
        ["psql", PG_ADMIN_DSN, "-Atc",
         f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}' "
         f"OR backend_type IN ({workers})"],
        capture_output=True, text=True, timeout=30,
    )
    return [int(line) for line in done.stdout.split()] if done.returncode == 0 else []


def _rabbitmq() -> list[int]:
    """RabbitMQ's Erlang VM, its helper processes (erl_child_setup...) and epmd."""
    return with_descendants(pids_named("beam.smp")) + pids_named("epmd")


@contextmanager
def dicomkeep(mode: str, tmp: Path) -> Iterator[Target]:
    move_port = free_port()
    extra = _common(move_port)
    if mode == "compression":
        extra["StorageCompression"] = True
    folder = tmp / f"dicomkeep-{mode}"
    folder.mkdir()
    if mode == "distributed":
        from dicomkeep.allinone import cluster

        with cluster_server(folder, extra) as server:
            assert server.state_dir is not None
            state = cluster.load_state(server.state_dir)
            members = [m.pid for m in state.members] if state else []
            database = server.config["PostgreSQL"]["ConnectionUri"].rsplit("/", 1)[1]
            s3_port = server.s3_endpoint.rsplit(":", 1)[1] if server.s3_endpoint else "-"
            group = ProcessGroup({
                "dicomkeep": lambda: with_descendants(members),
                "s3 (moto)": lambda: pids_matching(f"moto_server -H 127.0.0.1 -p {s3_port}"),
                "postgresql": lambda: _pg_backends(database),
                "rabbitmq": _rabbitmq,
                "redis": lambda: pids_named("redis-server"),
            })
            yield Target(f"dicomkeep-{mode}", None, _endpoint(server.url, server.dicom_port,
                                                               server.aet, move_port), group)
        return
    with _allinone(folder, extra) as (url, dicom_port, pid):
        yield Target(f"dicomkeep-{mode}", None, _endpoint(url, dicom_port, "DICOMKEEP", move_port),
                     ProcessGroup({"dicomkeep": lambda: with_descendants([pid])}))


@contextmanager
def _allinone(folder: Path, extra: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """`dicomkeep serve` as tests/servers.py's allinone_server starts it, without
    --verbose and with a start deadline for a loaded machine."""
    http_port, dicom_port = free_port(), free_port()
    path = write_config(folder, {
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "DICOMKEEP",
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        **extra,
    })
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen([DICOMKEEP, "serve", str(path)], stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_http(f"{url}/system", time.monotonic() + START_TIMEOUT, process)
            yield url, dicom_port, process.pid
        finally:
            stop_processes([process])


def _endpoint(url: str, dicom_port: int, aet: str, move_port: int) -> dict[str, Any]:
    return {"url": url, "dicom_port": dicom_port, "aet": aet, "move_port": move_port}


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """A network namespace with only loopback, deleted afterwards."""
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True, capture_output=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


@contextmanager
def orthanc(mode: str, tmp: Path) -> Iterator[Target]:
    """Orthanc in `mode` (sqlite, compression, postgresql) in a namespace of its own.
    The caller waits for it to answer (from inside the namespace, with the worker)."""
    http_port, dicom_port, move_port = 8042, 4242, 4343  # alone in its namespace
    folder = tmp / f"orthanc-{mode}"
    folder.mkdir()
    config: dict[str, Any] = {
        "Name": f"bench-{mode}", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "HttpPort": http_port,
        "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": mode == "compression", "Plugins": [], **_common(move_port),
    }
    database = f"dkbench_orthanc_{os.getpid()}"
    roles = {}
    with ExitStack() as stack:
        ns = stack.enter_context(namespace(f"dkbench{os.getpid()}{mode[:3]}"))
        if mode == "postgresql":
            _pg(f'CREATE DATABASE "{database}"')
            stack.callback(_pg, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            config["Plugins"] = [PG_PLUGIN]
            config["PostgreSQL"] = {
                "EnableIndex": True, "EnableStorage": False, "Host": PG_SOCKET_DIR,
                "Port": 5432, "Database": database, "Username": "postgres", "Password": "",
                "Lock": False,
            }
            roles["postgresql"] = lambda: _pg_backends(database)
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = stack.enter_context(open(folder / "orthanc.log", "wb"))
        # `ip netns exec` execs Orthanc itself: the pid is Orthanc's.
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, ORTHANC, str(path)], stdout=log,
            stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"},
        )
        stack.callback(stop_processes, [process])
        endpoint = _endpoint(f"http://127.0.0.1:{http_port}", dicom_port, "ORTHANC", move_port)
        yield Target(f"orthanc-{mode}", ns, endpoint,
                     ProcessGroup({"orthanc": lambda: with_descendants([process.pid]), **roles}))


#: What the benchmark runs besides DicomKeep: (Debian package, a file it installs).
REQUIRED = [("orthanc", ORTHANC), ("orthanc-postgresql", PG_PLUGIN),
            ("dcmtk", "/usr/bin/storescu"), ("postgresql-client", "/usr/bin/psql"),
            ("iproute2", "/bin/ip")]


def missing_packages() -> list[str]:
    return [package for package, path in REQUIRED if not Path(path).exists()]


def ensure_installed() -> None:
    """Install Orthanc, its PostgreSQL plugin and DCMTK with apt-get when missing;
    exit with a message saying what to do when that is not possible."""
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root: Orthanc runs in a network namespace "
                         "(and missing packages are installed with apt-get)")
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing {', '.join(missing)} and no apt-get here: install them "
                         "(Debian package names), then run again")
    sys.stderr.write(f"installing {' '.join(missing)} with apt-get\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    # The benchmark starts Orthanc itself: the package's service must not start
    # (policy-rc.d exit 101 = action forbidden), as scripts/test-deps.sh does.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", *missing]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                                 f"{done.stderr.strip()[-2000:]}\ninstall {', '.join(missing)} "
                                 "yourself, then run again")
    finally:
        if created:
            policy.unlink()
    still = missing_packages()
    if still:
        raise SystemExit(f"apt-get ran but {', '.join(still)} is still missing")
