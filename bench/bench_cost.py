"""Cost benchmark (``make bench-cost``; not a test): the billable units a run of the processor actually uses,
next to what ``iotpipe cost`` predicts for the same run, and whether they agree within 10 %.

It simulates devices (``--devices`` x ``--sensors`` at ``--rate`` Hz, ``--readings-per-message`` each, the env's
Basic Ingest topic) up to ``--readings`` readings, adds what the topic rule adds, spreads the records over the
env's shards and parallelization slots by partition key, cuts them into batches as the event source mapping does
(``batch_size`` records or the batching window), and drives handler/python/index.py with the env's own
environment variables (layout, pack window, TTL, thresholds) against a moto server. It counts, from what was
actually sent: IoT messages, rules and actions (5 KB units), Kinesis PUT payload units (25 KB) or on-demand KB,
invocations and their duration, DynamoDB write units per item from the BatchWriteItem/PutItem request bodies
(1 per KB, rounded up, per item, anomaly items once more for the sparse index), S3 PUTs and bytes, and log bytes
(the processor's stdout plus Lambda's START/END/REPORT lines). Then it prices both sides with the same table.

Durations are the processor's against moto on this machine (an upper bound of Lambda's).

Usage: python bench/bench_cost.py [--env prod] [--readings 100000] [--devices 100] [--sensors 3] [--rate 1]
                                  [--readings-per-message N] [--tolerance 0.10]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_support import STREAM_ARN, clients, create_resources, load_handler, make_runtime  # noqa: E402

from iotpipe import cost  # noqa: E402
from iotpipe.config import PipelineConfig, Threshold, load_config  # noqa: E402
from iotpipe.devices import basic_ingest_rule, topic_for  # noqa: E402
from iotpipe.groups.processor import processor_environment  # noqa: E402
from iotpipe.groups.storage import build_storage  # noqa: E402
from iotpipe.metering import (  # noqa: E402
    Comparison,
    Counts,
    batches,
    compare,
    measured_units,
    put_object_hook,
    stream_of,
    write_request_hook,
)

# Lambda writes START, END and REPORT lines per invocation (about 280 bytes with its request id and figures).
PLATFORM_LOG_BYTES = 280
START_OFFSET_MS = 17_321
ARRIVAL_DELAY_MS = 50  # from the device's clock to IoT Core's receivedAt
SEQUENCE_DIGITS = 56  # Kinesis sequence numbers as Lambda delivers them
TOLERANCE = 0.10
# Durations depend on this machine and moto's speed, not on the design: shown, not judged.
INFORMATIONAL = frozenset({"lambda.gb_seconds_arm64", "lambda.gb_seconds_x86_64"})
SMALL_SHARE = 0.01


@dataclass(frozen=True)
class Message:
    """One MQTT message: when it arrives (s after the start), from whom, on which topic, and its payload."""

    at_s: float
    device: str
    topic: str
    payload: Mapping[str, Any]
    readings: int

    def body(self) -> bytes:
        """The payload as compact JSON."""
        return json.dumps(self.payload, separators=(",", ":")).encode()


def start_of_run() -> int:
    """The first reading's time: an hour ago, at a fixed offset from a minute boundary, so that runs are
    repeatable (where pack windows cut the traffic does not depend on the clock) and no window is aligned."""
    minute = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    return minute + START_OFFSET_MS


def sensor_values(thresholds: Mapping[str, Threshold], sensors: int) -> list[tuple[str, float, float]]:
    """``(sensor, normal value, anomalous value)`` for the first ``sensors`` configured sensor types."""
    if sensors > len(thresholds):
        raise SystemExit(f"--sensors {sensors}: the env configures only {len(thresholds)} sensor types")
    out = []
    for name, threshold in list(thresholds.items())[:sensors]:
        lo = threshold.min if threshold.min is not None else (threshold.max or 0) - 10
        hi = threshold.max if threshold.max is not None else lo + 10
        out.append((name, round((lo + hi) / 2, 2), round(hi + abs(hi - lo) / 2 + 1, 2)))
    return out


def messages(workload: cost.Workload, cfg: PipelineConfig, readings: int, anomaly_rate: float) -> Iterator[Message]:
    """The devices' messages, in arrival order, until ``readings`` readings: one reading per message (single
    form), one tick of every sensor (multi form) or several ticks (samples form)."""
    per_message, sensors = workload.readings_per_message, workload.sensors
    if per_message > 1 and per_message % sensors:
        raise SystemExit(f"--readings-per-message {per_message}: use 1 or a multiple of --sensors ({sensors})")
    values = sensor_values(cfg.thresholds, sensors)
    rule = basic_ingest_rule(cfg)
    every = round(1 / anomaly_rate) if anomaly_rate > 0 else 0
    rng = random.Random(15)  # values vary as real signals do: the archive's compression depends on it
    ticks_per_message = max(1, per_message // sensors)
    tick_s = 1 / workload.rate_hz
    start_ms = start_of_run()
    count = 0
    tick = 0
    while count < readings:
        for device_index in range(workload.devices):
            device = f"press-{device_index:04d}"
            topic = topic_for(device, rule)
            # devices are not in step: each sends at its own phase of the message interval
            phase = device_index / workload.devices * ticks_per_message * tick_s
            if per_message == 1:
                for sensor, normal, high in values:
                    count += 1
                    value = high if every and count % every == 0 else round(normal + rng.uniform(-5, 5), 2)
                    yield Message(tick * tick_s + phase, device, topic, {"deviceId": device, "sensorType": sensor,
                                  "value": value, "timestamp": start_ms + round(tick * tick_s * 1000)}, 1)
                continue
            samples = []
            for offset in range(ticks_per_message):
                at_ms = start_ms + round((tick + offset) * tick_s * 1000)
                row = {}
                for sensor, normal, high in values:
                    count += 1
                    row[sensor] = high if every and count % every == 0 else round(normal + rng.uniform(-5, 5), 2)
                samples.append({"timestamp": at_ms, "readings": row})
            at = (tick + ticks_per_message - 1) * tick_s + phase
            payload: dict[str, Any] = ({"deviceId": device, **samples[0]} if ticks_per_message == 1
                                       else {"deviceId": device, "samples": samples})
            yield Message(at, device, topic, payload, per_message)
            if count >= readings:
                return
        tick += ticks_per_message


def rule_record(message: Message, arrived_ms: int) -> dict[str, Any]:
    """The stream record the topic rule makes: the payload plus receivedAt and topicDeviceId."""
    return {**message.payload, "receivedAt": arrived_ms, "topicDeviceId": message.device}


def kinesis_event(records: Sequence[Mapping[str, Any]], shard_id: str) -> dict[str, Any]:
    """A Lambda Kinesis event of the records as the rule wrote them (compact JSON, as counted)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": spec["partitionKey"],
                    "sequenceNumber": spec["sequenceNumber"], "data": base64.b64encode(spec["data"]).decode(),
                    "approximateArrivalTimestamp": spec["arrivedAt"] / 1000},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard_id}:{spec['sequenceNumber']}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/processor",
        "awsRegion": "us-east-1", "eventSourceARN": STREAM_ARN,
    } for spec in records]}


