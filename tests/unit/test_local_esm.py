"""The local Kinesis event source mapping: Lambda's batching, ordering and error handling, against a moto server
with a fake function that records every event and fails on command."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from iotpipe.aws import ClientFactory
from iotpipe.errors import ConfigError
from iotpipe.local.esm import (
    MappingRunner,
    MappingSpec,
    mapping_from_properties,
)
from iotpipe.local.functions.result import InvokeResult

REGION = "us-east-1"
STREAM = "esm-readings"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:processor"
ROLE_ARN = "arn:aws:iam::123456789012:role/processor-role"

Decide = Callable[[list[dict[str, Any]]], InvokeResult]


@dataclass
class FakeFunction:
    """Records each event; ``decide`` (given the event's records) says how the invocation ends."""

    decide: Decide = field(default=lambda _records: InvokeResult(None))
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        self.events.append(json.loads(json.dumps(event)))  # the function gets JSON, as across a process boundary
        return self.decide(event["Records"])

    def batches(self) -> list[list[str]]:
        """The data of each delivered batch, decoded."""
        return [[data(record) for record in event["Records"]] for event in self.events]


def data(record: dict[str, Any]) -> str:
    return base64.b64decode(record["kinesis"]["data"]).decode()


@dataclass(frozen=True)
class Stream:
    clients: ClientFactory
    arn: str
    kinesis: Any

    def put(self, *values: str, key: str = "device-1") -> list[str]:
        """Put ``values`` in order under one partition key (one shard); their sequence numbers."""
        return [self.kinesis.put_record(StreamARN=self.arn, Data=value.encode(), PartitionKey=key)["SequenceNumber"]
                for value in values]


def make_stream(endpoint: str, shards: int = 1) -> Stream:
    clients = ClientFactory(region=REGION, endpoint_url=endpoint)
    kinesis = clients.client("kinesis")
    kinesis.create_stream(StreamName=STREAM, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    arn = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"]
    return Stream(clients, arn, kinesis)


def spec_for(stream: Stream, **changes: Any) -> MappingSpec:
    spec = MappingSpec(function_name="processor", function_arn=FUNCTION_ARN, stream_arn=stream.arn, batch_size=100,
                       batching_window_s=0, starting_position="TRIM_HORIZON", report_batch_item_failures=False,
                       bisect_on_error=False, max_retry_attempts=-1, max_record_age_s=-1,
                       on_failure_destination=None, enabled=True, invoke_identity_arn=ROLE_ARN)
    return replace(spec, **changes)


def runner_for(stream: Stream, function: FakeFunction, **changes: Any) -> MappingRunner:
    return MappingRunner(spec_for(stream, **changes), stream.clients, function, sleep=lambda _seconds: None)


def make_queue(stream: Stream) -> tuple[str, str]:
    sqs = stream.clients.client("sqs")
    url = sqs.create_queue(QueueName="esm-failures")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def failure_documents(stream: Stream, url: str) -> list[dict[str, Any]]:
    sqs = stream.clients.client("sqs")
    documents: list[dict[str, Any]] = []
    for _ in range(20):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        documents += [json.loads(message["Body"]) for message in messages]
    return documents


def fail_when(poison: str) -> Decide:
    """A function that raises whenever its batch holds ``poison``."""
    return lambda records: InvokeResult("Unhandled" if any(data(r) == poison for r in records) else None)


@pytest.fixture
def stream(moto_endpoint: str) -> Iterator[Stream]:
    yield make_stream(moto_endpoint)


# -- the event ---------------------------------------------------------------------------------------------------


def test_event_has_lambdas_kinesis_record_format(stream: Stream) -> None:
    (sequence,) = stream.put("hello")
    function = FakeFunction()
    assert runner_for(stream, function).run_once() == 1
    (record,) = function.events[0]["Records"]
    assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
    assert record["kinesis"]["partitionKey"] == "device-1"
    assert record["kinesis"]["sequenceNumber"] == sequence
    assert base64.b64decode(record["kinesis"]["data"]) == b"hello"
    arrival = record["kinesis"]["approximateArrivalTimestamp"]
    assert isinstance(arrival, float) and abs(arrival - time.time()) < 60
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventVersion"] == "1.0"
    assert record["eventID"] == f"shardId-000000000000:{sequence}"
    assert record["eventName"] == "aws:kinesis:record"
    assert record["invokeIdentityArn"] == ROLE_ARN
    assert record["awsRegion"] == REGION
    assert record["eventSourceARN"] == stream.arn


# -- batching and order ------------------------------------------------------------------------------------------


def test_batch_size_bounds_each_invocation_and_order_is_kept(stream: Stream) -> None:
    values = [f"r{i}" for i in range(25)]
    stream.put(*values)
    function = FakeFunction()
    runner = runner_for(stream, function, batch_size=10)
    assert runner.run_once() == 25
    assert function.batches() == [values[:10], values[10:20], values[20:]]
    assert runner.run_once() == 0  # the checkpoint moved on: nothing is delivered twice
    stats = runner.stats
    assert (stats.invocations, stats.records_read, stats.records_processed) == (3, 25, 25)


@dataclass
class FakeTime:
    """A clock that only moves when the runner sleeps; ``on_sleep`` runs at each sleep (to add records)."""

    now: float = field(default_factory=time.time)
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[int], None] = field(default=lambda _count: None)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


def test_batching_window_gathers_records_until_it_expires(stream: Stream) -> None:
    stream.put("a")
    fake = FakeTime(on_sleep=lambda count: stream.put(f"late{count}") if count <= 2 else None)
    function = FakeFunction()
    runner = MappingRunner(spec_for(stream, batching_window_s=1.0), stream.clients, function,
                           clock=fake.clock, sleep=fake.sleep, poll_interval_s=0.25)
    assert runner.run_once(window=True) == 3
    # One invocation with the records that came in during the window, sent once the window ran out.
    assert function.batches() == [["a", "late1", "late2"]]
    assert sum(fake.sleeps) == pytest.approx(1.0)


def test_batching_window_ends_early_when_the_batch_is_full(stream: Stream) -> None:
    stream.put("a")
    fake = FakeTime(on_sleep=lambda count: stream.put("b", "c") if count == 1 else None)
    function = FakeFunction()
    runner = MappingRunner(spec_for(stream, batching_window_s=300, batch_size=3), stream.clients, function,
                           clock=fake.clock, sleep=fake.sleep, poll_interval_s=0.25)
    assert runner.run_once(window=True) == 3
    assert function.batches() == [["a", "b", "c"]]
    assert fake.sleeps == [0.25]  # no waiting once the batch was full


def test_each_shards_records_arrive_in_order_with_background_threads(moto_endpoint: str) -> None:
    stream = make_stream(moto_endpoint, shards=2)
    sent: dict[str, list[str]] = {}
    for i in range(60):
        key = f"device-{i % 7}"
        value = f"{key}:{i}"
        stream.put(value, key=key)
        sent.setdefault(key, []).append(value)
    function = FakeFunction()
    runner = MappingRunner(spec_for(stream, batch_size=8), stream.clients, function, poll_interval_s=0.02)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while runner.stats.records_processed < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.stop()
    assert not runner.running
    events = function.events
    shards = {record["eventID"].split(":")[0] for event in events for record in event["Records"]}
    assert shards == {"shardId-000000000000", "shardId-000000000001"}
    assert all(len({r["eventID"].split(":")[0] for r in event["Records"]}) == 1 for event in events)
    received: dict[str, list[str]] = {}
    for event in events:
        for record in event["Records"]:
            received.setdefault(record["kinesis"]["partitionKey"], []).append(data(record))
    assert received == sent  # every record once, in order per device
    per_shard: dict[str, list[int]] = {}
    for event in events:
        for record in event["Records"]:
            per_shard.setdefault(record["eventID"].split(":")[0], []).append(int(record["kinesis"]["sequenceNumber"]))
    assert all(sequence == sorted(sequence) for sequence in per_shard.values())


# -- starting positions -------------------------------------------------------------------------------------------


def test_latest_skips_records_already_in_the_stream(stream: Stream) -> None:
    stream.put("old")
    function = FakeFunction()
    runner = runner_for(stream, function, starting_position="LATEST")
    assert runner.run_once() == 0
    stream.put("new")
    assert runner.run_once() == 1
    assert function.batches() == [["new"]]


def test_trim_horizon_reads_everything_in_the_stream(stream: Stream) -> None:
    stream.put("old")
    function = FakeFunction()
    runner = runner_for(stream, function, starting_position="TRIM_HORIZON")
    stream.put("new")
    assert runner.run_once() == 2
    assert function.batches() == [["old", "new"]]


def test_at_timestamp_starts_at_the_first_record_after_it(stream: Stream) -> None:
    stream.put("before")
    # boto3 sends Kinesis timestamps in whole seconds: start at the next second boundary.
    at = math.floor(time.time()) + 1
    time.sleep(at - time.time() + 0.05)
    stream.put("after")
    function = FakeFunction()
    runner = runner_for(stream, function, starting_position="AT_TIMESTAMP", starting_position_timestamp=at)
    assert runner.run_once() == 1
    assert function.batches() == [["after"]]


def test_disabled_mapping_delivers_nothing(stream: Stream) -> None:
    stream.put("a")
    function = FakeFunction()
    runner = runner_for(stream, function, enabled=False)
    runner.start()
    assert runner.run_once() == 0
    assert function.events == [] and not runner.running


# -- partial batch responses ---------------------------------------------------------------------------------------


def test_partial_failure_resumes_from_the_lowest_failed_sequence_number(stream: Stream) -> None:
    values = [f"r{i}" for i in range(6)]
    sequences = stream.put(*values)
    answers = iter([
        # Out of order on purpose: Lambda takes the lowest sequence number, not the first item.
        {"batchItemFailures": [{"itemIdentifier": sequences[4]}, {"itemIdentifier": sequences[2]}]},
        {"batchItemFailures": []},
    ])
    function = FakeFunction(lambda _records: InvokeResult(None, next(answers)))
    runner = runner_for(stream, function, report_batch_item_failures=True, max_retry_attempts=5)
    assert runner.run_once() == 6
    assert function.batches() == [values, values[2:]]
    stats = runner.stats
    assert (stats.partial_failures, stats.retries, stats.records_processed) == (1, 1, 6)
    assert runner.checkpoints() == {"shardId-000000000000": sequences[-1]}


@pytest.mark.parametrize("failures", [
    [{"itemIdentifier": ""}],
    [{"itemIdentifier": None}],
    [{"itemId": "1"}],  # a bad key name
    [{"itemIdentifier": "999999"}],  # not a record of this batch
])
def test_invalid_item_identifier_fails_the_whole_batch(stream: Stream, failures: list[dict[str, Any]]) -> None:
    values = ["a", "b", "c"]
    stream.put(*values)
    answers = iter([{"batchItemFailures": failures}, None])
    function = FakeFunction(lambda _records: InvokeResult(None, next(answers)))
    runner = runner_for(stream, function, report_batch_item_failures=True, max_retry_attempts=3)
    assert runner.run_once() == 3
    assert function.batches() == [values, values]  # retried whole
    assert runner.stats.retries == 1


@pytest.mark.parametrize("payload", [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}])
def test_empty_or_null_response_is_success(stream: Stream, payload: Any) -> None:
    stream.put("a", "b")
    function = FakeFunction(lambda _records: InvokeResult(None, payload))
    runner = runner_for(stream, function, report_batch_item_failures=True)
    assert runner.run_once() == 2
    assert len(function.events) == 1 and runner.stats.retries == 0


