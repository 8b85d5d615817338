"""Run DicomKeep from outside, as a user would: real processes on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

VENV_BIN = Path(sys.executable).parent
DICOMKEEP = str(VENV_BIN / "dicomkeep")


def free_port() -> int:
    """Return a TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def wait_http(url: str, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200, or fail at the deadline."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
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

    @property
    def url(self) -> str:
        return self.urls[0]

    def client(self, replica: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.urls[replica % len(self.urls)], timeout=30.0)


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
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(f"{url}/system", time.monotonic() + 60, process)
        yield Server(
            urls=[url], dicom_port=dicom_port, aet="DICOMKEEP",
            storage_dir=tmp / "storage", config=config, processes=[process],
        )
    finally:
        stop_processes([process])
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
