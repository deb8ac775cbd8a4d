"""The samples form (several timestamps per message) in the SQL relations: archives written with the processor's
own archive code (iotpipe.archive) hold samples-form records, retried batches and bad samples among good ones; the
``readings`` relation on DuckDB must hold exactly the readings the processor stores (its ``interpret``), one row per
reading of each sample, deduplicated by shard, sequence number and position. The Athena text is checked against
the same archives in test_sql_athena_text.py."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from test_sql_duckdb import BUCKET, CFG, HANDLER, SHARD0, SHARD1, ms, rule

from iotpipe import archive
from iotpipe.sql import NAMED_QUERIES, Window, fetch_archive, run_duckdb

VECTOR = json.loads((HANDLER.parents[1] / "vectors" / "samples.json").read_text())
VECTOR_WINDOW = Window(ms("2024-06-10T06:00:00"), ms("2024-06-10T07:00:00"))
ARRIVED = ms("2026-03-06T09:20:00")
WINDOW = Window(ms("2026-03-06T09:00:00"), ms("2026-03-06T10:00:00"))
READING_COLUMNS = "device_id, sensor_type, value, unit, reading_time, sequence_number"


def put_batch(s3: Any, index: Any, records: list[Any], with_quarantine: bool = True) -> None:
    """One batch as the processor archives it: the raw object, and its quarantine object."""
    lines = archive.quarantine_lines(index, records, CFG.thresholds_json) if with_quarantine else []
    archive.put_objects(s3, BUCKET, archive.batch_objects(index, records, lines))


def vector_records(index: Any) -> list[Any]:
    """handler/vectors/samples.json's records, as the processor decodes them from the stream."""
    return [archive.record(index, VECTOR["shardId"], r["sequenceNumber"], r["arrivedAt"],
                           json.dumps(r["payload"]).encode(), r["partitionKey"]) for r in VECTOR["records"]]


def put_vector_archive(s3: Any) -> Window:
    """The vector's batch, then a partial-batch retry from its second record archived again under another key."""
    index = archive.load_processor(HANDLER)
    records = vector_records(index)
    put_batch(s3, index, records)
    put_batch(s3, index, records[1:])
    return VECTOR_WINDOW


def mixed_records(index: Any) -> list[Any]:
    """Samples-form records beside single and multi ones: good and bad samples of one sensor type in one record,
    an unknown and an invalid sensor type in a sample, two samples alike but for their time."""
    samples = [
        {"timestamp": ARRIVED - 60_000, "sensorType": "temperature", "value": 20.0},
        {"timestamp": ARRIVED - 50_000, "sensorType": "temperature", "value": "hot"},  # value is not a number
        {"timestamp": ARRIVED - 40_000, "readings": {"temperature": 21.0, "pressure": 100.0}},
        {"timestamp": ARRIVED - 30_000, "readings": {"temperature": 21.0, "pressure": 100.0}},
        {"timestamp": ARRIVED - 20_000, "sensorType": "humidity", "value": 40.0},  # unknown sensorType
        {"timestamp": ARRIVED - 19_000, "readings": {"humidity": 41.0, "vibration": 1.25}},
        {"timestamp": ARRIVED - 18_000, "readings": {"9bad": 1.0, "pressure": 101.0}},  # invalid sensorType
        {"timestamp": ARRIVED - 17_000, "readings": {}},  # readings is not a non-empty object
        {"timestamp": ARRIVED - 16_000, "sensorType": "temperature", "value": 1e-200},  # value out of range
        {"timestamp": ARRIVED - 15_000, "sensorType": "pressure", "value": 102.0, "unit": "x" * 33},  # invalid unit
        {"timestamp": "2026-03-06T10:19:50.250+01:00", "sensorType": "vibration", "value": 0.5, "unit": "in/s"},
        {"timestamp": "2000-01-02T00:00:00Z", "sensorType": "pressure", "value": 99.0},  # older than retention
        {"timestamp": ARRIVED - 10_000, "sensorType": "temperature", "value": 95.0},  # an anomaly
    ]
    return [
        archive.record(index, SHARD0, 700, ARRIVED, rule({"deviceId": "kiln-1", "samples": samples}, ARRIVED),
                       "kiln-1"),
        archive.record(index, SHARD0, 701, ARRIVED, rule({"deviceId": "kiln-2", "sensorType": "temperature",
                                                          "value": 30.0, "timestamp": ARRIVED - 5000}, ARRIVED),
                       "kiln-2"),
        archive.record(index, SHARD0, 702, ARRIVED, rule({"deviceId": "kiln-2", "timestamp": ARRIVED - 4000,
                                                          "readings": {"temperature": 31.0, "pressure": 90.0,
                                                                       "9bad": 1.0}},  # stored but for 9bad
                                                         ARRIVED), "kiln-2"),
        # the same sequence number on another shard: another record
        archive.record(index, SHARD1, 700, ARRIVED, rule({"deviceId": "kiln-3", "samples": [
            {"timestamp": ARRIVED - 2000, "sensorType": "temperature", "value": 40.0},
            {"timestamp": ARRIVED - 1000, "sensorType": "temperature", "value": 41.0}]}, ARRIVED), "kiln-3"),
    ]


