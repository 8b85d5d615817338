"""A real Orthanc (Debian's package, 1.10.1) as a test peer, kept off every network.

Orthanc 1.10.1 listens on all interfaces whatever its configuration says
(measured on this project's machines), so it runs in a network namespace of its own that has
only a loopback interface. Relays (tests/netns_relay.py) join the two loopbacks
through filesystem Unix sockets, which cross namespaces:
- `OrthancPeer.url` on the host's loopback reaches Orthanc's HTTP port;
- each host port in `expose` is reachable from inside the namespace at
  `http://127.0.0.1:{ns_port}` (`OrthancPeer.inside[host_port]`), e.g. DicomKeep.
Nothing but the host itself can reach Orthanc. Needs root (`ip netns`) and
`apt-get install orthanc` (scripts/test-deps.sh).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from servers import free_port, stop_processes

ORTHANC = "/usr/sbin/Orthanc"
RELAY = str(Path(__file__).with_name("netns_relay.py"))
#: Ports inside the namespace: nothing else lives there, so fixed numbers are safe.
ORTHANC_HTTP_PORT = 8042
ORTHANC_DICOM_PORT = 4242
FIRST_EXPOSED_PORT = 9042
_counter = itertools.count(1)


def orthanc_available() -> str | None:
    """Return why the Orthanc peer cannot run here, or None when it can."""
    if not Path(ORTHANC).exists():
        return "Orthanc is not installed (make test-deps)"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2"
    return None


@dataclass
class OrthancPeer:
    """A running Orthanc: its host-side URL, credentials and namespace."""

    url: str
    username: str
    password: str
    namespace: str
    pid: int
    inside: dict[int, str] = field(default_factory=dict)
    storage: Path | None = None

    def client(self, *, password: str | None = None) -> httpx.Client:
        """Return a client with Basic auth; bodies are never gzipped (Accept-Encoding).

        Each request opens its own connection: Orthanc closes an idle one after its
        KeepAliveTimeout (1 s), and a POST sent on a connection Orthanc is closing
        fails with "Server disconnected without sending a response" (seen once in
        12 runs of test_query_drilldown on a loaded machine, where one request of
        the other server can leave this client idle for more than a second).
        """
        return httpx.Client(
            base_url=self.url,
            auth=(self.username, self.password if password is None else password),
            headers={"Accept-Encoding": "identity"},
            timeout=60.0,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def peer_config(self) -> dict[str, Any]:
        """Return the object form of an Orthanc peer pointing at this Orthanc."""
        return {"Url": self.url, "Username": self.username, "Password": self.password}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def _namespace() -> Iterator[str]:
    name = f"dkpeer{os.getpid()}x{next(_counter)}"
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _wait(predicate: Callable[[], bool], what: str, deadline: float,
          process: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up in time")


def _answers(url: str, auth: tuple[str, str]) -> bool:
    try:
        return httpx.get(url, auth=auth, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def orthanc_peer(
    tmp: Path,
    *,
    expose: Sequence[int] = (),
    peers: Callable[[dict[int, str]], dict[str, Any]] = lambda inside: {},
    users: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Iterator[OrthancPeer]:
    """Start Orthanc in a loopback-only namespace; stop everything afterwards.

    `expose` lists host loopback ports to make reachable from inside; `peers`
    builds Orthanc's `OrthancPeers` from their inside URLs. Orthanc requires
    Basic auth with the first of `users` (default alice/alicepw).
    """
    users = users or {"alice": "alicepw"}
    username, password = next(iter(users.items()))
    sockets = Path(tempfile.mkdtemp(prefix="dkns", dir="/tmp"))
    processes: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, sockets, True)
        stack.callback(log.close)
        namespace = stack.enter_context(_namespace())
        stack.callback(stop_processes, processes)

        def start(*command: str, inside: bool) -> subprocess.Popen[bytes]:
            prefix = ["ip", "netns", "exec", namespace] if inside else []
            env = {**os.environ, "TCP_NODELAY": "1"}
            process = subprocess.Popen([*prefix, *command], stdout=log, stderr=subprocess.STDOUT, env=env)
            processes.append(process)
            return process

        def relay(listen: str, target: str, *, inside: bool) -> None:
            process = start(sys.executable, RELAY, listen, target, inside=inside)
            if listen.startswith("unix:"):
                path = Path(listen[5:])
                _wait(path.exists, f"relay {listen}", time.monotonic() + 20, process)

        inside: dict[int, str] = {}
        for offset, host_port in enumerate(expose):
            socket_path = sockets / f"host{host_port}.sock"
            relay(f"unix:{socket_path}", f"tcp:127.0.0.1:{host_port}", inside=False)
            ns_port = FIRST_EXPOSED_PORT + offset
            relay(f"tcp:127.0.0.1:{ns_port}", f"unix:{socket_path}", inside=True)
            inside[host_port] = f"http://127.0.0.1:{ns_port}/"
        config = {
            "Name": "OrthancPeer",
            "StorageDirectory": str(tmp / "orthanc-storage"),
            "IndexDirectory": str(tmp / "orthanc-storage"),
            "HttpPort": ORTHANC_HTTP_PORT,
            "DicomPort": ORTHANC_DICOM_PORT,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": users,
            "HttpTimeout": 20,
            "OrthancPeers": peers(inside),
            **(extra or {}),
        }
        config_path = tmp / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        orthanc = start(ORTHANC, str(config_path), inside=True)
        orthanc_socket = sockets / "orthanc.sock"
        relay(f"unix:{orthanc_socket}", f"tcp:127.0.0.1:{ORTHANC_HTTP_PORT}", inside=True)
        host_port = free_port()
        relay(f"tcp:127.0.0.1:{host_port}", f"unix:{orthanc_socket}", inside=False)
        url = f"http://127.0.0.1:{host_port}"
        _wait(lambda: _answers(f"{url}/system", (username, password)), "Orthanc",
              time.monotonic() + 60, orthanc)
        yield OrthancPeer(
            url=url + "/", username=username, password=password, namespace=namespace,
            pid=orthanc.pid, inside=inside, storage=tmp / "orthanc-storage",
        )
