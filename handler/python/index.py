"""iotpipe processor: a Kinesis batch -> S3 raw archive, DynamoDB readings, S3 quarantine, EMF metrics.

One file, stdlib + boto3 only: the template inlines it as Code.ZipFile. It implements docs/contract.md, the
specification its Node twin implements too; handler/vectors/*.json pin the behaviour of both.

Per batch: archive every raw record (one gzip JSON-lines object; if that fails the batch fails), then take the
records in windows of at most WINDOW_READINGS readings: validate them, write their readings with
BatchWriteItem (25 per call, concurrently, UnprocessedItems and retryable errors retried with backoff and
jitter until the deadline) and their rejections to one quarantine object. A window with a failure ends the
batch: the records from its lowest failure on are reported in ``batchItemFailures`` and will be retried,
so metrics count only the records before it (each record is counted once, in the attempt that commits it).
"""

from __future__ import annotations

import base64
import functools
import gc
import gzip
import json
import math
import os
import random
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, NamedTuple, TypeGuard

MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything earlier is a clock that was never set
MAX_FUTURE_MS = 86_400_000  # a reading more than a day ahead of its arrival has a wrong clock
MAX_ARRIVAL_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
DAY_MS = 86_400_000
BATCH_WRITE_LIMIT = 25
MAX_WRITE_ATTEMPTS = 100  # a bound on the loop; the deadline normally ends retrying first
BACKOFF_BASE_S = 0.025
BACKOFF_CAP_S = 2.0
POOL_SIZE = 16
DEFAULT_BUDGET_MS = 60_000
RESERVE_MAX_MS = 2_000  # time kept back from the Lambda timeout to answer with a partial-batch response
RESERVE_MIN_MS = 200
WINDOW_READINGS = 4_000  # readings held in memory at once (with MAX_READINGS_PER_MESSAGE, the memory bound)
MAX_READINGS_PER_RECORD = 100  # members of one `readings` object
MAX_READINGS_PER_MESSAGE = 1_000  # readings of all the samples of one message (the samples form)
MAX_JSON_DEPTH = 64
STORAGE_LAYOUTS = ("item-per-reading", "packed")
MAX_PACK_WINDOW_SECONDS = 3_600
# A packed item's `readings` text stops growing here; with the other attributes (under 1 KB) the item stays
# below DynamoDB's 400 KB item limit. The next readings of the window go to the next part.
MAX_PACKED_READINGS_BYTES = 393_216
MAX_SENSOR_TYPE_DIMENSIONS = 20
OTHER_SENSOR_TYPES = "_other"  # not a valid sensor type (those start with a letter), so it cannot collide
# Used with fullmatch: match with `$` would also accept one trailing newline ("press-1\n").
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9:_-]{1,128}")  # an IoT thing name
SENSOR_TYPE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
DEVICE_TIMESTAMP_PATTERN = re.compile(r"[\x20-\x7e]{1,64}")
UNIT_MAX_CHARS = 32
BASE64_PATTERN = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
RFC3339_PATTERN = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
JSON_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"')
NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
# DynamoDB numbers: magnitude in [1e-130, 1e126); a value outside would fail the whole BatchWriteItem call.
NUMBER_MIN_MAGNITUDE = 1e-130
NUMBER_MAX_MAGNITUDE = 1e126
DEFAULT_EPISODE_QUIET_S = 3600  # an anomaly this long after its series' previous one starts a new episode
MAX_EPISODE_QUIET_S = 604_800
RETRYABLE_ERRORS = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "LimitExceededException", "SlowDown", "RequestTimeout",
})


class BatchFailed(Exception):
    """Nothing of the batch could be done; raising makes Lambda retry (and bisect) the whole batch."""


@dataclass(frozen=True)
class Threshold:
    """Allowed range of one sensor type; ``None`` means unbounded on that side."""

    min: float | None
    max: float | None
    unit: str
    detector: Detector | None = None
    episode_quiet_ms: int = DEFAULT_EPISODE_QUIET_S * 1000  # 0: no notifications for this type


@dataclass(frozen=True)
class Settings:
    """The processor's configuration (the Lambda environment variables of the data contract)."""

    table: str
    bucket: str
    environment: str
    thresholds: Mapping[str, Threshold]
    unknown_sensor: str = "quarantine"
    ttl_days: int = 90
    namespace: str = "IoT/Manufacturing"
    layout: str = "item-per-reading"
    pack_window_ms: int = 60_000
    topic_arn: str = ""  # ALARM_TOPIC_ARN: where an anomaly episode's start is notified (empty: nowhere)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from environment variables; a missing or malformed one raises ValueError naming it."""
        missing = [name for name in ("DYNAMODB_TABLE", "S3_BUCKET") if not env.get(name)]
        if missing:
            raise ValueError(f"environment variable(s) {', '.join(missing)} must be set")
        try:
            raw = json.loads(env.get("THRESHOLDS") or "{}")
            thresholds = {
                str(name): Threshold(_bound(spec.get("min")), _bound(spec.get("max")), str(spec.get("unit") or ""),
                                     detector_of(spec), episode_quiet_of(spec))
                for name, spec in raw.items()
            }
        except (ValueError, AttributeError, TypeError) as exc:
            raise ValueError("THRESHOLDS must be a JSON object sensorType -> {min, max, unit, detector?, "
                             f"sensitivity?, probation?, episodeQuiet?}}: {exc}") from None
        unknown = env.get("UNKNOWN_SENSOR") or "quarantine"
        if unknown not in ("quarantine", "store"):
            raise ValueError(f"UNKNOWN_SENSOR must be 'quarantine' or 'store', not {unknown!r}")
        ttl_text = (env.get("TTL_DAYS") or "90").strip()
        if not re.fullmatch(r"[0-9]{1,5}", ttl_text) or int(ttl_text) < 1:
            raise ValueError(f"TTL_DAYS must be a whole number of days from 1 to 99999, not {ttl_text!r}")
        layout = env.get("STORAGE_LAYOUT") or "item-per-reading"
        if layout not in STORAGE_LAYOUTS:
            raise ValueError(f"STORAGE_LAYOUT must be 'item-per-reading' or 'packed', not {layout!r}")
        window_text = (env.get("PACK_WINDOW_SECONDS") or "60").strip()
        if not re.fullmatch(r"[0-9]{1,4}", window_text) or not 1 <= int(window_text) <= MAX_PACK_WINDOW_SECONDS:
            raise ValueError(f"PACK_WINDOW_SECONDS must be a whole number of seconds from 1 to "
                             f"{MAX_PACK_WINDOW_SECONDS}, not {window_text!r}")
        return cls(
            table=env["DYNAMODB_TABLE"],
            bucket=env["S3_BUCKET"],
            environment=env.get("ENVIRONMENT") or "dev",
            thresholds=thresholds,
            unknown_sensor=unknown,
            ttl_days=int(ttl_text),
            namespace=env.get("METRIC_NAMESPACE") or "IoT/Manufacturing",
            layout=layout,
            pack_window_ms=int(window_text) * 1000,
            topic_arn=env.get("ALARM_TOPIC_ARN") or "",
        )


def episode_quiet_of(spec: Mapping[str, Any]) -> int:
    """A THRESHOLDS entry's ``episodeQuiet`` (seconds, default 3600) in ms; ValueError outside the contract."""
    quiet = spec.get("episodeQuiet", DEFAULT_EPISODE_QUIET_S)
    if not _is_number(quiet) or quiet != math.floor(quiet) or not 0 <= quiet <= MAX_EPISODE_QUIET_S:
        raise ValueError(f"episodeQuiet {quiet!r} is not a whole number of seconds from 0 to {MAX_EPISODE_QUIET_S}")
    return int(quiet) * 1000


