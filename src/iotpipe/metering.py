"""Metering: the billable units a run actually used, counted from what was sent (``make bench-cost``).

Botocore hooks read the DynamoDB write requests and S3 PUTs the processor makes (``provide-client-params``, so
what is counted is what was sent: 1 write unit per KB per item, rounded up, an anomaly item once more for the
sparse index); :class:`Counts` adds the messages and stream records; :func:`batches` cuts a stream's records as
Lambda's event source mapping does; :func:`measured_units` names the counts as :func:`iotpipe.cost.billable_units`
names its predictions, and :func:`compare` puts them side by side.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotpipe import contract, cost
from iotpipe.config import PipelineConfig


@dataclass
class Counts:
    """Billable units counted on the run."""

    readings: int = 0
    messages: int = 0
    iot_units: int = 0
    kinesis_put_units: int = 0
    kinesis_kb: int = 0
    kinesis_bytes: int = 0
    invocations: int = 0
    billed_ms: int = 0
    items: int = 0
    item_bytes: int = 0
    write_units: int = 0
    stored_bytes: int = 0
    anomaly_items: int = 0
    packed_items: int = 0
    state_write_units: int = 0  # the detector's state items (docs/contract.md 12), priced on their own line
    state_read_units: int = 0
    packed_bytes: int = 0
    payload_bytes: int = 0
    s3_puts: int = 0
    s3_bytes: int = 0
    archive_bytes: int = 0
    raw_line_bytes: int = 0
    log_bytes: int = 0
    message_bytes: int = 0
    record_bytes: int = 0
    failures: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def on_message(self, message_bytes: int, record_bytes: int) -> None:
        """A device message (payload and topic bytes) and the record the rule puts on the stream."""
        self.messages += 1
        self.message_bytes += message_bytes
        self.iot_units += math.ceil(message_bytes / cost.IOT_METER_BYTES)
        self.record_bytes += record_bytes
        self.kinesis_bytes += record_bytes
        self.kinesis_put_units += math.ceil(record_bytes / cost.KINESIS_PUT_UNIT_BYTES)
        self.kinesis_kb += math.ceil(record_bytes / cost.KINESIS_ON_DEMAND_ROUNDING_BYTES)

    def on_items(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Items in a write request: write units each on its own size, once more for the sparse index."""
        for item in items:
            size = cost.dynamodb_item_size(item)
            units = cost.write_units(size)
            if item.get("sk", {}).get("S") == STATE_SORT_KEY:
                self.state_write_units += units
                continue
            copies = 2 if "anomalyDay" in item else 1
            self.items += 1
            self.item_bytes += size
            if "readings" in item:
                self.packed_items += 1
                self.packed_bytes += size
            self.anomaly_items += copies - 1
            self.write_units += units * copies
            self.stored_bytes += (size + cost.DYNAMODB_INDEX_OVERHEAD_BYTES) * copies

    def on_put_object(self, key: str, body: bytes) -> None:
        """An S3 PUT."""
        self.s3_puts += 1
        self.s3_bytes += len(body)
        if key.startswith(contract.ARCHIVE_PREFIXES[0]):
            self.archive_bytes += len(body)
            self.raw_line_bytes += len(gzip.decompress(body))

    def on_call(self, name: str) -> None:
        """An API call by the processor."""
        self.calls[name] = self.calls.get(name, 0) + 1


STATE_SORT_KEY = "#detector"  # the sort key of a device's detector state item (docs/contract.md 12)


