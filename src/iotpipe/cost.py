"""The pipeline's monthly cost, by service and line item, from an env's configuration and a dated price table.

Pure functions over frozen dataclasses: :func:`estimate` takes a :class:`Workload` (devices, sensors, rate,
readings per message), the env's :class:`~iotpipe.config.PipelineConfig` (ingest, stream mode and shards, batch
size and window, memory and architecture, TTL, storage layout) and :class:`Assumptions` (sizes, anomaly rate,
compression, durations: each with where it came from), and returns an :class:`Estimate` whose line items carry
units, unit price and USD. ``make bench-cost`` counts the same units on a run of the processor and compares.

Billing rules the model follows (cited in ``prices/<region>.json`` and docs/cost.md):

- IoT Core meters a PUBLISH on payload plus topic in 5 KB units; Basic Ingest publishes have no messaging
  charge; the rule triggered and its one Kinesis action are charged per message (5 KB units).
- Kinesis: one record per message. Provisioned: shard-hours and 25 KB PUT payload units; on-demand:
  stream-hours, data in (each record rounded up to 1 KB) and data out. Retention over 24 h costs extra.
- Lambda: one invocation per batch of ``min(batch_size, records a shard gets in the batching window)``
  records, GB-seconds at the configured memory and architecture.
- DynamoDB on-demand: every item written costs ``ceil(size / 1 KB)`` write units on its own, BatchWriteItem
  or not; an anomaly item is written to the sparse index too. Storage is held for the TTL.
- DynamoDB point-in-time recovery (the template enables it) is billed per GB-month of table size.
- S3: one raw-archive object per batch (quarantine objects only when records are rejected: none assumed), kept
  ``storage.archive_retention_days`` in S3 Standard (objects under 128 KB are not transitioned).
- CloudWatch: log bytes per invocation, one custom metric per name and dimension set, alarms per month.
- KMS: the template's customer-managed key, a month each. Athena (``analytics.enabled``): an assumed number of
  queries a month, each over one day of the archive: data scanned (at least 10 MB a query) and S3 GET and LIST
  requests, one GET per archive object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from iotpipe import contract
from iotpipe.config import ON_DEMAND_INITIAL_SHARDS, PipelineConfig
from iotpipe.errors import ConfigError, ParameterError

# AWS prices a month as 730 hours (the pricing pages' monthly examples).
MONTH_HOURS = 730
MONTH_SECONDS = MONTH_HOURS * 3600
DAYS_PER_MONTH = MONTH_HOURS / 24
# "The maximum size of the message payload is 128 KB" (AWS IoT Core quotas, message broker).
MAX_MESSAGE_BYTES = 128 * 1024
# The processor's MAX_READINGS_PER_MESSAGE (samples form, docs/contract.md).
MAX_READINGS_PER_MESSAGE = contract.MAX_READINGS_PER_MESSAGE
IOT_METER_BYTES = 5 * 1024
KINESIS_PUT_UNIT_BYTES = 25 * 1024
KINESIS_ON_DEMAND_ROUNDING_BYTES = 1024
DYNAMODB_WRITE_UNIT_BYTES = 1024
# "DynamoDB ... adds 100 bytes of overhead to each item for indexing purposes" (item sizes and formats).
DYNAMODB_INDEX_OVERHEAD_BYTES = 100
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024
# Lambda's synchronous invocation payload limit bounds a Kinesis batch (6 MB).
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
GB = 1024 ** 3
# The processor's EMF documents: six metrics by Environment, two by (Environment, SensorType).
METRICS_BY_ENVIRONMENT = 6
METRICS_BY_SENSOR_TYPE = 2
# The processor validates and writes a batch in windows of at most this many readings (docs/contract.md).
PROCESSOR_WINDOW_READINGS = 4_000
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Assumption:
    """One number the model cannot read from the configuration, and where it came from."""

    name: str
    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class Assumptions:
    """The model's assumptions (see :data:`DEFAULT_ASSUMPTIONS` for the defaults and their sources)."""

    items: tuple[Assumption, ...]

    def value(self, name: str) -> float:
        """The value of assumption ``name``."""
        for item in self.items:
            if item.name == name:
                return item.value
        raise KeyError(name)

    def with_values(self, source: str, **values: float) -> Assumptions:
        """A copy with ``values`` replaced, each now attributed to ``source``."""
        unknown = sorted(set(values) - {item.name for item in self.items})
        if unknown:
            raise KeyError(", ".join(unknown))
        return Assumptions(tuple(replace(item, value=float(values[item.name]), source=source)
                                 if item.name in values else item for item in self.items))