def lambda_environment(cfg: PipelineConfig) -> dict[str, Any]:
    """The processor's environment variables of the env (CloudFormation references left to the harness)."""
    variables = processor_environment(cfg, build_storage(cfg.storage))
    env = {k: v for k, v in variables.items() if isinstance(v, str | int | float)}
    env["ENVIRONMENT"] = cfg.env
    return env


def run(cfg: PipelineConfig, workload: cost.Workload, readings: int, endpoint: str,
        anomaly_rate: float) -> tuple[Counts, float]:
    """Drive the processor over the workload; the counts and the simulated seconds of traffic."""
    counts = Counts()
    record_bytes = cost.payload_bytes(workload, cost.DEFAULT_ASSUMPTIONS) + cost.DEFAULT_ASSUMPTIONS.value(
        "rule_added_bytes")
    shards = cost.stream_shards(workload, cfg, record_bytes)
    streams = shards * cfg.processor.parallelization_factor
    per_stream: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    start_ms = start_of_run()
    last_at = 0.0
    for number, message in enumerate(messages(workload, cfg, readings, anomaly_rate)):
        counts.readings += message.readings
        arrived_ms = start_ms + round(message.at_s * 1000) + ARRIVAL_DELAY_MS
        data = json.dumps(rule_record(message, arrived_ms), separators=(",", ":"))
        counts.on_message(len(message.body()) + len(message.topic.encode()), len(data.encode()))
        counts.payload_bytes += len(message.body())
        slot = stream_of(message.device, streams)
        shard = slot // cfg.processor.parallelization_factor
        spec = {"data": data.encode(), "partitionKey": message.device,
                "sequenceNumber": f"4959{shard:04d}{number:0{SEQUENCE_DIGITS - 8}d}", "arrivedAt": arrived_ms}
        per_stream.setdefault(slot, []).append((message.at_s, spec))
        last_at = max(last_at, message.at_s)

    index = load_handler()
    s3, dynamodb = clients(endpoint, pool=index.POOL_SIZE)
    create_resources(s3, dynamodb)
    dynamodb.meta.events.register("provide-client-params.dynamodb.*", write_request_hook(counts))
    s3.meta.events.register("provide-client-params.s3.*", put_object_hook(counts))
    lines: list[str] = []
    runtime = make_runtime(index, lambda_environment(cfg), s3, dynamodb, emit=lines.append)
    window_s = cfg.processor.batching_window_seconds or 1
    events = []
    for slot, records in sorted(per_stream.items()):
        shard_id = f"shardId-{slot // cfg.processor.parallelization_factor:012d}"
        records.sort(key=lambda pair: pair[0])
        arrivals = [at for at, _ in records]
        for start, end in batches(arrivals, cfg.processor.batch_size, window_s):
            events.append((arrivals[start], kinesis_event([spec for _, spec in records[start:end]], shard_id)))
    for _, event in sorted(events, key=lambda pair: pair[0]):
        lines.clear()
        started = time.perf_counter()
        response = index.process(event, None, runtime)
        counts.billed_ms += math.ceil((time.perf_counter() - started) * 1000)
        counts.invocations += 1
        counts.failures += len(response["batchItemFailures"])
        counts.log_bytes += PLATFORM_LOG_BYTES + sum(len(line.encode()) + 1 for line in lines)
    runtime.pool.shutdown()
    seconds = workload.devices * workload.sensors and counts.readings / workload.readings_per_second
    return counts, seconds


