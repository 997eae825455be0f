"""Forwarding dbt's events as structured log records, where the rest of a team's logs are.

Each event becomes a record: timestamp, level, DAG, run, task, try, node unique id, event name,
message and duration (when dbt reports one). The task log always shows them readably; sinks
configured by environment receive them too:

- ``DBTFLOW_LOG_JSON``: ``stdout``, or a file path, for JSON lines (Fluent Bit, Vector, a cloud
  agent tail them);
- ``DBTFLOW_OTLP_ENDPOINT`` (or OpenTelemetry's ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``): OpenTelemetry
  logs over OTLP/HTTP, through the OpenTelemetry SDK.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from dbtflow import settings
from dbtflow.project.events import DbtEvent
from dbtflow.state.task_try import TaskTry

JSON_ENV = settings.LOG_JSON
OTLP_ENV = settings.OTLP_ENDPOINT
OTEL_LOGS_ENV = settings.OTEL_LOGS_ENDPOINT


def record_of(event: DbtEvent, run: TaskTry) -> dict[str, Any]:
    return {
        "timestamp": event.ts,
        "level": event.level,
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "task_id": run.task_id,
        "try_number": run.try_number,
        "unique_id": event.unique_id,
        "event": event.name,
        "message": event.msg,
        "duration_s": event.duration_s,
    }


class Sink(Protocol):
    def emit(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per line, on stdout or appended to a file."""

    def __init__(self, target: str) -> None:
        self._own = target != "stdout"
        self._out = open(target, "a", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115

    def emit(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._own:
            self._out.close()


_SEVERITY = {"debug": 5, "info": 9, "warn": 13, "error": 17}


class OtlpSink:
    """OpenTelemetry log records exported over OTLP/HTTP (``endpoint`` is the ``/v1/logs`` URL or
    the collector's base URL)."""

    def __init__(self, endpoint: str, service_name: str = "dbtflow") -> None:
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        url = endpoint if endpoint.rstrip("/").endswith("/v1/logs") else endpoint.rstrip("/") + "/v1/logs"
        self._provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=url)))
        self._logger = self._provider.get_logger("dbtflow.dbt")
        self._severity = SeverityNumber

    def emit(self, record: dict[str, Any]) -> None:
        attributes = {
            f"dbt.{k}" if k in ("unique_id", "event", "duration_s") else f"airflow.{k}": v
            for k, v in record.items()
            if k not in ("timestamp", "level", "message") and v is not None
        }
        when = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
        self._logger.emit(
            timestamp=int(when.timestamp() * 1e9),
            severity_text=str(record["level"]).upper(),
            severity_number=self._severity(_SEVERITY.get(str(record["level"]), 9)),
            body=record["message"],
            attributes=attributes,
        )

    def close(self) -> None:
        self._provider.shutdown()


def sinks_from_env() -> list[Sink]:
    sinks: list[Sink] = []
    if target := settings.log_json():
        sinks.append(JsonLinesSink(target))
    if endpoint := settings.otlp_endpoint():
        sinks.append(OtlpSink(endpoint))
    return sinks


class EventForwarder:
    """A dbt event callback sending each event's record to the configured sinks (and to ``also``,
    typically the task-log writer). ``close()`` (or leaving it as a context manager) flushes the
    sinks."""

    def __init__(self, run: TaskTry, also: Callable[[DbtEvent], None] | None = None) -> None:
        self.run = run
        self.also = also
        self.sinks = sinks_from_env()

    def __call__(self, event: DbtEvent) -> None:
        if self.also is not None:
            self.also(event)
        # dbt's debug events (adapter internals) stay out, as in the task log.
        if self.sinks and event.levelno >= 20 and event.msg.strip():
            record = record_of(event, self.run)
            for sink in self.sinks:
                sink.emit(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> EventForwarder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
