"""The processor under faults and hostile input (issue 13), against a moto server with botocore hooks injecting
transport errors, throttling, hung calls and partial failures: no stored reading is ever replaced, a retried
record reaches the same outcome, the deadline is kept, metrics count what was stored, quarantine is linear."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from processor_support import TABLE, emf_documents, jsonl_gz, kinesis_event, metric_totals, objects, scan_items
from test_handler_moto import ENV, RECEIVED, Context, Harness, Withhold, index, many, reading


@pytest.fixture
def harness(moto_endpoint: str) -> Iterator[Harness]:
    yield Harness(moto_endpoint)


def stored_metric(harness: Harness) -> float:
    environment, _ = metric_totals(emf_documents(harness.lines))
    return environment["SensorReadingsProcessed"]


class FakeClock:
    """A monotonic clock that only the processor's backoff sleeps advance, as time passes for threads that sleep
    at once: each thread keeps its own time (from the latest time when it first looks), its sleeps advance it,
    and ``now`` is the latest of them. (One shared counter made two threads' overlapping sleeps add up, and a
    thread could check the deadline before another's sleep and then sleep past it.)"""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()
        self.threads = threading.local()

    def _own(self) -> float:
        if not hasattr(self.threads, "now"):
            self.threads.now = self.now
        return float(self.threads.now)

    def monotonic(self) -> float:
        with self.lock:
            return self._own()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.threads.now = self._own() + seconds
            self.now = max(self.now, self.threads.now)


def with_clock(harness: Harness, clock: FakeClock) -> None:
    object.__setattr__(harness.runtime, "monotonic", clock.monotonic)
    object.__setattr__(harness.runtime, "sleep", clock.sleep)


# ---------------------------------------------------------------- 1. nothing overwritten, same outcome on retry

def test_a_reading_is_never_replaced_by_a_later_batch(moto_endpoint: str) -> None:
    first = Harness(moto_endpoint)
    first.run([reading(1001, value=70)])
    again = Harness(moto_endpoint, create=False)
    assert again.run([reading(1002, value=75)]) == {"batchItemFailures": []}

    assert [(i["value"], i["sequenceNumber"]) for i in scan_items(again.dynamodb)] == [(70, "1001"), (75, "1002")]
    assert objects(again.s3, "quarantine/") == {}


def test_a_retried_record_reaches_the_outcome_of_its_first_attempt(moto_endpoint: str) -> None:
    batch = [reading(1, value=70), reading(2, device="press-2"), reading(3, value=75)]
    first = Harness(moto_endpoint)
    Withhold(first, lambda _i, item: item["deviceId"]["S"] == "press-2")

    response = first.run(batch, Context(60_000))

    assert response == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    after_first = scan_items(first.dynamodb)
    assert [(i["deviceId"], i["value"]) for i in after_first] == [("press-1", 70), ("press-1", 75)]

    retry = Harness(moto_endpoint, create=False)
    assert retry.run(batch[1:]) == {"batchItemFailures": []}

    items = scan_items(retry.dynamodb)
    assert [(i["deviceId"], i["value"]) for i in items] == [("press-1", 70), ("press-1", 75), ("press-2", 50)]
    assert objects(retry.s3, "quarantine/") == {}  # seq 3 was stored both times, never quarantined
    assert stored_metric(first) + stored_metric(retry) == len(items)


# ---------------------------------------------------------------- 2. nothing stored already expired

def test_no_item_is_written_with_a_ttl_before_arrival_plus_retention(harness: Harness) -> None:
    records = [reading(1001 + n, device=f"cell-{n}", timestamp=ts) for n, ts in enumerate(
        ["2000-01-02T00:00:00Z", 1e12, RECEIVED - 91 * 86_400_000, RECEIVED - 89 * 86_400_000, 946_684_800_000])]
    harness.run(records)

    items = scan_items(harness.dynamodb)
    assert len(items) == 5
    arrival_s = (RECEIVED + 200) // 1000
    assert all(item["ttl"] >= arrival_s + 90 * 86_400 for item in items)
    kept = {item["deviceId"]: item.get("deviceTimestamp") for item in items}
    assert kept == {"cell-0": "2000-01-02T00:00:00Z", "cell-1": "1000000000000", "cell-2": "1710137600000",
                    "cell-3": None, "cell-4": "946684800000"}


# ---------------------------------------------------------------- 3. retries: at-least-once lines, exact metrics

def test_a_partial_retry_counts_each_stored_reading_once_and_lines_carry_sequence_numbers(
        moto_endpoint: str) -> None:
    records = many(20)
    first = Harness(moto_endpoint)
    Withhold(first, lambda _i, item: item["sequenceNumber"]["S"] == "1010")
    response = first.run(records, Context(60_000))
    lowest = response["batchItemFailures"][0]["itemIdentifier"]
    assert lowest == "1010"

    retry = Harness(moto_endpoint, create=False)
    assert retry.run([r for r in records if int(r["sequenceNumber"]) >= int(lowest)]) == {"batchItemFailures": []}

    items = scan_items(retry.dynamodb)
    assert len(items) == 20
    assert stored_metric(first) + stored_metric(retry) == 20
    lines = [line for body in objects(retry.s3, "raw/").values() for line in jsonl_gz(body)]
    assert len(lines) == 30  # at-least-once: the retried records are archived again
    assert sorted({line["sequenceNumber"] for line in lines}) == sorted(r["sequenceNumber"] for r in records)


# ---------------------------------------------------------------- 6. transport errors are retryable

def test_dropped_connections_and_timeouts_are_retried(harness: Harness) -> None:
    failures = iter([ConnectionClosedError(endpoint_url="http://moto"), ReadTimeoutError(endpoint_url="http://moto"),
                     ConnectionClosedError(endpoint_url="http://moto")])
    archive_failures = iter([EndpointConnectionError(endpoint_url="http://moto")])

    def drop(**_: Any) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure

    def drop_archive(**_: Any) -> None:
        failure = next(archive_failures, None)
        if failure is not None:
            raise failure

    harness.dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem", drop)
    harness.s3.meta.events.register("before-send.s3.PutObject", drop_archive)

    assert harness.run(many(60)) == {"batchItemFailures": []}

    assert len(scan_items(harness.dynamodb)) == 60
    errors = [d["error"] for d in harness.documents() if d.get("message") == "BatchWriteItem failed"]
    assert sorted(errors) == ["ConnectionClosedError", "ConnectionClosedError", "ReadTimeoutError"]
    assert list(objects(harness.s3, "raw/"))


# ---------------------------------------------------------------- 7. the deadline

def _throttle(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
             "ResponseMetadata": {"HTTPStatusCode": 400}}
    return AWSResponse("http://moto", 400, {}, None), error


def test_throttling_with_little_time_left_stops_before_the_deadline(harness: Harness) -> None:
    clock = FakeClock()
    with_clock(harness, clock)
    started = clock.now
    harness.dynamodb.meta.events.register("before-call.dynamodb.BatchWriteItem", _throttle)

    with pytest.raises(index.BatchFailed, match="no record"):
        harness.run(many(100), Context(3_000))

    assert clock.now - started <= 3.0 - index.RESERVE_MIN_MS / 1000
    assert len(harness.sleeps) == 0 and clock.now > started  # backoff happened on the runtime's clock


def test_throttling_with_a_long_budget_keeps_retrying_and_answers_in_time(harness: Harness) -> None:
    clock = FakeClock()
    with_clock(harness, clock)
    started = clock.now
    Withhold(harness, lambda _i, item: item["deviceId"]["S"] == "press-7")

    response = harness.run(many(60), Context(60_000))

    failing = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failing[0] == "1007" and len(scan_items(harness.dynamodb)) == 54
    # the budget is used (the old loop gave up after 10 attempts, within 5 s) and kept, with the reserve
    assert 40.0 <= clock.now - started <= 60.0 - index.RESERVE_MAX_MS / 1000


def test_a_hung_call_does_not_hold_the_answer_past_the_deadline(harness: Harness) -> None:
    release = threading.Event()
    entered = threading.Event()

    def hang(request: Any, **_: Any) -> None:
        if b"press-hang" in (request.body or b""):
            entered.set()
            release.wait(timeout=30)

    harness.dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem", hang)
    try:
        response = harness.run([*many(50), reading(2000, device="press-hang")], Context(6_000))
        still_hanging = entered.is_set() and not release.is_set()
    finally:
        release.set()

    assert still_hanging  # answered while the call was still in flight
    assert response == {"batchItemFailures": [{"itemIdentifier": "2000"}]}
    environment, _ = metric_totals(emf_documents(harness.lines))
    assert (environment["SensorReadingsProcessed"], environment["RecordsFailed"]) == (50, 1)


def test_calls_still_queued_at_the_deadline_are_failures_not_a_crash(harness: Harness) -> None:
    release = threading.Event()

    def hang(**_: Any) -> None:
        release.wait(timeout=30)

    harness.dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem", hang)
    try:  # 40 calls for 16 threads: 24 never start before the deadline
        with pytest.raises(index.BatchFailed, match="no record"):
            harness.run(many(1000, devices=50), Context(1_500))
    finally:
        release.set()
    environment, _ = metric_totals(emf_documents(harness.lines))
    assert (environment["SensorReadingsProcessed"], environment["RecordsFailed"]) == (0, 1000)


# ---------------------------------------------------------------- malformed events

def test_malformed_event_records_are_quarantined_not_a_crash(harness: Harness) -> None:
    event = kinesis_event([reading(1001)])
    event["Records"] = [None, "text", {"kinesis": {"sequenceNumber": "1000", "data": "=",
                                                   "approximateArrivalTimestamp": True}}, *event["Records"]]

    assert index.process(event, None, harness.runtime) == {"batchItemFailures": []}

    assert [i["sequenceNumber"] for i in scan_items(harness.dynamodb)] == ["1001"]
    lines = [line for body in objects(harness.s3, "quarantine/").values() for line in jsonl_gz(body)]
    assert sorted((line["sequenceNumber"], line["reason"]) for line in lines) == [
        ("", "data is not JSON"), ("", "data is not JSON"), ("1000", "data is not base64")]


def test_a_lone_surrogate_partition_key_is_archived_as_its_escape(harness: Harness) -> None:
    event = kinesis_event([reading(1001)])
    event["Records"][0]["kinesis"]["partitionKey"] = "press-\ud800"

    assert index.process(event, None, harness.runtime) == {"batchItemFailures": []}

    [body] = objects(harness.s3, "raw/").values()
    assert b'"partitionKey":"press-\\ud800"' in gzip.decompress(body)
    assert jsonl_gz(body)[0]["partitionKey"] == "press-\ud800"


# ---------------------------------------------------------------- 5. quarantine is linear in the input

def _multi(seq: int, readings: dict[str, Any], device: str = "press-1") -> dict[str, Any]:
    payload = {"deviceId": device, "timestamp": RECEIVED - 1000, "receivedAt": RECEIVED, "topicDeviceId": device,
               "readings": readings}
    return {"sequenceNumber": str(seq), "partitionKey": device, "arrivedAt": RECEIVED + 200, "payload": payload}


def test_quarantine_holds_each_payload_once(harness: Harness) -> None:
    bad = {f"unknown{i:03d}": i for i in range(100)}  # 100 rejected readings in one allowed message
    huge = {f"u{i:04d}": i for i in range(9_000)}  # a 125 KB message under IoT Core's 128 KB limit
    records = [_multi(1001, bad), _multi(1002, huge, device="press-2"), reading(1003)]
    payload_bytes = sum(len(json.dumps(r["payload"])) for r in records[:2])

    assert harness.run(records) == {"batchItemFailures": []}

    [body] = objects(harness.s3, "quarantine/").values()
    text = gzip.decompress(body)
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["sequenceNumber"], line["reason"], len(line.get("rejected", []))) for line in lines] == [
        ("1001", "unknown sensorType", 100), ("1002", "too many readings", 0)]
    # each payload once (as an escaped JSON string), plus a short entry per rejected reading
    assert len(text) < 1.5 * payload_bytes + 100 * 80
    assert [i["sequenceNumber"] for i in scan_items(harness.dynamodb)] == ["1003"]
    warnings = [d for d in harness.documents() if d.get("message") == "record quarantined"]
    assert [(w["sequenceNumber"], w["readingsRejected"]) for w in warnings] == [("1001", 100), ("1002", 1)]