def write_request_hook(counts: Counts) -> Any:
    """A botocore ``provide-client-params`` hook counting the items of BatchWriteItem and PutItem."""
    def hook(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        counts.on_call(model.name)
        if model.name == "BatchWriteItem":
            counts.on_items([request["PutRequest"]["Item"] for requests in params["RequestItems"].values()
                             for request in requests if "PutRequest" in request])
        elif model.name == "PutItem":
            counts.on_items([params["Item"]])
        elif model.name == "BatchGetItem":  # the detector's state: one read unit per item under 4 KB
            counts.state_read_units += sum(len(spec["Keys"]) for spec in params["RequestItems"].values())
    return hook


def put_object_hook(counts: Counts) -> Any:
    """A botocore ``provide-client-params`` hook counting S3 PutObject calls and their body bytes."""
    def hook(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        counts.on_call(model.name)
        if model.name == "PutObject":
            body = params.get("Body", b"")
            counts.on_put_object(str(params["Key"]), body if isinstance(body, bytes) else bytes(body))
    return hook


def stream_of(partition_key: str, streams: int) -> int:
    """The batch stream (shard x parallelization slot) a partition key hashes to."""
    return int(hashlib.md5(partition_key.encode()).hexdigest(), 16) % streams


def batches(arrivals: Sequence[float], batch_size: int, window_s: float) -> list[tuple[int, int]]:
    """``(start, end)`` index ranges of one stream's records cut as the event source mapping does: a batch
    closes at ``batch_size`` records or ``window_s`` after its first record arrived."""
    out, start = [], 0
    while start < len(arrivals):
        end = start + 1
        while end < len(arrivals) and end - start < batch_size and arrivals[end] < arrivals[start] + window_s:
            end += 1
        out.append((start, end))
        start = end
    return out


def measured_units(counts: Counts, cfg: PipelineConfig) -> dict[str, float]:
    """The counted units by price key, as :func:`iotpipe.cost.billable_units` names them."""
    units: dict[str, float] = {
        "iot.messages": 0 if cfg.ingest.basic_ingest else counts.iot_units,
        "iot.rules_triggered": counts.iot_units,
        "iot.actions": counts.iot_units,
        "lambda.requests": counts.invocations,
        f"lambda.gb_seconds_{cfg.processor.architecture}": counts.billed_ms / 1000 * cfg.processor.memory_mb / 1024,
        "dynamodb.write_request_units": counts.write_units,
        "dynamodb.state_write_request_units": counts.state_write_units,
        "dynamodb.read_request_units": counts.state_read_units,
        "dynamodb.storage_gb_months": cost.dynamodb_storage_gb_months(counts.stored_bytes, cfg.storage.ttl_days),
        "dynamodb.pitr_gb_months": cost.dynamodb_storage_gb_months(counts.stored_bytes, cfg.storage.ttl_days),
        "s3.put_requests": counts.s3_puts,
        "s3.storage_gb_months": cost.archive_gb_months(counts.archive_bytes, cfg.storage.archive_retention_days),
        "cloudwatch.log_ingestion_gb": counts.log_bytes / cost.GB,
    }
    if cfg.stream.mode == "PROVISIONED":
        units["kinesis.put_payload_units"] = counts.kinesis_put_units
    else:
        data_in = counts.kinesis_kb * cost.KINESIS_ON_DEMAND_ROUNDING_BYTES / cost.GB
        units["kinesis.on_demand_data_in_gb"] = data_in
        units["kinesis.on_demand_data_out_gb"] = counts.kinesis_bytes / cost.GB
        if cfg.stream.retention_hours > 24:
            units["kinesis.on_demand_extended_retention_gb_months"] = \
                data_in * (cfg.stream.retention_hours - 24) / cost.MONTH_HOURS
    return units


@dataclass(frozen=True)
class Comparison:
    """One price key: measured and predicted units and USD, and whether they agree."""

    key: str
    measured: float
    predicted: float
    measured_usd: float
    predicted_usd: float

    def agrees(self, tolerance: float) -> bool:
        """Within ``tolerance`` of each other (relative to the measured value; both zero agrees)."""
        if self.measured == self.predicted:
            return True
        return abs(self.predicted - self.measured) <= tolerance * max(abs(self.measured), 1e-12)


def compare(measured: Mapping[str, float], predicted: Sequence[cost.Units], table: cost.PriceTable
            ) -> list[Comparison]:
    """Measured next to predicted for every per-reading price key."""
    out = []
    for quantity in predicted:
        if not quantity.per_reading:
            continue
        unit_usd = table.price(quantity.key).unit_usd
        got = measured.get(quantity.key, 0.0)
        out.append(Comparison(quantity.key, got, quantity.units, got * unit_usd, quantity.units * unit_usd))
    return out
