"""Run DicomKeep from outside, as a user would: real processes on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from backends import PG_ADMIN_DSN, REDIS_URL, pg_dsn
from dicomkeep.allinone.cluster import free_port

VENV_BIN = Path(sys.executable).parent
DICOMKEEP = str(VENV_BIN / "dicomkeep")




#: Seconds an all-in-one server may take to answer after its start: generous, as
#: cluster starts are, for a loaded 2-core machine running two test workers.
START_TIMEOUT = 180.0

#: Debian's DCMTK leaves Nagle's algorithm on unless told: pass this env to its tools.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(tool: str) -> str:
    """Return the path of a DCMTK tool (not pynetdicom's same-named scripts in the venv)."""
    for folder in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / tool
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool, path=os.defpath)
    if found is None or Path(found).parent == VENV_BIN:
        raise RuntimeError(f"DCMTK's {tool} is not installed (make test-deps)")
    return found


def tls_context(config: dict[str, Any]) -> ssl.SSLContext | bool:
    """Return how a client verifies the server: its self-signed `SslCertificate` as the
    only trusted CA when `SslEnabled`, else the default (plain HTTP)."""
    if not config.get("SslEnabled"):
        return True
    return ssl.create_default_context(cafile=config["SslCertificate"])


def scheme(config: dict[str, Any]) -> str:
    """Return `https` when the configuration enables TLS on the REST API, else `http`."""
    return "https" if config.get("SslEnabled") else "http"


def wait_http(
    url: str, deadline: float, process: subprocess.Popen[bytes] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Poll `url` until it answers 200, or fail at the deadline."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer in time")


@dataclass
class Server:
    """A running DicomKeep as seen from outside: REST URLs and a DICOM port."""

    urls: list[str]
    dicom_port: int
    aet: str
    storage_dir: Path | None
    config: dict[str, Any]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mode: str = "allinone"
    state_dir: Path | None = None
    s3_endpoint: str = ""

    @property
    def url(self) -> str:
        return self.urls[0]

    def client(self, replica: int = 0) -> httpx.Client:
        # The server closes idle connections after 1 s (Orthanc's KeepAliveTimeout):
        # drop them sooner on this side so a request never races that close.
        return httpx.Client(
            base_url=self.urls[replica % len(self.urls)], timeout=30.0,
            limits=httpx.Limits(keepalive_expiry=0.5), verify=tls_context(self.config),
        )


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "dicomkeep.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


