"""Prometheus metrics shared by the services (exposed on each ops port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