def put_mixed_archive(s3: Any) -> Window:
    """The mixed records per shard, and a bisected retry that archived shard 0's first two records again."""
    index = archive.load_processor(HANDLER)
    records = mixed_records(index)
    put_batch(s3, index, records[:3])
    put_batch(s3, index, records[3:])
    put_batch(s3, index, records[:2], with_quarantine=False)
    return WINDOW


def stored_readings(index: Any, records: list[Any], ttl_days: int) -> list[tuple[Any, ...]]:
    """What the processor stores for ``records`` (its ``interpret``), as the readings relation's columns."""
    settings = index.Settings.from_env({"DYNAMODB_TABLE": "t", "S3_BUCKET": "b", "THRESHOLDS": CFG.thresholds_json,
                                        "TTL_DAYS": str(ttl_days)})
    rows = []
    for found in (index.interpret(r, settings) for r in records):
        for reading in found.readings:
            item = reading.item
            rows.append((item["deviceId"]["S"], item["sensorType"]["S"], float(item["value"]["N"]),
                         item.get("unit", {}).get("S"),
                         datetime.fromtimestamp(int(item["timestamp"]["N"]) / 1000, UTC).replace(tzinfo=None),
                         item["sequenceNumber"]["S"]))
    return sorted(rows)


def arrival_records(index: Any) -> list[Any]:
    """A clockless device's samples (no timestamp, an unset clock, invalid RFC 3339, older than the retention:
    dated by their arrival) of one value, and a device-timed reading the device sent three times (one reading)."""
    dated_by_arrival = [{}, {"timestamp": 12_000}, {"timestamp": "2026-13-06T09:19:00Z"},
                        {"timestamp": "2020-01-01T00:00:00Z"}]
    again = {"timestamp": ARRIVED - 30_000, "sensorType": "temperature", "value": 70.0}
    samples = [{**kind, "sensorType": "temperature", "value": 70.0} for kind in dated_by_arrival * 2]
    bad = {"sensorType": "temperature", "value": "hot"}  # quarantined alone
    return [archive.record(index, SHARD0, 800, ARRIVED, rule({"deviceId": "kiln-5", "samples": [*samples, again,
                                                                                                 again, bad]},
                                                             ARRIVED), "kiln-5"),
            archive.record(index, SHARD0, 801, ARRIVED, rule({"deviceId": "kiln-5", **again}, ARRIVED), "kiln-5"),
            archive.record(index, SHARD1, 800, ARRIVED, rule({"deviceId": "kiln-5", "sensorType": "temperature",
                                                              "value": 70.0}, ARRIVED), "kiln-5")]


def put_arrival_archive(s3: Any) -> Window:
    """The arrival-dated records, per shard."""
    index = archive.load_processor(HANDLER)
    records = arrival_records(index)
    put_batch(s3, index, records[:2])
    put_batch(s3, index, records[2:])
    return WINDOW


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def query(s3: Any, sql: str, window: Window, tmp_path: Path) -> list[tuple[Any, ...]]:
    local = fetch_archive(s3, BUCKET, window, tmp_path / "cache")
    return list(run_duckdb(sql, local, window, CFG.thresholds, CFG.storage.ttl_days).rows)


def test_the_vector_archive_gives_exactly_the_readings_the_processor_stores(s3: Any, tmp_path: Path) -> None:
    window = put_vector_archive(s3)
    rows = query(s3, f"SELECT {READING_COLUMNS} FROM readings ORDER BY ALL", window, tmp_path)
    want = sorted((i["deviceId"], i["sensorType"], float(i["value"]), i.get("unit"),
                   datetime.fromtimestamp(i["timestamp"] / 1000, UTC).replace(tzinfo=None), i["sequenceNumber"])
                  for i in VECTOR["expect"]["items"])
    assert rows == want
    assert len(rows) == 10  # 6 of press-1's three samples, 3 good of press-2's seven, 1 of press-4's two
    # the retried records are there once, and the whole-record rejections are quarantined once
    assert query(s3, "SELECT count(*) FROM raw_records", window, tmp_path) == [(6,)]
    assert query(s3, "SELECT sequence_number, reason, rejected_sensor_types FROM quarantined ORDER BY 1", window,
                 tmp_path) == [
        ("2002", "sample is not a JSON object", [None, None, "pressure", None]),
        ("2003", "samples is not a non-empty array", None),
        ("2004", "samples is not a non-empty array", None),
        ("2005", "too many readings", None),
        ("2006", "too many readings", [None])]


