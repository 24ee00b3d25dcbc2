"""The real OpenTelemetry Python SDK sending logs to `POST /v1/logs` with its
OTLP/HTTP protobuf exporter, gzip on, as an app would: what was stored is
read back field by field through the server's API.

Not the SDK's own code: these tests share its end-to-end harness (a real
`tailwater server` on a free port, see test_e2e.py)."""

from __future__ import annotations

import logging

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from test_e2e import TOKEN, Server, server, wait_for  # noqa: F401  (the fixture)


def provider(server: Server, resource: dict) -> LoggerProvider:
    exporter = OTLPLogExporter(
        endpoint=f"http://127.0.0.1:{server.port}/v1/logs",
        headers={"Authorization": f"Bearer {TOKEN}"},
        compression=Compression.Gzip,
        timeout=10,
    )
    logs = LoggerProvider(resource=Resource.create(resource))
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return logs


def test_the_opentelemetry_sdk_exports_logs_that_read_back_field_by_field(server: Server) -> None:
    logs = provider(
        server,
        {"service.name": "otel-app", "service.version": "1.4.0", "service.instance.id": "pod-7", "cloud.region": "eu"},
    )
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=logs)
    logger = logging.getLogger("otel.test")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.info("model loaded", extra={"request_id": "req-1", "gpu": 0})
        logger.warning("slow step", extra={"step_ms": 812.5})
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception("inference failed")
        logs.force_flush()
    finally:
        logger.removeHandler(handler)
        logs.shutdown()

    records = wait_for("three records", lambda: len(server.logs(app="otel-app")) == 3 and server.logs(app="otel-app"))
    loaded, slow, failed = records
    for record in records:
        assert record["version"] == "1.4.0"
        assert record["runner"] == "pod-7"
        assert record["boot"].startswith("otlp-")
        assert record["fields"]["cloud.region"] == "eu"
        assert record["fields"]["otel.scope.name"] == "otel.test"
    assert (loaded["message"], loaded["level"], loaded["request_id"]) == ("model loaded", "info", "req-1")
    assert loaded["fields"]["gpu"] == 0
    assert (slow["level"], slow["fields"]["step_ms"]) == ("warn", 812.5)
    assert (failed["message"], failed["level"]) == ("inference failed", "error")
    assert failed["fields"]["exception.type"] == "ZeroDivisionError"
    assert "Traceback" in failed["fields"]["exception.stacktrace"]
    assert [record["seq"] for record in records] == [0, 1, 2]


def test_a_refused_export_is_reported_to_the_sdk_and_stores_nothing(server: Server, caplog) -> None:
    exporter = OTLPLogExporter(
        endpoint=f"http://127.0.0.1:{server.port}/v1/logs",
        headers={"Authorization": "Bearer tw_not_a_token"},
        compression=Compression.Gzip,
        timeout=10,
    )
    logs = LoggerProvider(resource=Resource.create({"service.name": "otel-refused"}))
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=logs)
    logger = logging.getLogger("otel.refused")
    logger.addHandler(handler)
    try:
        logger.error("never stored")
        logs.force_flush()
    finally:
        logger.removeHandler(handler)
        logs.shutdown()
    assert server.logs(app="otel-refused") == []
    # The exporter logs the refusal (its status; this exporter does not
    # show the google.rpc.Status message the server sends with it).
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "Failed to export logs batch code: 401" in said, said