_MEASURED = "measured by make bench-cost (2026-11-30, Python processor on moto)"
_DEFAULT = "documented default (docs/cost.md)"
DEFAULT_ASSUMPTIONS = Assumptions((
    Assumption("single_payload_bytes", 90, "bytes", _MEASURED + ": a single-reading payload"),
    Assumption("message_overhead_bytes", 38, "bytes", _MEASURED + ": deviceId and braces of a "
                                                      "several-readings payload"),
    Assumption("bytes_per_reading_in_message", 31, "bytes", _MEASURED + ": one reading's share of a samples-form "
                                                            "payload (its timestamp shared by the sensors)"),
    Assumption("device_id_bytes", 10, "bytes", _DEFAULT + ": a device id in the topic (press-0001)"),
    Assumption("rule_added_bytes", 55, "bytes", _MEASURED + ": receivedAt and topicDeviceId the rule adds"),
    Assumption("reading_item_bytes", 254, "bytes", _MEASURED + ": an item of one reading (DynamoDB item size)"),
    Assumption("packed_item_overhead_bytes", 190, "bytes", _MEASURED + ": key, sensorType, status, ttl and "
                                                           "shardId of a packed item"),
    Assumption("packed_bytes_per_reading", 12, "bytes", _MEASURED + ": '<ms after window start>:<value>,' of "
                                                        "one reading in a packed item"),
    Assumption("anomaly_rate", 0.001, "fraction of readings", _DEFAULT + ": one reading in a thousand"),
    Assumption("archive_line_overhead_bytes", 255, "bytes", _MEASURED + ": sequence number, partition key, "
                                                            "arrival time and escaping around a raw record"),
    Assumption("compression_ratio", 25.0, "raw / gzip", _MEASURED + ": gzip of the raw archive's JSON lines "
                                                        "(fitted with archive_object_overhead_bytes)"),
    Assumption("archive_object_overhead_bytes", 480, "bytes", _MEASURED + ": what a small gzip object costs "
                                                              "beyond its share (fitted at 5 and 100 records)"),
    Assumption("lambda_ms_per_invocation", 40, "ms", _MEASURED + ": fixed part of a batch; an upper bound "
                                                     "(moto is slower than AWS)"),
    Assumption("lambda_ms_per_item", 1.0, "ms", _MEASURED + ": per item written; an upper bound"),
    Assumption("log_bytes_per_invocation", 2240, "bytes", _MEASURED + ": START/END/REPORT, the batch log line "
                                                          "and the EMF documents of 3 sensor types"),
    Assumption("episodes_per_series_month", 1, "episodes", _DEFAULT + ": anomaly episodes of one series (device x "
                                                           "sensor) a month, each one notification to the alarm "
                                                           "topic and one e-mail"),
    Assumption("athena_queries_per_month", 30, "queries", _DEFAULT + ": an iotpipe sql query a day, each over "
                                                          "one day of the archive"),
))
# Athena bills "a minimum of 10 MB per query" (Athena pricing); S3 lists at most 1,000 keys a request.
ATHENA_MIN_SCAN_BYTES = 10 * 1024 * 1024
S3_LIST_PAGE_KEYS = 1000
# The template's customer-managed KMS keys (groups/keys.py: the pipeline key).
CUSTOMER_MANAGED_KEYS = 1


@dataclass(frozen=True)
class Price:
    """One line of the price table: ``usd`` per ``per`` units."""

    service: str
    item: str
    usd: float
    per: float
    unit: str
    overridden: bool = False

    @property
    def unit_usd(self) -> float:
        """USD per single unit."""
        return self.usd / self.per


@dataclass(frozen=True)
class PriceTable:
    """A dated price table for one region, with the pages it was read from."""

    region: str
    as_of: str
    currency: str
    sources: tuple[tuple[str, str], ...]
    prices: tuple[Price, ...]
    note: str = ""

    def price(self, key: str) -> Price:
        """The price ``service.item``."""
        service, _, item = key.partition(".")
        for price in self.prices:
            if price.service == service and price.item == item:
                return price
        raise KeyError(key)


@dataclass(frozen=True)
class Workload:
    """What the devices send: ``devices`` x ``sensors`` readings at ``rate_hz``, ``readings_per_message`` each."""

    devices: int
    sensors: int
    rate_hz: float
    readings_per_message: int = 1

    @property
    def readings_per_second(self) -> float:
        """Readings per second over all devices and sensors."""
        return self.devices * self.sensors * self.rate_hz

    @property
    def messages_per_second(self) -> float:
        """MQTT messages per second."""
        return self.readings_per_second / self.readings_per_message


@dataclass(frozen=True)
class LineItem:
    """One billed quantity: service, item, units in the month, unit price and USD."""

    service: str
    item: str
    units: float
    unit: str
    unit_price_usd: float
    usd: float
    note: str = ""


