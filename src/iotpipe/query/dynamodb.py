"""Readings and anomalies from the pipeline's DynamoDB table (both storage layouts, the sparse anomaly index)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from iotpipe import naming
from iotpipe.aws import aws_call
from iotpipe.config import PipelineConfig
from iotpipe.errors import ParameterError
from iotpipe.query.outputs import ClientSource, required_output, stack_names
from iotpipe.query.timespec import days_between, iso_ms, now_ms, parse_since, sort_key_from

DEFAULT_ANOMALY_INDEX = naming.ANOMALY_INDEX
MAX_ITEMS = 100_000
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
    "rule",
    "score",
    "expectedLow",
    "expectedHigh",
)


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
    # Why an anomaly is one (docs/contract.md 6 and 12): the rule that fired (bound or model), the detector's
    # score and the band it expected; empty or None on other readings and sensor types without a detector.
    rule: str = ""
    score: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None

    @property
    def band(self) -> str:
        """The expected band as ``low..high`` (``""`` when there is none)."""
        if self.expected_low is None or self.expected_high is None:
            return ""
        return f"{self.expected_low:.6g}..{self.expected_high:.6g}"

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
            "rule": self.rule,
            "score": self.score,
            "expectedLow": self.expected_low,
            "expectedHigh": self.expected_high,
        }


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
        rule=str(plain.get("rule", "")),
        score=_optional_float(plain.get("score")),
        expected_low=_optional_float(plain.get("expectedLow")),
        expected_high=_optional_float(plain.get("expectedHigh")),
    )


def _optional_float(value: Any) -> float | None:
    """A number attribute as a float, None when absent."""
    return float(value) if isinstance(value, Decimal | int | float) else None


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
    table = required_output(stack_names(clients, cfg), naming.OUT_TABLE_NAME, cfg)
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
    table = required_output(outputs, naming.OUT_TABLE_NAME, cfg)
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
