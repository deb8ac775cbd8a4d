"""Read back what the pipeline found: readings, anomalies (sparse index), processor logs and metrics.

Resource names come from the stack's outputs (see the data contract in CONTRIBUTING.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer

from iotpipe import naming
from iotpipe.aws import aws_call, stack_outputs
from iotpipe.config import PipelineConfig
from iotpipe.errors import AwsError, ConfigError, ParameterError

METRIC_NAMESPACE = naming.METRIC_NAMESPACE
METRIC_NAMES = naming.METRIC_NAMES
DEFAULT_ANOMALY_INDEX = naming.ANOMALY_INDEX
MAX_SINCE_DAYS = 3650
MAX_ITEMS = 100_000
SPARK_CHARS = "▁▂▃▄▅▆▇█"
READING_FIELDS = (
    "deviceId",
    "time",
    "timestamp",
    "sensorType",
    "value",
    "unit",
    "status",
    "anomaly",
    "reason",
)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ClientSource(Protocol):
    """Anything that makes boto3 clients by service name (``iotpipe.aws.ClientFactory``)."""

    def client(self, service: str) -> Any: ...


@dataclass(frozen=True)
class Reading:
    """One stored reading, as the processor wrote it."""

    device_id: str
    timestamp: int
    sensor_type: str
    value: float
    unit: str
    status: str
    anomaly: bool
    reason: str

    @property
    def time(self) -> str:
        """The reading time as ISO 8601 UTC with milliseconds."""
        return iso_ms(self.timestamp)

    def as_dict(self) -> dict[str, Any]:
        """JSON/CSV row."""
        return {
            "deviceId": self.device_id,
            "time": self.time,
            "timestamp": self.timestamp,
            "sensorType": self.sensor_type,
            "value": self.value,
            "unit": self.unit,
            "status": self.status,
            "anomaly": self.anomaly,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LogLine:
    """A processor log event, its JSON summarised."""

    timestamp: int
    stream: str
    level: str
    message: str
    fields: tuple[tuple[str, str], ...]
    event_id: str

    def summary(self) -> str:
        """One line: time, level, message, then the other fields as key=value."""
        extra = " ".join(f"{key}={value}" for key, value in self.fields)
        parts = [iso_ms(self.timestamp), self.level.ljust(5) if self.level else "-    ", self.message, extra]
        return " ".join(part for part in parts if part).rstrip()


@dataclass(frozen=True)
class MetricSeries:
    """One metric's sums per period, oldest first (0 where nothing was emitted)."""

    name: str
    values: tuple[float, ...]

    @property
    def total(self) -> float:
        """Sum over all periods."""
        return sum(self.values)


@dataclass(frozen=True)
class MetricsReport:
    """The custom metrics over a window: period start times and one series per metric."""

    environment: str
    period_s: int
    starts: tuple[int, ...]
    series: tuple[MetricSeries, ...]


# --- time helpers ---------------------------------------------------------------------------------------


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