def _bound(value: Any) -> float | None:
    """A threshold bound: a number or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"bound {value!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class Record:
    """One Kinesis record of the batch, decoded from base64 (``raw`` is None when that failed)."""

    shard_id: str
    sequence_number: str
    partition_key: str
    arrived_at: int
    raw: bytes | None
    data: str


@dataclass(frozen=True)
class Reading:
    """One valid reading, ready to write: its DynamoDB item and what the metrics need."""

    record: Record
    key: tuple[str, str]
    sensor_type: str
    anomaly: bool
    item: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Rejection:
    """Why a record, or one reading of it (``sensor_type`` set when the name is valid), cannot be stored."""

    reason: str
    sensor_type: str | None = None


@dataclass(frozen=True)
class Interpretation:
    """What one record yields: readings to store, rejections, and whether its timestamp was replaced."""

    record: Record
    readings: tuple[Reading, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    record_rejected: bool = False
    timestamp_replaced: bool = False


@dataclass(frozen=True)
class Runtime:
    """Everything the handler talks to; tests and the benchmark build their own."""

    settings: Settings
    s3: Any
    dynamodb: Any
    pool: ThreadPoolExecutor
    sns: Any = None  # an SNS client when settings.topic_arn is set
    emit: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
    monotonic: Callable[[], float] = time.monotonic

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        """The Lambda runtime: settings from the environment, boto3 clients, one thread pool."""
        import boto3
        from botocore.config import Config

        # The SDK makes one attempt per call (total_max_attempts counts the first, as the Node SDK's
        # maxAttempts does): the processor's own loop retries until its deadline, the same in both twins.
        # parameter_validation off: interpret() already guarantees the item shapes, and botocore's
        # validation of 25 nested items costs more CPU than everything else per call.
        config = Config(max_pool_connections=POOL_SIZE, connect_timeout=2, read_timeout=5,
                        retries={"mode": "standard", "total_max_attempts": 1}, parameter_validation=False)
        settings = Settings.from_env(os.environ if env is None else env)
        return cls(
            settings=settings,
            s3=boto3.client("s3", config=config),
            dynamodb=boto3.client("dynamodb", config=config),
            pool=ThreadPoolExecutor(max_workers=POOL_SIZE),
            sns=boto3.client("sns", config=config) if settings.topic_arn else None,
        )


# ---------------------------------------------------------------- decoding and validation (pure)

def _text(value: Any) -> str:
    """A string field of the event; anything else counts as missing."""
    return value if isinstance(value, str) else ""


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A finite JSON number (``true`` is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def arrival_ms(value: Any, now_ms: int) -> int:
    """``approximateArrivalTimestamp`` (seconds) in ms, rounded half up; ``now_ms`` if absent or absurd."""
    if not _is_number(value) or not 0 <= value * 1000 <= MAX_ARRIVAL_MS:
        return now_ms
    return math.floor(value * 1000 + 0.5)


def decode_record(event_record: Any, now_ms: int) -> Record:
    """A Kinesis event record as a :class:`Record` (a malformed one has empty fields)."""
    event_record = event_record if isinstance(event_record, dict) else {}
    kinesis = event_record.get("kinesis")
    kinesis = kinesis if isinstance(kinesis, dict) else {}
    data = _text(kinesis.get("data"))
    raw = base64.b64decode(data) if BASE64_PATTERN.fullmatch(data) else None
    shard_id = _text(event_record.get("eventID")).split(":", 1)[0] or "shardId-unknown"
    return Record(shard_id, _text(kinesis.get("sequenceNumber")), _text(kinesis.get("partitionKey")),
                  arrival_ms(kinesis.get("approximateArrivalTimestamp"), now_ms), raw, data)


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, brackets inside strings not counted; a text with at
    most MAX_JSON_DEPTH opening brackets answers MAX_JSON_DEPTH without scanning (it cannot be deeper)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return MAX_JSON_DEPTH  # cannot be deeper: the usual payload skips the scan
    depth = deepest = 0
    for bracket in NOT_BRACKETS.sub("", JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_number(text: str) -> float:
    """Every JSON number as an IEEE double; a non-zero literal too small for one is out of range, not 0."""
    number = float(text)
    if number == 0 and re.search(r"[1-9]", re.split(r"[eE]", text, maxsplit=1)[0]):
        return -math.inf if text.startswith("-") else math.inf
    return number


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_json_number, parse_int=_json_number, parse_constant=_reject_constant)


def parse_json(text: str) -> Any:
    """RFC 8259 JSON with every number a double (as JavaScript's JSON.parse); raises ValueError."""
    return _DECODER.decode(text)


def interpret(record: Record, settings: Settings) -> Interpretation:
    """Validate one record against the data contract and build its DynamoDB items."""
    def reject(reason: str) -> Interpretation:
        return Interpretation(record, rejections=(Rejection(reason),), record_rejected=True)

    if record.raw is None:
        return reject("data is not base64")
    try:
        text = record.raw.decode("utf-8")
    except UnicodeDecodeError:
        return reject("data is not UTF-8")
    if json_depth(text) > MAX_JSON_DEPTH:
        return reject("data is nested too deeply")
    try:
        payload = parse_json(text)
    except ValueError:
        return reject("data is not JSON")
    if not isinstance(payload, dict):
        return reject("payload is not a JSON object")
    device = payload.get("deviceId")
    if device is None or device == "":
        return reject("missing deviceId")
    if not isinstance(device, str) or not DEVICE_ID_PATTERN.fullmatch(device):
        return reject("invalid deviceId")
    topic_device = payload.get("topicDeviceId")
    if topic_device is not None and topic_device != device:
        return reject("deviceId differs from topic")
    received_at = plausible_received_at(payload.get("receivedAt"), record.arrived_at)
    retention_ms = settings.ttl_days * DAY_MS
    if "samples" in payload:
        samples = payload["samples"]
        if not isinstance(samples, list) or not samples:
            return reject("samples is not a non-empty array")
        if sum(_sample_size(sample) for sample in samples) > MAX_READINGS_PER_MESSAGE:
            return reject("too many readings")
        bodies: list[Any] = samples
    else:
        bodies = [payload]

    good: list[Reading] = []
    bad: list[Rejection] = []
    any_replaced = False
    first_sample = 1 if "samples" in payload else 0  # a sample's position counts from 1, the payload is 0
    for sample, body in enumerate(bodies, start=first_sample):
        if not isinstance(body, dict):
            bad.append(Rejection("sample is not a JSON object"))
            continue
        pairs = readings_of(body)
        if isinstance(pairs, str):
            if body is payload:
                return reject(pairs)
            bad.append(Rejection(pairs))
            continue
        timestamp, replaced = resolve_timestamp(body.get("timestamp"), received_at, retention_ms)
        any_replaced = any_replaced or replaced
        given = device_timestamp(body.get("timestamp")) if replaced else None
        unit = body.get("unit") if "readings" not in body else None
        # A reading dated by its arrival shares that time with every reading of its record: its origin, not its
        # time, tells it apart (a retry writes the same key again; two samples alike never collapse).
        by_arrival = replaced or body.get("timestamp") is None
        origin = f"#{record.shard_id}#{record.sequence_number}#{sample}" if by_arrival else ""
        stamp = Stamp(device, timestamp, received_at, given, unit or None, origin)
        for sensor_type, value in pairs:
            outcome = _reading(record, settings, stamp, sensor_type, value)
            (good if isinstance(outcome, Reading) else bad).append(outcome)  # type: ignore[arg-type]
    return Interpretation(record, tuple(good), tuple(bad), False, any_replaced)


def _sample_size(sample: Any) -> int:
    """How many readings a sample holds (a non-object or malformed sample counts as one)."""
    readings = sample.get("readings") if isinstance(sample, dict) else None
    return len(readings) if isinstance(readings, dict) and readings else 1


def readings_of(body: Mapping[str, Any]) -> list[tuple[Any, Any]] | str:
    """The (sensorType, value) pairs of a message or sample, single or multi form, or why it has none: the
    checks of the multi form (``readings``) or of the single form (``sensorType``, ``unit``)."""
    if "readings" in body:
        readings = body["readings"]
        if not isinstance(readings, dict) or not readings:
            return "readings is not a non-empty object"
        if len(readings) > MAX_READINGS_PER_RECORD:
            return "too many readings"
        return list(readings.items())
    if body.get("sensorType") in (None, ""):
        return "missing sensorType"
    unit = body.get("unit")
    if unit is not None and not valid_unit(unit):
        return "invalid unit"
    return [(body["sensorType"], body.get("value"))]


def valid_unit(unit: Any) -> bool:
    """A unit is a string of at most 32 code points without lone surrogates (DynamoDB rejects those)."""
    return isinstance(unit, str) and len(unit) <= UNIT_MAX_CHARS and not any(
        "\ud800" <= char <= "\udfff" for char in unit)


def plausible_received_at(value: Any, arrived_at: int) -> int:
    """The rule's ``receivedAt`` in epoch ms, or the Kinesis arrival time when it is missing or implausible
    (before 2000 or more than a day after arrival)."""
    if not _is_number(value):
        return arrived_at
    millis = math.floor(value)
    return millis if MIN_TIMESTAMP_MS <= millis <= arrived_at + MAX_FUTURE_MS else arrived_at


def resolve_timestamp(value: Any, received_at: int, retention_ms: int) -> tuple[int, bool]:
    """The reading time in epoch ms and whether ``receivedAt`` replaced a given but implausible one: not an
    RFC 3339 text or finite number, before 2000, older than the retention or more than a day ahead."""
    millis: int | None = None
    if isinstance(value, str):
        millis = parse_rfc3339(value)
    elif _is_number(value):
        millis = math.floor(value)
    earliest = max(MIN_TIMESTAMP_MS, received_at - retention_ms)
    if millis is None or not earliest <= millis <= received_at + MAX_FUTURE_MS:
        return received_at, value is not None
    return millis, False


def device_timestamp(value: Any) -> str | None:
    """A replaced timestamp as the item keeps it (``deviceTimestamp``): printable ASCII text up to 64
    characters as given, a finite number in the number format; anything else is left to the raw archive."""
    if isinstance(value, str):
        return value if DEVICE_TIMESTAMP_PATTERN.fullmatch(value) else None
    return format_number(value) if _is_number(value) else None


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146_097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719_468


def _days_in_month(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]


def parse_rfc3339(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`` as epoch ms (fraction truncated to ms), else None."""
    match = RFC3339_PATTERN.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7) or "", match.group(8)
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month) and hour <= 23 and minute <= 59
            and second <= 59):
        return None
    offset_minutes = 0
    if offset not in ("Z", "z"):
        offset_hours, offset_rest = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_rest > 59:
            return None
        offset_minutes = (offset_hours * 60 + offset_rest) * (-1 if offset[0] == "-" else 1)
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    return (seconds - offset_minutes * 60) * 1000 + int((fraction + "00")[:3])


def format_number(number: float) -> str:
    """The contract's number text: ECMAScript's Number::toString of the double (shortest round-trip digits;
    plain notation from 1e-6 to below 1e21, else ``d.ddde±x``); zero is ``0``."""
    if type(number) is int:  # not a bool: a whole number's text is its digits, as below, without repr's work
        return str(number)
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    text = repr(abs(number))
    if "e" not in text:  # 1e-4 <= |x| < 1e16: plain in both, the same shortest digits
        return sign + (text[:-2] if text.endswith(".0") else text)
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if len(digits) <= point <= 21:
        return sign + digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    tail = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if point - 1 >= 0 else '-'}{abs(point - 1)}"


def number_value(value: Any) -> tuple[str, float] | str:
    """A reading's value as DynamoDB number text and float, or the quarantine reason."""
    if value is None:
        return "missing value"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "value is not a number"
    number = float(value)
    if not math.isfinite(number) or (number != 0 and not NUMBER_MIN_MAGNITUDE <= abs(number) < NUMBER_MAX_MAGNITUDE):
        return "value out of range"
    return format_number(number), number


def anomaly_reason(value: float, threshold: Threshold) -> str | None:
    """``above max <max>`` / ``below min <min>`` when the value crosses a bound, else None."""
    if threshold.max is not None and value > threshold.max:
        return f"above max {format_number(threshold.max)}"
    if threshold.min is not None and value < threshold.min:
        return f"below min {format_number(threshold.min)}"
    return None


@dataclass(frozen=True)
class Stamp:
    """What every reading of one record shares."""

    device: str
    timestamp: int
    received_at: int
    device_timestamp: str | None
    unit: str | None
    origin: str = ""  # ``#<shardId>#<sequenceNumber>#<sample>`` for a reading dated by its arrival


def _reading(record: Record, settings: Settings, stamp: Stamp, sensor_type: Any, value: Any) -> Reading | Rejection:
    """One reading's item, or why it is quarantined."""
    if not isinstance(sensor_type, str) or not SENSOR_TYPE_PATTERN.fullmatch(sensor_type):
        return Rejection("invalid sensorType")
    number = number_value(value)
    if isinstance(number, str):
        return Rejection(number, sensor_type)
    text, as_float = number
    threshold = settings.thresholds.get(sensor_type)
    if threshold is None and settings.unknown_sensor == "quarantine":
        return Rejection("unknown sensorType", sensor_type)
    reason = anomaly_reason(as_float, threshold) if threshold else None
    status = "UNCHECKED" if threshold is None else ("ANOMALY" if reason else "NORMAL")
    unit = stamp.unit or (threshold.unit if threshold else "") or ""
    timestamp = stamp.timestamp
    # The value is part of the key: an identical repeat collapses onto one item, a different value at the
    # same millisecond is another item, so no write can ever replace a stored reading by another value.
    sort_key = f"{timestamp:013d}#{sensor_type}#{text}{stamp.origin}"
    expires = max(timestamp, record.arrived_at) // 1000 + settings.ttl_days * 86_400
    item: dict[str, dict[str, Any]] = {
        "deviceId": {"S": stamp.device},
        "sk": {"S": sort_key},
        "timestamp": {"N": str(timestamp)},
        "sensorType": {"S": sensor_type},
        "value": {"N": text},
        "status": {"S": status},
        "anomalyDetected": {"BOOL": reason is not None},
        "receivedAt": {"N": str(stamp.received_at)},
        "ttl": {"N": str(expires)},
        "shardId": {"S": record.shard_id},
        "sequenceNumber": {"S": record.sequence_number},
    }
    if unit:
        item["unit"] = {"S": unit}
    if stamp.device_timestamp is not None:
        item["deviceTimestamp"] = {"S": stamp.device_timestamp}
    if reason:
        item.update(anomaly_fields(item, reason, "bound"))
    return Reading(record, (stamp.device, sort_key), sensor_type, reason is not None, item)


def anomaly_fields(item: Mapping[str, Mapping[str, Any]], reason: str, rule: str) -> dict[str, dict[str, Any]]:
    """What an anomaly item adds: ``reason``, the ``rule`` that fired (``bound`` or ``model``), and the keys of
    the anomaly index (``anomalyDay``, ``anomalySk``)."""
    timestamp = int(item["timestamp"]["N"])
    day = datetime.fromtimestamp(timestamp / 1000, UTC).strftime("%Y-%m-%d")
    return {"status": {"S": "ANOMALY"}, "anomalyDetected": {"BOOL": True}, "reason": {"S": reason},
            "rule": {"S": rule}, "anomalyDay": {"S": day},
            "anomalySk": {"S": f"{timestamp:013d}#{item['deviceId']['S']}#{item['sensorType']['S']}"}}


def deduplicate(readings: Sequence[Reading]) -> tuple[list[Reading], int]:
    """Readings with distinct keys (first wins) and the number of repeats dropped: one BatchWriteItem call
    rejects duplicate keys, and a same-key reading is the same value (the value is in the key)."""
    kept: dict[tuple[str, str], Reading] = {}
    for reading in readings:
        kept.setdefault(reading.key, reading)
    return list(kept.values()), len(readings) - len(kept)


def window_items(readings: Sequence[Reading], settings: Settings) -> list[dict[str, dict[str, Any]]]:
    """The items a window writes for its (deduplicated) readings: one per reading, or in the packed layout one
    per reading only for anomalies and replaced timestamps and packed items for all the others."""
    if settings.layout != "packed":
        return [r.item for r in readings]
    alone = [r.item for r in readings if r.anomaly or "deviceTimestamp" in r.item]
    return alone + pack_items([r for r in readings if not r.anomaly and "deviceTimestamp" not in r.item],
                              settings.pack_window_ms)


def pack_items(readings: Sequence[Reading], window_ms: int,
               max_bytes: int = MAX_PACKED_READINGS_BYTES) -> list[dict[str, dict[str, Any]]]:
    """Packed items: the readings of one device, sensor type and unit in one time window (epoch-aligned,
    ``window_ms`` long), keyed ``<13-digit window start>#<sensorType>#packed#<shardId>#<first sequence
    number>#<part>``.
    The key is a function of the window and its first record, so a retried batch overwrites its own items
    and a later batch with readings of the same window adds an item beside them. ``readings`` is
    ``<ms after the window start>:<value>`` pairs joined by ``,`` in time order; a window whose text would
    pass ``max_bytes`` continues in the next part. Besides the key: ``sensorType``, ``unit``, ``status``,
    ``readings``, ``ttl`` (the largest of its readings') and ``shardId``."""
    groups: dict[tuple[str, str, str, int], list[Reading]] = {}
    for reading in readings:
        item = reading.item
        timestamp = int(item["timestamp"]["N"])
        unit = item["unit"]["S"] if "unit" in item else ""
        groups.setdefault((item["deviceId"]["S"], reading.sensor_type, unit, timestamp - timestamp % window_ms),
                          []).append(reading)
    items: list[dict[str, dict[str, Any]]] = []
    parts_taken: dict[tuple[str, str], int] = {}
    for (device, sensor_type, unit, start), group in groups.items():
        first = group[0].item
        # Sequence numbers are unique within a shard only (they restart in the children of a reshard on moto):
        # the shard is part of the key, or two shards' items of one window could overwrite each other.
        prefix = f"{start:013d}#{sensor_type}#packed#{first['shardId']['S']}#{first['sequenceNumber']['S']}"
        ordered = sorted(group, key=lambda r: int(r.item["timestamp"]["N"]))
        for part in _split_by_bytes(ordered, start, max_bytes):
            number = parts_taken.get((device, prefix), 0)
            parts_taken[(device, prefix)] = number + 1
            # DynamoDB bills every byte of attribute names and values: the window start and first record are in
            # the key, so a minute of 1 Hz readings stays within one write unit (1 KB).
            packed: dict[str, dict[str, Any]] = {
                "deviceId": {"S": device},
                "sk": {"S": f"{prefix}#{number}"},
                "sensorType": {"S": sensor_type},
                "status": {"S": first["status"]["S"]},
                "readings": {"S": ",".join(entry for entry, _ in part)},
                "ttl": {"N": str(max(int(r.item["ttl"]["N"]) for _, r in part))},
                "shardId": {"S": first["shardId"]["S"]},
            }
            if unit:
                packed["unit"] = {"S": unit}
            items.append(packed)
    return items


def first_sequence_number(item: Mapping[str, Mapping[str, Any]]) -> str:
    """The record an item's failure cuts the batch at: a reading's own, a packed item's first record's (in its
    key ``<start>#<sensorType>#packed#<shardId>#<sequence number>#<part>``, after its ``shardId``; a malformed
    event's shard and sequence number may hold ``#``)."""
    if "sequenceNumber" in item:
        return str(item["sequenceNumber"]["S"])
    key = str(item["sk"]["S"])
    prefix = f"{key[:13]}#{item['sensorType']['S']}#packed#{item['shardId']['S']}#"
    return key[len(prefix):key.rindex("#")]


def _split_by_bytes(ordered: Sequence[Reading], start: int, max_bytes: int) -> list[list[tuple[str, Reading]]]:
    """``offset:value`` entries in parts whose joined text stays within ``max_bytes`` (ASCII: bytes = chars)."""
    parts: list[list[tuple[str, Reading]]] = [[]]
    size = -1  # the first entry of a part has no separator
    for reading in ordered:
        entry = f"{int(reading.item['timestamp']['N']) - start}:{reading.item['value']['N']}"
        if parts[-1] and size + 1 + len(entry) > max_bytes:
            parts.append([])
            size = -1
        parts[-1].append((entry, reading))
        size += 1 + len(entry)
    return parts


# ---------------------------------------------------------------- adaptive detection (pure; docs/contract.md 12)

@dataclass(frozen=True)
class DetectorParams:
    """How one series' detector learns and scores (docs/contract.md 12); the defaults (the ``onset`` preset) were
    chosen on the NAB development data."""

    probation: int = 150  # readings learned before a score other than 0
    long_alpha: float = 0.002  # weight of a reading in the baseline mean and variance
    short_alpha: float = 0.2  # weight of a reading in the short mean (level-shift detection)
    z_scale: float = 0.54  # the (novel) deviation scored 0.5, in the series' tail (or in spreads without one)
    clip_z: float = 10.0  # a reading moves the baseline by at most this many standard deviations
    relearn: int = 60  # consecutive readings of a shifted short mean before the baseline moves to it
    shift_z: float = 2.0  # the short mean's deviation, in its own standard deviations, that counts as shifted
    gap_intervals: float = 20.0  # a gap longer than this many usual intervals restarts the short mean
    peak_decay: float = 0.995  # per reading, of the recent peak deviation a new deviation must exceed
    novelty: float = 1.0  # 1: score the excess over the recent peak (one alarm per event); 0: every deviation
    flat_min: int = 10  # readings repeating the last value exactly before a flat line can score; 0: no flat rule
    flat_factor: float = 2.0  # a flat line scores once it is this many times the longest run the series has had
    tail_down: int = 99  # readings at or below the tail before it steps down (its 99th percentile); 0: no tail


# onset: one alarm at an event's start (NAB); sustained: every reading while the deviation lasts (SKAB's point task)
DETECTOR_PRESETS = {
    "onset": DetectorParams(),
    "sustained": DetectorParams(probation=400, long_alpha=0.0005, z_scale=5.5, clip_z=4.0, relearn=3600,
                                shift_z=5.5, novelty=0.0, tail_down=0),
}


class DetectorState(NamedTuple):
    """One series' fixed-size summary: what it learned from its readings in time order."""

    # A named tuple rather than a frozen dataclass: one is built per reading scored, at a quarter of the cost.

    count: int = 0
    newest_ms: int = 0
    mean: float = 0.0
    var: float = 0.0
    short: float = 0.0
    interval: float = 0.0
    shifted: int = 0
    peak: float = 0.0
    last: float = 0.0
    run: int = 0
    longest: int = 0
    tail: float = 0.0
    below: int = 0

    def to_list(self) -> list[float | int]:
        """The state's numbers in the order of its stored array (docs/contract.md 12)."""
        return list(self)

    @classmethod
    def from_list(cls, values: Sequence[Any]) -> DetectorState:
        """The state from its stored array (a long double as its base64url bits); a state of an earlier release
        gains what it lacks: 8 numbers the last value at the mean and no runs, 11 the recent peak as its tail (the
        start's while it has none)."""
        numbers = [_stored_double(v) if isinstance(v, str) else _state_number(v) for v in values]
        if len(numbers) == 8:
            numbers = [*numbers, numbers[2], 0, 0]
        if len(numbers) == 11:
            numbers = [*numbers, float(numbers[7]) or TAIL_START, 0]
        if len(numbers) < 13:
            raise ValueError(f"a detector state of {len(values)} numbers (8, 11 or at least 13)")
        # a later release may append numbers: the first 13 are this release's, so its state item still reads
        count, newest, mean, var, short, interval, shifted, peak, last, run, longest, tail, below = numbers[:13]
        return cls(int(count), int(newest), float(mean), float(var), float(short), float(interval), int(shifted),
                   float(peak), float(last), int(run), int(longest), float(tail), int(below))


EMPTY_STATE = DetectorState()  # a series before its first reading
STORED_DIGITS_MAX = 13  # a state number whose text is longer is stored as the 11 base64url characters of its bits
_STORED_BITS = re.compile(r"[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]")


def stored_number(number: float) -> str:
    """One number of a stored state: section 4's text, or, when that is longer than 13 characters, the JSON
    string of the base64url (no padding) of its IEEE 754 big-endian bits, which is shorter and exact."""
    text = format_number(number)
    if len(text) <= STORED_DIGITS_MAX:
        return text
    return '"' + base64.urlsafe_b64encode(struct.pack(">d", number)).decode("ascii").rstrip("=") + '"'


def _state_number(value: Any) -> float | int:
    """A number of a stored state as parsed; anything else (null, true, an object) is refused."""
    if type(value) not in (int, float):
        raise ValueError(f"a detector state holds {value!r}, not a number")
    return value


def _stored_double(text: str) -> float:
    """The double of a stored state's base64url string."""
    if not _STORED_BITS.fullmatch(text):
        raise ValueError(f"{text!r} is not the 11 base64url characters of a double")
    return float(struct.unpack(">d", base64.urlsafe_b64decode(text + "="))[0])


class Scored(NamedTuple):
    """A reading's score in [0, 1] and what the model expected: ``expected`` +- ``width`` (the deviation scored
    0.5 when the series has no recent peak), with ``spread`` the baseline's."""

    # A named tuple for the reason DetectorState is one.

    score: float
    expected: float
    spread: float
    learned: bool
    width: float = 0.0


DEFAULT_SENSITIVITY = 0.5  # a score at or above it is an anomaly (chosen on the development data)
SPREAD_FLOOR_RELATIVE = 1e-3  # a flat series still has a spread: 0.1 % of its level
SPREAD_FLOOR_ABSOLUTE = 1e-9
INTERVAL_ALPHA = 0.1
PEAK_STEPS = 64.0
TAIL_STEP = 1.0 / 64.0  # how far one reading moves the tail
TAIL_STEP_YOUNG = 1.0 / 8.0  # during probation, so that a young series has learned its tail when it starts scoring
TAIL_START = 3.0  # about the tail of Gaussian noise, where a series starts before it has shown its own


def detect_step(state: DetectorState, timestamp_ms: int, value: float,
                params: DetectorParams) -> tuple[Scored, DetectorState]:
    """Score ``value`` against ``state`` (before learning it), then the state that has learned it."""
    scored, learned = detect_series(((timestamp_ms, value),), params, state)
    return scored[0], learned


def detect_series(points: Iterable[tuple[int, float]], params: DetectorParams, state: DetectorState | None = None,
                  learn: Iterable[bool] | None = None) -> tuple[list[Scored], DetectorState]:
    """Score a series' readings in the order given, each before it is learned; the last state (``state``
    itself when no reading was learned). ``learn``, when given, says of each reading whether it is learned after
    it is scored (a reading the state has already absorbed is scored, not learned again); it must hold one flag
    per reading (ValueError otherwise)."""
    start = state or EMPTY_STATE
    # The state's numbers and the parameters as locals for the whole series: a named tuple's fields and a
    # dataclass's attributes are dearer than a local, and this loop runs on every reading the processor scores.
    count, newest_ms, mean0, var0, short0, interval0, shifted0, peak0, last0, run0, longest0, tail0, below0 = start
    changed = False
    probation, short_alpha, long_alpha, z_scale = params.probation, params.short_alpha, params.long_alpha, \
        params.z_scale
    clip_z, relearn, shift_z, gap_intervals = params.clip_z, params.relearn, params.shift_z, params.gap_intervals
    peak_decay, novelty, flat_min, flat_factor, tail_down = params.peak_decay, params.novelty, params.flat_min, \
        params.flat_factor, params.tail_down
    short_spread = math.sqrt(short_alpha / (2.0 - short_alpha))  # the short mean's spread per baseline spread
    isfinite, floor, sqrt = math.isfinite, math.floor, math.sqrt
    scored = []
    flagged = zip(points, repeat(True), strict=False) if learn is None else zip(points, learn, strict=True)
    for (timestamp_ms, value), learns in flagged:
        if count == 0:
            scored.append(Scored(0.0, value, 0.0, True, 0.0))
            if learns:
                count, newest_ms, mean0, var0, short0, interval0, shifted0, peak0, last0, run0, longest0, tail0, \
                    below0 = 1, timestamp_ms, value, 0.0, value, 0.0, 0, 0.0, value, 0, 0, TAIL_START, 0
                changed = True
            continue
        late = timestamp_ms < newest_ms
        elapsed = timestamp_ms - newest_ms
        gap = interval0 > 0 and elapsed > gap_intervals * interval0
        short = value if gap else short0 + short_alpha * (value - short0)
        # Comparisons, not max() and min(): on CPython 3.11 a call of either costs about 8 comparisons. Each is
        # written to return what the call would: the first operand unless the other is greater (max) or less
        # (min), so NaN and -0 come out as they did.
        spread = sqrt(var0)
        relative = SPREAD_FLOOR_RELATIVE * abs(mean0)
        spread = relative if relative > spread else spread
        spread = SPREAD_FLOOR_ABSOLUTE if spread < SPREAD_FLOOR_ABSOLUTE else spread
        z_point = abs(value - mean0) / spread
        z_shift = abs(short - mean0) / (spread * short_spread)
        z = z_shift if z_shift > z_point else z_point
        # in units of the series' own tail: an excess of a few spreads is common in a heavy-tailed series (counts
        # of events) and rare in a Gaussian one, and one threshold then means the same rarity on both
        tail = (tail0 if tail0 > 1.0 else 1.0) if tail_down else 1.0
        excess = z - novelty * peak0
        novel = (excess if excess > 0.0 else 0.0) / tail
        width = z_scale * tail * spread
        scoring = count >= probation
        score = novel * novel / (novel * novel + z_scale * z_scale) if scoring else 0.0
        run = run0 + 1 if value == last0 else 0
        # a stuck sensor: a run of one repeated value longer than any the series has had (once at its onset for
        # novelty 1, every reading of it for 0); a value repeated past the bound is no evidence of anything else
        longer = flat_factor * longest0
        bound = longer if longer > flat_min else flat_min
        if scoring and flat_min > 0 and run > bound and (novelty == 0 or run0 <= bound):
            score = 1.0
        scored.append(Scored(score, mean0, spread, not late, width))
        if late or not learns:
            continue
        alpha = 1.0 / (count + 1)
        alpha = alpha if alpha > long_alpha else long_alpha
        limit = clip_z * spread
        deviation = value - mean0
        if scoring:
            deviation = deviation if deviation < limit else limit
            deviation = deviation if deviation > -limit else -limit
        mean = mean0 + alpha * deviation
        var = (1.0 - alpha) * (var0 + alpha * deviation * deviation)
        shifted = shifted0 + 1 if scoring and z_shift > shift_z else 0
        if shifted >= relearn:
            mean, shifted = short, 0
        if gap:
            interval = interval0
        elif count == 1:
            interval = float(elapsed)
        else:
            # whole milliseconds, and the peak in 64ths (both exact in any double arithmetic): the digits they
            # drop keep a device's state item of three series within one 1 KB write unit
            interval = float(floor(interval0 + INTERVAL_ALPHA * (elapsed - interval0)))
        # the recent peak is learned over probation's second half too: the first deviations after probation are
        # judged against the noise the series has shown, not against 0 (which alarmed on ordinary noise)
        if scoring or 2 * count >= probation:
            decayed = peak0 * peak_decay
            peak = decayed if decayed > z else z
            # to the nearest 64th, halves up (not finite: as it is, as JavaScript's Math.floor leaves it)
            peak = floor(peak * PEAK_STEPS + 0.5) / PEAK_STEPS if isfinite(peak) else peak
        else:
            peak = 0.0
        longest = run0 if run == 0 and run0 > longest0 else longest0
        # the tail: a step up when z passes it, a step down after tail_down readings that did not, so that it
        # settles where 1 reading in tail_down + 1 passes it (a frugal streaming quantile, in 64ths: exact in any
        # double arithmetic); from a series' third reading (its second has no spread yet)
        below = below0
        if tail_down and count >= 2:
            step = TAIL_STEP if scoring else TAIL_STEP_YOUNG
            if z > tail0:
                tail0 += step
            elif below + 1 >= tail_down:
                tail0, below = max(0.0, tail0 - step), 0
            else:
                below += 1
        count, newest_ms, mean0, var0, short0, interval0, shifted0, peak0, last0, run0, longest0, below0 = \
            count + 1, timestamp_ms, mean, var, short, interval, shifted, peak, value, run, longest, below
        changed = True
    if not changed:
        return scored, start
    return scored, DetectorState(count, newest_ms, mean0, var0, short0, interval0, shifted0, peak0, last0, run0,
                                 longest0, tail0, below0)


@dataclass(frozen=True)
class Detector:
    """A sensor type's detector as configured (THRESHOLDS): its parameters and sensitivity."""

    params: DetectorParams
    sensitivity: float = DEFAULT_SENSITIVITY


def detector_of(spec: Mapping[str, Any]) -> Detector | None:
    """The detector of one THRESHOLDS entry (``detector``, ``sensitivity``, ``probation``); None when ``detector``
    is absent or ``off``. Raises ValueError on a value outside the contract."""
    name = spec.get("detector")
    if name is None or name == "off":
        return None
    if name not in DETECTOR_PRESETS:
        raise ValueError(f"detector {name!r} is not 'onset', 'sustained' or 'off'")
    sensitivity = spec.get("sensitivity", DEFAULT_SENSITIVITY)
    if not _is_number(sensitivity) or not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity {sensitivity!r} is not a number in (0, 1]")
    probation = spec.get("probation", 0)
    if not _is_number(probation) or probation != math.floor(probation) or not 0 <= probation <= 1_000_000:
        raise ValueError(f"probation {probation!r} is not a whole number from 0 to 1000000")
    preset = DETECTOR_PRESETS[name]
    params = replace(preset, probation=int(probation)) if probation else preset
    return Detector(params, float(sensitivity))


def _number_attribute(number: float) -> dict[str, str] | None:
    """A model figure as a DynamoDB number: below its smallest magnitude it is 0, past its largest (or not
    finite) there is none."""
    if not math.isfinite(number) or abs(number) >= NUMBER_MAX_MAGNITUDE:
        return None
    return {"N": "0" if abs(number) < NUMBER_MIN_MAGNITUDE else format_number(number)}


def judge(reading: Reading, scored: Scored, detector: Detector) -> Reading:
    """The reading as the detector leaves it: a bound anomaly gains the model's ``score`` and expected band
    (``expectedLow``, ``expectedHigh``); a score at or above the sensitivity makes a ``model`` anomaly."""
    model = scored.score >= detector.sensitivity
    if not reading.anomaly and not model:
        return reading
    low, high = scored.expected - scored.width, scored.expected + scored.width
    item = dict(reading.item)
    if not reading.anomaly:
        item.update(anomaly_fields(item, f"expected {format_number(low)} to {format_number(high)}", "model"))
    for name, number in (("score", scored.score), ("expectedLow", low), ("expectedHigh", high)):
        attribute = _number_attribute(number)
        if attribute is not None:
            item[name] = attribute
    return replace(reading, anomaly=True, item=item)


def score_readings(readings: Iterable[Reading], settings: Settings, states: dict[tuple[str, str], DetectorState],
                   absorbed: Mapping[str, str] | None = None) -> list[Reading]:
    """Score each reading of a sensor type with a detector against its series' state (device, sensor type), in
    the order given (the batch's, which Kinesis keeps per device), learning it into ``states`` after; a reading
    of a record at or below its device's ``absorbed`` sequence number is scored but not learned again."""
    detectors = _detectors(settings)
    judged = list(readings)
    # each series' readings in order, scored in one detect_series call: series do not share state
    by_series: dict[tuple[str, str], list[int]] = {}
    for position, reading in enumerate(judged):
        if reading.sensor_type in detectors:
            by_series.setdefault((reading.item["deviceId"]["S"], reading.sensor_type), []).append(position)
    for series, positions in by_series.items():
        device, sensor_type = series
        detector = detectors[sensor_type]
        points = [(int(judged[p].item["timestamp"]["N"]), float(judged[p].item["value"]["N"])) for p in positions]
        seen = absorbed.get(device) if absorbed else None
        seen_order = _sequence_order(seen) if seen else None
        learn = None if seen_order is None else \
            [_sequence_order(judged[p].record.sequence_number) > seen_order for p in positions]
        scores, learned = detect_series(points, detector.params, states.get(series, EMPTY_STATE), learn)
        if learn is None or any(learn):
            states[series] = learned
        for position, scored in zip(positions, scores, strict=True):
            judged[position] = judge(judged[position], scored, detector)
    return judged


def _detectors(settings: Settings) -> dict[str, Detector]:
    """Each sensor type with a detector -> its detector."""
    return {name: threshold.detector for name, threshold in settings.thresholds.items()
            if threshold.detector is not None}


# ---------------------------------------------------------------- the detector's state between invocations

STATE_SORT_KEY = "#detector"  # sorts before every reading's key, so `sk >= <13-digit ms>` never meets it
BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class DeviceMemory:
    """What a device's state item holds: the states after ``seq`` (the highest sequence number absorbed) and
    the snapshot the batch that wrote it started from (``prev_states`` after ``prev_seq``)."""

    seq: str = ""
    states: Mapping[str, DetectorState] = field(default_factory=dict)
    prev_seq: str = ""
    prev_states: Mapping[str, DetectorState] = field(default_factory=dict)
    # With notifications on: each sensor type's newest anomaly (ms) after ``seq``, while its episode may go on.
    episodes: Mapping[str, int] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def _state_array(state: DetectorState) -> str:
    """A state's stored array."""
    # A warm function formats the same states again: those a batch started from (its item's prevStatesV2) are the
    # ones the batch before wrote, and a series without readings in a batch keeps its state. Equal states have the
    # same text (-0 and 0 too: both are stored as 0), so the memo changes no byte.
    return "[" + ",".join(stored_number(v) for v in state) + "]"


def _reads_back(state: DetectorState) -> bool:
    """Whether a state's stored text reads back as this very state: not so with a -0 (stored as 0) or a number
    that is not finite (a sum that overflows only makes a state look so, which costs a parse, nothing else)."""
    return math.isfinite(sum(state)) and not any(v == 0 and math.copysign(1.0, v) < 0 for v in state)


def states_text(states: Mapping[str, DetectorState]) -> str:
    """States as stored: a JSON object sensor type -> state array, types in code point order, numbers in
    section 4's format or, when that is long, as their bits (so both processors write the same bytes)."""
    text = "{" + ",".join(f"{json.dumps(name)}:{_state_array(states[name])}" for name in sorted(states)) + "}"
    if all(_reads_back(state) for state in states.values()):
        KNOWN_STATES.remember(text, states)
    return text


class StatesMemo:
    """States by the text they were written or read as, the oldest forgotten first past ``max_chars`` of text:
    the next batch of a warm function reads the texts the last one wrote (statesV2) and read (prevStatesV2)."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self.states: dict[str, Mapping[str, DetectorState]] = {}
        self.lock = threading.Lock()  # the state items may be read on the pool's threads

    def remember(self, text: str, states: Mapping[str, DetectorState]) -> None:
        """Keep ``states`` as what ``text`` reads as (a text longer than a 64th of the bound is not kept)."""
        if len(text) > self.max_chars // 64:
            return
        with self.lock:
            if text in self.states:
                return
            self.states[text] = dict(states)
            self.chars += len(text)
            while self.chars > self.max_chars:
                oldest = next(iter(self.states))
                del self.states[oldest]
                self.chars -= len(oldest)

    def recall(self, text: str) -> dict[str, DetectorState] | None:
        """A copy of the states kept for ``text``, or None."""
        known = self.states.get(text)
        return None if known is None else dict(known)


KNOWN_STATES = StatesMemo(max_chars=1_000_000)  # about 2,700 devices of 3 series: 6.4 MB with _state_array's memo


# A states text holds only section 4's numbers, which json's own parsing reads as the same doubles (the whole ones
# as ints, which DetectorState.from_list converts), and base64url strings: C speed, where parse_json calls back
# into Python per number.
_STATES_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def read_states(text: str) -> dict[str, DetectorState]:
    """States from their stored text, parsed."""
    return {name: DetectorState.from_list(values) for name, values in _STATES_DECODER.decode(text or "{}").items()}


def parse_states(text: str) -> dict[str, DetectorState]:
    """States from their stored text: those this function last wrote or read as that text, else parsed."""
    known = KNOWN_STATES.recall(text)
    if known is not None:
        return known
    states = read_states(text)
    KNOWN_STATES.remember(text, states)
    return states


def memory_of(item: Mapping[str, Mapping[str, Any]] | None) -> DeviceMemory:
    """A device's state item as read (an absent item is the empty memory)."""
    if not item:
        return DeviceMemory()
    text = lambda name: str(item.get(name, {}).get("S", ""))  # noqa: E731
    # this release's states (13 numbers, long doubles as their bits) are statesV2, which the previous release does
    # not read; an item it wrote holds states (numbers only), which still read here
    states = lambda name: parse_states(text(name + "V2") if name + "V2" in item else text(name))  # noqa: E731
    return DeviceMemory(text("seq"), states("states"), text("prevSeq"), states("prevStates"),
                        parse_episodes(text("episodes")))


def episodes_text(episodes: Mapping[str, int]) -> str:
    """Episodes as stored: a JSON object sensor type -> newest anomaly (ms), types in code point order."""
    return "{" + ",".join(f"{json.dumps(name)}:{episodes[name]}" for name in sorted(episodes)) + "}"


def parse_episodes(text: str) -> dict[str, int]:
    """Episodes from their stored text."""
    return {name: int(ms) for name, ms in parse_json(text or "{}").items()}


def starting_point(memory: DeviceMemory, first_seq: str) -> tuple[str, Mapping[str, DetectorState]]:
    """Where a device's scoring starts in a batch whose first record of it is ``first_seq``: after the stored
    ``seq`` normally; when that record was already absorbed (the batch is a retry of the one that wrote the
    item: a timeout after the write, a bisected half), from the snapshot that batch started from, so the
    retry yields the first attempt's scores and learns nothing twice. A record older than that snapshot (a
    re-delivery from further back) starts after ``seq`` again: its records up to ``seq`` are scored, not learned."""
    first = _sequence_order(first_seq)
    if memory.seq and first <= _sequence_order(memory.seq) and first > _sequence_order(memory.prev_seq):
        return memory.prev_seq, memory.prev_states
    return memory.seq, memory.states


def state_item(device: str, seq: str, states: Mapping[str, DetectorState], prev_seq: str,
               prev_states: Mapping[str, DetectorState],
               episodes: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """A device's state item; ``episodes`` (after ``seq``) only with notifications on."""
    item = {"deviceId": {"S": device}, "sk": {"S": STATE_SORT_KEY}, "seq": {"S": seq},
            "statesV2": {"S": states_text(states)}, "prevSeq": {"S": prev_seq},
            "prevStatesV2": {"S": states_text(prev_states)}}
    if episodes is not None:
        item["episodes"] = {"S": episodes_text(episodes)}
    return item


def open_episodes(episodes: Mapping[str, int], states: Mapping[str, DetectorState],
                  settings: Settings) -> dict[str, int]:
    """The episodes worth keeping: a series' newest anomaly at most its type's ``episodeQuiet`` before the
    newest reading its state learned (an older one cannot hold a later reading in its episode)."""
    def open_(name: str, at: int) -> bool:
        threshold, state = settings.thresholds.get(name), states.get(name)
        return threshold is not None and (state is None or state.newest_ms - at <= threshold.episode_quiet_ms)
    return {name: at for name, at in episodes.items() if open_(name, at)}


# ---------------------------------------------------------------- episodes and their notifications

def episode_starts(readings: Iterable[Reading], settings: Settings, episodes: dict[tuple[str, str], int],
                   absorbed: Mapping[str, str]) -> list[Reading]:
    """The anomalies of detector types that start an episode of their series: the first anomaly, or one more than
    the type's ``episodeQuiet`` after the series' newest anomaly (reading time). Each anomaly of a record above
    its device's ``absorbed`` sequence number updates ``episodes`` (series -> newest anomaly ms)."""
    starts = []
    for reading in readings:
        threshold = settings.thresholds.get(reading.sensor_type)
        if not reading.anomaly or threshold is None or threshold.detector is None or not threshold.episode_quiet_ms:
            continue
        device = reading.item["deviceId"]["S"]
        series, at = (device, reading.sensor_type), int(reading.item["timestamp"]["N"])
        newest = episodes.get(series)
        if newest is None or at - newest > threshold.episode_quiet_ms:
            starts.append(reading)
        seen = absorbed.get(device, "")
        if not seen or _sequence_order(reading.record.sequence_number) > _sequence_order(seen):
            episodes[series] = at if newest is None else max(newest, at)
    return starts


def iso_utc(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds (JavaScript's toISOString)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def notification(reading: Reading, settings: Settings) -> tuple[str, str]:
    """The SNS subject and message of an episode's first anomaly, for a person reading e-mail."""
    item = reading.item
    field_text = lambda name, kind: str(item.get(name, {}).get(kind, ""))  # noqa: E731
    device, sensor = field_text("deviceId", "S"), reading.sensor_type
    unit = field_text("unit", "S")
    low, high = field_text("expectedLow", "N"), field_text("expectedHigh", "N")
    quiet_s = settings.thresholds[sensor].episode_quiet_ms // 1000
    subject = f"[{settings.environment}] anomaly: {device} {sensor}"
    if len(subject) > 100:  # SNS: a subject is at most 100 characters
        subject = subject[:97] + "..."
    lines = [
        f"Anomaly on device {device}, sensor {sensor} ({settings.environment}).",
        "",
        f"Rule:     {field_text('rule', 'S')} ({field_text('reason', 'S')})",
        f"Value:    {field_text('value', 'N')}{' ' + unit if unit else ''}",
        f"Score:    {field_text('score', 'N') or 'n/a'}",
        f"Expected: {low} to {high}" if low and high else "Expected: n/a",
        f"Time:     {iso_utc(int(field_text('timestamp', 'N')))}",
        "",
        f"The first anomaly of this series after {quiet_s} s without one; the rest of this episode is not notified.",
        f"iotpipe anomalies --device {device} lists them all.",
    ]
    return subject, "\n".join(lines) + "\n"


def publish(runtime: Runtime, subject: str, message: str, deadline: float) -> None:
    """SNS Publish to the alarm topic, retrying retryable errors with backoff until ``deadline``; raises the last
    error."""
    for attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            runtime.sns.publish(TopicArn=runtime.settings.topic_arn, Subject=subject, Message=message)
            return
        except Exception as exc:
            if not retryable(exc) or not _backoff(runtime, attempt, deadline):
                raise


def read_memories(runtime: Runtime, devices: Sequence[str], deadline: float) -> dict[str, DeviceMemory] | None:
    """The state items of ``devices`` (BatchGetItem, 100 keys a call, strongly consistent, unprocessed keys
    retried until the deadline); None when they could not all be read."""
    table = runtime.settings.table
    found: dict[str, DeviceMemory] = {}
    for start in range(0, len(devices), BATCH_GET_LIMIT):
        pending: list[dict[str, Any]] = [{"deviceId": {"S": d}, "sk": {"S": STATE_SORT_KEY}}
                                         for d in devices[start:start + BATCH_GET_LIMIT]]
        for attempt in range(MAX_WRITE_ATTEMPTS):
            try:
                response = runtime.dynamodb.batch_get_item(
                    RequestItems={table: {"Keys": pending, "ConsistentRead": True}})
                for item in response.get("Responses", {}).get(table, []):
                    found[item["deviceId"]["S"]] = memory_of(item)
                pending = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            except Exception as exc:  # botocore errors; which ones are worth retrying is decided by retryable()
                _log(runtime, "ERROR", "BatchGetItem failed", error=_error_code(exc), detail=str(exc)[:500],
                     keys=len(pending), attempt=attempt + 1)
                if not retryable(exc):
                    return None
            if not pending or not _backoff(runtime, attempt, deadline):
                break
        if pending:
            return None
    return found



# ---------------------------------------------------------------- S3 objects

def batch_suffix(records: Sequence[Record], first: Record | None = None) -> str:
    """``year=/month=/day=/hour=/<shardId>/<firstSeq>-<lastSeq>.jsonl.gz`` (UTC of ``first``'s arrival,
    by default the first record's)."""
    at = datetime.fromtimestamp((first or records[0]).arrived_at / 1000, UTC)
    return (f"year={at:%Y}/month={at:%m}/day={at:%d}/hour={at:%H}/{records[0].shard_id}/"
            f"{records[0].sequence_number}-{records[-1].sequence_number}.jsonl.gz")


def _data_fields(record: Record) -> dict[str, str]:
    """The raw payload as text, or base64 when it is not UTF-8."""
    if record.raw is None:
        return {"data": record.data}
    try:
        return {"data": record.raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"dataBase64": record.data}


def jsonl_gzip(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """Gzip JSON lines; mtime 0 so the same batch gives the same bytes. A lone surrogate (a partition key
    can hold one) is written as its JSON escape ``\\udXXX``, as JavaScript's JSON.stringify does."""
    text = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
    return gzip.compress(text.encode("utf-8", "backslashreplace"), compresslevel=6, mtime=0)


def archive_lines(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Raw archive lines: sequenceNumber, partitionKey, arrivedAt and data/dataBase64."""
    return [{"sequenceNumber": r.sequence_number, "partitionKey": r.partition_key, "arrivedAt": r.arrived_at,
             **_data_fields(r)} for r in records]


def quarantine_line(interpretation: Interpretation) -> dict[str, Any]:
    """One line per record with rejections, holding its payload once: sequenceNumber, partitionKey, the
    first ``reason`` (and its ``sensorType``), ``rejected`` (every rejected reading) when readings were
    rejected, and the raw data."""
    record, rejections = interpretation.record, interpretation.rejections
    line: dict[str, Any] = {"sequenceNumber": record.sequence_number, "partitionKey": record.partition_key,
                            "reason": rejections[0].reason}
    if rejections[0].sensor_type is not None:
        line["sensorType"] = rejections[0].sensor_type
    if not interpretation.record_rejected:
        line["rejected"] = [{"reason": r.reason, **({"sensorType": r.sensor_type} if r.sensor_type else {})}
                            for r in rejections]
    return {**line, **_data_fields(record)}


# ---------------------------------------------------------------- AWS calls with retries until the deadline

def _error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else the exception's class name."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(exc).__name__)


def retryable(exc: BaseException) -> bool:
    """Transport errors (no AWS answer: closed connections, timeouts), throttling and 5xx are worth another
    attempt; any other AWS answer is not."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return True
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return _error_code(exc) in RETRYABLE_ERRORS or status >= 500


def _backoff(runtime: Runtime, attempt: int, deadline: float) -> bool:
    """Sleep before attempt ``attempt + 1`` (full jitter); False when there is no attempt or time left."""
    delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
    if attempt + 1 >= MAX_WRITE_ATTEMPTS or runtime.monotonic() + delay > deadline:
        return False
    runtime.sleep(delay)
    return True


def write_items(runtime: Runtime, items: list[dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
    """BatchWriteItem ``items`` (at most 25), retrying UnprocessedItems and retryable errors with backoff
    until ``deadline`` (runtime.monotonic seconds); returns the items that were still not written."""
    table = runtime.settings.table
    pending = items
    for attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            response = runtime.dynamodb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in pending]})
            pending = [r["PutRequest"]["Item"] for r in response.get("UnprocessedItems", {}).get(table, [])]
        except Exception as exc:  # botocore errors; which ones are worth retrying is decided by retryable()
            _log(runtime, "ERROR", "BatchWriteItem failed", error=_error_code(exc), detail=str(exc)[:500],
                 items=len(pending), attempt=attempt + 1)
            if not retryable(exc):
                return pending
        if not pending or not _backoff(runtime, attempt, deadline):
            break
    return pending


def put_object(runtime: Runtime, key: str, body: bytes, deadline: float) -> None:
    """PutObject, retrying retryable errors with backoff until ``deadline``; raises the last error."""
    for attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            runtime.s3.put_object(Bucket=runtime.settings.bucket, Key=key, Body=body,
                                  ContentType="application/gzip")
            return
        except Exception as exc:
            if not retryable(exc) or not _backoff(runtime, attempt, deadline):
                raise


def _failure(future: Future[Any], what: str) -> BaseException | None:
    """The error of a finished call; one still running or cancelled at the deadline counts as failed."""
    if future.done() and not future.cancelled():
        return future.exception(timeout=0)
    return TimeoutError(f"{what} not done before the deadline")


def _wait(runtime: Runtime, futures: Iterable[Future[Any]], deadline: float) -> None:
    """Wait for ``futures`` until the deadline at most (those still running count as failed)."""
    _, late = wait_futures(list(futures), timeout=max(0.0, deadline - runtime.monotonic()))
    for future in late:
        future.cancel()  # not started yet: nothing more is sent once the deadline has passed


# ---------------------------------------------------------------- metrics and logs

def _log(runtime: Runtime, level: str, message: str, **fields: Any) -> None:
    runtime.emit(json.dumps({"level": level, "message": message, **fields}, separators=(",", ":")))


def dimension_values(by_type: Mapping[str, tuple[int, int]], configured: Iterable[str]) -> dict[str, tuple[int, int]]:
    """At most MAX_SENSOR_TYPE_DIMENSIONS SensorType values (configured types first, then by name); the rest
    are summed under ``_other``, so one message cannot create thousands of billed custom metrics."""
    known = set(configured)
    ordered = sorted(by_type, key=lambda name: (name not in known, name))
    kept = {name: by_type[name] for name in ordered[:MAX_SENSOR_TYPE_DIMENSIONS]}
    rest = [by_type[name] for name in ordered[MAX_SENSOR_TYPE_DIMENSIONS:]]
    if rest:
        kept[OTHER_SENSOR_TYPES] = (sum(r[0] for r in rest), sum(r[1] for r in rest))
    return kept


def emf_lines(settings: Settings, now_ms: int, totals: Mapping[str, int], lag_ms: int, duration_ms: int,
              by_type: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """CloudWatch Embedded Metric Format documents: one for ``Environment``, one per SensorType value."""
    def document(dimensions: list[str], metrics: Mapping[str, tuple[float, str]],
                 extra: Mapping[str, str]) -> dict[str, Any]:
        return {
            "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{
                "Namespace": settings.namespace, "Dimensions": [dimensions],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()]}]},
            "Environment": settings.environment, **extra,
            **{name: value for name, (value, _) in metrics.items()},
        }

    lines = [document(["Environment"], {
        "SensorReadingsProcessed": (totals["stored"], "Count"),
        "AnomaliesDetected": (totals["anomalies"], "Count"),
        "RecordsQuarantined": (totals["quarantined"], "Count"),
        "RecordsFailed": (totals["failed"], "Count"),
        "IngestLag": (lag_ms, "Milliseconds"),
        "BatchDuration": (duration_ms, "Milliseconds"),
    }, {})]
    for sensor_type, (stored, anomalies) in sorted(dimension_values(by_type, settings.thresholds).items()):
        lines.append(document(["Environment", "SensorType"], {
            "SensorReadingsProcessed": (stored, "Count"),
            "AnomaliesDetected": (anomalies, "Count"),
        }, {"SensorType": sensor_type}))
    return lines


# ---------------------------------------------------------------- the batch

@dataclass
class Tally:
    """What the batch committed (records before its first failure) and what it saw."""

    stored: int = 0
    anomalies: int = 0
    quarantined: int = 0
    duplicates: int = 0
    timestamps_replaced: int = 0
    by_type: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    # The detector (docs/contract.md 12): each series' state after the committed records (and the window being
    # written), each device's starting point, and its last committed record.
    states: dict[tuple[str, str], DetectorState] = field(default_factory=dict)
    starts: dict[str, tuple[str, Mapping[str, DetectorState]]] = field(default_factory=dict)
    committed: dict[str, str] = field(default_factory=dict)
    # With notifications on: each series' newest anomaly, the sequence number each device's stored item had
    # (what an earlier attempt notified), the episode starts to notify.
    episodes: dict[tuple[str, str], int] = field(default_factory=dict)
    notified: dict[str, str] = field(default_factory=dict)
    notices: list[Reading] = field(default_factory=list)
    states_saved: bool = False  # written with the last window's readings (no second round trip)


def process(event: Any, context: Any, runtime: Runtime) -> dict[str, Any]:
    """Process one Kinesis batch; returns the partial-batch response (``batchItemFailures``)."""
    # Every record, reading and item of a window stays alive until it is written, so the cyclic collector's
    # passes only rescan them (a full pass took 80 ms in the benchmark), holding the interpreter lock the
    # write threads need, and free nothing; reference counting frees them. The previous setting is restored.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _process_batch(event, context, runtime)
    finally:
        if collecting:
            gc.enable()


def _remaining_ms(context: Any) -> int:
    if context is None:
        return DEFAULT_BUDGET_MS
    remaining = context.get_remaining_time_in_millis()
    return max(0, int(remaining)) if _is_number(remaining) else DEFAULT_BUDGET_MS


def _process_batch(event: Any, context: Any, runtime: Runtime) -> dict[str, Any]:
    started = runtime.monotonic()
    now_ms = runtime.clock_ms()
    remaining_ms = _remaining_ms(context)
    reserve_ms = min(RESERVE_MAX_MS, max(RESERVE_MIN_MS, remaining_ms // 10))
    deadline = started + max(0, remaining_ms - reserve_ms) / 1000
    entries = event.get("Records") if isinstance(event, dict) else None
    records = [decode_record(r, now_ms) for r in (entries if isinstance(entries, list) else ())]
    if not records:
        return {"batchItemFailures": []}

    by_shard = _by_shard(records, lambda r: r.shard_id)
    archives = [runtime.pool.submit(put_object, runtime, f"raw/{batch_suffix(group)}",
                                    jsonl_gzip(archive_lines(group)), deadline) for group in by_shard.values()]
    # The detector state items of the batch's devices (its partition keys: the rule's topic(2), which a valid
    # reading's deviceId equals) are read while the archive is written and the records validated: a read only,
    # and no other invocation writes them meanwhile (one invocation at a time per device).
    prefetched = None
    if any(t.detector is not None for t in runtime.settings.thresholds.values()):
        devices = [key for key in dict.fromkeys(r.partition_key for r in records) if DEVICE_ID_PATTERN.fullmatch(key)]
        prefetched = (set(devices), runtime.pool.submit(read_memories, runtime, devices, deadline))
    tally = Tally()
    window: list[Interpretation] = []
    readings_in_window = 0
    archived = False
    for position, record in enumerate(records):
        interpretation = interpret(record, runtime.settings)
        window.append(interpretation)
        readings_in_window += len(interpretation.readings)
        if readings_in_window < WINDOW_READINGS and position + 1 < len(records):
            continue
        if not archived:  # validation of the first window ran while the archive was in flight
            _wait_for_archive(runtime, archives, deadline, len(records))
            archived = True
        if not _store_window(runtime, window, records[0], deadline, tally, prefetched,
                             last=position + 1 == len(records)):
            tally.failed += [r.sequence_number for r in records[position + 1:]]
            break
        window, readings_in_window = [], 0

    # An episode's notification goes out before the state item that records it (so a retry of a batch whose
    # state was written notifies nothing again).
    _notify(runtime, tally.notices, deadline)
    if tally.committed and not tally.states_saved and not _save_states(runtime, tally, deadline):
        # Items were written but a device's state was not: the whole batch is retried (a retry of the batch that
        # wrote the other states starts from their snapshots), and nothing of it counts as done.
        _log(runtime, "ERROR", "detector state write failed; the batch will be retried", records=len(records))
        tally = Tally(failed=[r.sequence_number for r in records])
    totals = {"records": len(records), "stored": tally.stored, "anomalies": tally.anomalies,
              "quarantined": tally.quarantined, "failed": len(tally.failed), "duplicates": tally.duplicates,
              "timestampsReplaced": tally.timestamps_replaced}
    lag_ms = max(0, now_ms - min(r.arrived_at for r in records))
    duration_ms = round((runtime.monotonic() - started) * 1000)
    for line in emf_lines(runtime.settings, now_ms, totals, lag_ms, duration_ms, tally.by_type):
        runtime.emit(json.dumps(line, separators=(",", ":")))
    _log(runtime, "INFO", "batch processed", **totals, shards=sorted(by_shard),
         firstSequenceNumber=records[0].sequence_number, lastSequenceNumber=records[-1].sequence_number,
         ingestLagMs=lag_ms, durationMs=duration_ms)

    if len(tally.failed) == len(records):
        raise BatchFailed(f"no record of the batch could be stored ({len(records)} records)")
    return {"batchItemFailures": [{"itemIdentifier": seq}
                                  for seq in sorted(set(tally.failed), key=_sequence_order)]}


def _wait_for_archive(runtime: Runtime, archives: list[Future[None]], deadline: float, count: int) -> None:
    """Nothing is written before the raw archive exists: raise BatchFailed if it failed or is too slow."""
    _wait(runtime, archives, deadline)
    for archive in archives:
        exc = _failure(archive, "raw archive write")
        if exc is not None:
            _log(runtime, "ERROR", "raw archive write failed; the batch will be retried",
                 error=_error_code(exc), detail=str(exc)[:500], records=count)
            raise BatchFailed(f"raw archive write to s3://{runtime.settings.bucket} failed: {exc}") from exc


def _store_window(runtime: Runtime, window: list[Interpretation], batch_first: Record, deadline: float,
                  tally: Tally, prefetched: tuple[set[str], Future[Any]] | None = None, *, last: bool = False) -> bool:
    """Write one window's readings and quarantine lines; count what it committed into ``tally``. False when
    a record of it failed (the batch stops there: Lambda retries from the lowest failure). The batch's last window
    writes the detector state items with its readings when it has no notification to send first."""
    if runtime.monotonic() >= deadline:
        tally.failed += [i.record.sequence_number for i in window]
        return False
    readings, repeats = deduplicate([r for i in window for r in i.readings])
    devices = device_spans(runtime.settings, readings)
    if not _recall(runtime, devices, deadline, tally, prefetched):
        tally.failed += [i.record.sequence_number for i in window]
        return False
    before = dict(tally.states)
    before_episodes = dict(tally.episodes)
    absorbed = {device: start[0] for device, start in tally.starts.items()}
    readings = score_readings(readings, runtime.settings, tally.states, absorbed)
    starts = _to_notify(episode_starts(readings, runtime.settings, tally.episodes, absorbed), tally) \
        if runtime.settings.topic_arn else []
    items = window_items(readings, runtime.settings)
    chunks = [items[i:i + BATCH_WRITE_LIMIT] for i in range(0, len(items), BATCH_WRITE_LIMIT)]
    writes = [runtime.pool.submit(write_items, runtime, chunk, deadline) for chunk in chunks]
    # The state items as they are when every record of the window commits, in chunks of their own, written with
    # the readings (built while those are in flight); when the window is cut short they are written again
    # (_save_states) from what committed.
    whole = _committed_after(devices, tally.committed)
    ahead = _state_items(runtime.settings, tally, whole) if last and not starts and not tally.notices else []
    state_chunks = [ahead[i:i + BATCH_WRITE_LIMIT] for i in range(0, len(ahead), BATCH_WRITE_LIMIT)]
    state_writes = [runtime.pool.submit(write_items, runtime, chunk, deadline) for chunk in state_chunks]
    rejected = _by_shard([i for i in window if i.rejections], lambda i: i.record.shard_id)
    spans = _by_shard([i.record for i in window], lambda r: r.shard_id)
    quarantines = {shard: runtime.pool.submit(
        put_object, runtime, f"quarantine/{batch_suffix(spans[shard], batch_first)}",
        jsonl_gzip(quarantine_line(i) for i in group), deadline) for shard, group in rejected.items()}
    _wait(runtime, [*writes, *state_writes, *quarantines.values()], deadline)

    failed: set[str] = set()
    for chunk, write in zip(chunks, writes, strict=True):
        unwritten = chunk if _failure(write, "BatchWriteItem") else write.result()
        failed.update(first_sequence_number(item) for item in unwritten)
    for shard, future in quarantines.items():
        exc = _failure(future, "quarantine write")
        if exc is None:
            for i in rejected[shard]:
                _log(runtime, "WARN", "record quarantined", reason=i.rejections[0].reason,
                     shardId=i.record.shard_id, sequenceNumber=i.record.sequence_number,
                     partitionKey=i.record.partition_key, readingsRejected=len(i.rejections),
                     **({"sensorType": i.rejections[0].sensor_type} if i.rejections[0].sensor_type else {}))
        else:
            _log(runtime, "ERROR", "quarantine write failed", error=_error_code(exc), detail=str(exc)[:500])
            failed.update(i.record.sequence_number for i in rejected[shard])

    cut = next((n for n, i in enumerate(window) if i.record.sequence_number in failed), len(window))
    committed = {id(i.record) for i in window[:cut]}
    for reading in readings:
        if id(reading.record) in committed:
            count, anomalies = tally.by_type.get(reading.sensor_type, (0, 0))
            tally.by_type[reading.sensor_type] = (count + 1, anomalies + reading.anomaly)
            tally.stored += 1
            tally.anomalies += reading.anomaly
    _commit_states(runtime.settings, [r for r in readings if id(r.record) in committed], cut < len(window),
                   before, absorbed, tally, whole)
    if runtime.settings.topic_arn:
        if cut < len(window):
            tally.episodes = before_episodes
            starts = _to_notify(episode_starts([r for r in readings if id(r.record) in committed],
                                               runtime.settings, tally.episodes, absorbed), tally)
        tally.notices += starts
    tally.states_saved = bool(ahead) and cut == len(window) and all(
        _failure(write, "BatchWriteItem") is None and not write.result() for write in state_writes)
    tally.quarantined += sum(1 for i in window[:cut] if i.rejections)
    tally.duplicates += repeats
    tally.timestamps_replaced += sum(i.timestamp_replaced for i in window)
    # Lambda retries from the lowest failure on: the later records of the window are reported too, so no
    # record is counted as done before the attempt that commits it.
    tally.failed += [i.record.sequence_number for i in window[cut:]]
    return cut == len(window)


def device_spans(settings: Settings, readings: Iterable[Reading]) -> dict[str, tuple[str, str]]:
    """Each device with a detector reading in ``readings`` -> the sequence numbers of its first record (in the
    order given) and of its highest."""
    detectors = _detectors(settings)
    spans: dict[str, tuple[str, str]] = {}
    highest: dict[str, tuple[int, str]] = {}
    for reading in readings:
        if reading.sensor_type in detectors:
            device, seq = reading.item["deviceId"]["S"], reading.record.sequence_number
            order = _sequence_order(seq)
            if device not in spans:
                spans[device], highest[device] = (seq, seq), order
            elif order > highest[device]:
                spans[device], highest[device] = (spans[device][0], seq), order
    return spans


def _recall(runtime: Runtime, spans: Mapping[str, tuple[str, str]], deadline: float, tally: Tally,
            prefetched: tuple[set[str], Future[Any]] | None = None) -> bool:
    """Read the state items of the window's devices (``spans``: device_spans) not read yet in this batch (or take
    them from the ``prefetched`` read when it holds them all) and set where each starts; False when they could
    not be read (the window fails: nothing of it is written)."""
    firsts = {device: first for device, (first, _) in spans.items() if device not in tally.starts}
    if not firsts:
        return True
    if prefetched is not None and prefetched[0].issuperset(firsts):
        _wait(runtime, [prefetched[1]], deadline)
        memories = None if _failure(prefetched[1], "BatchGetItem") else prefetched[1].result()
    else:
        memories = read_memories(runtime, list(firsts), deadline)
    if memories is None:
        return False
    for device, first in firsts.items():
        memory = memories.get(device, DeviceMemory())
        seq, states = starting_point(memory, first)
        tally.starts[device] = (seq, states)
        tally.states.update({(device, name): state for name, state in states.items()})
        if runtime.settings.topic_arn:
            # A retry starts from the episodes after ``seq`` too: every anomaly it scores again was learned into
            # them, so it starts no episode again, and none of its records above ``seq`` is notified twice.
            tally.episodes.update({(device, name): at for name, at in memory.episodes.items()})
            tally.notified[device] = memory.seq
    return True


def _to_notify(starts: Iterable[Reading], tally: Tally) -> list[Reading]:
    """The episode starts no earlier attempt notified: of records above the sequence number the device's stored
    item had (an attempt notifies before it writes the item)."""
    return [r for r in starts if _sequence_order(r.record.sequence_number)
            > _sequence_order(tally.notified.get(r.item["deviceId"]["S"], ""))]


def _notify(runtime: Runtime, notices: Sequence[Reading], deadline: float) -> None:
    """Publish each episode start to the alarm topic (concurrently); one that cannot be published is logged with
    its message and lost (readings and state never wait on the topic)."""
    messages = [notification(reading, runtime.settings) for reading in notices]
    sent = [runtime.pool.submit(publish, runtime, subject, message, deadline) for subject, message in messages]
    _wait(runtime, sent, deadline)
    for (subject, message), future in zip(messages, sent, strict=True):
        exc = _failure(future, "SNS Publish")
        if exc is None:
            _log(runtime, "INFO", "anomaly episode notified", subject=subject)
        else:
            _log(runtime, "ERROR", "anomaly notification failed", error=_error_code(exc), detail=str(exc)[:500],
                 subject=subject, notification=message)


def _commit_states(settings: Settings, committed: Sequence[Reading], cut_short: bool,
                   before: Mapping[tuple[str, str], DetectorState], absorbed: Mapping[str, str], tally: Tally,
                   whole: Mapping[str, str]) -> None:
    """Keep the states as of the window's committed records: when the window was cut short, score its committed
    readings again from the states before it (the same arithmetic, so the same states); ``whole`` is each
    device's last committed record had the whole window committed."""
    if not cut_short:
        tally.committed = dict(whole)
        return
    tally.states = dict(before)
    score_readings(committed, settings, tally.states, absorbed)
    tally.committed = _committed_after(device_spans(settings, committed), tally.committed)


def _committed_after(spans: Mapping[str, tuple[str, str]], committed: Mapping[str, str]) -> dict[str, str]:
    """Each device's last committed detector record once the readings of ``spans`` (device_spans) commit too."""
    after = dict(committed)
    for device, (_, highest) in spans.items():
        last = after.get(device, "")
        if highest != last and _sequence_order(highest) > _sequence_order(last):
            after[device] = highest
    return after


def _state_items(settings: Settings, tally: Tally, committed: Mapping[str, str]) -> list[dict[str, dict[str, Any]]]:
    """The state item of every device in ``committed`` (device -> last committed record), from ``tally``."""
    by_device: dict[str, dict[str, DetectorState]] = {}
    for (device, name), state in tally.states.items():
        if device in committed:
            by_device.setdefault(device, {})[name] = state
    episodes: dict[str, dict[str, int]] = {}
    for (device, name), at in tally.episodes.items():
        episodes.setdefault(device, {})[name] = at
    return [state_item(device, max(committed[device], tally.starts[device][0], key=_sequence_order),
                       by_device.get(device, {}), *tally.starts[device],
                       open_episodes(episodes.get(device, {}), by_device.get(device, {}), settings)
                       if device in tally.notified else None) for device in committed]


def _save_states(runtime: Runtime, tally: Tally, deadline: float) -> bool:
    """Write the state item of every device with committed readings (BatchWriteItem, 25 a call); False when one
    could not be written."""
    items = _state_items(runtime.settings, tally, tally.committed)
    chunks = [items[i:i + BATCH_WRITE_LIMIT] for i in range(0, len(items), BATCH_WRITE_LIMIT)]
    writes = [runtime.pool.submit(write_items, runtime, chunk, deadline) for chunk in chunks]
    _wait(runtime, writes, deadline)
    return all(_failure(write, "BatchWriteItem") is None and not write.result() for write in writes)


def _by_shard(items: Iterable[Any], shard_of: Callable[[Any], str]) -> dict[str, list[Any]]:
    """Items grouped by shard, in batch order (a Kinesis batch normally holds one shard)."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(shard_of(item), []).append(item)
    return groups


@functools.lru_cache(maxsize=20_000)  # a batch (at most 10,000 records) compares each record's several times
def _sequence_order(sequence_number: str) -> tuple[int, str]:
    """Kinesis sequence numbers are decimal strings of varying length: compare them as numbers."""
    return (int(sequence_number), "") if sequence_number.isdigit() else (-1, sequence_number)


_RUNTIME: Runtime | None = None


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (``index.handler``)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = Runtime.from_env()
    return process(event, context, _RUNTIME)
