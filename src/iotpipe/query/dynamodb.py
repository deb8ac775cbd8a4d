"""Readings and anomalies from the pipeline's DynamoDB table (both storage layouts, the sparse anomaly index)."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from iotpipe import contract
from iotpipe.aws import aws_call
from iotpipe.config import MAX_PACK_WINDOW_SECONDS, PipelineConfig
from iotpipe.errors import ParameterError
from iotpipe.query.outputs import ClientSource, required_output, stack_names
from iotpipe.query.timespec import days_between, iso_ms, now_ms, parse_since, sort_key_from

DEFAULT_ANOMALY_INDEX = contract.ANOMALY_INDEX
# The longest window a packed item can have been written with (any release, any configuration): how far before a
# time its readings can start.
MAX_PACK_WINDOW_MS = MAX_PACK_WINDOW_SECONDS * 1000
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
    start>:<value>`` pairs) holds many, any other item one. Whatever window and key form (with or without the
    shard) it was written with: the key and the offsets say it."""
    return [reading for reading, _ in _identified_readings(item)]


def _identified_readings(item: Mapping[str, Any]) -> list[tuple[Reading, tuple[Any, ...]]]:
    """An item's readings, each with what tells it apart from another reading (docs/contract.md, section 6): a
    packed entry's sensor type, time, value and rank among the equal entries of its item (equal entries are
    distinct readings dated by their arrival; a retry packs them again in another item, as often at most); an
    item of its own's sensor type, time, value and the origin its key ends with (readings dated by their arrival)."""
    packed = item.get("readings", {}).get("S")
    sort_key = str(item.get("sk", {}).get("S", ""))
    single = to_reading(item)
    if packed is None or sort_key.split("#")[2:3] != ["packed"]:
        origin = sort_key.split("#", 3)[3:]
        return [(single, (single.sensor_type, single.timestamp, single.value, origin[0] if origin else 0))]
    start = int(sort_key[:13])
    seen: dict[tuple[str, int, float], int] = {}
    readings = []
    for entry in packed.split(","):
        offset, _, value = entry.partition(":")
        reading = dataclasses.replace(single, timestamp=start + int(offset), value=float(value))
        key = (reading.sensor_type, reading.timestamp, reading.value)
        seen[key] = seen.get(key, -1) + 1
        readings.append((reading, (*key, seen[key])))
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
) -> list[Reading]:
    """A device's readings since ``since_ms``, newest first, at most ``limit`` (paginated Query).

    Reads both storage layouts and every pack window, whatever the configuration says now (it may have changed
    since the items were written): a packed item is keyed by its window's start and a window is at most
    MAX_PACK_WINDOW_MS long, so the query starts that much earlier and keeps the readings from ``since_ms`` on.
    A reading stored twice (a retried batch, a partial retry that packed it again) is returned once.
    """
    lookback = MAX_PACK_WINDOW_MS
    start = sort_key_from(max(0, since_ms - lookback + 1))
    kwargs = _newest_first_query(
        table, "deviceId = :d AND sk >= :from", {":d": {"S": device_id}, ":from": {"S": start}},
        sensor=sensor, anomalies_only=anomalies_only)
    if page_size:
        kwargs["Limit"] = page_size
    found: dict[tuple[Any, ...], Reading] = {}
    with aws_call("dynamodb", f"query {table}"):
        for page in dynamodb.get_paginator("query").paginate(**kwargs):
            items = page.get("Items", [])
            for item in items:
                for reading, identity in _identified_readings(item):
                    if reading.timestamp >= since_ms:
                        found.setdefault(identity, reading)
            # Items come newest window first: those not read yet hold readings before the last one's window
            # ends, so once `limit` readings are at or after that, the newest `limit` are known.
            if items and sum(r.timestamp >= _item_start(items[-1]) + lookback for r in found.values()) >= limit:
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
    _check_sensor(cfg, sensor)
    since_ms = parse_since(since, now if now is not None else now_ms())
    table = required_output(stack_names(clients, cfg), contract.OUT_TABLE_NAME, cfg)
    return query_readings(
        clients.client("dynamodb"),
        table,
        device_id,
        since_ms=since_ms,
        sensor=sensor,
        anomalies_only=anomalies_only,
        limit=limit,
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
    _check_sensor(cfg, sensor)
    current = now if now is not None else now_ms()
    since_ms = parse_since(since, current)
    outputs = stack_names(clients, cfg)
    table = required_output(outputs, contract.OUT_TABLE_NAME, cfg)
    index = outputs.get(contract.OUT_ANOMALY_INDEX) or DEFAULT_ANOMALY_INDEX
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


def _check_sensor(cfg: PipelineConfig, sensor: str | None) -> None:
    """A sensor type the env has no threshold for is never stored when the processor quarantines unknown types:
    a typo (``temprature``) would find nothing, so it is refused with the known types named."""
    if sensor is None or sensor in cfg.thresholds or cfg.processor.unknown_sensor == "store":
        return
    known = sorted(cfg.thresholds)
    close = difflib.get_close_matches(sensor, known, n=1)
    raise ParameterError("sensor", sensor, f"is not a sensor type of env {cfg.env} (known: {', '.join(known)})"
                         + (f"; did you mean {close[0]}?" if close else ""))