@dataclass(frozen=True)
class Shape:
    """The intermediate quantities of a month (what ``bench-cost`` counts), before prices."""

    readings: float
    messages: float
    message_bytes: float
    record_bytes: float
    records_per_invocation: float
    invocations: float
    items: float
    item_bytes: float
    anomaly_items: float
    archive_bytes: float
    invocation_seconds: float
    log_bytes: float
    shards: int
    custom_metrics: int
    alarms: int


@dataclass(frozen=True)
class Estimate:
    """The month: line items, totals, and everything the numbers rest on."""

    workload: Workload
    env: str
    layout: str
    basic_ingest: bool
    line_items: tuple[LineItem, ...]
    shape: Shape
    assumptions: Assumptions
    prices: PriceTable
    settings: tuple[tuple[str, str], ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def monthly_total_usd(self) -> float:
        """The sum of the line items."""
        return sum(item.usd for item in self.line_items)

    @property
    def readings_per_month(self) -> float:
        """Readings in the month."""
        return self.shape.readings

    @property
    def per_million_readings_usd(self) -> float:
        """Monthly total divided by millions of readings."""
        return self.monthly_total_usd / (self.readings_per_month / 1e6)

    def by_service(self) -> dict[str, float]:
        """USD per service, in line-item order."""
        totals: dict[str, float] = {}
        for item in self.line_items:
            totals[item.service] = totals.get(item.service, 0.0) + item.usd
        return totals


def load_price_table(region: str = DEFAULT_REGION) -> PriceTable:
    """The packaged price table of ``region`` (``src/iotpipe/prices/<region>.json``); ConfigError if none."""
    try:
        text = resources.files("iotpipe.prices").joinpath(f"{region}.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no price table for region {region!r} in this iotpipe (it has {', '.join(regions())}); "
                          "use --price-region us-east-1 and override what differs in [env.<name>.prices]") from None
    return parse_price_table(json.loads(text))


def regions() -> list[str]:
    """Regions with a packaged price table."""
    folder = resources.files("iotpipe.prices")
    return sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))


def parse_price_table(document: Mapping[str, Any]) -> PriceTable:
    """A PriceTable from the JSON document of a price file."""
    prices = tuple(Price(service, item, float(spec["usd"]), float(spec["per"]), str(spec["unit"]))
                   for service, items in document["prices"].items() for item, spec in items.items())
    return PriceTable(region=str(document["region"]), as_of=str(document["as_of"]),
                      currency=str(document.get("currency", "USD")),
                      sources=tuple(sorted((str(k), str(v)) for k, v in document.get("sources", {}).items())),
                      prices=prices, note=str(document.get("note", "")))


def apply_overrides(table: PriceTable, overrides: Sequence[tuple[str, float]], where: str = "prices") -> PriceTable:
    """``table`` with ``("service.item", usd per unit)`` overrides applied; ConfigError names an unknown key."""
    known = {f"{p.service}.{p.item}": p for p in table.prices}
    changed = dict(known)
    for key, usd in overrides:
        if key not in known:
            raise ConfigError(f"{where}.{key}: no such price; known: {', '.join(sorted(known))}")
        price = known[key]
        changed[key] = replace(price, usd=usd, per=1.0, overridden=True)
    return replace(table, prices=tuple(changed.values()))


def storage_layout(cfg: PipelineConfig) -> tuple[str, int]:
    """The env's storage layout and pack window (``storage.layout``, ``storage.pack_window_seconds``)."""
    return cfg.storage.layout, cfg.storage.pack_window_seconds


def payload_bytes(workload: Workload, assumptions: Assumptions) -> float:
    """Bytes of one message's payload."""
    if workload.readings_per_message == 1:
        return assumptions.value("single_payload_bytes")
    return (assumptions.value("message_overhead_bytes")
            + workload.readings_per_message * assumptions.value("bytes_per_reading_in_message"))


def topic_bytes(cfg: PipelineConfig | None, assumptions: Assumptions) -> int:
    """Bytes of the topic a device publishes to (``sensor/<id>/data`` or its Basic Ingest form)."""
    device = "d" * int(assumptions.value("device_id_bytes"))
    topic = contract.device_topic(device)
    if cfg is not None and cfg.ingest.basic_ingest:
        topic = f"{contract.BASIC_INGEST_PREFIX}{contract.rule_name(cfg.env)}/{topic}"
    return len(topic)


def message_bytes(workload: Workload, assumptions: Assumptions, cfg: PipelineConfig | None = None) -> float:
    """Bytes of one message (payload and topic), as IoT Core meters it."""
    return payload_bytes(workload, assumptions) + topic_bytes(cfg, assumptions)


