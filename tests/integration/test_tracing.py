"""OpenTelemetry traces: one trace per stored instance, and nothing when tracing is off.

Distributed: ingest and indexer run in this process, each on its own adapters
(PostgreSQL, RabbitMQ, an S3 endpoint), as `dicomkeep run ingest|indexer` builds
them; the SDK's in-memory exporter captures their spans. A C-STORE from DCMTK's
storescu must give one trace: C-STORE -> StoreInstance -> AMQP send -> AMQP
process -> store transaction -> publish change -> AMQP send to dicomkeep.changes.

All-in-one: a real `dicomkeep serve` process with OTEL_* variables pointing at a
collector run by the test: without `OTEL_TRACES_EXPORTER` nothing is exported
(and no span processor runs); with `otlp`, the POST's trace arrives in OTLP/HTTP.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import pg_dsn
from dicomkeep.allinone.cluster import free_port
from dicomkeep.allinone.single import build_service
from dicomkeep.common import telemetry
from dicomkeep.common.settings import parse_settings
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import DICOMKEEP, _pg, dcmtk, rabbit_vhost, wait_http, write_config
from synthetic import generate_study, write_files


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory; restored afterwards."""
    memory = InMemorySpanExporter()
    assert telemetry.setup_tracing("dicomkeep-test", exporters=[memory])
    try:
        yield memory
    finally:
        telemetry.shutdown_tracing()
        _reset_tracing()


def _reset_tracing() -> None:
    """Give the process back its no-op tracing (OpenTelemetry's own test helpers do so)."""
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.util._once import Once

    for instrumentor in (AioPikaInstrumentor(), AsyncPGInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    telemetry._state["provider"] = None


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names from the root down to `span`."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names[::-1]


def test_one_trace_per_c_store_in_distributed_mode(
    exporter: InMemorySpanExporter, s3_endpoint: str, tmp_path: Path
) -> None:
    name = f"dk_trace_{uuid.uuid4().hex[:8]}"
    with rabbit_vhost(name) as amqp_url:
        try:
            asyncio.run(_store_through_a_cluster(name, amqp_url, s3_endpoint, tmp_path))
        finally:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    spans = exporter.get_finished_spans()
    (c_store,) = [s for s in spans if s.name == "C-STORE"]
    trace_id = c_store.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}

    assert c_store.kind is SpanKind.SERVER and c_store.parent is None
    assert c_store.attributes["dicom.calling_ae_title"] == "TRACER"
    assert c_store.attributes["dicom.status"] == 0
    instance_id = c_store.attributes["dicomkeep.instance_id"]

    (transaction,) = [s for s in in_trace if s.name == "store transaction"]
    assert transaction.attributes["dicomkeep.instance_id"] == instance_id
    assert transaction.attributes["dicomkeep.store_status"] == "Success"
    assert _chain(transaction, by_id)[0] == "C-STORE"
    store_chain = _chain(transaction, by_id)
    assert store_chain[:2] == ["C-STORE", "StoreInstance"]
    # The command crossed RabbitMQ: aio-pika's producer and consumer spans.
    crossing = [by_id[s.parent.span_id] for s in [transaction] if s.parent]
    consumer = crossing[0]
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert by_id[consumer.parent.span_id].kind is SpanKind.PRODUCER
    assert any(s.name == "blob write" for s in in_trace)
    assert any(s.attributes.get("db.system") in ("postgresql", "postgres")
               for s in in_trace if s.attributes)

    # The publication of NewInstance continues the trace, under the transaction.
    publications = [s for s in in_trace if s.name == "publish change"]
    new_instance = [
        s for s in publications if s.attributes["dicomkeep.change_type"] == "NewInstance"
    ]
    assert len(new_instance) == 1
    assert new_instance[0].attributes["dicomkeep.resource_id"] == instance_id
    assert new_instance[0].parent.span_id == transaction.context.span_id
    assert new_instance[0].kind is SpanKind.PRODUCER
    sends = [s for s in in_trace if s.parent is not None
             and s.parent.span_id == new_instance[0].context.span_id]
    assert sends and sends[0].kind is SpanKind.PRODUCER
    assert {c.attributes["dicomkeep.change_type"] for c in publications} >= {
        "NewInstance", "NewSeries", "NewStudy", "NewPatient"
    }


