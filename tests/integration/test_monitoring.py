"""Orthanc's monitoring routes, in both modes: `/tools/metrics-prometheus` (scraped
with prometheus_client's parser), `/tools/metrics` and `/tools/log-level`; JSON
log lines with no patient data."""

from __future__ import annotations

import json

import httpx
from dicomkeep.allinone.cluster import free_port, load_state
from prometheus_client.parser import text_string_to_metric_families
from servers import Server
from synthetic import generate_study

#: All-in-one: its ops port (cluster members get one each from `cluster start`).
SERVER_CONFIG = {"DicomKeep": {"LogFormat": "json", "OpsPort": free_port()}}

ORTHANC_NAMES = {
    "orthanc_count_patients", "orthanc_count_studies", "orthanc_count_series",
    "orthanc_count_instances", "orthanc_disk_size_mb", "orthanc_uncompressed_size_mb",
    "orthanc_jobs_pending", "orthanc_jobs_running", "orthanc_jobs_completed",
    "orthanc_jobs_success", "orthanc_jobs_failed", "orthanc_last_change",
    "orthanc_up_time_s", "orthanc_rest_api_active_requests", "orthanc_rest_api_duration_ms",
}


def scrape(client: object) -> dict[str, float]:
    answer = client.get("/tools/metrics-prometheus")  # type: ignore[attr-defined]
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_prometheus_counts_what_was_stored(clean: Server) -> None:
    study = generate_study(series=2, instances_per_series=3, seed=404, patient_name="SECRET^NAME")
    with clean.client() as client:
        before = scrape(client)
        assert ORTHANC_NAMES - {"orthanc_rest_api_duration_ms"} <= set(before)
        for item in study:
            assert client.post("/instances", content=item.data).status_code == 200
        # Any gateway: the figures are the cluster's, from the index.
        with clean.client(replica=1) as other:
            after = scrape(other)
        assert after["orthanc_count_instances"] == before["orthanc_count_instances"] + 6
        assert after["orthanc_count_series"] == before["orthanc_count_series"] + 2
        assert after["orthanc_count_studies"] == before["orthanc_count_studies"] + 1
        assert after["orthanc_count_patients"] == before["orthanc_count_patients"] + 1
        total = sum(len(item.data) for item in study) / 1024 / 1024
        assert abs(after["orthanc_disk_size_mb"] - before["orthanc_disk_size_mb"] - total) < 1e-3
        assert after["orthanc_last_change"] == client.get("/changes?last").json()["Last"]
        assert after["orthanc_rest_api_active_requests"] >= 1  # this very request
        statistics = client.get("/statistics").json()
        assert after["orthanc_count_instances"] == statistics["CountInstances"]


def test_metrics_can_be_switched_off_and_on(server: Server) -> None:
    with server.client() as client:
        assert client.get("/tools/metrics").text == "1"
        bad = client.put("/tools/metrics", content=b"yes")
        assert bad.status_code == 400
        assert bad.json()["OrthancError"] == "Parameter out of range"
        frozen = scrape(client)
        assert client.put("/tools/metrics", content=b"0").status_code == 200
        try:
            assert client.get("/tools/metrics").text == "0"
            (item,) = generate_study(series=1, instances_per_series=1, seed=406)
            assert client.post("/instances", content=item.data).status_code == 200
            # Nothing is recorded while off: the figures stay as they were.
            assert scrape(client)["orthanc_count_instances"] == frozen["orthanc_count_instances"]
        finally:
            assert client.put("/tools/metrics", content=b"1").status_code == 200
        assert client.get("/tools/metrics").text == "1"
        assert scrape(client)["orthanc_count_instances"] == frozen["orthanc_count_instances"] + 1


def test_log_level_changes_at_run_time(server: Server) -> None:
    with server.client() as client:
        # The test servers run with --verbose.
        assert client.get("/tools/log-level").text == "verbose"
        bad = client.put("/tools/log-level", content=b"loud")
        assert bad.status_code == 400
        assert client.get("/tools/log-level").text == "verbose"
        for level in ("trace", "default", "verbose"):
            assert client.put("/tools/log-level", content=level.encode()).status_code == 200
            assert client.get("/tools/log-level").text == level