def iso_ms(epoch_ms: int) -> str:
    """Epoch ms -> ``2026-01-02T03:04:05.678Z``."""
    return (
        datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_since(text: str, now: int) -> int:
    """``--since`` (``30s``, ``10m``, ``1h``, ``7d``, ``2w`` or an ISO 8601 time) -> epoch ms."""
    value = (text or "").strip()
    match = _DURATION.fullmatch(value)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds > MAX_SINCE_DAYS * 86400:
            raise ParameterError("since", text, f"is too far back: at most {MAX_SINCE_DAYS} days")
        return now - seconds * 1000
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParameterError(
            "since", text, "is not valid; use a duration like 30s, 10m, 1h, 7d or an ISO 8601 "
            "time like 2026-01-02T03:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since = int(moment.timestamp() * 1000)
    if since > now:
        raise ParameterError("since", text, "is in the future")
    return since


def sort_key_from(epoch_ms: int) -> str:
    """The smallest ``sk`` at or after ``epoch_ms`` (sk = ``<13-digit ms>#<sensorType>#<value>``)."""
    return f"{max(epoch_ms, 0):013d}"


def days_between(since_ms: int, until_ms: int) -> list[str]:
    """The UTC days ``YYYY-MM-DD`` from ``until_ms`` back to ``since_ms`` (newest first)."""
    first = datetime.fromtimestamp(since_ms / 1000, tz=UTC).date()
    day = datetime.fromtimestamp(until_ms / 1000, tz=UTC).date()
    days: list[str] = []
    while day >= first and len(days) <= MAX_SINCE_DAYS:
        days.append(day.isoformat())
        day -= timedelta(days=1)
    return days


# --- stack names ----------------------------------------------------------------------------------------


def stack_names(clients: ClientSource, cfg: PipelineConfig) -> dict[str, str]:
    """The stack's outputs (resource names) for ``cfg``'s environment."""
    return stack_outputs(clients.client("cloudformation"), cfg.resolved_stack_name)


def _output(outputs: Mapping[str, str], key: str, cfg: PipelineConfig) -> str:
    value = outputs.get(key)
    if not value:
        raise AwsError(
            f"stack {cfg.resolved_stack_name} has no output {key}; redeploy it with this version of "
            f"iotpipe: iotpipe deploy --env {cfg.env}"
        )
    return value


# --- readings and anomalies -----------------------------------------------------------------------------


_DESERIALIZER = TypeDeserializer()


def to_reading(item: Mapping[str, Any]) -> Reading:
    """A DynamoDB item (low-level client form) -> Reading."""
    plain = {key: _DESERIALIZER.deserialize(value) for key, value in item.items()}
    value = plain.get("value")
    return Reading(
        device_id=str(plain.get("deviceId", "")),
        timestamp=int(plain.get("timestamp", 0)),
        sensor_type=str(plain.get("sensorType", "")),
        value=float(value) if isinstance(value, Decimal | int | float) else math.nan,
        unit=str(plain.get("unit", "")),
        status=str(plain.get("status", "")),
        anomaly=bool(plain.get("anomalyDetected", False)),
        reason=str(plain.get("reason", "")),
    )


def to_readings(item: Mapping[str, Any]) -> list[Reading]:
    """A DynamoDB item (low-level client form) -> its readings: a packed item (sort key
    ``<13-digit window start>#<sensorType>#packed#...``, a ``readings`` text of ``<ms after the window
    start>:<value>`` pairs) holds many, any other item one."""
    packed = item.get("readings", {}).get("S")
    sort_key = str(item.get("sk", {}).get("S", ""))
    if packed is None or sort_key.split("#")[2:3] != ["packed"]:
        return [to_reading(item)]
    template = to_reading(item)
    start = int(sort_key[:13])
    readings = []
    for entry in packed.split(","):
        offset, _, value = entry.partition(":")
        readings.append(dataclasses.replace(template, timestamp=start + int(offset), value=float(value)))
    return readings


def query_readings(
    dynamodb: Any,
    table: str,
    device_id: str,
    *,
    since_ms: int,
    sensor: str | None = None,
    anomalies_only: bool = False,
    limit: int = 100,
    page_size: int | None = None,
    pack_window_ms: int = 0,
) -> list[Reading]:
    """A device's readings since ``since_ms``, newest first, at most ``limit`` (paginated Query).

    Reads both storage layouts: a packed item (``pack_window_ms`` > 0) is keyed by its window's start, so the
    query starts one window earlier and keeps the readings from ``since_ms`` on. A reading stored twice (a
    retried batch, a partial retry that packed it again) is returned once.
    """
    start = sort_key_from(since_ms - pack_window_ms + 1 if pack_window_ms else since_ms)
    kwargs = _newest_first_query(
        table, "deviceId = :d AND sk >= :from", {":d": {"S": device_id}, ":from": {"S": start}},
        sensor=sensor, anomalies_only=anomalies_only)
    if page_size:
        kwargs["Limit"] = page_size
    found: dict[tuple[str, int, float], Reading] = {}
    with aws_call("dynamodb", f"query {table}"):
        for page in dynamodb.get_paginator("query").paginate(**kwargs):
            items = page.get("Items", [])
            for item in items:
                for reading in to_readings(item):
                    if reading.timestamp >= since_ms:
                        found.setdefault((reading.sensor_type, reading.timestamp, reading.value), reading)
            # Items come newest window first: those not read yet hold readings before the last one's window
            # ends, so once `limit` readings are at or after that, the newest `limit` are known.
            if items and sum(r.timestamp >= _item_start(items[-1]) + pack_window_ms
                             for r in found.values()) >= limit:
                break
    return sorted(found.values(), key=lambda r: (r.timestamp, r.sensor_type, r.value), reverse=True)[:limit]


def _item_start(item: Mapping[str, Any]) -> int:
    """The time an item's sort key starts with: its reading's, or its packed window's start."""
    prefix = item.get("sk", {}).get("S", "")[:13]
    return int(prefix) if prefix.isdigit() else 0


def _newest_first_query(table: str, key_condition: str, values: dict[str, Any], *, sensor: str | None = None,
                        device_id: str | None = None, anomalies_only: bool = False) -> dict[str, Any]:
    """Query parameters, newest first, with the optional filters of the readings and anomalies commands."""
    filters = []
    for wanted, expression, name, value in (
        (sensor, "sensorType = :s", ":s", {"S": sensor}),
        (device_id, "deviceId = :dev", ":dev", {"S": device_id}),
        (anomalies_only, "anomalyDetected = :t", ":t", {"BOOL": True}),
    ):
        if wanted:
            filters.append(expression)
            values[name] = value
    kwargs: dict[str, Any] = {"TableName": table, "KeyConditionExpression": key_condition,
                              "ExpressionAttributeValues": values, "ScanIndexForward": False}
    if filters:
        kwargs["FilterExpression"] = " AND ".join(filters)
    return kwargs


def query_anomalies(
    dynamodb: Any,
    table: str,
    index: str,
    *,
    since_ms: int,
    until_ms: int,
    sensor: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
) -> list[Reading]:
    """Anomalies of all devices since ``since_ms`` from the sparse day index, newest first."""
    results: list[Reading] = []
    for day in days_between(since_ms, until_ms):
        kwargs = _newest_first_query(
            table, "anomalyDay = :day AND anomalySk >= :from",
            {":day": {"S": day}, ":from": {"S": sort_key_from(since_ms)}}, sensor=sensor, device_id=device_id)
        kwargs["IndexName"] = index
        results.extend(_paginate_items(dynamodb, kwargs, limit - len(results), f"query {table}/{index}"))
        if len(results) >= limit:
            break
    return results


def _paginate_items(
    dynamodb: Any, kwargs: dict[str, Any], limit: int, what: str, page_size: int | None = None
) -> list[Reading]:
    if limit <= 0:
        return []
    readings: list[Reading] = []
    config: dict[str, int] = {"MaxItems": limit}
    if page_size:
        config["PageSize"] = page_size
    with aws_call("dynamodb", what):
        pages = dynamodb.get_paginator("query").paginate(**kwargs, PaginationConfig=config)
        for page in pages:
            readings.extend(to_reading(item) for item in page.get("Items", []))
    return readings[:limit]


def readings(
    clients: ClientSource,
    cfg: PipelineConfig,
    device_id: str,
    *,
    since: str = "1h",
    sensor: str | None = None,
    anomalies_only: bool = False,
    limit: int = 100,
    now: int | None = None,
) -> list[Reading]:
    """``iotpipe readings``: the device's readings from the stack's table, newest first."""
    from iotpipe.devices import validate_thing_name

    validate_thing_name(device_id)
    _check_limit(limit)
    since_ms = parse_since(since, now if now is not None else now_ms())
    table = _output(stack_names(clients, cfg), naming.OUT_TABLE_NAME, cfg)
    packed = cfg.storage.layout == "packed"
    return query_readings(
        clients.client("dynamodb"),
        table,
        device_id,
        since_ms=since_ms,
        sensor=sensor,
        anomalies_only=anomalies_only,
        limit=limit,
        pack_window_ms=cfg.storage.pack_window_seconds * 1000 if packed else 0,
    )


def anomalies(
    clients: ClientSource,
    cfg: PipelineConfig,
    *,
    since: str = "24h",
    sensor: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
    now: int | None = None,
) -> list[Reading]:
    """``iotpipe anomalies``: anomalies of every device from the AnomaliesByDay index, newest first."""
    _check_limit(limit)
    current = now if now is not None else now_ms()
    since_ms = parse_since(since, current)
    outputs = stack_names(clients, cfg)
    table = _output(outputs, naming.OUT_TABLE_NAME, cfg)
    index = outputs.get(naming.OUT_ANOMALY_INDEX) or DEFAULT_ANOMALY_INDEX
    return query_anomalies(
        clients.client("dynamodb"),
        table,
        index,
        since_ms=since_ms,
        until_ms=current,
        sensor=sensor,
        device_id=device_id,
        limit=limit,
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_ITEMS:
        raise ParameterError("limit", limit, f"is out of range; use 1 to {MAX_ITEMS}")


# --- logs -----------------------------------------------------------------------------------------------


_LEVEL_KEYS = ("level", "levelname", "log_level", "severity")
_MESSAGE_KEYS = ("message", "msg", "event")
_SKIP_KEYS = ("timestamp", "time", "ts", "_aws")


def summarise_log(event: Mapping[str, Any]) -> LogLine:
    """A CloudWatch Logs event -> LogLine; JSON objects are summarised, EMF lines show their metric values."""
    text = str(event.get("message", "")).rstrip("\n")
    level, message = "", text.strip()
    fields: tuple[tuple[str, str], ...] = ()
    parsed: Any = None
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict):
        level = next((str(parsed[k]) for k in _LEVEL_KEYS if k in parsed), "").upper()
        message = next((str(parsed[k]) for k in _MESSAGE_KEYS if k in parsed), "")
        if "_aws" in parsed:
            metrics = [
                m.get("Name")
                for d in parsed["_aws"].get("CloudWatchMetrics", [])
                for m in d.get("Metrics", [])
            ]
            message = message or "metrics"
            fields = tuple((str(name), _short(parsed.get(name))) for name in metrics if name in parsed)
        else:
            used = {*_LEVEL_KEYS, *_MESSAGE_KEYS, *_SKIP_KEYS}
            fields = tuple((key, _short(value)) for key, value in parsed.items() if key not in used)
    return LogLine(
        timestamp=int(event.get("timestamp", 0)),
        stream=str(event.get("logStreamName", "")),
        level=level,
        message=message,
        fields=fields,
        event_id=str(event.get("eventId", "")),
    )


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def filter_pattern(text: str | None) -> str | None:
    """``--filter`` -> a CloudWatch Logs filter pattern; patterns pass through, plain text is a phrase."""
    if not text:
        return None
    stripped = text.strip()
    if stripped.startswith(("{", '"', "[", "?", "%")):
        return stripped
    return '"' + stripped.replace('"', '\\"') + '"'


def fetch_logs(
    logs: Any, group: str, *, start_ms: int, pattern: str | None = None, limit: int = 1000
) -> list[LogLine]:
    """Events of ``group`` since ``start_ms``, oldest first, at most ``limit`` (paginated)."""
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "interleaved": True}
    if pattern:
        kwargs["filterPattern"] = pattern
    lines: list[LogLine] = []
    try:
        with aws_call("logs", "filter-log-events"):
            for page in logs.get_paginator("filter_log_events").paginate(
                **kwargs, PaginationConfig={"MaxItems": limit}
            ):
                lines.extend(summarise_log(event) for event in page.get("events", []))
    except AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            raise AwsError(
                f"log group {group} does not exist yet; it appears once the processor has run"
            ) from None
        raise
    return sorted(lines[:limit], key=lambda line: (line.timestamp, line.event_id))


def follow_logs(
    logs: Any,
    group: str,
    *,
    start_ms: int,
    pattern: str | None = None,
    poll_s: float = 2.0,
    max_wait_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LogLine]:
    """Yield new events as they arrive, polling every ``poll_s`` for at most ``max_wait_s`` seconds."""
    seen: set[str] = set()
    cursor = start_ms
    deadline = clock() + max_wait_s
    polls = int(max_wait_s / max(poll_s, 0.1)) + 1
    for poll in range(polls):
        for line in fetch_logs(logs, group, start_ms=cursor, pattern=pattern):
            if line.event_id in seen:
                continue
            seen.add(line.event_id)
            cursor = max(cursor, line.timestamp)
            yield line
        if poll == polls - 1 or clock() + poll_s > deadline:
            return
        sleep(poll_s)


def log_group(clients: ClientSource, cfg: PipelineConfig) -> str:
    """The processor's log group name (output DataProcessorLogGroupName)."""
    return _output(stack_names(clients, cfg), naming.OUT_LOG_GROUP_NAME, cfg)


def processor_logs(
    clients: ClientSource,
    cfg: PipelineConfig,
    *,
    since: str = "10m",
    text: str | None = None,
    follow: bool = False,
    max_wait_s: float = 600.0,
    limit: int = 1000,
    now: int | None = None,
) -> Iterator[LogLine]:
    """``iotpipe logs``: the processor's log lines since ``since``; with ``follow`` keep polling (bounded)."""
    start = parse_since(since, now if now is not None else now_ms())
    group = log_group(clients, cfg)
    client = clients.client("logs")
    pattern = filter_pattern(text)
    if follow:
        return follow_logs(client, group, start_ms=start, pattern=pattern, max_wait_s=max_wait_s)
    return iter(fetch_logs(client, group, start_ms=start, pattern=pattern, limit=limit))


# --- metrics --------------------------------------------------------------------------------------------


def choose_period(span_s: float, max_points: int = 60) -> int:
    """A CloudWatch period (multiple of 60 s) giving at most ``max_points`` points over ``span_s``."""
    minutes = max(1, math.ceil(span_s / max_points / 60))
    return minutes * 60


def sparkline(values: Sequence[float]) -> str:
    """Values -> ``▁▂▃▄▅▆▇█`` (all equal -> lowest bar; empty -> empty)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK_CHARS[0] * len(values)
    scale = (len(SPARK_CHARS) - 1) / (hi - lo)
    return "".join(SPARK_CHARS[round((value - lo) * scale)] for value in values)


def fetch_metrics(
    cloudwatch: Any, environment: str, *, since_ms: int, until_ms: int, period_s: int | None = None
) -> MetricsReport:
    """Sum of each custom metric per period (dimension Environment) via get_metric_data."""
    period = period_s or choose_period((until_ms - since_ms) / 1000)
    if period % 60 or period <= 0:
        raise ParameterError("period_s", period, "is not valid; use a positive multiple of 60 seconds")
    start = since_ms // (period * 1000) * period * 1000
    # whole periods, the last one containing until_ms: EndTime is exclusive and must not cut off "now"
    end = -(-until_ms // (period * 1000)) * period * 1000
    end = end if end > until_ms else end + period * 1000
    starts = tuple(range(start, end, period * 1000))
    if len(starts) > 1440:
        raise ConfigError(f"{len(starts)} periods of {period} s are too many; use a longer --period")
    queries = [
        {
            "Id": f"m{index}",
            "Label": name,
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "Namespace": METRIC_NAMESPACE,
                    "MetricName": name,
                    "Dimensions": [{"Name": "Environment", "Value": environment}],
                },
                "Period": period,
                "Stat": "Sum",
            },
        }
        for index, name in enumerate(METRIC_NAMES)
    ]
    sums: dict[str, dict[int, float]] = {name: {} for name in METRIC_NAMES}
    with aws_call("cloudwatch", "get-metric-data"):
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(start / 1000, tz=UTC),
            EndTime=datetime.fromtimestamp(end / 1000, tz=UTC),
            ScanBy="TimestampAscending",
            PaginationConfig={"MaxItems": 100_000},
        )
        for page in pages:
            for result in page.get("MetricDataResults", []):
                name = METRIC_NAMES[int(result["Id"][1:])]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    bucket = int(stamp.timestamp() * 1000) // (period * 1000) * period * 1000
                    sums[name][bucket] = sums[name].get(bucket, 0.0) + float(value)
    series = tuple(
        MetricSeries(name, tuple(sums[name].get(moment, 0.0) for moment in starts)) for name in METRIC_NAMES
    )
    return MetricsReport(environment=environment, period_s=period, starts=starts, series=series)


def metrics(
    clients: ClientSource,
    cfg: PipelineConfig,
    *,
    since: str = "1h",
    period_s: int | None = None,
    now: int | None = None,
) -> MetricsReport:
    """``iotpipe metrics``: the custom metrics of the stack's environment per period."""
    current = now if now is not None else now_ms()
    since_ms = parse_since(since, current)
    outputs = stack_names(clients, cfg)
    environment = outputs.get(naming.OUT_ENV) or cfg.env
    return fetch_metrics(
        clients.client("cloudwatch"), environment, since_ms=since_ms, until_ms=current, period_s=period_s
    )
