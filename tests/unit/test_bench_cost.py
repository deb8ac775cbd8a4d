"""The counting functions of the cost benchmark (bench/bench_cost.py) and the DynamoDB item size they use.
The benchmark itself runs with ``make bench-cost``."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_cost

from iotpipe import cost
from iotpipe.config import build_config


def test_item_size_follows_dynamodb_rules() -> None:
    # names count; "abc" 3 bytes; 71.25 = 4 significant digits -> 2 + 1; true 1; null 1
    item = {"id": {"S": "abc"}, "v": {"N": "71.25"}, "ok": {"BOOL": True}, "n": {"NULL": True}}
    assert cost.dynamodb_item_size(item) == (2 + 3) + (1 + 3) + (2 + 1) + (1 + 1)
    assert cost.dynamodb_item_size({"big": {"N": "1718000000000"}}) == 3 + 2 + 1  # "1718": zeros trimmed
    assert cost.dynamodb_item_size({"m": {"M": {"k": {"S": "x"}}}}) == 1 + 3 + 1 + 1 + 1


def test_write_units_are_one_per_kb_rounded_up_per_item() -> None:
    counts = bench_cost.Counts()
    small = {"deviceId": {"S": "d"}, "sk": {"S": "x" * 100}}
    large = {"deviceId": {"S": "d"}, "sk": {"S": "x" * 1500}}
    anomaly = {**small, "anomalyDay": {"S": "2026-11-30"}}
    counts.on_items([small, large, anomaly])
    assert counts.items == 3
    # 1 + 2 units, and the anomaly once in the table and once in the sparse index
    assert counts.write_units == 1 + 2 + 2
    assert counts.anomaly_items == 1
    sizes = [cost.dynamodb_item_size(i) for i in (small, large, anomaly)]
    assert counts.stored_bytes == sum(sizes) + sizes[2] + 4 * cost.DYNAMODB_INDEX_OVERHEAD_BYTES


def test_hooks_count_the_request_bodies() -> None:
    counts = bench_cost.Counts()
    item = {"deviceId": {"S": "d"}}
    bench_cost.write_request_hook(counts)(
        params={"RequestItems": {"t": [{"PutRequest": {"Item": item}}, {"PutRequest": {"Item": item}}]}},
        model=SimpleNamespace(name="BatchWriteItem"))
    body = gzip.compress(b'{"a":1}\n' * 10)
    bench_cost.put_object_hook(counts)(params={"Key": "raw/x.jsonl.gz", "Body": body},
                                       model=SimpleNamespace(name="PutObject"))
    assert (counts.items, counts.write_units) == (2, 2)
    assert (counts.s3_puts, counts.archive_bytes, counts.raw_line_bytes) == (1, len(body), 80)
    assert counts.calls == {"BatchWriteItem": 1, "PutObject": 1}


def test_messages_are_metered_in_5_kb_and_records_in_25_kb_and_1_kb() -> None:
    counts = bench_cost.Counts()
    counts.on_message(5 * 1024 + 1, 26 * 1024)
    assert (counts.iot_units, counts.kinesis_put_units, counts.kinesis_kb) == (2, 2, 26)


def test_batches_close_at_batch_size_or_window() -> None:
    arrivals = [0.0, 0.5, 1.0, 1.5, 6.0, 6.1, 20.0]
    # 1.5 opens a batch that 6.0 and 6.1 still join (before 6.5); 20.0 is alone
    assert bench_cost.batches(arrivals, batch_size=3, window_s=5) == [(0, 3), (3, 6), (6, 7)]
    assert bench_cost.batches([0.0, 4.0, 5.0], batch_size=10, window_s=5) == [(0, 2), (2, 3)]


def test_messages_carry_the_readings_and_the_basic_ingest_topic() -> None:
    cfg = build_config({}, "prod", {"ingest.basic_ingest": True})
    workload = cost.Workload(devices=2, sensors=3, rate_hz=1.0, readings_per_message=6)
    sent = list(bench_cost.messages(workload, cfg, 24, anomaly_rate=0.0))
    assert sum(m.readings for m in sent) == 24 and len(sent) == 4
    assert sent[0].topic == "$aws/rules/SensorDataRule_prod/sensor/press-0000/data"
    assert len(sent[0].payload["samples"]) == 2 and len(sent[0].payload["samples"][0]["readings"]) == 3
    with pytest.raises(SystemExit, match="multiple of --sensors"):
        list(bench_cost.messages(cost.Workload(1, 3, 1.0, 4), cfg, 10, anomaly_rate=0.0))


def test_comparison_agrees_within_the_tolerance_of_the_measured_value() -> None:
    assert bench_cost.Comparison("k", 100, 109, 0, 0).agrees(0.10)
    assert not bench_cost.Comparison("k", 100, 111, 0, 0).agrees(0.10)
    assert bench_cost.Comparison("k", 0, 0, 0, 0).agrees(0.10)
