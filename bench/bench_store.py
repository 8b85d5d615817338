"""Benchmark: C-STORE throughput and REST read latency, with baselines in the same run.

Measures, each repeated and reported as medians:
- DCMTK storescu sending N synthetic instances on one association to
  (a) a null pynetdicom SCP that discards what it gets (the ceiling of Python
      DICOM receive on this machine), (b) DicomKeep all-in-one, (c) DicomKeep
      distributed (local cluster), (d) Debian's Orthanc when installed;
- GET /instances/{id} and GET /instances/{id}/file latency on the same servers.

Ratios are against the null SCP (DICOM) and against Orthanc where present.
Orthanc 1.10.1 listens on every interface whatever its configuration says, so
when it is run, the whole benchmark re-executes itself inside a network
namespace that has only loopback (`ip netns`).

Usage: `make bench` (or `python bench/bench_store.py --instances 300 --repeat 3`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import allinone_server, cluster_server, dcmtk, free_port  # noqa: E402
from synthetic import generate_dataset, write_files  # noqa: E402

NETNS = "dkbench"


def storescu_seconds(port: int, aet: str, files: list[Path]) -> float:
    """Send every file on one association; return the wall time."""
    started = time.perf_counter()
    subprocess.run(
        [dcmtk("storescu"), "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
        check=True, capture_output=True, timeout=600,
        env={**os.environ, "TCP_NODELAY": "1"},  # Debian's DCMTK leaves Nagle on otherwise
    )
    return time.perf_counter() - started


@contextmanager
def null_scp() -> Iterator[int]:
    """A pynetdicom SCP that accepts and discards (TCP_NODELAY set, as DicomKeep)."""
    import socket

    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    def nodelay(event: object) -> None:
        event.assoc.dul.socket.socket.setsockopt(  # type: ignore[attr-defined]
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )

    def store(event: object) -> int:
        event.encoded_dataset()  # type: ignore[attr-defined]
        return 0

    ae = AE(ae_title="NULL")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_C_STORE, store)],
    )
    try:
        yield port
    finally:
        server.shutdown()


@contextmanager
def orthanc_server(tmp: Path) -> Iterator[tuple[str, int]]:
    """Debian's Orthanc on loopback (only inside the benchmark's namespace)."""
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(tmp / "orthanc"),
        "IndexDirectory": str(tmp / "orthanc"), "HttpPort": http_port,
        "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [],
    }
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [shutil.which("Orthanc") or "Orthanc", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"},
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, dicom_port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def clear(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for patient in client.get("/patients").json():
            client.delete(f"/patients/{patient}")


def read_latencies(url: str, rounds: int = 200) -> dict[str, float]:
    """Median milliseconds of GET /instances/{id} and GET /instances/{id}/file."""
    with httpx.Client(base_url=url, timeout=60, headers={"Accept-Encoding": "identity"}) as client:
        ids = client.get("/instances").json()[:rounds]
        result = {}
        for name, path in (("get-instance", "/instances/{}"), ("get-file", "/instances/{}/file")):
            samples = []
            for public_id in ids:
                started = time.perf_counter()
                client.get(path.format(public_id)).raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
            result[name] = statistics.median(samples)
        return result


def measure(
    name: str, port: int, aet: str, files: list[Path], repeat: int,
    url: str | None, reset: Callable[[], None] | None,
) -> dict[str, float]:
    rates = []
    for _ in range(repeat):
        if reset is not None:
            reset()
        rates.append(len(files) / storescu_seconds(port, aet, files))
    row = {"instances_per_s": statistics.median(rates)}
    if url is not None:
        row.update(read_latencies(url))
    sys.stderr.write(f"{name}: {row}\n")
    return row


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        files = write_files(
            generate_dataset(max(1, args.instances // 50), series=1,
                             instances_per_series=min(50, args.instances), seed=1,
                             rows=args.size, columns=args.size),
            tmp / "data",
        )[: args.instances]
        with null_scp() as port:
            results["null-scp"] = measure("null-scp", port, "NULL", files, args.repeat, None, None)
        (tmp / "a").mkdir()
        with allinone_server(tmp / "a") as server:
            results["dicomkeep-allinone"] = measure(
                "dicomkeep-allinone", server.dicom_port, server.aet, files, args.repeat,
                server.url, lambda: clear(server.url),
            )
        if args.distributed:
            (tmp / "d").mkdir()
            with cluster_server(tmp / "d") as server:
                results["dicomkeep-distributed"] = measure(
                    "dicomkeep-distributed", server.dicom_port, server.aet, files,
                    args.repeat, server.url, lambda: clear(server.url),
                )
        if args.orthanc:
            with orthanc_server(tmp) as (url, port):
                results["orthanc"] = measure(
                    "orthanc", port, "ORTHANC", files, args.repeat, url, lambda: clear(url)
                )
    return results


def report(results: dict[str, dict[str, float]]) -> str:
    base = results["null-scp"]["instances_per_s"]
    orthanc = results.get("orthanc")
    lines = ["| server | C-STORE inst/s (median) | vs null SCP | vs Orthanc | GET instance ms | GET file ms |",
             "|---|---|---|---|---|---|"]
    for name, row in results.items():
        rate = row["instances_per_s"]
        vs_orthanc = f"{rate / orthanc['instances_per_s']:.2f}" if orthanc else "n/a"
        lines.append(
            f"| {name} | {rate:.0f} | {rate / base:.2f} | {vs_orthanc} | "
            f"{row.get('get-instance', float('nan')):.1f} | {row.get('get-file', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each image")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-distributed", dest="distributed", action="store_false")
    parser.add_argument("--orthanc", action="store_true", help="include Debian's Orthanc")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.orthanc and not args.in_netns:
        subprocess.run(["ip", "netns", "add", NETNS], capture_output=True)
        subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"], check=True)
        try:
            # Inside the namespace only loopback exists: the distributed backends on the
            # host are unreachable there, so that part runs outside (without Orthanc).
            return subprocess.call(
                ["ip", "netns", "exec", NETNS, sys.executable, __file__, "--in-netns",
                 "--no-distributed", "--orthanc", "--instances", str(args.instances),
                 "--size", str(args.size), "--repeat", str(args.repeat)]
            )
        finally:
            subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True)
    results = run(args)
    sys.stdout.write(report(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