async def _store_through_a_cluster(
    name: str, amqp_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    dicom_port = free_port()
    settings = parse_settings({
        "DicomPort": dicom_port,
        "DicomAet": "DICOMKEEP",
        "PostgreSQL": {"ConnectionUri": pg_dsn(name)},
        "RabbitMQ": {"Url": amqp_url},
        "AwsS3Storage": {"Endpoint": s3_endpoint, "BucketName": "traces",
                         "AccessKey": "test", "SecretKey": "test"},
        "DicomKeep": {"Mode": "distributed"},
    })
    indexer = build_service("indexer", settings)
    ingest = build_service("ingest", settings)
    await indexer.start()
    await ingest.start()
    try:
        files = write_files(generate_study(series=1, instances_per_series=1, seed=77),
                            tmp_path)
        result = await asyncio.to_thread(
            subprocess.run,
            [dcmtk("storescu"), "-aet", "TRACER", "-aec", "DICOMKEEP", "127.0.0.1",
             str(dicom_port), *map(str, files)],
            capture_output=True, timeout=60,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert result.returncode == 0, result.stderr
        # Wait for the relay to publish the store's changes (the last span of the trace).
        deadline = time.monotonic() + 30
        provider: Any = trace.get_tracer_provider()
        while time.monotonic() < deadline:
            provider.force_flush()
            if _published(provider):
                break
            await asyncio.sleep(0.1)
    finally:
        await ingest.stop()
        await indexer.stop()


def _published(provider: Any) -> bool:
    for processor in provider._active_span_processor._span_processors:
        exporter = getattr(processor, "span_exporter", None)
        if isinstance(exporter, InMemorySpanExporter):
            names = [
                s.attributes.get("dicomkeep.change_type") for s in exporter.get_finished_spans()
                if s.name == "publish change"
            ]
            return "NewPatient" in names
    return False


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint that keeps what it receives."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        type(self).received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()


def _serve(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    http_port = free_port()
    config = {"HttpPort": http_port, "DicomPort": free_port(),
              "StorageDirectory": str(tmp / "storage"), "IndexDirectory": str(tmp / "index")}
    path = write_config(tmp, config)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([DICOMKEEP, "serve", str(path)], stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        # Generous: the instrumentations' imports are slow on a loaded machine.
        wait_http(f"{url}/system", time.monotonic() + 180, process)
    except BaseException:
        process.kill()
        process.wait(30)
        raise
    return process, url


@pytest.mark.parametrize("exporting", [False, True], ids=["off", "otlp"])
def test_allinone_exports_only_when_asked(
    exporting: bool, collector: tuple[str, list[ExportTraceServiceRequest]], tmp_path: Path
) -> None:
    endpoint, received = collector
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    if exporting:
        env["OTEL_TRACES_EXPORTER"] = "otlp"
    process, url = _serve(tmp_path, env)
    try:
        (item,) = generate_study(series=1, instances_per_series=1, seed=78)
        answer = httpx.post(f"{url}/instances", content=item.data, timeout=30)
        assert answer.status_code == 200
        instance_id = answer.json()["ID"]
        if exporting:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _span_names(received) >= {
                "store transaction", "publish change"
            }:
                time.sleep(0.1)
            names = _span_names(received)
            assert {"POST /instances", "blob write", "StoreInstance", "store transaction",
                    "publish change"} <= names, names
            services = {
                a.value.string_value for r in received for rs in r.resource_spans
                for a in rs.resource.attributes if a.key == "service.name"
            }
            assert services == {"dicomkeep"}
            transaction = next(s for s in _spans(received) if s.name == "store transaction")
            root = next(s for s in _spans(received) if s.name == "POST /instances")
            assert transaction.trace_id == root.trace_id
            assert any(a.value.string_value == instance_id for a in transaction.attributes)
        else:
            time.sleep(1.5)  # several schedule delays: a processor would have exported
            assert received == []
            # Nor does a span processor run in the process: its tracer provider is the API's.
            probe = subprocess.run(
                [sys.executable, "-c",
                 "from dicomkeep.common import telemetry;"
                 "print(telemetry.setup_tracing('probe'), telemetry.span_processor_count())"],
                env=env, capture_output=True, text=True, timeout=60,
            )
            assert probe.stdout.split() == ["False", "0"], probe.stderr
    finally:
        process.terminate()
        process.wait(30)


def _spans(received: list[ExportTraceServiceRequest]) -> list[Any]:
    return [span for request in received for rs in request.resource_spans
            for ss in rs.scope_spans for span in ss.spans]


def _span_names(received: list[ExportTraceServiceRequest]) -> set[str]:
    return {span.name for span in _spans(received)}