def judged(row: Comparison, total_usd: float) -> bool:
    """Whether a line counts for the verdict: not a duration, and at least 1 % of the predicted total (10 % of
    a smaller line is under 0.1 % of the total)."""
    return row.key not in INFORMATIONAL and row.predicted_usd >= SMALL_SHARE * total_usd


def verdict_of(row: Comparison, tolerance: float, total_usd: float) -> str:
    """``met``, ``NOT met``, or why the line is shown but not judged."""
    if row.key in INFORMATIONAL:
        return "(shown only: moto on this machine)"
    mark = "met" if row.agrees(tolerance) else "NOT met"
    return mark if judged(row, total_usd) else f"({mark}; under 1 % of the total, not judged)"


def observed_assumptions(counts: Counts) -> dict[str, float]:
    """What the run measured of the model's assumptions (to update DEFAULT_ASSUMPTIONS with)."""
    raw_lines = counts.messages or 1
    observed = {
        "payload bytes": counts.payload_bytes / raw_lines,
        "topic bytes": (counts.message_bytes - counts.payload_bytes) / raw_lines,
        "rule_added_bytes": (counts.record_bytes - counts.payload_bytes) / raw_lines,
        "item bytes (mean)": counts.item_bytes / max(counts.items, 1),
        "archive_line_overhead_bytes": (counts.raw_line_bytes - counts.record_bytes) / raw_lines,
        "compression_ratio": counts.raw_line_bytes / max(counts.archive_bytes, 1),
        "lambda ms per invocation": counts.billed_ms / max(counts.invocations, 1),
        "log_bytes_per_invocation": counts.log_bytes / max(counts.invocations, 1),
        "readings per item": counts.readings / max(counts.items - counts.anomaly_items, 1),
    }
    if counts.packed_items:
        observed["packed items"] = counts.packed_items
        observed["packed item bytes (mean)"] = counts.packed_bytes / counts.packed_items
    return observed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print measured next to predicted; exit 1 when they disagree."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="prod")
    parser.add_argument("--config", default=str(REPO / "iotpipe.toml"))
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--readings-per-message", type=int, help="default: the env's ingest.readings_per_message")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--endpoint", help="an already running moto server (default: start one)")
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    cfg = load_config(args.config, args.env)
    assumptions = cost.DEFAULT_ASSUMPTIONS
    workload = cost.validate_workload(cost.Workload(args.devices, args.sensors, args.rate,
                                                    args.readings_per_message or cfg.ingest.readings_per_message))
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        from bench_processor import start_moto_server

        server, endpoint = start_moto_server()
    try:
        started = time.perf_counter()
        counts, seconds = run(cfg, workload, args.readings, endpoint, assumptions.value("anomaly_rate"))
        elapsed = time.perf_counter() - started
    finally:
        if server is not None:
            server.stdin.close()  # type: ignore[union-attr]
            server.wait(timeout=30)
    predicted, _ = cost.billable_units(workload, cfg, assumptions, seconds=seconds)
    table = cost.apply_overrides(cost.load_price_table(), cfg.price_overrides)
    rows = compare(measured_units(counts, cfg), predicted, table)
    layout, window = cost.storage_layout(cfg)
    print(f"bench-cost, env {cfg.env} ({layout}{f', {window} s windows' if layout == 'packed' else ''}, "
          f"{'Basic Ingest' if cfg.ingest.basic_ingest else 'MQTT topics'}): {counts.readings:,} readings from "
          f"{workload.devices} devices x {workload.sensors} sensors x {workload.rate_hz:g} Hz, "
          f"{workload.readings_per_message} per message = {seconds:,.0f} s of traffic; {counts.invocations} "
          f"invocations, {counts.failures} failed records, {elapsed:.1f} s")
    print(f"{'price key':<48} {'measured':>14} {'predicted':>14} {'measured $':>12} {'predicted $':>12} "
          f"{'ratio':>7}  agree")
    predicted_total = sum(r.predicted_usd for r in rows)
    for row in rows:
        ratio = row.predicted / row.measured if row.measured else float("nan") if row.predicted else 1.0
        print(f"{row.key:<48} {row.measured:>14.6g} {row.predicted:>14.6g} {row.measured_usd:>12.6f} "
              f"{row.predicted_usd:>12.6f} {ratio:>7.3f}  {verdict_of(row, args.tolerance, predicted_total)}")
    total = Comparison("total (per-reading items)", sum(r.measured_usd for r in rows),
                       sum(r.predicted_usd for r in rows), sum(r.measured_usd for r in rows),
                       sum(r.predicted_usd for r in rows))
    per_million = 1e6 / max(counts.readings, 1)
    print(f"{total.key:<48} {'':>14} {'':>14} {total.measured_usd:>12.6f} {total.predicted_usd:>12.6f} "
          f"{total.predicted_usd / max(total.measured_usd, 1e-12):>7.3f}  "
          f"{'met' if total.agrees(args.tolerance) else 'NOT met'}")
    print(f"per million readings (per-reading items): measured {total.measured_usd * per_million:.4f} USD, "
          f"predicted {total.predicted_usd * per_million:.4f} USD")
    print("observed: " + "; ".join(f"{name} {value:,.2f}" for name, value in observed_assumptions(counts).items()))
    print("calls: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.calls.items())))
    verdict = total.agrees(args.tolerance) and all(row.agrees(args.tolerance) for row in rows
                                                   if judged(row, total.predicted_usd))
    print(f"agreement within {args.tolerance:.0%}: {'met' if verdict else 'NOT met'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
