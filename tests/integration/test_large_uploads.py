"""Bounded resources for large uploads (issue 15), both modes.

A multi-frame instance is written to disk (never built in memory), uploaded with
`POST /instances` streamed from the file, and read back with
`GET /instances/{id}/file`; the resident memory (RSS) of every server process that
touches the bytes is sampled meanwhile. The issue's bar: a 1 GB upload keeps
memory under 200 MB above idle. `make test` runs a 200 MiB file against the same
bar scaled down (MEMORY_BOUND_MB below: 40 MB, which whole-file buffering, at
least 200 MB, cannot meet); `make test-large` runs the 1 GiB file against 200 MB
(LARGE_UPLOAD_MB=1024). An upload cut mid-body leaves no blob, no temporary file
and no open descriptor behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import psutil
import pytest
from dicomfiles import sample_path
from large_dicom import FRAME_BYTES, LargeDicom, write_large_dicom
from servers import Server, allinone_server, blob_keys, cluster_server, wait_until

MODES = ["allinone", "distributed"]
MiB = 1024 * 1024
#: Size of the uploaded file (MiB): 200 in `make test`, 1024 in `make test-large`.
UPLOAD_MB = int(os.environ.get("LARGE_UPLOAD_MB", "200"))
#: The issue's bar (200 MB above idle for 1 GB), scaled to the file's size.
MEMORY_BOUND_MB = 200 * UPLOAD_MB / 1024
#: A smaller file, past the spool threshold, that loads every code path before idle is read.
WARM_UP_FRAMES = 48


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[LargeDicom, LargeDicom]:
    """The large file and the warm-up one, written once per module."""
    folder = tmp_path_factory.mktemp("large-files")
    large = write_large_dicom(folder / "large.dcm", UPLOAD_MB * MiB // FRAME_BYTES)
    warm = write_large_dicom(folder / "warm.dcm", WARM_UP_FRAMES)
    return large, warm


@dataclass
class Spooled:
    """A server started with its own TMPDIR, to check for leftover temporary files."""

    server: Server
    tmpdir: Path


@pytest.fixture(scope="module", params=MODES)
def spooled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Spooled]:
    tmp = tmp_path_factory.mktemp(f"large-{request.param}")
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir()
    start = allinone_server if request.param == "allinone" else cluster_server
    # The server processes inherit the variable (tempfile reads TMPDIR).
    with mock.patch.dict(os.environ, {"TMPDIR": str(tmpdir)}), start(tmp, {}) as running:
        yield Spooled(running, tmpdir)


def _byte_processes(server: Server) -> dict[str, psutil.Process]:
    """The processes that touch upload bytes: all-in-one, the server and its children;
    distributed, the first gateway (it receives the upload), the indexers and storage."""
    if server.state_dir is None:
        main = psutil.Process(server.processes[0].pid)
        return {f"{p.name()}-{p.pid}": p for p in [main, *main.children(recursive=True)]}
    from dicomkeep.allinone import cluster

    state = cluster.load_state(server.state_dir)
    assert state is not None
    return {
        member.name: psutil.Process(member.pid)
        for member in state.members
        if member.name == "gateway-1" or member.name.startswith(("indexer", "storage"))
    }


def _rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    return {name: process.memory_info().rss for name, process in processes.items()}


@dataclass
class Sampler:
    """Samples RSS every 20 ms in a thread; keeps the peak of each process."""

    processes: dict[str, psutil.Process]
    peak: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, rss in _rss(self.processes).items():
                self.peak[name] = max(self.peak.get(name, 0), rss)
            self._stop.wait(0.02)


def _upload(server: Server, file: LargeDicom) -> str:
    with server.client() as client, open(file.path, "rb") as body:
        # A file object: httpx streams it, with its Content-Length.
        response = client.post(
            "/instances", content=body, headers={"Content-Type": "application/dicom"},
            timeout=600,
        )  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["ID"])


def _download_md5(server: Server, instance: str) -> tuple[str, int]:
    digest, size = hashlib.md5(), 0
    with server.client() as client, client.stream(
        "GET", f"/instances/{instance}/file", headers={"Accept-Encoding": "identity"},
        timeout=600,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        for piece in response.iter_raw(MiB):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def _delete(server: Server, instance: str) -> None:
    with server.client() as client:
        assert client.delete(f"/instances/{instance}").status_code == 200


def _idle(processes: dict[str, psutil.Process]) -> dict[str, int]:
    """RSS at rest: the largest of a few samples over half a second."""
    samples = []
    for _ in range(5):
        samples.append(_rss(processes))
        time.sleep(0.1)
    return {name: max(sample[name] for sample in samples) for name in processes}


def test_large_upload_and_download_keep_memory_bounded(
    spooled: Spooled, files: tuple[LargeDicom, LargeDicom]
) -> None:
    server = spooled.server
    large, warm = files
    processes = _byte_processes(server)
    warm_id = _upload(server, warm)
    assert _download_md5(server, warm_id) == (warm.md5, warm.size)
    _delete(server, warm_id)
    idle = _idle(processes)
    with Sampler(processes) as sampler:
        started = time.monotonic()
        instance = _upload(server, large)
        uploaded = time.monotonic() - started
        assert _download_md5(server, instance) == (large.md5, large.size)
        total = time.monotonic() - started
    after = _rss(processes)
    growth = {name: (sampler.peak[name] - idle[name]) / MiB for name in processes}
    kept = {name: (after[name] - idle[name]) / MiB for name in processes}
    print(  # the figures docs/reliability.md quotes (run with -s to see them)
        f"\n{server.mode}: {large.size / MiB:.0f} MiB up in {uploaded:.1f} s, round trip "
        f"{total:.1f} s; idle MiB { {n: round(v / MiB) for n, v in idle.items()} }; "
        f"peak growth MiB { {n: round(v, 1) for n, v in growth.items()} }; "
        f"kept MiB { {n: round(v, 1) for n, v in kept.items()} }"
    )
    assert sum(growth.values()) < MEMORY_BOUND_MB, growth
    assert sum(kept.values()) < MEMORY_BOUND_MB, kept
    with server.client() as client:
        info = client.get(f"/instances/{instance}/attachments/dicom/info").json()
        assert info["UncompressedSize"] == large.size
        assert info["UncompressedMD5"] == large.md5
    _delete(server, instance)
    assert list(spooled.tmpdir.iterdir()) == []


def _spool_descriptors(processes: dict[str, psutil.Process], tmpdir: Path) -> list[str]:
    """Open descriptors of the processes on files in `tmpdir` (deleted ones included)."""
    found = []
    for process in processes.values():
        fd_dir = Path(f"/proc/{process.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(tmpdir)):
                found.append(target)
    return found


def test_upload_cut_mid_body_leaves_nothing(
    spooled: Spooled, files: tuple[LargeDicom, LargeDicom]
) -> None:
    server = spooled.server
    large, _ = files
    processes = _byte_processes(server)
    with server.client() as client:
        before = client.get("/instances").json()
    blobs_before = blob_keys(server)
    parts = urlsplit(server.url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock, open(
        large.path, "rb"
    ) as body:
        sock.sendall(
            f"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: {large.size}\r\n\r\n".encode()
        )
        while sent < large.size // 2:
            piece = body.read(MiB)
            sock.sendall(piece)
            sent += len(piece)
        # The server is spooling now: a descriptor on its temporary file is open.
        wait_until(
            lambda: _spool_descriptors(processes, spooled.tmpdir) != [], 60,
            "the upload to be spooled to a temporary file",
        )
    wait_until(
        lambda: _spool_descriptors(processes, spooled.tmpdir) == [], 60,
        "the spooled file of the cut upload to be closed",
    )
    assert list(spooled.tmpdir.iterdir()) == []
    # No blob of the cut upload (blobs of the earlier tests' deleted instances may
    # still be going away: the deletion of a blob follows its commit).
    assert set(blob_keys(server)) - set(blobs_before) == set()
    with server.client() as client:
        assert client.get("/instances").json() == before
        # And the server goes on storing.
        data = sample_path("CT_small.dcm").read_bytes()
        assert client.post("/instances", content=data).status_code == 200