def test_a_hundred_readings_in_one_message_are_stored(moto_endpoint: str) -> None:
    harness = Harness(moto_endpoint, env={**ENV, "UNKNOWN_SENSOR": "store"})

    assert harness.run([_multi(1001, {f"s{i:03d}": i for i in range(100)})]) == {"batchItemFailures": []}

    assert len(scan_items(harness.dynamodb)) == 100
    environment, by_type = metric_totals(emf_documents(harness.lines))
    assert environment["SensorReadingsProcessed"] == 100
    assert len(by_type) == index.MAX_SENSOR_TYPE_DIMENSIONS + 1 and by_type["_other"]["SensorReadingsProcessed"] == 80


def test_base64_data_of_a_record_is_never_decoded_leniently(harness: Harness) -> None:
    records = [{"sequenceNumber": "1001", "partitionKey": "p", "arrivedAt": RECEIVED, "base64": "AAAA="},
               {"sequenceNumber": "1002", "partitionKey": "p", "arrivedAt": RECEIVED,
                "base64": base64.b64encode(json.dumps(reading(1)["payload"]).encode()).decode()}]
    harness.run(records)
    lines = [line for body in objects(harness.s3, "quarantine/").values() for line in jsonl_gz(body)]
    assert [(line["sequenceNumber"], line["reason"]) for line in lines] == [("1001", "data is not base64")]


