"""The function's output as CloudWatch would keep it: log lines in its log group, EMF documents as metrics.

On Lambda, every stdout/stderr line lands in the function's log group, and CloudWatch extracts the metrics of each
line that is an Embedded Metric Format document. :class:`TelemetrySink` does both against the emulator, in
batches from a background thread (PutLogEvents, PutMetricData), so the function never waits for it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotpipe.local.clients import Clients

MAX_LOG_EVENTS_PER_CALL = 10_000
MAX_LOG_BYTES_PER_CALL = 1_000_000
MAX_METRICS_PER_CALL = 1000  # PutMetricData: at most 1,000 metrics per request


@dataclass(frozen=True)
class MetricDatum:
    """One value of one metric, as PutMetricData takes it."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    value: float
    unit: str
    timestamp_ms: int

    def as_api(self) -> dict[str, Any]:
        """The MetricData entry for PutMetricData."""
        return {"MetricName": self.name, "Value": self.value, "Unit": self.unit,
                "Timestamp": datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC),
                "Dimensions": [{"Name": name, "Value": value} for name, value in self.dimensions]}


def emf_metrics(line: str) -> list[MetricDatum]:
    """The metrics of one log line if it is an Embedded Metric Format document, else []."""
    if not line.startswith("{") or '"_aws"' not in line:
        return []
    try:
        document = json.loads(line)
    except ValueError:
        return []
    metadata = document.get("_aws") if isinstance(document, Mapping) else None
    if not isinstance(metadata, Mapping):
        return []
    timestamp = metadata.get("Timestamp")
    timestamp_ms = int(timestamp) if isinstance(timestamp, int | float) else int(time.time() * 1000)
    return list(_directive_metrics(document, metadata.get("CloudWatchMetrics") or [], timestamp_ms))


def _directive_metrics(document: Mapping[str, Any], directives: Any, timestamp_ms: int) -> Iterator[MetricDatum]:
    for directive in directives if isinstance(directives, list) else []:
        namespace = directive.get("Namespace", "aws-embedded-metrics")
        for dimension_set in directive.get("Dimensions") or [[]]:
            dimensions = tuple((name, str(document.get(name, ""))) for name in dimension_set)
            for metric in directive.get("Metrics", []):
                values = document.get(metric.get("Name"))
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        yield MetricDatum(namespace, metric["Name"], dimensions, float(value),
                                          metric.get("Unit", "None"), timestamp_ms)


class TelemetrySink:
    """Takes the function's output lines; a background thread writes them to CloudWatch Logs and Metrics."""

    def __init__(self, clients: Clients, log_group: str, *, flush_interval_s: float = 0.5) -> None:
        self._logs = clients.client("logs")
        self._cloudwatch = clients.client("cloudwatch")
        self.log_group = log_group
        self.log_stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{uuid.uuid4().hex}"
        self._queue: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._interval = flush_interval_s
        self._stream_ready = False
        self.lines_written = 0
        self.metrics_written = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        """Accept one output line (non-blocking)."""
        self._queue.put((int(time.time() * 1000), line))

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        done = False
        while not done:
            batch: list[tuple[int, str]] = []
            deadline = time.monotonic() + self._interval
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[int, str]]) -> None:
        try:
            self._write_logs(batch)
        except Exception as exc:  # keep running: the emulator may be restarting or the group being deleted
            self.failures.append(f"PutLogEvents: {exc}")
        metrics = [datum for _, line in batch for datum in emf_metrics(line)]
        try:
            self._write_metrics(metrics)
        except Exception as exc:  # as above
            self.failures.append(f"PutMetricData: {exc}")

    def _write_logs(self, batch: list[tuple[int, str]]) -> None:
        if not self._stream_ready:
            with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                self._logs.create_log_stream(logGroupName=self.log_group, logStreamName=self.log_stream)
            self._stream_ready = True
        events = [{"timestamp": ts, "message": line or " "} for ts, line in batch]
        for chunk in _log_chunks(events):
            self._logs.put_log_events(logGroupName=self.log_group, logStreamName=self.log_stream, logEvents=chunk)
            self.lines_written += len(chunk)

    def _write_metrics(self, metrics: list[MetricDatum]) -> None:
        by_namespace: dict[str, list[MetricDatum]] = {}
        for datum in metrics:
            by_namespace.setdefault(datum.namespace, []).append(datum)
        for namespace, data in by_namespace.items():
            for start in range(0, len(data), MAX_METRICS_PER_CALL):
                chunk = data[start:start + MAX_METRICS_PER_CALL]
                self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=[d.as_api() for d in chunk])
                self.metrics_written += len(chunk)


def _log_chunks(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """PutLogEvents batches: at most 10,000 events and about 1 MB (26 bytes of overhead per event)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for event in events:
        event_size = len(event["message"].encode("utf-8")) + 26
        if chunk and (len(chunk) >= MAX_LOG_EVENTS_PER_CALL or size + event_size > MAX_LOG_BYTES_PER_CALL):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += event_size
    if chunk:
        yield chunk