def test_a_bad_sample_is_excluded_alone_and_distinct_samples_of_one_record_all_stay(s3: Any,
                                                                                       tmp_path: Path) -> None:
    window = put_mixed_archive(s3)
    rows = query(s3, f"SELECT {READING_COLUMNS}, device_time FROM readings WHERE device_id = 'kiln-1' "
                     "ORDER BY reading_time, sensor_type", window, tmp_path)
    at = [datetime.fromtimestamp((ARRIVED + d) / 1000, UTC).replace(tzinfo=None) for d in
          (-60_000, -40_000, -30_000, -19_000, -18_000, -10_000, -40)]
    reset = datetime(2000, 1, 2)
    assert rows == [
        ("kiln-1", "temperature", 20.0, "celsius", at[0], "700", at[0]),
        ("kiln-1", "pressure", 100.0, "psi", at[1], "700", at[1]),
        ("kiln-1", "temperature", 21.0, "celsius", at[1], "700", at[1]),
        ("kiln-1", "pressure", 100.0, "psi", at[2], "700", at[2]),
        ("kiln-1", "temperature", 21.0, "celsius", at[2], "700", at[2]),
        ("kiln-1", "vibration", 1.25, "mm/s", at[3], "700", at[3]),
        ("kiln-1", "pressure", 101.0, "psi", at[4], "700", at[4]),
        ("kiln-1", "temperature", 95.0, "celsius", at[5], "700", at[5]),
        ("kiln-1", "vibration", 0.5, "in/s", datetime(2026, 3, 6, 9, 19, 50, 250000), "700",
         datetime(2026, 3, 6, 9, 19, 50, 250000)),
        ("kiln-1", "pressure", 99.0, "psi", at[6], "700", reset),  # its own time kept as device_time
    ]


def test_the_mixed_archive_gives_exactly_the_readings_the_processor_stores(s3: Any, tmp_path: Path) -> None:
    window = put_mixed_archive(s3)
    index = archive.load_processor(HANDLER)
    rows = query(s3, f"SELECT {READING_COLUMNS} FROM readings ORDER BY ALL", window, tmp_path)
    assert rows == stored_readings(index, mixed_records(index), CFG.storage.ttl_days)
    # the retried lines are dropped as duplicates of records, the samples of one record all stay
    assert query(s3, "SELECT shard_id, sequence_number, count(*) FROM readings GROUP BY 1, 2 ORDER BY 1, 2",
                 window, tmp_path) == [(SHARD0, "700", 10), (SHARD0, "701", 1), (SHARD0, "702", 2),
                                       (SHARD1, "700", 2)]


def test_readings_dated_by_their_arrival_are_distinct_and_a_device_repeat_is_one(s3: Any, tmp_path: Path) -> None:
    window = put_arrival_archive(s3)
    index = archive.load_processor(HANDLER)
    settings = index.Settings.from_env({"DYNAMODB_TABLE": "t", "S3_BUCKET": "b", "THRESHOLDS": CFG.thresholds_json,
                                        "TTL_DAYS": str(CFG.storage.ttl_days)})
    records = arrival_records(index)
    kept, repeats = index.deduplicate([r for rec in records for r in index.interpret(rec, settings).readings])
    assert (len(kept), repeats) == (10, 2)  # 8 + 1 arrival-dated readings, the device's reading once
    stored = sorted((r.item["deviceId"]["S"], r.item["sensorType"]["S"], float(r.item["value"]["N"]),
                     r.item.get("unit", {}).get("S"),
                     datetime.fromtimestamp(int(r.item["timestamp"]["N"]) / 1000, UTC).replace(tzinfo=None),
                     r.item["sequenceNumber"]["S"]) for r in kept)
    assert query(s3, f"SELECT {READING_COLUMNS} FROM readings ORDER BY ALL", window, tmp_path) == stored


def test_named_queries_count_the_readings_of_samples(s3: Any, tmp_path: Path) -> None:
    put_mixed_archive(s3)
    window = put_vector_archive(s3)
    assert query(s3, NAMED_QUERIES["anomalies-per-day"].sql, window, tmp_path) == [
        (date(2024, 6, 10), "press-2", "temperature", 2)]
    hourly = query(s3, NAMED_QUERIES["hourly-stats"].sql, WINDOW, tmp_path)
    assert ("kiln-1", "temperature", datetime(2026, 3, 6, 9), 4, 20.0, 39.25, 95.0) in hourly
    assert ("kiln-3", "temperature", datetime(2026, 3, 6, 9), 2, 40.0, 40.5, 41.0) in hourly
    assert query(s3, NAMED_QUERIES["anomalies-per-day"].sql, WINDOW, tmp_path) == [
        (date(2026, 3, 6), "kiln-1", "temperature", 1)]
