"""The processor against a moto server: archive, quarantine, retries, partial-batch response, idempotency,
EMF metrics and logs. Behaviour per record is pinned by the vectors (test_handler_vectors.py)."""

from __future__ import annotations

import base64
import gc
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from processor_support import (
    BUCKET,
    TABLE,
    clients,
    create_resources,
    emf_documents,
    jsonl_gz,
    kinesis_event,
    load_handler,
    make_runtime,
    metric_totals,
    objects,
    scan_items,
    stdout_documents,
)

index = load_handler()
RECEIVED = 1718000000000  # 2024-06-10T06:13:20Z
ENV = {"ENVIRONMENT": "test", "UNKNOWN_SENSOR": "quarantine", "TTL_DAYS": 90,
       "THRESHOLDS": {"temperature": {"min": 10, "max": 80, "unit": "celsius"},
                      "pressure": {"min": 30, "max": 150, "unit": "psi"}}}
RAW_PREFIX = "raw/year=2024/month=06/day=10/hour=06/shardId-000000000000/"
EMF_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
             "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
             "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
             "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
             "Count/Second", "None"}


def reading(seq: int, device: str = "press-1", sensor: str = "temperature", value: Any = 50,
            offset_ms: int = 0, **extra: Any) -> dict[str, Any]:
    """A vector-style record spec of one single-form reading published through the IoT rule."""
    payload = {"deviceId": device, "sensorType": sensor, "value": value, "timestamp": RECEIVED - 1000 + offset_ms,
               "receivedAt": RECEIVED, "topicDeviceId": device, **extra}
    return {"sequenceNumber": str(seq), "partitionKey": device, "arrivedAt": RECEIVED + 200, "payload": payload}


def many(count: int, devices: int = 10) -> list[dict[str, Any]]:
    """``count`` distinct valid readings spread over ``devices`` devices."""
    return [reading(1000 + i, device=f"press-{i % devices}", value=20 + i % 50, offset_ms=i) for i in range(count)]