def test_the_sdk_makes_one_attempt_per_call_and_the_processor_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    runtime = index.Runtime.from_env({"DYNAMODB_TABLE": "t", "S3_BUCKET": "b"})
    try:
        for client in (runtime.s3, runtime.dynamodb):  # botocore's max_attempts would not count the first
            assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    finally:
        runtime.pool.shutdown()


# ---------------------------------------------------------------- retries after partial failures, end to end

def _mixed_batch() -> list[dict[str, Any]]:
    """Good readings, bad ones, a conflicting value at the same millisecond, a multi-reading record."""
    records = many(90)
    records[10] = reading(1010, value="n/a")
    records[20] = reading(1020, device="press-0", value=77, offset_ms=0)  # same ms as 1000, another value
    records[30] = _multi(1030, {"temperature": 50, "pressure": "high", "mystery": 1})
    records[40] = {"sequenceNumber": "1040", "partitionKey": "p", "arrivedAt": RECEIVED, "base64": "AAAA="}
    return records


def _state(harness: Harness) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    rows = {(line["sequenceNumber"], r["reason"], r.get("sensorType", ""))
            for body in objects(harness.s3, "quarantine/").values() for line in jsonl_gz(body)
            for r in line.get("rejected", [line])}
    return scan_items(harness.dynamodb), sorted(rows)