@contextmanager
def allinone_server(tmp: Path, extra: dict[str, Any] | None = None) -> Iterator[Server]:
    """Start `dicomkeep serve CONFIG` on free ports; stop it (SIGTERM) afterwards."""
    http_port, dicom_port = free_port(), free_port()
    config: dict[str, Any] = {
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "DICOMKEEP",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "index"),
        "StableAge": 2,
        **(extra or {}),
    }
    path = write_config(tmp, config)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [DICOMKEEP, "--verbose", "serve", str(path)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"{scheme(config)}://127.0.0.1:{http_port}"
    running = Server(
        urls=[url], dicom_port=dicom_port, aet="DICOMKEEP",
        storage_dir=tmp / "storage", config=config, processes=[process],
    )
    try:
        wait_http(f"{url}/system", time.monotonic() + START_TIMEOUT, process, tls_context(config))
        yield running
    finally:
        # restart_member may have replaced the process: stop the one running now.
        stop_processes(running.processes)
        log.close()


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM every process, then SIGKILL the ones still alive at the deadline."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rabbitmqctl(*args: str) -> bool:
    tool = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        return subprocess.run([tool, *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _pg(statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _http_port_pair() -> int:
    """Return a port P such that P and P + 1 are both free (two gateway replicas)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@contextmanager
def rabbit_vhost(name: str) -> Iterator[str]:
    """A RabbitMQ virtual host of its own (the default one if rabbitmqctl is refused);
    yields its AMQP URL and deletes it afterwards."""
    vhost = name if _rabbitmqctl("add_vhost", name) else ""
    if vhost:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        if vhost:
            _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def cluster_server(
    tmp: Path, extra: dict[str, Any] | None = None, *,
    route: Callable[[dict[str, Any]], None] | None = None, **cluster_options: Any
) -> Iterator[Server]:
    """Start a distributed cluster (`dicomkeep cluster start`) on its own database,
    RabbitMQ virtual host and Redis database; tear all of them down afterwards.

    `route`, if given, may rewrite the configuration's backend URLs before it is
    written (the fault suite sends them through relays it can cut).
    `cluster_options` go to `cluster.start` (e.g. `stability=2`), except
    `pg_port`: the port the cluster reaches PostgreSQL on (a test's TCP proxy)."""

    name = f"dk_it_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    pg_port = cluster_options.pop("pg_port", None)
    with rabbit_vhost(name) as amqp_url:
        yield from _cluster(tmp, name, amqp_url, extra, cluster_options, route, pg_port)


def _cluster(
    tmp: Path, name: str, amqp_url: str, extra: dict[str, Any] | None,
    cluster_options: dict[str, Any], route: Callable[[dict[str, Any]], None] | None = None,
    pg_port: int | None = None,
) -> Iterator[Server]:
    from dicomkeep.allinone import cluster

    # One Redis database per test worker (clusters of one worker run one at a time).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    redis_db = 1 + (int(worker[2:]) if worker.startswith("gw") else os.getpid()) % 15
    import redis as redis_client

    redis_url = REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}"
    redis_client.Redis.from_url(redis_url).flushdb()
    state_dir = tmp / "cluster"
    # The configuration file names this cluster's backends: drop overrides.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
    # Generous: two test workers may be starting clusters at once on two cores.
    options = {"timeout": 180.0, **cluster_options}
    s3 = moto_server(tmp)
    try:
        for attempt in range(3):
            http_port, dicom_port = _http_port_pair(), free_port()
            config: dict[str, Any] = {
                "HttpPort": http_port,
                "DicomPort": dicom_port,
                "DicomAet": "DICOMKEEP",
                "StableAge": 2,
                "PostgreSQL": {"ConnectionUri": _via_port(pg_dsn(name), pg_port)},
                "RabbitMQ": {"Url": amqp_url},
                "Redis": {"Url": redis_url},
                # The S3 adapter against a real S3 protocol server (moto, in memory).
                "AwsS3Storage": {
                    "BucketName": "dicomkeep-it", "Endpoint": s3.endpoint,
                    "AccessKey": "dicomkeep", "SecretKey": "dicomkeep-secret",
                },
                **(extra or {}),
            }
            if route is not None:
                route(config)
            path = write_config(tmp, config)
            try:
                state = cluster.start(str(path), state_dir, environ=environ, **options)
                break
            except RuntimeError:
                # Another test worker's server may have bound a chosen port first:
                # start again on other ports.
                if attempt == 2:
                    raise
        yield Server(
            urls=[f"{scheme(config)}://127.0.0.1:{p}" for p in state.http_ports],
            dicom_port=dicom_port, aet="DICOMKEEP", storage_dir=None, config=config,
            mode="distributed", state_dir=state_dir, s3_endpoint=state.s3_endpoint,
        )
    finally:
        cluster.stop(state_dir)
        stop_processes([s3.process])
        s3.log.close()
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _via_port(dsn: str, port: int | None) -> str:
    """Return `dsn` pointing at 127.0.0.1:`port` instead of its server (None: as is)."""
    if port is None:
        return dsn
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"))


@dataclass
class S3Server:
    """A moto S3 server process (keeps its objects in memory)."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Any


def moto_server(tmp: Path) -> S3Server:
    """Start moto's S3 server on a free loopback port; wait until it answers."""
    port = free_port()
    log = open(tmp / "s3.log", "wb")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", time.monotonic() + 60, process)
    except BaseException:
        stop_processes([process])
        log.close()
        raise
    return S3Server(endpoint, process, log)


def kill_member(server: Server, name: str = "stability") -> None:
    """Crash one process with SIGKILL: a cluster member by name, or the all-in-one server."""
    if server.state_dir is None:
        server.processes[0].kill()
        server.processes[0].wait(10)
        return
    from dicomkeep.allinone import cluster

    cluster.kill_member(server.state_dir, name)


def restart_member(server: Server, name: str = "stability") -> None:
    """Start a crashed process again with the same command line; wait until it is ready."""
    if server.state_dir is None:
        assert server.storage_dir is not None
        tmp = server.storage_dir.parent
        with open(tmp / "server.log", "ab") as log:
            process = subprocess.Popen(
                [DICOMKEEP, "--verbose", "serve", str(tmp / "dicomkeep.json")],
                stdout=log, stderr=subprocess.STDOUT,
            )
        server.processes[0] = process
        wait_http(f"{server.url}/system", time.monotonic() + START_TIMEOUT, process)
        return
    from dicomkeep.allinone import cluster

    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
    cluster.restart_member(server.state_dir, name, environ=environ)


def blob_keys(server: Server) -> list[str]:
    """Every blob the server holds: files under StorageDirectory, or S3 objects."""
    if server.storage_dir is not None:
        for _ in range(20):
            if not server.storage_dir.exists():
                return []
            try:
                return sorted(
                    p.name for p in server.storage_dir.rglob("*")
                    if p.is_file() and len(p.name) == 36 and not p.name.startswith(".")
                )
            except FileNotFoundError:  # the storage service removed a folder meanwhile
                continue
        raise AssertionError(f"{server.storage_dir} keeps changing")
    from urllib.parse import urlsplit

    from minio import Minio

    endpoint = urlsplit(server.s3_endpoint)
    client = Minio(endpoint.netloc, access_key="test", secret_key="test", secure=False,
                   region="us-east-1")
    bucket = server.config["AwsS3Storage"]["BucketName"]
    if not client.bucket_exists(bucket):
        return []
    return sorted(o.object_name for o in client.list_objects(bucket, recursive=True))


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
