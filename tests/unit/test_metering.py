"""Metering (src/iotpipe/metering.py): the counting functions of ``make bench-cost`` and the DynamoDB item
size they use."""

from __future__ import annotations

import gzip
from types import SimpleNamespace

from iotpipe import cost, metering
from iotpipe.config import build_config


def test_item_size_follows_dynamodb_rules() -> None:
    # names count; "abc" 3 bytes; 71.25 = 4 significant digits -> 2 + 1; true 1; null 1
    item = {"id": {"S": "abc"}, "v": {"N": "71.25"}, "ok": {"BOOL": True}, "n": {"NULL": True}}
    assert cost.dynamodb_item_size(item) == (2 + 3) + (1 + 3) + (2 + 1) + (1 + 1)
    assert cost.dynamodb_item_size({"big": {"N": "1718000000000"}}) == 3 + 2 + 1  # "1718": zeros trimmed
    assert cost.dynamodb_item_size({"m": {"M": {"k": {"S": "x"}}}}) == 1 + 3 + 1 + 1 + 1


def test_write_units_are_one_per_kb_rounded_up_per_item() -> None:
    counts = metering.Counts()
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
    counts = metering.Counts()
    item = {"deviceId": {"S": "d"}}
    metering.write_request_hook(counts)(
        params={"RequestItems": {"t": [{"PutRequest": {"Item": item}}, {"PutRequest": {"Item": item}}]}},
        model=SimpleNamespace(name="BatchWriteItem"))
    body = gzip.compress(b'{"a":1}\n' * 10)
    metering.put_object_hook(counts)(params={"Key": "raw/x.jsonl.gz", "Body": body},
                                       model=SimpleNamespace(name="PutObject"))
    assert (counts.items, counts.write_units) == (2, 2)
    assert (counts.s3_puts, counts.archive_bytes, counts.raw_line_bytes) == (1, len(body), 80)
    assert counts.calls == {"BatchWriteItem": 1, "PutObject": 1}


def test_messages_are_metered_in_5_kb_and_records_in_25_kb_and_1_kb() -> None:
    counts = metering.Counts()
    counts.on_message(5 * 1024 + 1, 26 * 1024)
    assert (counts.iot_units, counts.kinesis_put_units, counts.kinesis_kb) == (2, 2, 26)


def test_batches_close_at_batch_size_or_window() -> None:
    arrivals = [0.0, 0.5, 1.0, 1.5, 6.0, 6.1, 20.0]
    # 1.5 opens a batch that 6.0 and 6.1 still join (before 6.5); 20.0 is alone
    assert metering.batches(arrivals, batch_size=3, window_s=5) == [(0, 3), (3, 6), (6, 7)]
    assert metering.batches([0.0, 4.0, 5.0], batch_size=10, window_s=5) == [(0, 2), (2, 3)]


def test_measured_units_are_named_as_the_model_names_them() -> None:
    counts = metering.Counts(iot_units=10, invocations=2, write_units=30, s3_puts=2, kinesis_kb=10)
    cfg = build_config({}, "prod", {"stream.mode": "ON_DEMAND", "ingest.basic_ingest": True})
    measured = metering.measured_units(counts, cfg)
    predicted, _ = cost.billable_units(cost.Workload(1, 1, 1.0), cfg, seconds=60)
    assert {q.key for q in predicted if q.per_reading} <= set(measured)
    assert measured["iot.messages"] == 0 and measured["iot.rules_triggered"] == 10
    assert measured["kinesis.on_demand_data_in_gb"] == 10 * 1024 / cost.GB


def test_comparison_agrees_within_the_tolerance_of_the_measured_value() -> None:
    assert metering.Comparison("k", 100, 109, 0, 0).agrees(0.10)
    assert not metering.Comparison("k", 100, 111, 0, 0).agrees(0.10)
    assert metering.Comparison("k", 0, 0, 0, 0).agrees(0.10)


def test_the_detector_state_is_counted_on_its_own_lines() -> None:
    counts = metering.Counts()
    hook = metering.write_request_hook(counts)
    state = {"deviceId": {"S": "press-1"}, "sk": {"S": metering.STATE_SORT_KEY}, "states": {"S": "{}"}}
    reading = {"deviceId": {"S": "press-1"}, "sk": {"S": "1767225600000#temperature#20"}}
    hook({"RequestItems": {"t": [{"PutRequest": {"Item": state}}, {"PutRequest": {"Item": reading}}]}},
         type("Model", (), {"name": "BatchWriteItem"}))
    hook({"RequestItems": {"t": {"Keys": [{"deviceId": {"S": "a"}}, {"deviceId": {"S": "b"}}]}}},
         type("Model", (), {"name": "BatchGetItem"}))
    assert (counts.items, counts.write_units, counts.state_write_units, counts.state_read_units) == (1, 1, 1, 2)
    measured = metering.measured_units(counts, build_config({}, "dev", {}))
    assert measured["dynamodb.state_write_request_units"] == 1 and measured["dynamodb.read_request_units"] == 2