def _reset(endpoint: str) -> None:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")) as answer:
        answer.read()


def test_under_faults_and_retries_every_record_ends_as_in_a_clean_run(moto_endpoint: str) -> None:
    records = _mixed_batch()
    clean = Harness(moto_endpoint)
    assert clean.run(records) == {"batchItemFailures": []}
    expected = _state(clean)
    clean_totals, _ = metric_totals(emf_documents(clean.lines))
    _reset(moto_endpoint)

    Harness(moto_endpoint)  # the table and bucket again
    remaining, counted, quarantined_counted = records, 0.0, 0.0
    for attempt in range(6):
        harness = Harness(moto_endpoint, create=False)
        with_clock(harness, FakeClock())
        if attempt < 4:  # each attempt its own faults: a withheld device, dropped connections, a lost quarantine
            Withhold(harness, lambda _i, item, a=attempt: item["deviceId"]["S"] == f"press-{(3 * a + 1) % 10}")
            drops = iter(range(3))
            harness.dynamodb.meta.events.register(
                "before-send.dynamodb.BatchWriteItem",
                lambda drops=drops, **_: next(drops, None) is not None and _raise_closed())
            if attempt == 1:
                harness.s3.meta.events.register("provide-client-params.s3.PutObject", _lose_quarantine)
        response = harness.run(remaining, Context(60_000))
        totals, _ = metric_totals(emf_documents(harness.lines))
        counted += totals["SensorReadingsProcessed"]
        quarantined_counted += totals["RecordsQuarantined"]
        if not response["batchItemFailures"]:
            break
        lowest = int(response["batchItemFailures"][0]["itemIdentifier"])
        remaining = [r for r in remaining if int(r["sequenceNumber"]) >= lowest]
    else:
        pytest.fail("the retries never finished")

    assert attempt == 4  # every faulty attempt left something to retry
    assert _state(harness) == expected
    assert (counted, quarantined_counted) == (clean_totals["SensorReadingsProcessed"],
                                              clean_totals["RecordsQuarantined"])


