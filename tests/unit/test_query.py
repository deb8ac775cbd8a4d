"""readings/anomalies against items the real processor wrote; logs and metrics from its real output.

The processor (handler/python/index.py) is loaded from its path and called with Kinesis events, in-process
against moto, so the query side and the processor agree on the data contract.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from iotpipe import query
from iotpipe.cli.observe import log_summary, sparkline
from iotpipe.errors import AwsError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
HANDLER = ROOT / "handler" / "python" / "index.py"
TABLE, BUCKET, INDEX, ENV = "SensorReadings-test", "raw-test", "AnomaliesByDay", "test"
THRESHOLDS = {"temperature": {"min": 10, "max": 80, "unit": "celsius"},
              "pressure": {"min": 30, "max": 150, "unit": "psi"},
              "vibration": {"min": None, "max": 5, "unit": "mm/s"}}
DAY1 = int(datetime(2026, 3, 1, 22, 0, tzinfo=UTC).timestamp() * 1000)
DAY2 = int(datetime(2026, 3, 2, 1, 0, tzinfo=UTC).timestamp() * 1000)
SHARD = "shardId-000000000000"


def create_table(dynamodb: Any) -> None:
    """The readings table and its sparse anomaly index, as the data contract defines them."""
    dynamodb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"}
                              for name in ("deviceId", "sk", "anomalyDay", "anomalySk")],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": INDEX, "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                          {"AttributeName": "anomalySk", "KeyType": "RANGE"}]}])


def load_processor() -> Any:
    """A fresh copy of the processor module (its cached clients must not leak between tests)."""
    spec = importlib.util.spec_from_file_location(f"iotpipe_processor_{id(object())}", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def kinesis_event(payloads: Sequence[Mapping[str, Any]], received_at: Sequence[int],
                  first: int = 0) -> dict[str, Any]:
    """What the IoT rule puts on the stream: payload + receivedAt + topicDeviceId, partition key = topic(2);
    the sequence numbers count from ``first`` (a retry from a later record keeps its numbers)."""
    records = []
    for index, (payload, received) in enumerate(zip(payloads, received_at, strict=True), start=first):
        device = str(payload["deviceId"])
        data = {**payload, "receivedAt": received, "topicDeviceId": device}
        records.append({
            "eventID": f"{SHARD}:{49600000000000000000000000000000000000000000000000 + index}",
            "eventSource": "aws:kinesis", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
            "kinesis": {"partitionKey": device, "data": base64.b64encode(json.dumps(data).encode()).decode(),
                        "sequenceNumber": str(49600000000000000000000000000000000000000000000000 + index),
                        "approximateArrivalTimestamp": received / 1000, "kinesisSchemaVersion": "1.0"}})
    return {"Records": records}


def processor_env() -> dict[str, str]:
    """The Lambda environment variables of the data contract."""
    return {"DYNAMODB_TABLE": TABLE, "S3_BUCKET": BUCKET, "ENVIRONMENT": ENV,
            "THRESHOLDS": json.dumps(THRESHOLDS), "UNKNOWN_SENSOR": "quarantine", "TTL_DAYS": "90",
            "METRIC_NAMESPACE": "IoT/Manufacturing"}


def run_processor(payloads: Sequence[Mapping[str, Any]], monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str], received_at: Sequence[int] | None = None,
                  env: Mapping[str, str] | None = None, first: int = 0) -> list[str]:
    """Feed ``payloads`` through the real processor; returns the lines it printed (JSON logs, EMF)."""
    for key, value in {**processor_env(), **(env or {})}.items():
        monkeypatch.setenv(key, value)
    received = received_at or [int(p.get("timestamp", DAY2)) + 150 for p in payloads]
    module = load_processor()
    capsys.readouterr()
    response = module.handler(kinesis_event(payloads, received, first), None)
    assert response == {"batchItemFailures": []}
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield {"dynamodb": dynamodb, "logs": boto3.client("logs", region_name="us-east-1"),
               "cloudwatch": boto3.client("cloudwatch", region_name="us-east-1")}


def single(device: str, sensor: str, value: float, timestamp: int) -> dict[str, Any]:
    return {"deviceId": device, "sensorType": sensor, "value": value, "timestamp": timestamp}


# --- readings -------------------------------------------------------------------------------------------


def test_readings_newest_first_with_contract_fields(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-1", "temperature", 20.5, DAY2 - 2000),
                   single("press-1", "temperature", 85.0, DAY2 - 1000),
                   {"deviceId": "press-1", "timestamp": DAY2, "readings": {"pressure": 160.0, "vibration": 1.2}},
                   single("press-2", "temperature", 90.0, DAY2)], monkeypatch, capsys)

    found = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=DAY2 - 3600_000)
    assert [(r.timestamp, r.sensor_type) for r in found] == [
        (DAY2, "vibration"), (DAY2, "pressure"), (DAY2 - 1000, "temperature"), (DAY2 - 2000, "temperature")]
    by_sensor = {(r.timestamp, r.sensor_type): r for r in found}
    hot = by_sensor[DAY2 - 1000, "temperature"]
    assert (hot.value, hot.unit, hot.status, hot.anomaly, hot.reason) == (85.0, "celsius", "ANOMALY", True,
                                                                          "above max 80")
    normal = by_sensor[DAY2 - 2000, "temperature"]
    assert (normal.status, normal.anomaly, normal.reason) == ("NORMAL", False, "")
    assert by_sensor[DAY2, "pressure"].reason == "above max 150"
    assert {r.device_id for r in found} == {"press-1"}


def test_readings_since_sensor_and_anomaly_filters(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-1", "temperature", 50.0, DAY2 - 7200_000),
                   single("press-1", "temperature", 5.0, DAY2 - 60_000),
                   single("press-1", "pressure", 200.0, DAY2 - 30_000),
                   single("press-1", "temperature", 40.0, DAY2)], monkeypatch, capsys)
    dynamodb = aws["dynamodb"]

    recent = query.query_readings(dynamodb, TABLE, "press-1", since_ms=DAY2 - 3600_000)
    assert [r.timestamp for r in recent] == [DAY2, DAY2 - 30_000, DAY2 - 60_000]
    temps = query.query_readings(dynamodb, TABLE, "press-1", since_ms=DAY2 - 3600_000, sensor="temperature")
    assert [r.value for r in temps] == [40.0, 5.0]
    bad = query.query_readings(dynamodb, TABLE, "press-1", since_ms=0, anomalies_only=True)
    assert [(r.sensor_type, r.reason) for r in bad] == [("pressure", "above max 150"), ("temperature", "below min 10")]
    bad_temps = query.query_readings(dynamodb, TABLE, "press-1", since_ms=0, anomalies_only=True,
                                     sensor="temperature")
    assert [r.value for r in bad_temps] == [5.0]


def test_readings_keep_two_values_of_one_sensor_and_millisecond(aws: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # sk = <13-digit ms>#<sensorType>#<value>: a conflicting value is a second item, never an overwrite, and the
    # time range still starts at the 13-digit prefix
    run_processor([single("press-1", "temperature", 70.0, DAY2 - 1),
                   single("press-1", "temperature", 75.0, DAY2),
                   single("press-1", "temperature", 70.0, DAY2)], monkeypatch, capsys)

    readings = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=DAY2)
    assert sorted((r.timestamp, r.value) for r in readings) == [(DAY2, 70.0), (DAY2, 75.0)]


def test_readings_paginate_and_stop_at_the_limit(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    payloads = [single("press-1", "temperature", 20.0 + i, DAY2 + i * 1000) for i in range(30)]
    run_processor(payloads, monkeypatch, capsys)
    found = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=0, limit=7, page_size=3)
    assert [r.value for r in found] == [49.0, 48.0, 47.0, 46.0, 45.0, 44.0, 43.0]
    everything = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=0, limit=1000, page_size=4)
    assert len(everything) == 30


PACKED = {"STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "60"}


def test_readings_unpack_packed_items_filter_the_range_and_drop_repeats(
        aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 10 readings 10 s apart over three 60 s windows (two records), and an anomaly inside the middle window
    samples = [{"timestamp": DAY2 - 90_000 + 10_000 * i, "sensorType": "temperature", "value": 20.0 + i}
               for i in range(10)]
    hot = {"timestamp": DAY2 - 45_000, "sensorType": "temperature", "value": 95.0}
    batch = [{"deviceId": "press-1", "samples": samples[:5]}, {"deviceId": "press-1", "samples": [hot, *samples[5:]]}]
    run_processor(batch, monkeypatch, capsys, env=PACKED)
    run_processor(batch, monkeypatch, capsys, env=PACKED)  # a retried batch rewrites the same items
    run_processor(batch[1:], monkeypatch, capsys, env=PACKED, first=1)  # a partial retry packs repeats again
    scan = aws["dynamodb"].scan(TableName=TABLE)["Items"]
    first, second = (str(49600000000000000000000000000000000000000000000000 + n) for n in (0, 1))
    window = (DAY2 - 120_000, DAY2 - 60_000, DAY2)
    assert sorted(item["sk"]["S"] for item in scan) == sorted([
        f"{window[0]}#temperature#packed#{SHARD}#{first}#0", f"{window[1]}#temperature#packed#{SHARD}#{first}#0",
        f"{window[1]}#temperature#packed#{SHARD}#{second}#0", f"{window[2]}#temperature#packed#{SHARD}#{second}#0",
        f"{DAY2 - 45_000}#temperature#95"])

    found = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=DAY2 - 50_000)
    assert [(r.timestamp - DAY2, r.value, r.status) for r in found] == [
        (0, 29.0, "NORMAL"), (-10_000, 28.0, "NORMAL"), (-20_000, 27.0, "NORMAL"), (-30_000, 26.0, "NORMAL"),
        (-40_000, 25.0, "NORMAL"), (-45_000, 95.0, "ANOMALY"), (-50_000, 24.0, "NORMAL")]
    assert {(r.device_id, r.sensor_type, r.unit) for r in found} == {("press-1", "temperature", "celsius")}
    newest = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=0, limit=3, page_size=1)
    assert [r.value for r in newest] == [29.0, 28.0, 27.0]
    every = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=0, limit=100)
    assert len(every) == 11
    anomalies = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=0, anomalies_only=True)
    assert [(r.value, r.reason) for r in anomalies] == [(95.0, "above max 80")]
    # the anomaly is an item of its own in the packed layout too: the sparse day index finds it
    indexed = query.query_anomalies(aws["dynamodb"], TABLE, INDEX, since_ms=DAY2 - 3600_000, until_ms=DAY2)
    assert [(r.device_id, r.timestamp - DAY2, r.value) for r in indexed] == [("press-1", -45_000, 95.0)]


def test_readings_of_a_clockless_device_are_distinct_and_a_retry_adds_none(
        aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 20 equal values in one message without timestamps: all dated by the arrival (DAY2), so only their origin
    # (item of its own) or their rank among equal entries (packed) tells them apart
    clockless = {"deviceId": "press-1", "samples": [{"sensorType": "temperature", "value": 50.0}] * 20}
    timed = {"deviceId": "press-1", "samples": [{"timestamp": DAY2 - 5000, "sensorType": "temperature",
                                                 "value": 50.0}]}
    for env in ({}, PACKED):
        for _ in range(2):  # a retried batch writes the same readings again
            run_processor([clockless, timed], monkeypatch, capsys, received_at=[DAY2, DAY2], env=env)
        run_processor([timed], monkeypatch, capsys, received_at=[DAY2], env=env, first=1)  # a partial retry
        found = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=DAY2 - 60_000, limit=1000)
        assert [(r.timestamp - DAY2, r.value) for r in found] == [(0, 50.0)] * 20 + [(-5000, 50.0)], env
        aws["dynamodb"].delete_table(TableName=TABLE)
        create_table(aws["dynamodb"])


def test_readings_of_packed_items_written_before_the_shard_was_in_their_key(aws: dict[str, Any]) -> None:
    start = DAY2 - DAY2 % 600_000 - 600_000  # a 600 s window an earlier release wrote
    for sk, readings in ((f"{start}#temperature#packed#4960001#0", "1000:20,599000:21"),  # no shard in the key
                         (f"{start}#temperature#packed#4960009#0", "599000:21")):  # a partial retry's repeat
        aws["dynamodb"].put_item(TableName=TABLE, Item={
            "deviceId": {"S": "press-1"}, "sk": {"S": sk}, "sensorType": {"S": "temperature"},
            "status": {"S": "NORMAL"}, "readings": {"S": readings}, "ttl": {"N": "0"}, "unit": {"S": "celsius"}})
    found = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=start + 500_000)
    assert [(r.timestamp - start, r.value, r.unit) for r in found] == [(599_000, 21.0, "celsius")]
    every = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=start)
    assert [r.value for r in every] == [21.0, 20.0]


# --- anomalies ------------------------------------------------------------------------------------------


def test_anomalies_span_day_partitions_newest_first(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_processor([single("press-1", "temperature", 95.0, DAY1),        # 2026-03-01
                   single("press-2", "vibration", 7.5, DAY2 - 1000),    # 2026-03-02
                   single("press-1", "pressure", 10.0, DAY2),           # 2026-03-02
                   single("press-2", "temperature", 50.0, DAY2)],       # normal: not in the index
                  monkeypatch, capsys)
    dynamodb = aws["dynamodb"]

    found = query.query_anomalies(dynamodb, TABLE, INDEX, since_ms=DAY1 - 3600_000, until_ms=DAY2 + 1000)
    assert [(r.device_id, r.sensor_type, r.reason) for r in found] == [
        ("press-1", "pressure", "below min 30"), ("press-2", "vibration", "above max 5"),
        ("press-1", "temperature", "above max 80")]
    recent = query.query_anomalies(dynamodb, TABLE, INDEX, since_ms=DAY2 - 3600_000, until_ms=DAY2 + 1000)
    assert [r.sensor_type for r in recent] == ["pressure", "vibration"]
    only_p2 = query.query_anomalies(dynamodb, TABLE, INDEX, since_ms=DAY1 - 3600_000, until_ms=DAY2,
                                    device_id="press-2")
    assert [r.sensor_type for r in only_p2] == ["vibration"]
    first = query.query_anomalies(dynamodb, TABLE, INDEX, since_ms=DAY1 - 3600_000, until_ms=DAY2, limit=1)
    assert [r.sensor_type for r in first] == ["pressure"]


def test_days_between_covers_every_utc_day_newest_first() -> None:
    assert query.days_between(DAY1, DAY2) == ["2026-03-02", "2026-03-01"]
    assert query.days_between(DAY2, DAY2) == ["2026-03-02"]


# --- since ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "back_ms"), [("30s", 30_000), ("10m", 600_000), ("1h", 3_600_000),
                                               ("7d", 604_800_000), ("2w", 1_209_600_000)])
def test_parse_since_durations(text: str, back_ms: int) -> None:
    assert query.parse_since(text, DAY2) == DAY2 - back_ms


def test_parse_since_iso() -> None:
    assert query.parse_since("2026-03-01T22:00:00Z", DAY2) == DAY1
    assert query.parse_since("2026-03-01T22:00:00", DAY2) == DAY1


@pytest.mark.parametrize("text", ["", "1y", "ten minutes", "-5m", "2026-03-05T00:00:00Z"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^since="):
        query.parse_since(text, DAY2)


# --- logs -----------------------------------------------------------------------------------------------


def _put_lines(logs: Any, group: str, lines: Sequence[str], start_ms: int) -> None:
    stream = f"2026/03/02/[$LATEST]{start_ms}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": start_ms + i, "message": line} for i, line in enumerate(lines)])


def test_logs_summarise_the_processors_json_lines(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    printed = run_processor([single("press-1", "temperature", 95.0, DAY2),
                             {"deviceId": "press-1", "sensorType": "temperature", "value": "hot"}],
                            monkeypatch, capsys)
    logs = aws["logs"]
    group = "/aws/lambda/iot-data-processor-test"
    logs.create_log_group(logGroupName=group)
    now = query.now_ms()
    _put_lines(logs, group, ["START RequestId: 1 Version: $LATEST", *printed], now - 5000)

    lines = query.fetch_logs(logs, group, start_ms=now - 60_000)
    assert len(lines) == len(printed) + 1
    assert lines[0].message == "START RequestId: 1 Version: $LATEST"
    structured = [json.loads(text) for text in printed]
    for line, document in zip(lines[1:], structured, strict=True):
        if "_aws" in document:  # EMF: the metric values are the summary
            names = [m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
            assert [key for key, _ in line.fields] == names
            assert line.message == "metrics"
        else:
            assert line.level == str(document["level"]).upper()
            assert line.message == document["message"]
            assert "{" not in log_summary(line).split(document["message"], 1)[0]  # no raw JSON before the message
    emf = [line for line in lines if line.message == "metrics" and ("SensorReadingsProcessed", "1") in line.fields]
    assert emf, "the Environment-level EMF line shows SensorReadingsProcessed=1"


def test_logs_filter_and_missing_group(aws: dict[str, Any]) -> None:
    logs = aws["logs"]
    group = "/aws/lambda/p"
    logs.create_log_group(logGroupName=group)
    now = query.now_ms()
    _put_lines(logs, group, ['{"level":"INFO","message":"batch done"}',
                             '{"level":"WARN","message":"record quarantined","reason":"bad json"}'], now - 1000)
    filtered = query.fetch_logs(logs, group, start_ms=now - 60_000, pattern=query.filter_pattern("quarantined"))
    assert [line.message for line in filtered] == ["record quarantined"]
    assert log_summary(filtered[0]).endswith("WARN  record quarantined reason=bad json")
    with pytest.raises(AwsError, match="does not exist"):
        query.fetch_logs(logs, "/aws/lambda/nope", start_ms=0)


def test_follow_yields_new_lines_once_and_stops_in_bounded_time(aws: dict[str, Any]) -> None:
    logs = aws["logs"]
    group = "/aws/lambda/p"
    logs.create_log_group(logGroupName=group)
    now = query.now_ms()
    _put_lines(logs, group, ['{"level":"INFO","message":"one"}'], now - 1000)
    state = {"t": 0.0, "polls": 0}

    def sleep(seconds: float) -> None:
        state["t"] += seconds
        state["polls"] += 1
        if state["polls"] == 1:
            _put_lines(logs, group, ['{"level":"INFO","message":"two"}'], now)

    followed = list(query.follow_logs(logs, group, start_ms=now - 60_000, poll_s=2.0, max_wait_s=10.0,
                                      sleep=sleep, clock=lambda: state["t"]))
    assert [line.message for line in followed] == ["one", "two"]
    assert state["t"] <= 10.0


def test_filter_pattern() -> None:
    # "quarantined" names the processor's per-record lines (every batch line has a "quarantined" count).
    assert query.filter_pattern("quarantined") == '"record quarantined"'
    assert query.filter_pattern("timeout") == '"timeout"'
    assert query.filter_pattern('{ $.level = "ERROR" }') == '{ $.level = "ERROR" }'
    assert query.filter_pattern(None) is None


# --- metrics --------------------------------------------------------------------------------------------


def _publish_emf(cloudwatch: Any, printed: Sequence[str]) -> None:
    """What CloudWatch does with EMF lines in a Lambda log: put each declared metric with its dimensions."""
    for text in printed:
        document = json.loads(text)
        if "_aws" not in document:
            continue
        stamp = datetime.fromtimestamp(document["_aws"]["Timestamp"] / 1000, tz=UTC)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                cloudwatch.put_metric_data(Namespace=directive["Namespace"], MetricData=[{
                    "MetricName": metric["Name"], "Timestamp": stamp, "Value": float(document[metric["Name"]]),
                    "Unit": metric.get("Unit", "None"),
                    "Dimensions": [{"Name": d, "Value": str(document[d])} for d in dimensions]}
                    for metric in directive["Metrics"]])


def test_metrics_from_the_processors_emf(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    now = query.now_ms()
    printed = run_processor([single("press-1", "temperature", 95.0, now - 1000),
                             single("press-1", "temperature", 20.0, now - 900),
                             single("press-1", "pressure", 100.0, now - 800),
                             {"deviceId": "press-1", "sensorType": "torque", "value": 3.0}],
                            monkeypatch, capsys, received_at=[now - 500] * 4)
    _publish_emf(aws["cloudwatch"], printed)

    later = query.now_ms()  # "now" of the query: the EMF timestamps are at most this
    report = query.fetch_metrics(aws["cloudwatch"], ENV, since_ms=later - 3600_000, until_ms=later)
    totals = {series.name: series.total for series in report.series}
    assert totals == {"SensorReadingsProcessed": 3.0, "AnomaliesDetected": 1.0, "RecordsQuarantined": 1.0}
    assert report.period_s == 60
    assert len(report.starts) == len(report.series[0].values) == 61  # whole minutes, the last one holds now
    assert report.starts[-1] <= later < report.starts[-1] + 60_000
    assert all(b - a == 60_000 for a, b in itertools.pairwise(report.starts))
    assert report.series[0].values[-1] + report.series[0].values[-2] == 3.0  # in the newest periods
    other = query.fetch_metrics(aws["cloudwatch"], "prod", since_ms=later - 3600_000, until_ms=later)
    assert all(series.total == 0 for series in other.series)


def test_sparkline_and_period() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3, 3]) == "▁▁"
    assert sparkline([]) == ""
    assert query.choose_period(3600) == 60
    assert query.choose_period(86400) == 1440
    with pytest.raises(ConfigError, match=r"^period_s=90 "):
        query.fetch_metrics(None, ENV, since_ms=0, until_ms=3600_000, period_s=90)


def test_an_unknown_sensor_type_is_refused_with_the_known_ones_named() -> None:
    from iotpipe.config import build_config
    from iotpipe.errors import ParameterError

    cfg = build_config({}, "dev", {})
    # Refused before any AWS call (no clients are needed): with unknown_sensor = "quarantine" a type without a
    # threshold is never stored, so `--sensor temprature` would silently find nothing.
    for call in (lambda: query.readings(None, cfg, "press-1", sensor="temprature"),  # type: ignore[arg-type]
                 lambda: query.anomalies(None, cfg, sensor="temprature")):  # type: ignore[arg-type]
        with pytest.raises(ParameterError, match=r"sensor='temprature' is not a sensor type of env dev "
                                                 r"\(known: pressure, temperature, vibration\); did you mean "
                                                 r"temperature\?"):
            call()
    # When unknown types are stored, any name may have readings.
    stored = build_config({"defaults": {"processor": {"unknown_sensor": "store"}}}, "dev", {})
    with pytest.raises(AttributeError):  # gets past the check, to the (missing) clients
        query.anomalies(None, stored, sensor="humidity")  # type: ignore[arg-type]


def test_cli_names_the_sensor_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from iotpipe.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["readings", "press-1", "--sensor", "temprature",
                                       "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"])
    assert result.exit_code == 2, result.output
    assert "--sensor" in result.stderr and "known: pressure, temperature, vibration" in result.stderr


def test_anomalies_and_readings_say_why_with_the_detector(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from iotpipe.cli.readings import _reading_output

    detecting = {**THRESHOLDS, "temperature": {**THRESHOLDS["temperature"], "detector": "onset", "probation": 5}}
    values = [20.0, 20.1, 19.9, 20.0, 20.2, 20.1, 35.0, 95.0]
    run_processor([single("press-1", "temperature", v, DAY2 - (len(values) - i) * 1000) for i, v in enumerate(values)],
                  monkeypatch, capsys, env={"THRESHOLDS": json.dumps(detecting)})

    found = query.query_anomalies(aws["dynamodb"], TABLE, INDEX, since_ms=DAY2 - 3600_000, until_ms=DAY2 + 1000)
    assert [(r.value, r.rule) for r in found] == [(95.0, "bound"), (35.0, "model")]
    model = found[1]
    assert model.score is not None and model.score >= 0.5
    assert model.expected_low is not None and model.expected_high is not None
    assert model.expected_low < 20.1 < model.expected_high
    assert model.reason.startswith("expected ")
    only = query.query_readings(aws["dynamodb"], TABLE, "press-1", since_ms=DAY2 - 3600_000, anomalies_only=True)
    assert [(r.rule, r.score) for r in only] == [(r.rule, r.score) for r in found]

    _reading_output(found, "table", with_device=True, what="anomalies")
    table = capsys.readouterr().out
    assert "RULE" in table and "SCORE" in table and "EXPECTED" in table
    assert f"{model.score:.3f}" in table and model.band in table and "bound" in table
    _reading_output(found, "json", with_device=True)
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["rule"] == "model" and rows[1]["expectedLow"] == model.expected_low