# The workload the arithmetic is good for (beyond these, floats overflow or underflow into tracebacks): a billion
# devices, ten thousand sensors each, a million readings a second per sensor.
MAX_DEVICES = 10**9
MAX_SENSORS = 10**4
MAX_RATE_HZ = 1e6


def validate_workload(workload: Workload, assumptions: Assumptions = DEFAULT_ASSUMPTIONS) -> Workload:
    """``workload`` if it is possible, else ParameterError naming the field and what is allowed."""
    if isinstance(workload.devices, bool) or not 1 <= workload.devices <= MAX_DEVICES:
        raise ParameterError("devices", workload.devices, f"is out of range; use 1 to {MAX_DEVICES:,}")
    if isinstance(workload.sensors, bool) or not 1 <= workload.sensors <= MAX_SENSORS:
        raise ParameterError("sensors", workload.sensors, f"is out of range; use 1 to {MAX_SENSORS:,} sensors per "
                             "device")
    if not (math.isfinite(workload.rate_hz) and 0 < workload.rate_hz <= MAX_RATE_HZ):
        raise ParameterError("rate_hz", workload.rate_hz, "is out of range; give readings per second per sensor, "
                             f"more than 0 and at most {MAX_RATE_HZ:,.0f}")
    if workload.readings_per_message < 1:
        raise ParameterError("readings_per_message", workload.readings_per_message, "is out of range; use at "
                             "least 1")
    if workload.readings_per_message > MAX_READINGS_PER_MESSAGE:
        raise ParameterError("readings_per_message", workload.readings_per_message,
                             f"is too many: the processor quarantines a message of more than "
                             f"{MAX_READINGS_PER_MESSAGE:,} readings (docs/contract.md); use at most "
                             f"{MAX_READINGS_PER_MESSAGE:,}")
    size = payload_bytes(workload, assumptions)
    if size > MAX_MESSAGE_BYTES:
        per = assumptions.value("bytes_per_reading_in_message")
        most = int((MAX_MESSAGE_BYTES - assumptions.value("message_overhead_bytes")) // per)
        raise ParameterError("readings_per_message", workload.readings_per_message, "makes messages of about "
                             f"{size / 1024:.0f} KB, over AWS IoT Core's 128 KB message limit; use at most {most}")
    return workload


def shape(workload: Workload, cfg: PipelineConfig, assumptions: Assumptions, *, alarms: int = 0,
          seconds: float = MONTH_SECONDS) -> Shape:
    """The billable quantities of ``seconds`` of ``workload`` on ``cfg`` (a month unless told)."""
    readings = workload.readings_per_second * seconds
    messages = readings / workload.readings_per_message
    msg_bytes = message_bytes(workload, assumptions, cfg)
    record_bytes = payload_bytes(workload, assumptions) + assumptions.value("rule_added_bytes")
    shards = stream_shards(workload, cfg, record_bytes)
    per_invocation = records_per_invocation(workload, cfg, record_bytes, shards)
    invocations = messages / per_invocation
    layout, _ = storage_layout(cfg)
    anomaly_items = readings * assumptions.value("anomaly_rate")
    if layout == "packed":
        packed = packed_items(workload, cfg, per_invocation, shards, seconds)
        item_bytes = (assumptions.value("packed_item_overhead_bytes")
                      + readings / packed * assumptions.value("packed_bytes_per_reading"))
        items = packed + anomaly_items
    else:
        items = readings
        item_bytes = assumptions.value("reading_item_bytes")
    line_bytes = assumptions.value("archive_line_overhead_bytes") + record_bytes
    invocation_ms = (assumptions.value("lambda_ms_per_invocation")
                     + assumptions.value("lambda_ms_per_item") * items / invocations)
    return Shape(
        readings=readings, messages=messages, message_bytes=msg_bytes, record_bytes=record_bytes,
        records_per_invocation=per_invocation, invocations=invocations, items=items, item_bytes=item_bytes,
        anomaly_items=anomaly_items,
        archive_bytes=(messages * line_bytes / assumptions.value("compression_ratio")
                       + invocations * assumptions.value("archive_object_overhead_bytes")),
        invocation_seconds=invocations * invocation_ms / 1000,
        log_bytes=invocations * assumptions.value("log_bytes_per_invocation"),
        shards=shards, custom_metrics=METRICS_BY_ENVIRONMENT + METRICS_BY_SENSOR_TYPE * workload.sensors,
        alarms=alarms,
    )


def shards_needed(workload: Workload, record_bytes: float) -> int:
    """Shards the traffic needs: "each shard can support ... up to 1,000 records per second ... up to a maximum
    total data write rate of 1 MB per second" (Kinesis quotas)."""
    by_records = workload.messages_per_second / SHARD_RECORDS_PER_SECOND
    by_bytes = workload.messages_per_second * record_bytes / SHARD_BYTES_PER_SECOND
    return max(1, math.ceil(max(by_records, by_bytes)))


def stream_shards(workload: Workload, cfg: PipelineConfig, record_bytes: float) -> int:
    """Shards priced and batched over: the configured ones in provisioned mode (more if the traffic needs
    more: it would be throttled otherwise), on demand the initial 4 or what the traffic needs."""
    configured = cfg.stream.shard_count if cfg.stream.mode == "PROVISIONED" else ON_DEMAND_INITIAL_SHARDS
    return max(configured, shards_needed(workload, record_bytes))


def batch_streams(workload: Workload, cfg: PipelineConfig, shards: int) -> float:
    """Batch streams that carry traffic: each shard's records are split by partition key (the device) over
    ``parallelization_factor`` concurrent batches; devices hash into them at random, so with few devices some
    stay empty (the expected number of occupied ones)."""
    streams = shards * cfg.processor.parallelization_factor
    return streams * (1 - (1 - 1 / streams) ** workload.devices)


def records_per_invocation(workload: Workload, cfg: PipelineConfig, record_bytes: float, shards: int) -> float:
    """Records in one batch: what one batch stream gets in the batching window (Lambda polls a shard about
    once a second without one), at most ``batch_size`` and at most Lambda's 6 MB payload."""
    window = cfg.processor.batching_window_seconds or 1
    per_stream = workload.messages_per_second / batch_streams(workload, cfg, shards)
    return max(1.0, min(float(cfg.processor.batch_size), per_stream * window,
                        LAMBDA_PAYLOAD_BYTES // math.ceil(record_bytes * 4 / 3)))


def packed_items(workload: Workload, cfg: PipelineConfig, per_invocation: float, shards: int,
                 seconds: float) -> float:
    """Packed items written in ``seconds`` (anomalies apart).

    The processor packs the readings of one device, sensor and pack window that arrive in one processing
    window (a batch, cut every :data:`PROCESSOR_WINDOW_READINGS` readings) into one item. A processing window
    spanning ``I`` seconds of its batch stream's traffic cuts each device-sensor series into ``1 + I / W``
    pieces on average (``W`` the pack window), so a series makes ``1 / I + 1 / W`` items a second, never more
    than it has readings.
    """
    _, window = storage_layout(cfg)
    streams = batch_streams(workload, cfg, shards)
    readings_per_stream = workload.readings_per_second / streams
    chunk = min(per_invocation * workload.readings_per_message, PROCESSOR_WINDOW_READINGS)
    interval = chunk / readings_per_stream
    per_series = min(1 / interval + 1 / window, workload.rate_hz)
    return workload.devices * workload.sensors * seconds * per_series


def dynamodb_item_size(item: Mapping[str, Any]) -> int:
    """Bytes of a DynamoDB item in the low-level format (``{"name": {"S": "..."}}``), as DynamoDB sizes it:
    attribute names plus values; strings and binary by length, a number about 1 byte per 2 significant digits
    plus 1, booleans and nulls 1 byte, lists and maps 3 bytes plus their elements (and their keys)."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, data), = value.items()
    if kind == "S":
        return len(str(data).encode("utf-8"))
    if kind == "B":
        return len(data)
    if kind == "N":
        digits = str(data).lstrip("-").replace(".", "").split("e")[0].split("E")[0].strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: member}) for member in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(member) for member in data)
    if kind == "M":
        return 3 + sum(1 + len(key.encode("utf-8")) + _value_size(member) for key, member in data.items())
    raise ValueError(f"not a DynamoDB attribute value: {value!r}")


def write_units(item_bytes: float) -> int:
    """DynamoDB write units of one item: 1 per KB, rounded up."""
    return max(1, math.ceil(item_bytes / DYNAMODB_WRITE_UNIT_BYTES))


@dataclass(frozen=True)
class Units:
    """A billed quantity before pricing: the price key (``service.item``), units, and a note."""

    key: str
    units: float
    note: str = ""
    per_reading: bool = True


def billable_units(workload: Workload, cfg: PipelineConfig, assumptions: Assumptions = DEFAULT_ASSUMPTIONS, *,
                   alarms: int = 0, seconds: float = MONTH_SECONDS) -> tuple[tuple[Units, ...], Shape]:
    """What ``seconds`` of ``workload`` on ``cfg`` is billed for, by price key (a month unless told).

    ``per_reading`` is False for what is billed by time or count whatever the traffic (shard and stream
    hours, metrics, alarms): ``bench-cost`` compares only the others with what it counted.
    """
    s = shape(workload, cfg, assumptions, alarms=alarms, seconds=seconds)
    layout, window = storage_layout(cfg)
    hours = seconds / 3600
    out: list[Units] = []

    def add(key: str, units: float, note: str = "", per_reading: bool = True) -> None:
        out.append(Units(key, units, note, per_reading))

    iot_units = s.messages * math.ceil(s.message_bytes / IOT_METER_BYTES)
    add("iot.connection_minutes", workload.devices * seconds / 60, "every device connected all the time",
        per_reading=False)
    if cfg.ingest.basic_ingest:
        add("iot.messages", 0, "Basic Ingest: no messaging charge")
    else:
        add("iot.messages", iot_units)
    add("iot.rules_triggered", iot_units)
    add("iot.actions", iot_units, "one Kinesis action per message")

    if cfg.stream.mode == "PROVISIONED":
        add("kinesis.shard_hours", s.shards * hours, per_reading=False)
        add("kinesis.put_payload_units", s.messages * math.ceil(s.record_bytes / KINESIS_PUT_UNIT_BYTES))
        if cfg.stream.retention_hours > 24:
            add("kinesis.extended_retention_shard_hours", s.shards * hours,
                f"retention {cfg.stream.retention_hours} h", per_reading=False)
    else:
        rounded = s.messages * math.ceil(s.record_bytes / KINESIS_ON_DEMAND_ROUNDING_BYTES) \
            * KINESIS_ON_DEMAND_ROUNDING_BYTES
        add("kinesis.on_demand_stream_hours", hours, per_reading=False)
        add("kinesis.on_demand_data_in_gb", rounded / GB, "records rounded up to 1 KB")
        add("kinesis.on_demand_data_out_gb", s.messages * s.record_bytes / GB, "one consumer: the processor")
        if cfg.stream.retention_hours > 24:
            held = rounded / GB * (cfg.stream.retention_hours - 24) / MONTH_HOURS
            add("kinesis.on_demand_extended_retention_gb_months", held, f"retention {cfg.stream.retention_hours} h")

    add("lambda.requests", s.invocations, f"{s.records_per_invocation:.0f} records per batch")
    memory_gb = cfg.processor.memory_mb / 1024
    add(f"lambda.gb_seconds_{cfg.processor.architecture}", s.invocation_seconds * memory_gb,
        f"{cfg.processor.memory_mb} MB, {cfg.processor.architecture}")

    reading_bytes = assumptions.value("reading_item_bytes")
    anomaly_units = s.anomaly_items * write_units(reading_bytes)
    if layout == "packed":
        packed = s.items - s.anomaly_items
        units = packed * write_units(s.item_bytes) + anomaly_units * 2
        note = (f"packed, {window} s windows: {packed:,.0f} items of {s.item_bytes:,.0f} B and "
                f"{s.anomaly_items:,.0f} anomaly items (table and index)")
        stored = (packed * (s.item_bytes + DYNAMODB_INDEX_OVERHEAD_BYTES)
                  + 2 * s.anomaly_items * (reading_bytes + DYNAMODB_INDEX_OVERHEAD_BYTES))
    else:
        units = s.items * write_units(s.item_bytes) + anomaly_units
        note = f"an item per reading of {s.item_bytes:,.0f} B; anomalies also in the index"
        stored = (s.items + s.anomaly_items) * (s.item_bytes + DYNAMODB_INDEX_OVERHEAD_BYTES)
    add("dynamodb.write_request_units", units, note)
    table_gb_months = dynamodb_storage_gb_months(stored, cfg.storage.ttl_days)
    add("dynamodb.storage_gb_months", table_gb_months, f"held {cfg.storage.ttl_days} days (TTL)")
    add("dynamodb.pitr_gb_months", table_gb_months, "point-in-time recovery: the table's size, as stored")

    out.extend(detector_state_units(workload, cfg, s, episodes_per_month(workload, cfg, assumptions, seconds), seconds))
    add("s3.put_requests", s.invocations, "one raw-archive object per batch")
    retention = cfg.storage.archive_retention_days
    add("s3.storage_gb_months", archive_gb_months(s.archive_bytes, retention),
        f"gzip, S3 Standard, expired after {retention} days")

    if cfg.fleet.device_defender_audit:
        add("iot.device_defender_audit_devices", workload.devices * seconds / MONTH_SECONDS,
            "Device Defender audit: every device's certificate is active in the month", per_reading=False)
    add("kms.key_months", CUSTOMER_MANAGED_KEYS * seconds / MONTH_SECONDS, "the pipeline key (alarm topic, logs)",
        per_reading=False)
    if cfg.analytics.enabled:
        queries = assumptions.value("athena_queries_per_month") * seconds / MONTH_SECONDS
        days = seconds / 86400
        scanned = max(s.archive_bytes / days, ATHENA_MIN_SCAN_BYTES)
        objects = s.invocations / days
        add("athena.data_scanned_tb", queries * scanned / 1024 ** 4,
            f"{queries:g} queries, each over a day of archive", per_reading=False)
        add("s3.get_requests", queries * objects, "Athena reads each archive object of the day", per_reading=False)
        add("s3.list_requests", queries * 24 * max(1.0, objects / 24 / S3_LIST_PAGE_KEYS),
            "Athena lists each hour partition", per_reading=False)

    add("cloudwatch.log_ingestion_gb", s.log_bytes / GB)
    add("cloudwatch.custom_metrics", s.custom_metrics * seconds / MONTH_SECONDS,
        f"EMF: {METRICS_BY_ENVIRONMENT} + {METRICS_BY_SENSOR_TYPE} per sensor type", per_reading=False)
    if alarms:
        add("cloudwatch.alarms", alarms * seconds / MONTH_SECONDS, "alarms in the rendered template",
            per_reading=False)
    out.extend(episode_notification_units(workload, cfg, assumptions, seconds))
    return tuple(out), s


def episode_notification_units(workload: Workload, cfg: PipelineConfig, assumptions: Assumptions,
                               seconds: float) -> tuple[Units, ...]:
    """One SNS publish per anomaly episode of a series (docs/contract.md 12) and one e-mail per publish (the
    AlarmEmail subscription); by episode, not by reading. Nothing when no sensor type notifies."""
    episodes = episodes_per_month(workload, cfg, assumptions, seconds)
    if not episodes:
        return ()
    series = workload.devices * workload.sensors
    note = f"{assumptions.value('episodes_per_series_month'):g} episode a series a month, {series:,} series"
    return (Units("sns.publishes", episodes, "anomaly notifications: " + note, per_reading=False),
            Units("sns.email_deliveries", episodes, "one e-mail subscription (AlarmEmail)", per_reading=False))


def episodes_per_month(workload: Workload, cfg: PipelineConfig, assumptions: Assumptions, seconds: float) -> float:
    """Anomaly episodes notified in ``seconds`` (0 when no sensor type notifies)."""
    if all(t.detector == "off" or not t.episode_quiet for t in cfg.thresholds.values()):
        return 0.0
    return workload.devices * workload.sensors * assumptions.value("episodes_per_series_month") \
        * seconds / MONTH_SECONDS


def archive_gb_months(archive_bytes: float, retention_days: int) -> float:
    """GB-months of a month's ``archive_bytes`` once the archive holds ``retention_days`` of them (steady state)."""
    return archive_bytes / GB * retention_days / DAYS_PER_MONTH


def detector_state_bytes(sensors: int, *, episodes: bool = False) -> int:
    """Bytes of a device's detector state item with ``sensors`` series (docs/contract.md 12), as the processor
    builds it: 56-digit sequence numbers, and states whose doubles take their longest digits; with ``episodes``,
    every series in an open anomaly episode."""
    from iotpipe.archive import load_processor

    index = load_processor()
    # the interval is whole milliseconds, the peak and the tail multiples of 1/64 (the contract's rounding), and a
    # double of 17 digits is stored as its 11 base64url characters
    state = index.DetectorState(123_456, 1_767_225_600_000, -12345.678901234567, 1234.5678901234567,
                                -12345.678901234567, 1000.0, 12, 12.34375, -12345.678901234567, 12, 1234, 12.34375,
                                98)
    states = {f"sensor{n:05d}": state for n in range(sensors)}  # a sensor type name of 11 characters
    seq = "4" * 56
    return dynamodb_item_size(index.state_item("device-000001", seq, states, seq, states,
                                               {name: 1_767_225_600_000 for name in states} if episodes else None))


def detector_state_units(workload: Workload, cfg: PipelineConfig, s: Shape, episodes: float = 0.0,
                         seconds: float = MONTH_SECONDS) -> tuple[Units, ...]:
    """The detector's state (docs/contract.md 12): per batch, each device in it read once (BatchGetItem,
    strongly consistent: 1 read unit per 4 KB) and written once (BatchWriteItem); the items themselves (one a
    device) stay under a megabyte, so their storage is left out. Nothing when no sensor type has a detector."""
    if all(t.detector == "off" for t in cfg.thresholds.values()):
        return ()
    streams = batch_streams(workload, cfg, s.shards)
    devices_per_batch = min(workload.devices / streams, s.records_per_invocation)
    visits = s.invocations * devices_per_batch
    item_bytes = detector_state_bytes(workload.sensors)
    note = f"{devices_per_batch:,.1f} devices a batch, state items of {item_bytes:,} B"
    # While an episode is open (episode_quiet after its newest anomaly) its device's state item also holds its
    # timestamp (docs/contract.md 12): those writes cost the larger item's write units.
    quiet_s = max((t.episode_quiet for t in cfg.thresholds.values() if t.detector != "off"), default=0)
    visits_per_device = visits / workload.devices / seconds if workload.devices else 0.0
    extra = write_units(detector_state_bytes(workload.sensors, episodes=True)) - write_units(item_bytes)
    open_writes = min(episodes * quiet_s * visits_per_device, visits) * extra
    if open_writes:
        note += f"; {open_writes:,.0f} more units while an anomaly episode is open"
    return (Units("dynamodb.read_request_units", visits * math.ceil(item_bytes / 4096), "detector state: " + note),
            Units("dynamodb.state_write_request_units", visits * write_units(item_bytes) + open_writes, note))


def dynamodb_storage_gb_months(stored_bytes: float, ttl_days: int) -> float:
    """GB-months of ``stored_bytes`` (item sizes plus index overhead) kept until the TTL deletes them."""
    return stored_bytes / GB * ttl_days / DAYS_PER_MONTH


def price_units(units: Sequence[Units], table: PriceTable) -> tuple[LineItem, ...]:
    """Line items: each quantity at its price in ``table``."""
    lines = []
    for quantity in units:
        price = table.price(quantity.key)
        lines.append(LineItem(price.service, quantity.key.partition(".")[2], quantity.units, price.unit,
                              price.unit_usd, quantity.units * price.unit_usd, quantity.note))
    return tuple(lines)


def estimate(workload: Workload, cfg: PipelineConfig, *, prices: PriceTable | None = None,
             assumptions: Assumptions = DEFAULT_ASSUMPTIONS, alarms: int = 0) -> Estimate:
    """The month's cost of ``workload`` on ``cfg``'s rendered configuration, line by line."""
    validate_workload(workload, assumptions)
    table = apply_overrides(prices or load_price_table(), cfg.price_overrides, f"env.{cfg.env}.prices")
    units, s = billable_units(workload, cfg, assumptions, alarms=alarms)
    lines = price_units(units, table)
    layout, window = storage_layout(cfg)
    settings = (
        ("ingest", "Basic Ingest" if cfg.ingest.basic_ingest else f"MQTT topic {contract.device_topic('<id>')}"),
        ("stream", f"{cfg.stream.mode}, {s.shards} shard(s), retention {cfg.stream.retention_hours} h"),
        ("processor", f"{cfg.processor.architecture}, {cfg.processor.memory_mb} MB, batch {cfg.processor.batch_size},"
                      f" window {cfg.processor.batching_window_seconds} s"),
        ("storage", f"{layout}" + (f" ({window} s windows)" if layout == "packed" else "")
                    + f", TTL {cfg.storage.ttl_days} days"),
    )
    warnings = []
    if cfg.stream.mode == "PROVISIONED" and s.shards > cfg.stream.shard_count:
        warnings.append(f"stream.shard_count {cfg.stream.shard_count} cannot take {workload.messages_per_second:,.0f} "
                        f"records/s of {s.record_bytes:,.0f} bytes (a shard takes 1,000 records/s or 1 MB/s): priced "
                        f"with the {s.shards} shards it needs; set stream.shard_count = {s.shards} or more")
    return Estimate(workload=workload, env=cfg.env, warnings=tuple(warnings), layout=layout,
                    basic_ingest=cfg.ingest.basic_ingest, line_items=lines, shape=s, assumptions=assumptions,
                    prices=table, settings=settings)


def to_json(est: Estimate) -> dict[str, Any]:
    """The estimate as a JSON-ready document (``iotpipe cost --output json``)."""
    return {
        "env": est.env,
        "workload": {"devices": est.workload.devices, "sensors": est.workload.sensors,
                     "rate_hz": est.workload.rate_hz, "readings_per_message": est.workload.readings_per_message},
        "readings_per_month": est.readings_per_month,
        "monthly_total_usd": round(est.monthly_total_usd, 2),
        "per_million_readings_usd": round(est.per_million_readings_usd, 4),
        "by_service_usd": {name: round(usd, 2) for name, usd in est.by_service().items()},
        "line_items": [{"service": i.service, "item": i.item, "units": i.units, "unit": i.unit,
                        "unit_price_usd": i.unit_price_usd, "usd": round(i.usd, 4), "note": i.note}
                       for i in est.line_items],
        "configuration": dict(est.settings),
        "warnings": list(est.warnings),
        "assumptions": [{"name": a.name, "value": a.value, "unit": a.unit, "source": a.source}
                        for a in est.assumptions.items],
        "prices": {"region": est.prices.region, "as_of": est.prices.as_of, "currency": est.prices.currency,
                   "sources": dict(est.prices.sources),
                   "overridden": sorted(f"{p.service}.{p.item}" for p in est.prices.prices if p.overridden)},
    }