def test_json_logs_without_patient_data(server: Server) -> None:
    (item,) = generate_study(series=1, instances_per_series=1, seed=405, patient_id="PID-SECRET-405",
                             patient_name="HIDDEN^PATIENTNAME")
    with server.client() as client:
        assert client.put("/tools/log-level", content=b"trace").status_code == 200
        try:
            assert client.post("/instances", content=item.data).status_code == 200
            assert client.post(
                "/tools/find", json={"Level": "Patient", "Query": {"PatientName": "HIDDEN*"}}
            ).status_code == 200
        finally:
            client.put("/tools/log-level", content=b"verbose")
    logs = _logs(server)
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert lines, logs[-2000:]
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)
    assert "HIDDEN^PATIENTNAME" not in logs
    assert item.patient_id not in logs


def _logs(server: Server) -> str:
    if server.state_dir is not None:
        return "".join(p.read_text(errors="replace") for p in server.state_dir.glob("*.log"))
    assert server.storage_dir is not None
    return (server.storage_dir.parent / "server.log").read_text(errors="replace")


def service_metrics(server: Server) -> dict[str, dict[str, float]]:
    """Each process's `/metrics` (ops port): process name -> sample (with labels) -> value."""
    if server.state_dir is None:
        urls = {"allinone": f"http://127.0.0.1:{server.config['DicomKeep']['OpsPort']}"}
    else:
        state = load_state(server.state_dir)
        assert state is not None
        urls = {
            member.name: f"http://127.0.0.1:{member.argv[member.argv.index('--ops-port') + 1]}"
            for member in state.members if "--ops-port" in member.argv
        }
    found: dict[str, dict[str, float]] = {}
    for name, url in urls.items():
        text = httpx.get(f"{url}/metrics", timeout=10).text
        found[name] = {
            sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
        }
    return found


def total(found: dict[str, dict[str, float]], key: str) -> float:
    return sum(samples.get(key, 0.0) for samples in found.values())


def test_service_metrics_on_the_ops_ports(clean: Server) -> None:
    study = generate_study(series=1, instances_per_series=2, seed=407)
    before = service_metrics(clean)
    with clean.client() as client:
        for item in study:
            assert client.post("/instances", content=item.data).status_code == 200
    after = service_metrics(clean)
    received = 'dicomkeep_received_bytes_total{"origin": "RestApi"}'
    assert total(after, received) - total(before, received) == sum(len(i.data) for i in study)
    stored = 'dicomkeep_instances_received_total{"origin": "RestApi", "status": "Success"}'
    assert total(after, stored) - total(before, stored) == 2
    # Every figure exists where its work is done (in the all-in-one: one process).
    names = {key.split("{")[0] for samples in after.values() for key in samples}
    assert {
        "dicomkeep_outbox_lag_seconds", "dicomkeep_outbox_last_published_seq",
        "dicomkeep_jobs_running", "dicomkeep_stability_backlog", "dicomkeep_receive_seconds_count",
    } <= names
    lag = [s['dicomkeep_outbox_lag_seconds{}'] for s in after.values()
           if 'dicomkeep_outbox_lag_seconds{}' in s]
    assert lag and all(0 <= value < 60 for value in lag)


def test_queue_depths_on_the_ops_ports(server: Server) -> None:
    # The indexer serves the store commands; after a store its queue is drained.
    study = generate_study(series=1, instances_per_series=1, seed=408)
    with server.client() as client:
        assert client.post("/instances", content=study[0].data).status_code == 200
    found = service_metrics(server)
    key = 'dicomkeep_queue_depth{"queue": "dicomkeep.store-instance"}'
    depths = {name: samples[key] for name, samples in found.items() if key in samples}
    assert depths, {name: sorted(samples)[:5] for name, samples in found.items()}
    if server.state_dir is not None:  # distributed: reported by the process that consumes it
        assert depths and all(name.startswith("indexer") for name in depths), depths
    assert all(value == 0 for value in depths.values()), depths