def test_item_failures_are_ignored_without_report_batch_item_failures(stream: Stream) -> None:
    sequences = stream.put("a", "b")
    function = FakeFunction(lambda _records: InvokeResult(None, {"batchItemFailures": [
        {"itemIdentifier": sequences[0]}]}))
    runner = runner_for(stream, function, report_batch_item_failures=False)
    assert runner.run_once() == 2
    assert len(function.events) == 1 and runner.stats.partial_failures == 0


def test_partial_failure_retries_count_towards_maximum_retry_attempts(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    sequences = stream.put("a", "b", "c")
    function = FakeFunction(lambda _records: InvokeResult(None, {"batchItemFailures": [
        {"itemIdentifier": sequences[1]}]}))
    runner = runner_for(stream, function, report_batch_item_failures=True, max_retry_attempts=2,
                        on_failure_destination=queue_arn)
    assert runner.run_once() == 3
    assert function.batches() == [["a", "b", "c"], ["b", "c"], ["b", "c"]]
    (document,) = failure_documents(stream, url)
    assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert document["KinesisBatchInfo"]["startSequenceNumber"] == sequences[1]
    assert document["KinesisBatchInfo"]["batchSize"] == 2
    assert "functionError" not in document["responseContext"]  # the function did not fail, it reported items


# -- function errors: bisect, retries, destination ---------------------------------------------------------------


def test_bisection_isolates_a_poison_record(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    values = [f"r{i}" for i in range(8)]
    sequences = stream.put(*values)
    function = FakeFunction(fail_when("r5"))
    runner = runner_for(stream, function, bisect_on_error=True, max_retry_attempts=1,
                        on_failure_destination=queue_arn)
    assert runner.run_once() == 8
    assert function.batches() == [
        values,  # fails: split in two
        values[:4],  # ok
        values[4:],  # fails: split
        ["r4", "r5"],  # fails: split
        ["r4"],  # ok
        ["r5"], ["r5"],  # fails, one retry, fails: to the destination
        ["r6", "r7"],  # ok
    ]
    stats = runner.stats
    assert (stats.bisections, stats.retries, stats.function_errors) == (3, 1, 5)
    assert (stats.records_processed, stats.sent_to_destination, stats.batches_to_destination) == (7, 1, 1)
    (document,) = failure_documents(stream, url)
    info = document["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        sequences[5], sequences[5], 1)
    assert document["requestContext"]["approximateInvokeCount"] == 2


def test_retries_exhausted_sends_lambdas_failure_record_to_sqs(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    sequences = stream.put("a", "b", "c")
    function = FakeFunction(lambda _records: InvokeResult("Unhandled"))
    runner = runner_for(stream, function, max_retry_attempts=2, on_failure_destination=queue_arn)
    before = time.time()
    assert runner.run_once() == 3
    assert function.batches() == [["a", "b", "c"]] * 3  # the first try and two retries
    (document,) = failure_documents(stream, url)
    context = document["requestContext"]
    assert context["functionArn"] == FUNCTION_ARN
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 3
    assert len(context["requestId"]) == 36
    assert document["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                           "functionError": "Unhandled"}
    assert document["version"] == "1.0"
    assert document["timestamp"].endswith("Z") and len(document["timestamp"]) == len("2019-11-14T00:38:06.021Z")
    info = document["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000"
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequences[0], sequences[-1])
    assert info["batchSize"] == 3
    assert info["streamArn"] == stream.arn
    for key in ("approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord"):
        assert info[key].endswith("Z")
        assert abs(time.mktime(time.strptime(info[key][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone - before) < 60
    assert runner.stats.retries == 2 and runner.stats.sent_to_destination == 3
    # The shard moves on: later records are delivered.
    function.decide = lambda _records: InvokeResult(None)
    stream.put("d")
    assert runner.run_once() == 1 and function.batches()[-1] == ["d"]


def test_timeout_counts_as_a_function_error(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    stream.put("slow")
    function = FakeFunction(lambda _records: InvokeResult("TimedOut"))
    runner = runner_for(stream, function, max_retry_attempts=0, on_failure_destination=queue_arn)
    assert runner.run_once() == 1
    (document,) = failure_documents(stream, url)
    assert document["responseContext"]["functionError"] == "TimedOut"
    assert document["requestContext"]["approximateInvokeCount"] == 1


def test_an_invoker_that_raises_is_a_function_error_not_a_lost_batch(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    stream.put("a")

    def broken(_records: list[dict[str, Any]]) -> InvokeResult:
        raise RuntimeError("worker process died")

    runner = runner_for(stream, FakeFunction(broken), max_retry_attempts=1, on_failure_destination=queue_arn)
    assert runner.run_once() == 1
    assert runner.stats.function_errors == 2
    assert len(failure_documents(stream, url)) == 1


def test_infinite_retries_keep_retrying_until_the_function_recovers(stream: Stream) -> None:
    stream.put("a", "b")
    outcomes = iter(["Unhandled"] * 12 + [None])
    function = FakeFunction(lambda _records: InvokeResult(next(outcomes)))
    runner = runner_for(stream, function, max_retry_attempts=-1)
    assert runner.run_once() == 2
    assert len(function.events) == 13 and runner.stats.retries == 12
    assert runner.stats.records_processed == 2


def test_without_a_destination_discarded_records_are_counted(stream: Stream) -> None:
    stream.put("a", "b")
    runner = runner_for(stream, FakeFunction(lambda _records: InvokeResult("Unhandled")), max_retry_attempts=0)
    assert runner.run_once() == 2
    assert runner.stats.discarded == 2 and runner.stats.sent_to_destination == 0


def test_failed_batch_goes_to_an_sns_destination(stream: Stream) -> None:
    sns = stream.clients.client("sns")
    topic = sns.create_topic(Name="esm-failures")["TopicArn"]
    url, queue_arn = make_queue(stream)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    stream.put("a")
    runner = runner_for(stream, FakeFunction(lambda _records: InvokeResult("Unhandled")), max_retry_attempts=0,
                        on_failure_destination=topic)
    assert runner.run_once() == 1
    (document,) = failure_documents(stream, url)
    assert document["KinesisBatchInfo"]["batchSize"] == 1


def test_failed_batch_goes_to_an_s3_destination_with_the_whole_invocation_record(stream: Stream) -> None:
    s3 = stream.clients.client("s3")
    s3.create_bucket(Bucket="esm-failures")
    stream.put("a")
    stream.put("b")
    runner = runner_for(stream, FakeFunction(lambda _records: InvokeResult("Unhandled")), max_retry_attempts=0,
                        on_failure_destination="arn:aws:s3:::esm-failures")
    assert runner.run_once() == 2
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="esm-failures")["Contents"]]
    assert re.fullmatch(r"aws/lambda/[0-9a-f-]{36}/shardId-000000000000/\d{4}/\d\d/\d\d/"
                        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}", key)
    document = json.loads(s3.get_object(Bucket="esm-failures", Key=key)["Body"].read())
    assert document["KinesisBatchInfo"]["batchSize"] == 2
    records = document["payload"]["Records"]
    assert [base64.b64decode(r["kinesis"]["data"]) for r in records] == [b"a", b"b"]
    assert records[0]["kinesis"]["sequenceNumber"] == document["KinesisBatchInfo"]["startSequenceNumber"]


# -- record age ----------------------------------------------------------------------------------------------------


def test_records_older_than_the_maximum_age_go_to_the_destination_unprocessed(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    stream.put("old-1", "old-2")
    function = FakeFunction()
    runner = MappingRunner(spec_for(stream, max_record_age_s=60, on_failure_destination=queue_arn), stream.clients,
                           function, clock=lambda: time.time() + 120, sleep=lambda _seconds: None)
    assert runner.run_once() == 2
    assert function.events == []
    (document,) = failure_documents(stream, url)
    assert document["requestContext"]["condition"] == "RecordAgeExceeded"
    assert document["requestContext"]["approximateInvokeCount"] == 0
    assert document["KinesisBatchInfo"]["batchSize"] == 2
    assert runner.stats.records_expired == 2


def test_records_that_age_out_while_retried_stop_being_retried(stream: Stream) -> None:
    url, queue_arn = make_queue(stream)
    stream.put("a", "b")
    fake = FakeTime()

    def fail_and_age(_records: list[dict[str, Any]]) -> InvokeResult:
        fake.now += 61  # each attempt takes a minute
        return InvokeResult("Unhandled")

    function = FakeFunction(fail_and_age)
    runner = MappingRunner(spec_for(stream, max_record_age_s=100, max_retry_attempts=-1,
                                    on_failure_destination=queue_arn),
                           stream.clients, function, clock=fake.clock, sleep=fake.sleep, retry_backoff_s=0)
    assert runner.run_once() == 2
    assert len(function.events) == 2  # at 61 s still young enough to retry; at 122 s past the maximum age
    (document,) = failure_documents(stream, url)
    assert document["requestContext"]["condition"] == "RecordAgeExceeded"
    assert document["requestContext"]["approximateInvokeCount"] == 2
    assert document["responseContext"]["functionError"] == "Unhandled"


# -- stopping ------------------------------------------------------------------------------------------------------


def test_stop_returns_promptly_during_a_long_batching_window(stream: Stream) -> None:
    function = FakeFunction()
    runner = MappingRunner(spec_for(stream, batching_window_s=300, batch_size=1000), stream.clients, function,
                           poll_interval_s=0.05)
    runner.start()
    stream.put("waiting")
    deadline = time.monotonic() + 10
    while runner.stats.records_read < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.stats.records_read == 1  # the record sits in a batch whose window runs for minutes
    started = time.monotonic()
    runner.stop(timeout_s=10)
    assert time.monotonic() - started < 2
    assert not runner.running
    assert function.events == []


def test_stop_interrupts_retry_backoff_and_keeps_the_batch_unprocessed(stream: Stream) -> None:
    stream.put("a")
    called = threading.Event()

    def fail(_records: list[dict[str, Any]]) -> InvokeResult:
        called.set()
        return InvokeResult("Unhandled")

    runner = MappingRunner(spec_for(stream, max_retry_attempts=-1), stream.clients, FakeFunction(fail),
                           poll_interval_s=0.05, retry_backoff_s=60)
    runner.start()
    assert called.wait(10)
    started = time.monotonic()
    runner.stop(timeout_s=10)
    assert time.monotonic() - started < 2 and not runner.running
    assert runner.checkpoints() == {"shardId-000000000000": None}
    assert runner.stats.records_processed == 0


# -- the mapping's properties ---------------------------------------------------------------------------------------


def template_mapping_properties() -> dict[str, Any]:
    """The event source mapping our own template renders, intrinsics resolved as a deploy would."""
    from iotpipe import naming
    from iotpipe.composition import compose
    from iotpipe.config import build_config

    resources = compose(build_config({}, "dev", {})).template.to_dict()["Resources"]
    properties = dict(resources[naming.EVENT_SOURCE_MAPPING]["Properties"])
    properties["EventSourceArn"] = "arn:aws:kinesis:us-east-1:123456789012:stream/iot-readings-dev"
    properties["FunctionName"] = FUNCTION_ARN
    properties["DestinationConfig"] = {"OnFailure": {
        "Destination": "arn:aws:sqs:us-east-1:123456789012:iot-dlq-dev"}}
    return properties


def test_mapping_from_our_template() -> None:
    properties = template_mapping_properties()
    spec = mapping_from_properties(properties, function_arn=FUNCTION_ARN, invoke_identity_arn=ROLE_ARN)
    assert spec.stream_arn == properties["EventSourceArn"]
    assert spec.function_name == FUNCTION_ARN and spec.function_arn == FUNCTION_ARN
    assert spec.batch_size == properties["BatchSize"]
    assert spec.batching_window_s == properties["MaximumBatchingWindowInSeconds"]
    assert spec.starting_position == "TRIM_HORIZON"
    assert spec.report_batch_item_failures and spec.bisect_on_error and spec.enabled
    assert spec.max_retry_attempts == properties["MaximumRetryAttempts"]
    assert spec.max_record_age_s == properties["MaximumRecordAgeInSeconds"]
    assert spec.on_failure_destination == "arn:aws:sqs:us-east-1:123456789012:iot-dlq-dev"
    assert spec.region == "us-east-1" and spec.invoke_identity_arn == ROLE_ARN


def test_mapping_defaults_are_lambdas() -> None:
    spec = mapping_from_properties({"EventSourceArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/s",
                                    "FunctionName": "f", "StartingPosition": "LATEST"}, function_arn=FUNCTION_ARN)
    assert (spec.batch_size, spec.batching_window_s, spec.max_retry_attempts, spec.max_record_age_s) == (
        100, 0, -1, -1)
    assert not spec.report_batch_item_failures and not spec.bisect_on_error
    assert spec.on_failure_destination is None and spec.enabled and spec.parallelization_factor == 1


def test_mapping_accepts_infinite_limits_and_string_forms() -> None:
    spec = mapping_from_properties({"EventSourceArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/s",
                                    "FunctionName": "f", "StartingPosition": "AT_TIMESTAMP",
                                    "StartingPositionTimestamp": "1700000000", "MaximumRetryAttempts": "-1",
                                    "MaximumRecordAgeInSeconds": -1, "Enabled": "false",
                                    "ParallelizationFactor": 4}, function_arn=FUNCTION_ARN)
    assert (spec.max_retry_attempts, spec.max_record_age_s, spec.enabled) == (-1, -1, False)
    assert spec.starting_position_timestamp == 1700000000.0
    assert spec.parallelization_factor == 4  # kept as declared; the runner runs one batch per shard


@pytest.mark.parametrize(("change", "message"), [
    ({"EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:q"}, "not a Kinesis stream ARN"),
    ({"EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1"}, "consumers"),
    ({"EventSourceArn": {"Fn::GetAtt": ["Stream", "Arn"]}}, "resolve intrinsics first"),
    ({"StartingPosition": "EARLIEST"}, "StartingPosition 'EARLIEST'"),
    ({"StartingPosition": "AT_TIMESTAMP"}, "needs StartingPositionTimestamp"),
    ({"BatchSize": 0}, "BatchSize 0 is out of range; use 1..10000"),
    ({"BatchSize": 20000}, "BatchSize 20000 is out of range"),
    ({"MaximumBatchingWindowInSeconds": 301}, "MaximumBatchingWindowInSeconds 301"),
    ({"MaximumRecordAgeInSeconds": 30}, "MaximumRecordAgeInSeconds 30 is out of range; use 60..604800"),
    ({"MaximumRetryAttempts": 2.5}, "MaximumRetryAttempts 2.5 must be -1 (infinite) or a whole number"),
    ({"BisectBatchOnFunctionError": "yes"}, "BisectBatchOnFunctionError 'yes' must be true or false"),
    ({"FunctionResponseTypes": ["Everything"]}, "only ReportBatchItemFailures"),
    ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:lambda:us-east-1:123456789012:function:f"}}},
     "SQS queue, SNS topic or S3 bucket"),
    ({"FilterCriteria": {"Filters": [{"Pattern": "{}"}]}}, "FilterCriteria is not supported by iotpipe local"),
    ({"TumblingWindowInSeconds": 60}, "TumblingWindowInSeconds is not supported"),
])
def test_mapping_rejects_what_cannot_run(change: dict[str, Any], message: str) -> None:
    properties = {**template_mapping_properties(), **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        mapping_from_properties(properties, function_arn=FUNCTION_ARN)


def test_records_read_all_end_somewhere(stream: Stream) -> None:
    """Nothing is lost silently: every record read is processed, sent to the destination or discarded."""
    url, queue_arn = make_queue(stream)
    stream.put(*[f"r{i}" for i in range(40)])
    sequences_failing = {"r3", "r17", "r18", "r39"}

    def decide(records: Sequence[dict[str, Any]]) -> InvokeResult:
        failed = [r["kinesis"]["sequenceNumber"] for r in records if data(r) in sequences_failing]
        if len(records) > 10 and failed:
            return InvokeResult("Unhandled")
        return InvokeResult(None, {"batchItemFailures": [{"itemIdentifier": s} for s in failed]})

    runner = runner_for(stream, FakeFunction(decide), batch_size=16, bisect_on_error=True, max_retry_attempts=1,
                        report_batch_item_failures=True, on_failure_destination=queue_arn)
    assert runner.run_once() == 40
    stats = runner.stats
    assert stats.records_read == 40
    assert stats.records_processed + stats.sent_to_destination + stats.discarded == 40
    documents = failure_documents(stream, url)
    assert sum(d["KinesisBatchInfo"]["batchSize"] for d in documents) == stats.sent_to_destination
    assert stats.batches_to_destination == len(documents) >= 3


# -- payload bound and the moto fix ----------------------------------------------------------------------------------


def test_a_batch_stays_under_the_6_mb_invocation_payload(stream: Stream) -> None:
    # Each record is ~1.3 MB once base64 encoded in the event: four fit in 6 MB, the fifth starts the next batch.
    values = [str(i) * 1_000_000 for i in range(6)]
    for value in values:
        stream.put(value)
    function = FakeFunction()
    runner = runner_for(stream, function, batch_size=100)
    assert runner.run_once() == 6
    assert [len(batch) for batch in function.batches()] == [4, 2]
    assert function.batches()[0] + function.batches()[1] == values
    assert all(len(json.dumps(event)) <= 6 * 1024 * 1024 for event in function.events)


@pytest.mark.usefixtures("emulator_patches")
def test_moto_shard_reads_page_through_the_shard_in_order(stream: Stream) -> None:
    from moto.kinesis.models import Shard

    assert Shard.get_records.__qualname__.startswith("_shard_scans")
    sequences = stream.put(*[f"r{i}" for i in range(23)])
    assert [int(s) for s in sequences] == list(range(int(sequences[0]), int(sequences[0]) + 23))
    kinesis, shard = stream.kinesis, "shardId-000000000000"
    iterator = kinesis.get_shard_iterator(StreamARN=stream.arn, ShardId=shard,
                                          ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                          StartingSequenceNumber=sequences[2])["ShardIterator"]
    seen: list[str] = []
    behind: list[int] = []
    for _ in range(10):
        page = kinesis.get_records(StreamARN=stream.arn, ShardIterator=iterator, Limit=7)
        if not page["Records"]:
            break
        assert "json" in page["ResponseMetadata"]["HTTPHeaders"]["content-type"]  # not text/html
        seen += [record["SequenceNumber"] for record in page["Records"]]
        behind.append(page["MillisBehindLatest"])
        iterator = page["NextShardIterator"]
    assert seen == sequences[3:]
    assert behind[-1] == 0 and all(ms >= 0 for ms in behind)
    latest = kinesis.get_shard_iterator(StreamARN=stream.arn, ShardId=shard,
                                        ShardIteratorType="LATEST")["ShardIterator"]
    assert kinesis.get_records(StreamARN=stream.arn, ShardIterator=latest)["Records"] == []
    (newer,) = stream.put("r23")
    assert int(newer) == int(sequences[-1]) + 1


def test_after_a_split_the_children_start_when_the_parent_is_done(stream: Stream) -> None:
    before = [f"p{i}" for i in range(5)]
    stream.put(*before)
    function = FakeFunction()
    runner = runner_for(stream, function, batch_size=3)
    assert runner.run_once() == 5  # the runner knows one shard
    stream.put("p5")
    stream.kinesis.split_shard(StreamARN=stream.arn, ShardToSplit="shardId-000000000000",
                               NewStartingHashKey=str(2 ** 127))
    after = {f"device-{i}": f"c{i}" for i in range(12)}
    for key, value in after.items():
        stream.put(value, key=key)
    assert runner.run_once() == 13  # the children are found, and read from their start
    delivered = [value for batch in function.batches() for value in batch]
    assert delivered[:6] == [*before, "p5"]  # the parent first, in order
    assert sorted(delivered[6:]) == sorted(after.values())
    children = {record["eventID"].split(":")[0] for event in function.events[3:] for record in event["Records"]}
    assert children == {"shardId-000000000001", "shardId-000000000002"}  # written to the open shards only
    assert set(runner.checkpoints()) == {"shardId-000000000000", "shardId-000000000001", "shardId-000000000002"}
    assert runner.run_once() == 0


def test_a_destination_that_refuses_keeps_the_records_for_another_delivery(stream: Stream) -> None:
    from iotpipe.errors import AwsError

    missing = f"arn:aws:sqs:{REGION}:123456789012:esm-failures"
    stream.put("a", "b")
    function = FakeFunction(lambda _records: InvokeResult("Unhandled"))
    runner = runner_for(stream, function, max_retry_attempts=0, on_failure_destination=missing)
    with pytest.raises(AwsError, match=r"refused a failed batch .* 5 times"):
        runner.run_once()
    assert runner.stats.destination_errors == 5
    assert runner.checkpoints() == {"shardId-000000000000": None}  # not done with
    url, queue_arn = make_queue(stream)  # the queue appears: the same records go through again
    assert queue_arn == missing
    assert runner.run_once() == 2
    assert function.batches() == [["a", "b"], ["a", "b"]]
    (document,) = failure_documents(stream, url)
    assert document["KinesisBatchInfo"]["batchSize"] == 2
    assert runner.stats.records_read == 2  # kept in memory, not read twice


def test_a_kinesis_failure_while_gathering_keeps_the_records_read(stream: Stream) -> None:
    stream.put("a", "b", "c")
    function = FakeFunction()
    runner = runner_for(stream, function, batch_size=2, batching_window_s=60)
    runner.run_once()  # discovers the shard; delivers a, b, c
    stream.put("d", "e", "f")
    (worker,) = runner._shards.values()
    real_read, calls = worker._read, []

    def read_then_fail(limit: int) -> int:
        calls.append(limit)
        if len(calls) == 2:
            raise RuntimeError("emulator went away")
        return real_read(1)  # one record, so the batch is half full (and its window open) at the second call

    worker._read = read_then_fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        worker.poll(window=True)
    worker._read = real_read  # type: ignore[method-assign]
    assert runner.run_once() == 3
    assert function.batches()[-2:] == [["d", "e"], ["f"]]


def test_a_shared_client_keeps_boto3s_parsing(stream: Stream) -> None:
    class SharedClients:
        """One client per service, handed to everyone (as a cache would)."""

        def __init__(self) -> None:
            self.kinesis = stream.clients.client("kinesis")

        def client(self, service: str) -> Any:
            assert service == "kinesis"
            return self.kinesis

    shared = SharedClients()
    stream.put("a")
    function = FakeFunction()
    assert MappingRunner(spec_for(stream), shared, function).run_once() == 1
    assert function.batches() == [["a"]]
    iterator = shared.kinesis.get_shard_iterator(StreamARN=stream.arn, ShardId="shardId-000000000000",
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    (record,) = shared.kinesis.get_records(StreamARN=stream.arn, ShardIterator=iterator)["Records"]
    assert record["Data"] == b"a"  # bytes and a datetime, as boto3 gives them to everyone else
    assert hasattr(record["ApproximateArrivalTimestamp"], "tzinfo")


def test_a_replacing_runner_resumes_after_the_checkpoints_it_is_given(stream: Stream) -> None:
    stream.put("a", "b", "c")
    first = runner_for(stream, FakeFunction())
    assert first.run_once() == 3
    stream.put("d", "e")
    function = FakeFunction()
    second = MappingRunner(spec_for(stream), stream.clients, function, sleep=lambda _seconds: None,
                           resume_from=first.checkpoints())
    assert second.run_once() == 2
    assert function.batches() == [["d", "e"]]  # TRIM_HORIZON applies only where there is no checkpoint


def test_a_shard_poller_that_died_is_named_and_a_replacement_carries_on(stream: Stream) -> None:
    """The supervisor's view of a runner: a polling thread that ended with its shard unfinished is dead (a
    BaseException that no ``except Exception`` catches ends it); a runner started from its checkpoints
    delivers what is left."""
    stream.put("a")
    delivered = threading.Event()

    class Crash(BaseException):
        pass

    def crash_after_first(_records: list[dict[str, Any]]) -> InvokeResult:
        if delivered.is_set():
            raise Crash()
        delivered.set()
        return InvokeResult(None)

    function = FakeFunction(decide=crash_after_first)
    runner = MappingRunner(spec_for(stream), stream.clients, function, poll_interval_s=0.02)
    assert runner.dead_threads() == []  # not started
    previous_hook = threading.excepthook
    threading.excepthook = lambda _args: None  # the crash is the test's own
    try:
        runner.start()
        assert delivered.wait(10)
        assert runner.dead_threads() == []
        stream.put("b")
        deadline = time.monotonic() + 10
        while not runner.dead_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        [shard] = stream.kinesis.list_shards(StreamARN=stream.arn)["Shards"]
        assert runner.dead_threads() == [f"esm-{shard['ShardId']}"]
    finally:
        threading.excepthook = previous_hook
        runner.stop()
    assert runner.dead_threads() == []  # stopped on purpose
    again = FakeFunction()
    replacement = MappingRunner(spec_for(stream), stream.clients, again, sleep=lambda _seconds: None,
                                resume_from=runner.checkpoints())
    assert replacement.run_once() == 1
    assert again.batches() == [["b"]]
