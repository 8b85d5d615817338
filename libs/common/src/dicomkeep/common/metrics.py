"""Metrics: each service's Prometheus figures (its ops port's `/metrics`) and
Orthanc's own registry (`/tools/metrics-prometheus`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

INSTANCES_RECEIVED = Counter(
    "dicomkeep_instances_received_total",
    "Instances received over DICOM or REST, by store status.",
    ["origin", "status"],
)
RECEIVE_SECONDS = Histogram(
    "dicomkeep_receive_seconds",
    "Time from the bytes received to the indexer's answer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STORE_TRANSACTIONS = Counter(
    "dicomkeep_store_transactions_total", "Store transactions run by the indexer.", ["status"]
)
CHANGES_PUBLISHED = Counter(
    "dicomkeep_changes_published_total", "Events relayed from the outbox to the bus."
)
BLOBS_DELETED = Counter(
    "dicomkeep_blobs_deleted_total", "Blobs removed by the storage service.", ["reason"]
)
STABLE_EVENTS = Counter(
    "dicomkeep_stable_events_total", "Stable* changes emitted.", ["level"]
)
RECEIVED_BYTES = Counter(
    "dicomkeep_received_bytes_total",
    "Bytes of the DICOM files received over DICOM or REST.",
    ["origin"],
)
OUTBOX_LAG = Gauge(
    "dicomkeep_outbox_lag_seconds",
    "Age of the oldest committed change not yet published (0 when the outbox is empty), "
    "as seen by the relay leader.",
)
OUTBOX_LAST_PUBLISHED = Gauge(
    "dicomkeep_outbox_last_published_seq", "Seq of the last change the relay published."
)
JOBS_RUNNING = Gauge("dicomkeep_jobs_running", "Jobs this process is running.")
JOBS_FINISHED = Counter(
    "dicomkeep_jobs_finished_total", "Job runs finished by this process, by state.", ["state"]
)
STORE_GROUP_SIZE = Histogram(
    "dicomkeep_store_group_size",
    "StoreInstance commands committed together in one transaction (groups of 2+).",
    buckets=(2, 4, 8, 16, 32, 64),
)
JOB_SECONDS = Histogram(
    "dicomkeep_job_seconds",
    "Duration of job runs.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
STABILITY_BACKLOG = Gauge(
    "dicomkeep_stability_backlog",
    "Resources waiting to become stable (patients, studies, series in the stability clock).",
)

QUEUE_DEPTH = Gauge(
    "dicomkeep_queue_depth",
    "Messages waiting in each bus queue this process consumes, sampled at scrape time.",
    ["queue"],
)


def record_queue_depths(depths: Mapping[str, int]) -> None:
    """Set `dicomkeep_queue_depth` to `depths`; queues no longer reported are dropped."""
    QUEUE_DEPTH.clear()
    for queue, depth in depths.items():
        QUEUE_DEPTH.labels(queue=queue).set(depth)


class OrthancMetrics:
    """Orthanc's own metrics registry, served by `GET /tools/metrics-prometheus`.

    Mirrors Orthanc's MetricsRegistry: each metric has a value and the time it was
    last set (printed as the sample's timestamp, in ms); durations keep the
    maximum over the last 10 s (Orthanc's `MaxOver10Seconds` policy). A metric
    appears once it has been set. `enabled` is Orthanc's `MetricsEnabled`: while
    off, nothing is recorded.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.enabled = True
        self._window = window
        self._values: dict[str, tuple[float, float]] = {}
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def set_value(self, name: str, value: float) -> None:
        """Record the current value of `name`."""
        if self.enabled:
            with self._lock:
                self._values[name] = (value, time.time())

    def set_max(self, name: str, value: float) -> None:
        """Record a duration: `name` shows the maximum over the window."""
        if not self.enabled:
            return
        now = time.time()
        with self._lock:
            # Only the values that can still become the maximum are kept (each
            # greater than every later one): the front is the window's maximum,
            # without scanning every recent value (a few per stored instance).
            recent = self._recent.setdefault(name, deque())
            while recent and recent[-1][1] <= value:
                recent.pop()
            recent.append((now, value))
            while recent[0][0] < now - self._window:
                recent.popleft()
            self._values[name] = (recent[0][1], now)

    def add(self, name: str, delta: float) -> None:
        """Add `delta` to a value (a gauge of things in progress)."""
        with self._lock:
            value, _ = self._values.get(name, (0.0, 0.0))
            self._values[name] = (value + delta, time.time())

    def export(self) -> str:
        """Return Orthanc's Prometheus text: `name value timestamp_ms`, sorted by name."""
        with self._lock:
            items = sorted(self._values.items())
        return "".join(
            f"{name} {_number(value)} {int(stamp * 1000)}\n" for name, (value, stamp) in items
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


#: This process's registry of Orthanc's metrics.
ORTHANC_METRICS = OrthancMetrics()