def _raise_closed() -> None:
    raise ConnectionClosedError(endpoint_url="http://moto")


def _lose_quarantine(params: dict[str, Any], **_: Any) -> None:
    if params["Key"].startswith("quarantine/"):
        params["Bucket"] = "no-such-bucket"


# ---------------------------------------------------------------- the packed layout under the same faults

PACKED_ENV = {**ENV, "STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "60"}


def _stored_readings(harness: Harness) -> set[tuple[Any, ...]]:
    """Every reading the table holds, packed items unpacked and repeats dropped, as `iotpipe readings` reads."""
    from iotpipe.query import to_readings

    pages = harness.unhooked_dynamodb.get_paginator("scan").paginate(TableName=TABLE)
    return {(r.device_id, r.sensor_type, r.timestamp, r.value, r.unit, r.status, r.reason)
            for page in pages for item in page["Items"] for r in to_readings(item)}


def test_packed_layout_under_faults_and_retries_stores_every_reading_of_a_clean_run(moto_endpoint: str) -> None:
    records = _mixed_batch()
    clean = Harness(moto_endpoint, env=PACKED_ENV)
    assert clean.run(records) == {"batchItemFailures": []}
    expected, (_, expected_quarantine) = _stored_readings(clean), _state(clean)
    assert any("#packed#" in item["sk"] for item in scan_items(clean.dynamodb))
    clean_totals, _ = metric_totals(emf_documents(clean.lines))
    _reset(moto_endpoint)

    Harness(moto_endpoint)
    remaining, counted, lowest_failures = records, 0.0, []
    for attempt in range(6):
        harness = Harness(moto_endpoint, create=False, env=PACKED_ENV)
        with_clock(harness, FakeClock())
        if attempt < 3:  # a device's packed items are not written: the batch is cut at their first record
            Withhold(harness, lambda _i, item, a=attempt: item["deviceId"]["S"] == f"press-{(3 * a + 1) % 10}")
        response = harness.run(remaining, Context(60_000))
        totals, _ = metric_totals(emf_documents(harness.lines))
        counted += totals["SensorReadingsProcessed"]
        if not response["batchItemFailures"]:
            break
        lowest_failures.append(response["batchItemFailures"][0]["itemIdentifier"])
        remaining = [r for r in remaining if int(r["sequenceNumber"]) >= int(lowest_failures[-1])]
    else:
        pytest.fail("the retries never finished")

    # press-1's first record is 1001; then press-4's first record after 1001 is 1004; then press-7's, 1007
    assert lowest_failures == ["1001", "1004", "1007"]
    assert _stored_readings(harness) == expected
    assert _state(harness)[1] == expected_quarantine
    assert counted == clean_totals["SensorReadingsProcessed"]
