"""What is measured: each scenario runs once against one target and returns one figure.

Scenarios run in `bench.worker`, in the target's network namespace, so no relay sits
between client and server. A throughput scenario returns instances per second (more
is better); a latency scenario returns the median (p50) of its requests in
milliseconds (less is better). Ingest scenarios store the batch study and the caller
deletes it afterwards, so the store stays at its scale run after run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.measure import percentile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import DCMTK_ENV, dcmtk  # noqa: E402

Target = dict[str, Any]
Params = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    unit: str  # "inst/s" (higher is better) or "ms" (lower is better)
    ingest: bool
    run: Callable[[Target, Params], float]

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "inst/s"


def _client(target: Target) -> httpx.Client:
    # Orthanc gzips /file unless told not to: identity for both sides.
    return httpx.Client(base_url=target["url"], timeout=120.0,
                        headers={"Accept-Encoding": "identity"})


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def _parallel(parts: int, work: Callable[[int], None]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(parts) as pool:
        for future in [pool.submit(work, i) for i in range(parts)]:
            future.result()
    return time.perf_counter() - started


def storescu(target: Target, params: Params, associations: int) -> float:
    files: list[str] = params["batch"]
    chunks = _split(files, associations)

    def send(i: int) -> None:
        subprocess.run(
            [dcmtk("storescu"), "-aet", "BENCH", "-aec", target["aet"], "127.0.0.1",
             str(target["dicom_port"]), *chunks[i]],
            # A guard against a hang: a preload sends thousands (1 s each, at worst).
            check=True, capture_output=True, timeout=max(900, len(chunks[i])), env=DCMTK_ENV,
        )

    return len(files) / _parallel(associations, send)


def pynetdicom_store(target: Target, params: Params, associations: int) -> float:
    from pydicom import dcmread
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    files: list[str] = params["batch"]
    datasets = [dcmread(path) for path in files]  # read outside the timed part
    chunks = _split(datasets, associations)

    def send(i: int) -> None:
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(MRImageStorage)
        assoc = ae.associate("127.0.0.1", target["dicom_port"], ae_title=target["aet"],
                             evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
        if not assoc.is_established:
            raise RuntimeError("association refused")
        try:
            for ds in chunks[i]:
                status = assoc.send_c_store(ds)
                if getattr(status, "Status", None) != 0:
                    raise RuntimeError(f"C-STORE failed: {status}")
        finally:
            assoc.release()

    return len(files) / _parallel(associations, send)


def rest_store(target: Target, params: Params, clients: int) -> float:
    files: list[str] = params["batch"]
    bodies = [Path(path).read_bytes() for path in files]
    chunks = _split(bodies, clients)

    def send(i: int) -> None:
        with _client(target) as client:
            for body in chunks[i]:
                client.post("/instances", content=body,
                            headers={"Content-Type": "application/dicom"}).raise_for_status()

    return len(files) / _parallel(clients, send)


def _nodelay(event: Any) -> None:
    """pynetdicom leaves Nagle on: without this small PDUs wait for delayed ACKs."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _latencies(requests: int, call: Callable[[int], None]) -> float:
    call(0)  # warm the connection
    samples = []
    for i in range(requests):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return percentile(samples, 0.5)


def cfind(target: Target, params: Params, key: str) -> float:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = params["patient_id"] if key == "id" else ""
    query.PatientName = params["patient_name_wildcard"] if key == "name" else ""
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)

    def call(_: int) -> None:
        # One association per query, as a workstation's query does.
        assoc = ae.associate("127.0.0.1", target["dicom_port"], ae_title=target["aet"],
                             evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
        if not assoc.is_established:
            raise RuntimeError("C-FIND association refused")
        try:
            statuses = [status.Status for status, _ in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind) if status]
            if not any(code in (0xFF00, 0xFF01) for code in statuses):
                raise RuntimeError(f"C-FIND found nothing (statuses {statuses})")
        finally:
            assoc.release()

    return _latencies(params["requests"], call)


def rest_latency(target: Target, params: Params, method: str, path: str,
                 body: Callable[[int], Any] | None = None, nonempty: bool = False) -> float:
    ids: list[str] = params["instance_ids"]
    with _client(target) as client:
        def call(i: int) -> None:
            url = path.format(id=ids[i % len(ids)])
            content = body(i) if body else None
            if isinstance(content, dict):
                response = client.request(method, url, json=content)
            else:
                response = client.request(method, url, content=content)
            response.raise_for_status()
            if nonempty and not response.json():
                raise RuntimeError(f"{method} {url} found nothing")

        return _latencies(params["requests"], call)