class Harness:
    """Clients on the moto server, a runtime with captured stdout and recorded (not slept) backoff."""

    def __init__(self, endpoint: str, *, create: bool = True, env: dict[str, Any] | None = None) -> None:
        self.s3, self.dynamodb = clients(endpoint)
        _, self.unhooked_dynamodb = clients(endpoint)  # for Withhold, which must not see its own calls
        if create:
            create_resources(self.s3, self.dynamodb)
        self.lines: list[str] = []
        self.sleeps: list[float] = []
        self.calls: list[str] = []
        for client in (self.s3, self.dynamodb):
            client.meta.events.register("before-send", self._count)
        self.runtime = make_runtime(index, env or ENV, self.s3, self.dynamodb, emit=self.lines.append,
                                    sleep=self.sleeps.append)

    def _count(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target") or b"s3"  # DynamoDB names its operation here; S3 not
        self.calls.append(target.decode() if isinstance(target, bytes) else target)

    def run(self, records: list[dict[str, Any]], context: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = index.process(kinesis_event(records), context, self.runtime)
        return result

    def documents(self) -> list[dict[str, Any]]:
        return stdout_documents(self.lines)


@pytest.fixture
def harness(moto_endpoint: str) -> Iterator[Harness]:
    yield Harness(moto_endpoint)


class Withhold:
    """Makes BatchWriteItem answer with UnprocessedItems for the requests ``predicate`` picks (those are
    not written; the others really are), for the first ``times`` calls or forever."""

    def __init__(self, harness: Harness, predicate: Callable[[int, dict[str, Any]], bool],
                 times: int | None = None) -> None:
        self.harness, self.predicate, self.times = harness, predicate, times
        self.calls = 0
        self.lock = threading.Lock()
        events = harness.dynamodb.meta.events
        events.register("provide-client-params.dynamodb.BatchWriteItem", self._remember)
        events.register("before-call.dynamodb.BatchWriteItem", self._answer)

    def _remember(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["api_params"] = params

    def _answer(self, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        with self.lock:
            self.calls += 1
            if self.times is not None and self.calls > self.times:
                return None
        requests = context["api_params"]["RequestItems"][TABLE]
        withheld = [r for i, r in enumerate(requests) if self.predicate(i, r["PutRequest"]["Item"])]
        kept = [r for r in requests if r not in withheld]
        if kept:
            self.harness.unhooked_dynamodb.batch_write_item(RequestItems={TABLE: kept})
        return AWSResponse("http://moto", 200, {}, None), {"UnprocessedItems": {TABLE: withheld} if withheld else {}}


class Context:
    """The part of the Lambda context the processor reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_every_raw_record_is_archived_in_one_object_per_batch(harness: Harness) -> None:
    records = [reading(1001), {"sequenceNumber": "1002", "partitionKey": "press-1", "arrivedAt": RECEIVED + 250,
                               "text": '{"deviceId":"press-1","val'},
               {"sequenceNumber": "1003", "partitionKey": "press-1", "arrivedAt": RECEIVED + 300,
                "base64": base64.b64encode(b"\xff\x00binary").decode()}]
    harness.run(records)

    archive = objects(harness.s3, "raw/")
    assert list(archive) == [f"{RAW_PREFIX}1001-1003.jsonl.gz"]
    lines = jsonl_gz(archive[f"{RAW_PREFIX}1001-1003.jsonl.gz"])
    assert [(line["sequenceNumber"], line["partitionKey"], line["arrivedAt"]) for line in lines] == \
        [("1001", "press-1", RECEIVED + 200), ("1002", "press-1", RECEIVED + 250), ("1003", "press-1", RECEIVED + 300)]
    assert json.loads(lines[0]["data"])["value"] == 50
    assert lines[1]["data"] == '{"deviceId":"press-1","val'
    assert base64.b64decode(lines[2]["dataBase64"]) == b"\xff\x00binary" and "data" not in lines[2]


def test_quarantined_records_go_to_one_object_and_one_log_line_each(harness: Harness) -> None:
    records = [reading(1001), reading(1002, value="hot"),
               {"sequenceNumber": "1003", "partitionKey": "press-1", "arrivedAt": RECEIVED,
                "base64": base64.b64encode(b"\xfe\xff").decode()},
               {"sequenceNumber": "1004", "partitionKey": "press-1", "arrivedAt": RECEIVED, "base64": "%%%"}]
    assert harness.run(records) == {"batchItemFailures": []}

    quarantine = objects(harness.s3, "quarantine/")
    key = "quarantine/year=2024/month=06/day=10/hour=06/shardId-000000000000/1001-1004.jsonl.gz"
    assert list(quarantine) == [key]
    lines = jsonl_gz(quarantine[key])
    assert [(line["sequenceNumber"], line["reason"]) for line in lines] == [
        ("1002", "value is not a number"), ("1003", "data is not UTF-8"), ("1004", "data is not base64")]
    assert json.loads(lines[0]["data"])["value"] == "hot" and lines[0]["partitionKey"] == "press-1"
    assert lines[1]["dataBase64"] == base64.b64encode(b"\xfe\xff").decode()
    warnings = [d for d in harness.documents() if d.get("message") == "record quarantined"]
    assert [(w["sequenceNumber"], w["reason"], w["level"]) for w in warnings] == [
        ("1002", "value is not a number", "WARN"), ("1003", "data is not UTF-8", "WARN"),
        ("1004", "data is not base64", "WARN")]
    assert [item["sequenceNumber"] for item in scan_items(harness.dynamodb)] == ["1001"]


def test_unprocessed_items_several_times_are_retried_until_written(harness: Harness) -> None:
    withhold = Withhold(harness, lambda i, _item: i % 2 == 1, times=6)
    records = many(100)

    assert harness.run(records) == {"batchItemFailures": []}

    assert len(scan_items(harness.dynamodb)) == 100
    assert withhold.calls > 4  # 4 chunks of 25 plus the retries of their withheld halves
    assert harness.sleeps and all(0 <= s <= index.BACKOFF_CAP_S for s in harness.sleeps)
    environment, _ = metric_totals(emf_documents(harness.lines))
    assert environment["SensorReadingsProcessed"] == 100 and environment["RecordsFailed"] == 0


def test_items_never_written_are_reported_lowest_sequence_number_first(harness: Harness) -> None:
    Withhold(harness, lambda _i, item: item["deviceId"]["S"] == "press-7")
    records = many(60)  # press-7 gets records 1007, 1017, ..., 1057

    response = harness.run(records, Context(remaining_ms=60_000))

    # Lambda retries from the lowest failure on, so every later record is reported too
    failing = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failing == [str(seq) for seq in range(1007, 1060)]
    stored = scan_items(harness.dynamodb)
    assert len(stored) == 54 and not any(item["deviceId"] == "press-7" for item in stored)
    # each of the 3 chunks holds press-7 items: at most MAX_WRITE_ATTEMPTS calls, one backoff between two
    assert len(harness.sleeps) == 3 * (index.MAX_WRITE_ATTEMPTS - 1)
    # only the records before the first failure are counted: the others are counted by the retry
    environment, _ = metric_totals(emf_documents(harness.lines))
    assert (environment["SensorReadingsProcessed"], environment["RecordsFailed"]) == (7, 53)


def test_retries_stop_at_the_time_budget(harness: Harness) -> None:
    Withhold(harness, lambda _i, _item: True)
    with pytest.raises(index.BatchFailed):
        harness.run(many(5), Context(remaining_ms=0))
    assert harness.sleeps == []  # no time left: reported at once instead of waiting past the timeout


def test_a_failing_archive_fails_the_batch_before_anything_is_stored(moto_endpoint: str) -> None:
    harness = Harness(moto_endpoint, create=False)
    harness.dynamodb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])

    with pytest.raises(index.BatchFailed, match="raw archive"):
        harness.run(many(30))

    assert scan_items(harness.dynamodb) == []
    errors = [d for d in harness.documents() if d.get("level") == "ERROR"]
    assert errors and errors[0]["error"] == "NoSuchBucket" and "NoSuchBucket" in errors[0]["detail"]


def test_no_item_is_sent_before_the_archive_has_been_written(harness: Harness) -> None:
    events: list[tuple[str, float]] = []
    lock = threading.Lock()

    def note(what: str) -> Callable[..., None]:
        def record(**_: Any) -> None:
            with lock:
                events.append((what, time.monotonic()))
        return record

    def slow_archive(request: Any, **_: Any) -> None:
        if "/raw/" in request.url:
            time.sleep(0.3)  # validation of the whole batch ends long before the archive does

    harness.s3.meta.events.register("before-send.s3.PutObject", slow_archive)
    harness.s3.meta.events.register("after-call.s3.PutObject", note("archived"))
    harness.dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem", note("write"))

    harness.run(many(200))

    archived_at = events[0][1] if events and events[0][0] == "archived" else None
    writes = [at for what, at in events if what == "write"]
    assert archived_at is not None and len(writes) == 8
    assert min(writes) >= archived_at
    assert len(scan_items(harness.dynamodb)) == 200


@pytest.mark.parametrize("enabled_before", [True, False])
def test_the_cyclic_collector_is_off_during_a_batch_and_restored_after(moto_endpoint: str,
                                                                       enabled_before: bool) -> None:
    harness = Harness(moto_endpoint)
    seen: list[bool] = []
    harness.dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem",
                                          lambda **_: seen.append(gc.isenabled()))
    (gc.enable if enabled_before else gc.disable)()
    try:
        harness.run(many(30))
        after_success = gc.isenabled()
        harness.s3.meta.events.register("provide-client-params.s3.PutObject",
                                        lambda params, **_: params.update(Bucket="no-such-bucket"))
        with pytest.raises(index.BatchFailed, match="raw archive"):
            harness.run(many(3))
        after_failure = gc.isenabled()
    finally:
        gc.enable()
    assert seen == [False, False]
    assert (after_success, after_failure) == (enabled_before, enabled_before)


def test_nothing_writable_raises_so_the_batch_is_retried(moto_endpoint: str) -> None:
    harness = Harness(moto_endpoint, create=False)
    harness.s3.create_bucket(Bucket=BUCKET)  # but no table

    with pytest.raises(index.BatchFailed, match="no record"):
        harness.run(many(3))
    assert list(objects(harness.s3, "raw/"))  # the archive was written first


def test_a_failing_quarantine_write_reports_the_quarantined_records(harness: Harness) -> None:
    def elsewhere(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].startswith("quarantine/"):
            params["Bucket"] = "no-such-bucket"

    harness.s3.meta.events.register("provide-client-params.s3.PutObject", elsewhere)
    response = harness.run([reading(1001), reading(1002, value=None), reading(1003, sensor="pressure")])

    assert response == {"batchItemFailures": [{"itemIdentifier": "1002"}, {"itemIdentifier": "1003"}]}
    assert len(scan_items(harness.dynamodb)) == 2


def test_a_retried_batch_leaves_the_same_objects_and_items(moto_endpoint: str) -> None:
    records = [*many(40), reading(2000, value="n/a"), reading(2001, value=95)]
    first = Harness(moto_endpoint)
    first.run(records)
    state = (objects(first.s3, ""), scan_items(first.dynamodb))

    again = Harness(moto_endpoint, create=False)
    again.run(records)

    assert (objects(again.s3, ""), scan_items(again.dynamodb)) == state
    assert len(state[0]) == 2 and len(state[1]) == 41


def test_anomalies_are_in_the_sparse_index_only(harness: Harness) -> None:
    harness.run([reading(1001, value=95), reading(1002, value=50, offset_ms=1),
                 reading(1003, sensor="pressure", value=10)])

    page = harness.dynamodb.query(
        TableName=TABLE, IndexName="AnomaliesByDay", KeyConditionExpression="anomalyDay = :d",
        ExpressionAttributeValues={":d": {"S": "2024-06-10"}})
    assert sorted((i["sensorType"]["S"], i["reason"]["S"]) for i in page["Items"]) == [
        ("pressure", "below min 30"), ("temperature", "above max 80")]
    normal = [i for i in scan_items(harness.dynamodb) if i["status"] == "NORMAL"]
    assert len(normal) == 1 and not {"anomalyDay", "anomalySk", "reason"} & set(normal[0])


def test_a_thousand_readings_take_at_most_fifty_api_calls(harness: Harness) -> None:
    assert harness.run(many(1000, devices=50)) == {"batchItemFailures": []}

    assert len(scan_items(harness.dynamodb)) == 1000
    assert len(harness.calls) <= 50
    assert harness.calls.count("DynamoDB_20120810.BatchWriteItem") == 40
    assert harness.calls.count("s3") == 1  # the archive; nothing to quarantine


def test_emf_lines_follow_the_embedded_metric_format(harness: Harness) -> None:
    harness.run([reading(1001, value=95), reading(1002, sensor="pressure"), reading(1003, value="x")])

    documents = emf_documents(harness.lines)
    assert documents, "no EMF line"
    for doc in documents:
        meta = doc["_aws"]
        assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
        for directive in meta["CloudWatchMetrics"]:
            assert directive["Namespace"] == "IoT/Manufacturing"
            assert directive["Dimensions"] and all(0 < len(s) <= 30 for s in directive["Dimensions"])
            for dimension in (d for s in directive["Dimensions"] for d in s):
                assert isinstance(doc[dimension], str) and doc[dimension]
            assert 0 < len(directive["Metrics"]) <= 100
            for metric in directive["Metrics"]:
                assert re.fullmatch(r"[A-Za-z]{1,1024}", metric["Name"]) and metric.get("Unit") in EMF_UNITS
                assert isinstance(doc[metric["Name"]], int | float)
    assert {tuple(s) for d in documents for c in d["_aws"]["CloudWatchMetrics"] for s in c["Dimensions"]} == \
        {("Environment",), ("Environment", "SensorType")}
    assert all(d["Environment"] == "test" for d in documents)
    environment, by_type = metric_totals(documents)
    assert {k: environment[k] for k in ("SensorReadingsProcessed", "AnomaliesDetected", "RecordsQuarantined")} \
        == {"SensorReadingsProcessed": 2, "AnomaliesDetected": 1, "RecordsQuarantined": 1}
    assert environment["IngestLag"] >= 0 and environment["BatchDuration"] >= 0
    assert by_type == {"temperature": {"SensorReadingsProcessed": 1, "AnomaliesDetected": 1},
                       "pressure": {"SensorReadingsProcessed": 1, "AnomaliesDetected": 0}}


def test_logs_are_json_lines_and_never_the_event(harness: Harness) -> None:
    harness.run([reading(1001, note="SECRET-PAYLOAD-MARKER"), reading(1002, value=[1], note="SECRET-PAYLOAD-MARKER")])

    documents = harness.documents()  # raises if any stdout line is not JSON
    assert all(isinstance(d, dict) for d in documents)
    assert not any("SECRET-PAYLOAD-MARKER" in line for line in harness.lines)
    summary = [d for d in documents if d.get("message") == "batch processed"]
    assert len(summary) == 1
    assert {k: summary[0][k] for k in ("records", "stored", "quarantined", "failed")} == \
        {"records": 2, "stored": 1, "quarantined": 1, "failed": 0}


def test_the_lambda_entry_point_reads_its_environment(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for name, value in {"DYNAMODB_TABLE": TABLE, "S3_BUCKET": BUCKET, "ENVIRONMENT": "test",
                        "THRESHOLDS": json.dumps(ENV["THRESHOLDS"]), "TTL_DAYS": "30"}.items():
        monkeypatch.setenv(name, value)
    module = load_handler()

    assert module.handler(kinesis_event([reading(1001, value=95)]), Context(30_000)) == {"batchItemFailures": []}

    [item] = scan_items(dynamodb)
    assert item["reason"] == "above max 80" and item["ttl"] == (RECEIVED + 200) // 1000 + 30 * 86400  # from the arrival
    assert any('"batch processed"' in line for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(("env", "message"), [
    ({"S3_BUCKET": "b"}, "DYNAMODB_TABLE"),
    ({"S3_BUCKET": "b", "DYNAMODB_TABLE": "t", "THRESHOLDS": "[1]"}, "THRESHOLDS"),
    ({"S3_BUCKET": "b", "DYNAMODB_TABLE": "t", "THRESHOLDS": '{"t": {"max": "high"}}'}, "THRESHOLDS"),
    ({"S3_BUCKET": "b", "DYNAMODB_TABLE": "t", "UNKNOWN_SENSOR": "drop"}, "UNKNOWN_SENSOR"),
])
def test_a_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        index.Settings.from_env(env)