def get_files(target: Target, params: Params, clients: int) -> float:
    ids: list[str] = params["instance_ids"]
    count = params["requests"]
    chunks = _split([ids[i % len(ids)] for i in range(count)], clients)

    def fetch(i: int) -> None:
        with _client(target) as client:
            for public_id in chunks[i]:
                response = client.get(f"/instances/{public_id}/file")
                response.raise_for_status()
                if len(response.content) < 1024:
                    raise RuntimeError("short file")

    return count / _parallel(clients, fetch)


def cmove(target: Target, params: Params) -> float:
    """C-MOVE of one study to a DCMTK storescp that receives and discards."""
    scp = subprocess.Popen(
        [dcmtk("storescp"), "--ignore", "-aet", "BENCHSCP", str(target["move_port"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", target["move_port"]), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        started = time.perf_counter()
        done = subprocess.run(
            [dcmtk("movescu"), "-S", "-aet", "BENCH", "-aec", target["aet"], "-aem", "BENCHSCP",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={params['move_study']}",
             "127.0.0.1", str(target["dicom_port"])],
            capture_output=True, timeout=900, env=DCMTK_ENV, text=True,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0 or "Failed" in done.stderr:
            raise RuntimeError(f"movescu: {done.stderr[-500:]}")
    finally:
        scp.terminate()
        scp.wait(10)
    return params["move_count"] / seconds




def _find(expand: bool) -> Callable[[Target, Params], float]:
    def run(target: Target, params: Params) -> float:
        query = {"Level": "Study", "Query": {"PatientID": params["patient_id"]}, "Expand": expand}
        return rest_latency(target, params, "POST", "/tools/find", lambda i: query,
                            nonempty=True)
    return run


SCENARIOS: list[Scenario] = [
    Scenario("cstore-pynetdicom-1", "C-STORE, pynetdicom SCU, 1 association", "inst/s", True,
             lambda t, p: pynetdicom_store(t, p, 1)),
    Scenario("cstore-pynetdicom-4", "C-STORE, pynetdicom SCU, 4 associations", "inst/s", True,
             lambda t, p: pynetdicom_store(t, p, 4)),
    Scenario("cstore-dcmtk-1", "C-STORE, DCMTK storescu, 1 association", "inst/s", True,
             lambda t, p: storescu(t, p, 1)),
    Scenario("cstore-dcmtk-4", "C-STORE, DCMTK storescu, 4 associations", "inst/s", True,
             lambda t, p: storescu(t, p, 4)),
    Scenario("post-instances-1", "POST /instances, 1 client", "inst/s", True,
             lambda t, p: rest_store(t, p, 1)),
    Scenario("post-instances-8", "POST /instances, 8 clients", "inst/s", True,
             lambda t, p: rest_store(t, p, 8)),
    Scenario("cfind-patientid", "C-FIND study by PatientID, p50", "ms", False,
             lambda t, p: cfind(t, p, "id")),
    Scenario("cfind-patientname", "C-FIND study by PatientName wildcard, p50", "ms", False,
             lambda t, p: cfind(t, p, "name")),
    Scenario("tools-find", "POST /tools/find, p50", "ms", False, _find(False)),
    Scenario("tools-find-expand", "POST /tools/find with Expand, p50", "ms", False, _find(True)),
    Scenario("get-file-1", "GET /instances/{id}/file, 1 client", "inst/s", False,
             lambda t, p: get_files(t, p, 1)),
    Scenario("get-file-4", "GET /instances/{id}/file, 4 clients", "inst/s", False,
             lambda t, p: get_files(t, p, 4)),
    Scenario("get-tags", "GET /instances/{id}/tags?simplify, p50", "ms", False,
             lambda t, p: rest_latency(t, p, "GET", "/instances/{id}/tags?simplify",
                                       nonempty=True)),
    Scenario("cmove-study", "C-MOVE of a study to a storescp", "inst/s", False, cmove),
    Scenario("put-metadata", "PUT metadata, p50", "ms", False,
             lambda t, p: rest_latency(t, p, "PUT", "/instances/{id}/metadata/Sample",
                                       lambda i: f"value-{i}".encode())),
]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
#: The scenario whose CPU cost is reported per 1,000 stored instances.
CPU_SCENARIO = "cstore-dcmtk-1"
