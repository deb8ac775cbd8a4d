"""``iotpipe failures list|show|redrive`` against a moto server: a stack with the contract's outputs, a dead-letter
queue holding Lambda's Kinesis on-failure records, and the real processor run by ``iotpipe local``'s function
runner (a worker process, as Lambda would run it) against moto's table and bucket."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner, Result

from iotpipe import archive
from iotpipe import failures as failures_lib
from iotpipe.aws import ClientFactory
from iotpipe.cli import main
from iotpipe.config import load_config
from iotpipe.local.functions.result import InvokeResult
from iotpipe.local.functions.runner import FunctionRunner
from iotpipe.local.functions.spec import FunctionSpec

STACK = "iotpipe-dev"
TABLE, BUCKET, STREAM, FUNCTION = "SensorReadings-dev", "iot-raw-data-dev-test", "sensor-data-stream-dev", "proc-dev"
THRESHOLDS = {"temperature": {"min": 10, "max": 80, "unit": "celsius"}}
STACK_TEMPLATE = {
    "Resources": {
        "SensorDataTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": TABLE, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"}
                                     for n in ("deviceId", "sk", "anomalyDay", "anomalySk")],
            "KeySchema": [{"AttributeName": "deviceId", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{
                "IndexName": "AnomaliesByDay", "Projection": {"ProjectionType": "ALL"},
                "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                              {"AttributeName": "anomalySk", "KeyType": "RANGE"}]}]}},
        "RawDataBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": BUCKET}},
        "SensorDataStream": {"Type": "AWS::Kinesis::Stream",
                             "Properties": {"Name": STREAM, "ShardCount": 1, "RetentionPeriodHours": 24}},
        "DataProcessorDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "dlq-dev"}},
    },
    "Outputs": {
        "SensorDataTableName": {"Value": {"Ref": "SensorDataTable"}},
        "RawDataBucketName": {"Value": {"Ref": "RawDataBucket"}},
        "KinesisStreamName": {"Value": {"Ref": "SensorDataStream"}},
        "DeadLetterQueueUrl": {"Value": {"Ref": "DataProcessorDeadLetterQueue"}},
        "DataProcessorFunctionName": {"Value": FUNCTION},
        "EnvironmentSuffix": {"Value": "dev"},
    },
}


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack in moto, a clean working directory, and the stack's outputs."""
    monkeypatch.chdir(tmp_path)
    cloudformation = boto3.client("cloudformation", endpoint_url=moto_endpoint, region_name="us-east-1")
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(STACK_TEMPLATE))
    outputs = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    return {"endpoint": moto_endpoint, **{o["OutputKey"]: o["OutputValue"] for o in outputs}}


def aws(stack: Mapping[str, str], service: str) -> Any:
    return boto3.client(service, endpoint_url=stack["endpoint"], region_name="us-east-1")


@pytest.fixture
def processor(stack: Mapping[str, str], tmp_path: Path) -> Iterator[FunctionRunner]:
    """The shipped processor in a worker process, as ``iotpipe local`` runs it, on moto's table and bucket."""
    spec = FunctionSpec(name=FUNCTION, arn=f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}",
                        runtime="python3.12", handler="index.handler", code=failures_lib.shipped_processor_code(),
                        environment={"DYNAMODB_TABLE": TABLE, "S3_BUCKET": BUCKET,
                                     "THRESHOLDS": json.dumps(THRESHOLDS)},
                        timeout_s=60, memory_mb=256, log_group=f"/aws/lambda/{FUNCTION}")
    runner = FunctionRunner(spec, aws_endpoint=stack["endpoint"], region="us-east-1", workdir=tmp_path / "fn",
                            on_output=lambda _: None)
    try:
        yield runner
    finally:
        runner.close()


def payloads(values: Sequence[float], device: str = "press-07") -> list[bytes]:
    start = int(time.time() * 1000) - 60_000
    return [json.dumps({"deviceId": device, "sensorType": "temperature", "value": v, "timestamp": start + i,
                        "topicDeviceId": device}).encode() for i, v in enumerate(values)]


def put_records(stack: Mapping[str, str], datas: Sequence[bytes]) -> list[str]:
    kinesis = aws(stack, "kinesis")
    return [kinesis.put_record(StreamName=STREAM, Data=d, PartitionKey="press-07")["SequenceNumber"]
            for d in datas]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send_failure(stack: Mapping[str, str], first: str, last: str, count: int, arrival: float) -> None:
    """Lambda's on-failure record for a Kinesis batch, as AWS documents it (and iotpipe local writes it)."""
    document = {
        "requestContext": {"requestId": "c9b8fa9f-5a7f-4d0c-8ec6-4c3a3e8b1a90", "condition": "RetryAttemptsExhausted",
                           "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}",
                           "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": iso(arrival + 60),
        "KinesisBatchInfo": {"shardId": "shardId-000000000000", "startSequenceNumber": first,
                             "endSequenceNumber": last, "approximateArrivalOfFirstRecord": iso(arrival),
                             "approximateArrivalOfLastRecord": iso(arrival), "batchSize": count,
                             "streamArn": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"}}
    aws(stack, "sqs").send_message(QueueUrl=stack["DeadLetterQueueUrl"], MessageBody=json.dumps(document))


def queued(stack: Mapping[str, str]) -> int:
    attributes = aws(stack, "sqs").get_queue_attributes(
        QueueUrl=stack["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages",
                                                              "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def items(stack: Mapping[str, str]) -> list[dict[str, Any]]:
    return aws(stack, "dynamodb").scan(TableName=TABLE)["Items"]


def cli(stack: Mapping[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", stack["endpoint"]])


def target(stack: Mapping[str, str]) -> tuple[ClientFactory, Any]:
    return ClientFactory(region="us-east-1", endpoint_url=stack["endpoint"]), load_config(None, "dev", {})


def archive_batch(stack: Mapping[str, str], sequences: Sequence[int], datas: Sequence[bytes],
                  arrival_ms: int) -> None:
    """Archive objects exactly as the processor writes them (``iotpipe.archive``)."""
    processor = archive.load_processor()
    records = [archive.record(processor, "shardId-000000000000", seq, arrival_ms, data, "press-07")
               for seq, data in zip(sequences, datas, strict=True)]
    archive.put_objects(aws(stack, "s3"), BUCKET, archive.batch_objects(processor, records))


def test_list_shows_shard_range_age_and_warns_when_retention_runs_out(stack: dict[str, str]) -> None:
    now = time.time()
    send_failure(stack, "100", "102", 3, now - 3600)  # 23 h of 24 left
    send_failure(stack, "200", "201", 2, now - 22 * 3600)  # 2 h left: under 20 %
    aws(stack, "sqs").send_message(QueueUrl=stack["DeadLetterQueueUrl"], MessageBody="not json")

    result = cli(stack, "failures", "list", "--output", "json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(f["startSequenceNumber"], f["endSequenceNumber"], f["batchSize"], f["urgent"]) for f in listed] == [
        ("200", "201", 2, True), ("100", "102", 3, False)]
    assert listed[0]["shardId"] == "shardId-000000000000" and listed[0]["condition"] == "RetryAttemptsExhausted"
    assert 21 * 3600 < listed[0]["ageSeconds"] < 23 * 3600
    assert 3600 < listed[0]["retentionLeftSeconds"] < 3 * 3600
    assert "WARNING: 1 failed batch(es) have under 20%" in result.stderr
    assert "is not a Kinesis on-failure record" in result.stderr
    assert queued(stack) == 3  # listing leaves every message in the queue


def test_show_reads_the_records_back_from_the_stream(stack: dict[str, str]) -> None:
    datas = payloads([20.5, 95.0])
    first, last = put_records(stack, datas)
    send_failure(stack, first, last, 2, time.time() - 60)
    [message_id] = [f["messageId"] for f in json.loads(cli(stack, "failures", "list", "--output", "json").stdout)]

    result = cli(stack, "failures", "show", message_id, "--output", "json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["source"] == "stream"
    assert [r["sequenceNumber"] for r in shown["records"]] == [first, last]
    assert [r["data"].encode() for r in shown["records"]] == datas


def test_redrive_from_the_stream_stores_every_record_then_deletes_and_is_idempotent(
        stack: dict[str, str], processor: FunctionRunner) -> None:
    datas = payloads([20.5, 95.0, 30.25])
    sequences = put_records(stack, datas)
    send_failure(stack, sequences[0], sequences[-1], 3, time.time() - 60)
    clients, cfg = target(stack)

    report = failures_lib.redrive(clients, cfg, processor, now=time.time())

    assert [(o.source, o.records, o.deleted, o.problem) for o in report.outcomes] == [("stream", 3, True, "")]
    stored = items(stack)
    assert sorted(i["value"]["N"] for i in stored) == ["20.5", "30.25", "95"]
    assert [i["status"]["S"] for i in stored if i["value"]["N"] == "95"] == ["ANOMALY"]
    assert queued(stack) == 0
    # The same batch failed again (a second message for it): redriving it stores nothing twice.
    send_failure(stack, sequences[0], sequences[-1], 3, time.time() - 60)
    again = failures_lib.redrive(clients, cfg, processor, now=time.time())
    assert [o.deleted for o in again.outcomes] == [True]
    assert sorted(json.dumps(i, sort_keys=True) for i in items(stack)) == sorted(
        json.dumps(i, sort_keys=True) for i in stored)


def test_redrive_past_the_retention_reads_the_archive(stack: dict[str, str], processor: FunctionRunner) -> None:
    arrival = time.time() - 3 * 86400  # the stream (24 h) no longer has them
    datas = payloads([21.0, 22.0, 99.5], device="lathe-2")
    archive_batch(stack, [500, 501, 502], datas, int(arrival * 1000))
    archive_batch(stack, [501, 502], datas[1:], int(arrival * 1000))  # a retry archived them again
    send_failure(stack, "500", "502", 3, arrival)
    clients, cfg = target(stack)

    dry = failures_lib.redrive(clients, cfg, processor, now=time.time(), dry_run=True)
    assert [(o.source, o.records, o.deleted) for o in dry.outcomes] == [("archive", 3, False)]
    assert items(stack) == [] and queued(stack) == 1

    report = failures_lib.redrive(clients, cfg, processor, now=time.time())

    assert [(o.source, o.records, o.deleted) for o in report.outcomes] == [("archive", 3, True)]
    assert sorted(i["value"]["N"] for i in items(stack)) == ["21", "22", "99.5"]
    assert {i["sequenceNumber"]["S"] for i in items(stack)} == {"500", "501", "502"}
    assert queued(stack) == 0


def test_redrive_keeps_the_message_when_a_record_is_missing_or_fails(stack: dict[str, str]) -> None:
    arrival = time.time() - 3 * 86400
    datas = payloads([21.0, 22.0])
    archive_batch(stack, [700, 701], datas, int(arrival * 1000))
    send_failure(stack, "700", "702", 3, arrival)  # 702 is nowhere
    sequences = put_records(stack, payloads([40.0]))
    send_failure(stack, sequences[0], sequences[0], 1, time.time() - 60)
    clients, cfg = target(stack)
    calls: list[dict[str, Any]] = []

    def failing(event: dict[str, Any]) -> InvokeResult:
        calls.append(event)
        return InvokeResult(None, {"batchItemFailures": [{"itemIdentifier": sequences[0]}]})

    report = failures_lib.redrive(clients, cfg, failing, now=time.time())

    problems = sorted(o.problem for o in report.outcomes)
    assert [o.deleted for o in report.outcomes] == [False, False]
    assert "neither the stream nor the archive" in problems[0] and "all 3 records 700..702" in problems[0]
    assert "reported 1 failed record(s)" in problems[1]
    assert len(calls) == 1 and calls[0]["Records"][0]["eventID"] == f"shardId-000000000000:{sequences[0]}"
    assert queued(stack) == 2


def test_redrive_cli_dry_run_changes_nothing_and_a_kept_message_fails(stack: dict[str, str]) -> None:
    arrival = time.time() - 3 * 86400
    archive_batch(stack, [800], payloads([21.0]), int(arrival * 1000))
    send_failure(stack, "800", "800", 1, arrival)
    send_failure(stack, "900", "901", 2, arrival)  # not archived

    result = cli(stack, "failures", "redrive", "--dry-run", "--output", "json")

    assert result.exit_code == 1
    outcomes = sorted((o["result"], o["source"], o["records"]) for o in json.loads(result.stdout))
    assert outcomes == [("kept", "", 0), ("would redrive", "archive", 1)]
    assert "1 message(s) stay in the dead-letter queue" in result.stderr
    assert items(stack) == [] and queued(stack) == 2


def test_redrive_cli_invokes_the_deployed_function_with_a_progress_bar(
        stack: dict[str, str], processor: FunctionRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    sequences = put_records(stack, payloads([20.5, 95.0]))
    send_failure(stack, sequences[0], sequences[-1], 2, time.time() - 60)
    invoked: list[str] = []

    def deployed(_lambda: Any, function_name: str) -> Any:  # moto's Lambda cannot run the processor
        invoked.append(function_name)
        return processor

    monkeypatch.setattr(failures_lib, "lambda_invoker", deployed)

    result = cli(stack, "failures", "redrive")

    assert result.exit_code == 0, result.output
    assert invoked == [FUNCTION]
    assert "records" in result.stderr  # the progress bar (its label only when stderr is not a terminal)
    assert "deleted" in result.stdout
    assert sorted(i["value"]["N"] for i in items(stack)) == ["20.5", "95"] and queued(stack) == 0


def put_s3_failure(stack: Mapping[str, str], sequences: Sequence[str], datas: Sequence[bytes],
                   arrival: float) -> str:
    """Lambda's S3 on-failure record: the batch info and the whole invocation record (``payload``), where
    iotpipe local's mapping runner puts it."""
    event = failures_lib.kinesis_event(
        [failures_lib.StoredRecord(seq, "press-07", int(arrival * 1000), data)
         for seq, data in zip(sequences, datas, strict=True)],
        "shardId-000000000000", f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}")
    document = {
        "requestContext": {"requestId": "0d3b1e2a-6f52-4c39-9d43-2b1c0f5c8a11", "condition": "RetryAttemptsExhausted",
                           "functionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}",
                           "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": iso(arrival + 60),
        "KinesisBatchInfo": {"shardId": "shardId-000000000000", "startSequenceNumber": sequences[0],
                             "endSequenceNumber": sequences[-1], "approximateArrivalOfFirstRecord": iso(arrival),
                             "approximateArrivalOfLastRecord": iso(arrival), "batchSize": len(sequences),
                             "streamArn": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"},
        "payload": event}
    day = iso(arrival)[:10].replace("-", "/")
    key = f"aws/lambda/5f0e4b1c-0000-4000-8000-000000000001/shardId-000000000000/{day}/x"
    aws(stack, "s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(document).encode())
    return key


def test_the_s3_kind_is_listed_and_redriven_from_its_own_records(
        stack: dict[str, str], processor: FunctionRunner) -> None:
    arrival = time.time() - 3 * 86400  # gone from the stream, never archived: the object has the records
    key = put_s3_failure(stack, ["300", "301"], payloads([25.0, 99.0], device="oven-1"), arrival)
    send_failure(stack, "400", "400", 1, time.time() - 60)

    listed = json.loads(cli(stack, "failures", "list", "--output", "json").stdout)
    assert sorted((f["kind"], f["startSequenceNumber"], f["urgent"]) for f in listed) == [
        ("s3", "300", True), ("sqs", "400", False)]
    [s3_id] = [f["messageId"] for f in listed if f["kind"] == "s3"]
    assert s3_id == key
    shown = json.loads(cli(stack, "failures", "show", key, "--output", "json").stdout)
    assert shown["source"] == "s3" and [r["sequenceNumber"] for r in shown["records"]] == ["300", "301"]

    clients, cfg = target(stack)
    report = failures_lib.redrive(clients, cfg, processor, now=time.time())

    by_kind = {o.source: o for o in report.outcomes}
    assert by_kind["s3"].deleted and by_kind["s3"].records == 2
    assert sorted(i["value"]["N"] for i in items(stack)) == ["25", "99"]
    assert "Contents" not in aws(stack, "s3").list_objects_v2(Bucket=BUCKET, Prefix="aws/lambda/")
    assert [o.problem.startswith("neither the stream") for o in report.outcomes if o.source != "s3"] == [True]
    assert queued(stack) == 1


def test_each_message_is_hidden_again_from_the_start_of_its_own_redrive(stack: dict[str, str]) -> None:
    first = put_records(stack, payloads([20.0]))
    second = put_records(stack, payloads([21.0]))
    send_failure(stack, first[0], first[0], 1, time.time() - 120)
    send_failure(stack, second[0], second[0], 1, time.time() - 60)
    clients, cfg = target(stack)
    sqs = clients.client("sqs")
    hidden: list[tuple[str, int]] = []
    order: list[str] = []

    class Clients:
        def client(self, service: str) -> Any:
            return sqs if service == "sqs" else clients.client(service)

    original = sqs.change_message_visibility

    def spy(**kwargs: Any) -> Any:
        hidden.append((kwargs["ReceiptHandle"], kwargs["VisibilityTimeout"]))
        return original(**kwargs)

    sqs.change_message_visibility = spy

    def invoke(event: dict[str, Any]) -> InvokeResult:
        order.append(f"invoke {event['Records'][0]['kinesis']['sequenceNumber']}")
        order.append(f"hidden {len(hidden)}")
        return InvokeResult(None, {"batchItemFailures": []})

    failures_lib.redrive(Clients(), cfg, invoke, now=time.time())

    assert [t for _, t in hidden] == [failures_lib.REDRIVE_VISIBILITY_S] * 2
    assert order == [f"invoke {first[0]}", "hidden 1", f"invoke {second[0]}", "hidden 2"]


def test_a_message_for_another_stream_or_function_is_left_alone(stack: dict[str, str]) -> None:
    # Records with the same sequence numbers are in this stack's archive: a foreign message must not redrive them.
    arrival = time.time() - 3 * 86400
    archive_batch(stack, [600], payloads([21.0]), int(arrival * 1000))
    sqs = aws(stack, "sqs")
    calls: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> InvokeResult:
        calls.append(event)
        return InvokeResult(None, {"batchItemFailures": []})

    for replaced in ((f"stream/{STREAM}", "stream/sensor-data-stream-prod"),
                     (f"function:{FUNCTION}", "function:proc-prod")):
        for _ in range(3):  # empty the queue (moto allows one PurgeQueue a minute)
            for old in sqs.receive_message(QueueUrl=stack["DeadLetterQueueUrl"], MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
                sqs.delete_message(QueueUrl=stack["DeadLetterQueueUrl"], ReceiptHandle=old["ReceiptHandle"])
        assert queued(stack) == 0
        send_failure(stack, "600", "600", 1, arrival)
        message = sqs.receive_message(QueueUrl=stack["DeadLetterQueueUrl"], WaitTimeSeconds=1)["Messages"][0]
        sqs.delete_message(QueueUrl=stack["DeadLetterQueueUrl"], ReceiptHandle=message["ReceiptHandle"])
        sqs.send_message(QueueUrl=stack["DeadLetterQueueUrl"], MessageBody=message["Body"].replace(*replaced))
        send_failure(stack, "600", "600", 1, arrival)  # and this stack's own, for the next round
        clients, cfg = target(stack)
        calls.clear()
        listing = failures_lib.list_failures(clients, cfg, now=time.time())
        assert [u.problem for u in listing.unreadable] == [f"it names {replaced[1]}, not this stack's {replaced[0]}: "
                                                           "it is another pipeline's; redrive it with that one's env"]
        report = failures_lib.redrive(clients, cfg, invoke, now=time.time())

        assert sorted(o.deleted for o in report.outcomes) == [False, True] and len(calls) == 1
        assert [o.problem for o in report.failed] == [f"left where it is: {listing.unreadable[0].problem}"]
        assert queued(stack) == 1


def test_ctrl_c_mid_redrive_makes_every_message_not_deleted_visible_again_at_once(stack: dict[str, str]) -> None:
    first = put_records(stack, payloads([20.0]))
    second = put_records(stack, payloads([21.0]))
    send_failure(stack, first[0], first[0], 1, time.time() - 120)
    send_failure(stack, second[0], second[0], 1, time.time() - 60)
    clients, cfg = target(stack)

    def interrupted(_: dict[str, Any]) -> InvokeResult:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        failures_lib.redrive(clients, cfg, interrupted, now=time.time())

    # Both are back for the next run (and `failures list`), not hidden for the redrive's visibility timeout.
    visible = aws(stack, "sqs").get_queue_attributes(
        QueueUrl=stack["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(visible["ApproximateNumberOfMessages"]) == 2
    assert len(failures_lib.list_failures(clients, cfg, now=time.time()).failures) == 2


def test_messages_beyond_the_limit_are_not_left_hidden(stack: dict[str, str]) -> None:
    sequences = put_records(stack, payloads([20.0, 21.0, 22.0]))
    for index, sequence in enumerate(sequences):
        send_failure(stack, sequence, sequence, 1, time.time() - 300 + index)
    clients, cfg = target(stack)

    listing = failures_lib.list_failures(clients, cfg, now=time.time(), limit=2)

    assert len(listing.failures) == 2
    # The one received past the limit is visible at once, not hidden for the listing's visibility timeout.
    visible = aws(stack, "sqs").get_queue_attributes(
        QueueUrl=stack["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(visible["ApproximateNumberOfMessages"]) == 3


def test_a_stream_that_throttles_or_expires_the_iterator_falls_back_to_the_archive(stack: dict[str, str]) -> None:
    datas = payloads([20.5, 21.5])
    sequences = put_records(stack, datas)
    archive_batch(stack, [int(s) for s in sequences], datas, int(time.time() * 1000) - 60_000)
    send_failure(stack, sequences[0], sequences[-1], 2, time.time() - 60)
    clients, cfg = target(stack)
    kinesis = clients.client("kinesis")
    stubber = Stubber(kinesis)
    stubber.activate()
    stubber.add_response("describe_stream_summary", {"StreamDescriptionSummary": {
        "StreamName": STREAM, "StreamARN": "arn", "StreamStatus": "ACTIVE", "RetentionPeriodHours": 24,
        "StreamCreationTimestamp": datetime.now(UTC), "EnhancedMonitoring": [], "OpenShardCount": 1}})
    stubber.add_response("get_shard_iterator", {"ShardIterator": "AAAA"})
    stubber.add_client_error("get_records", "ProvisionedThroughputExceededException", "Rate exceeded for shard")

    class Clients:
        def client(self, service: str) -> Any:
            return kinesis if service == "kinesis" else clients.client(service)

    report = failures_lib.redrive(Clients(), cfg, lambda _: InvokeResult(None, {"batchItemFailures": []}),
                                  now=time.time())

    assert [(o.source, o.records, o.deleted, o.problem) for o in report.outcomes] == [("archive", 2, True, "")]
    assert queued(stack) == 0


def test_a_corrupt_archive_object_keeps_its_message_and_the_others_are_redriven(
        stack: dict[str, str], processor: FunctionRunner) -> None:
    arrival = time.time() - 3 * 86400
    hour = datetime.fromtimestamp(arrival, UTC)
    key = (f"raw/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/shardId-000000000000/"
           "300-301.jsonl.gz")
    aws(stack, "s3").put_object(Bucket=BUCKET, Key=key, Body=b"truncated, not gzip")
    send_failure(stack, "300", "301", 2, arrival)
    archive_batch(stack, [400], payloads([21.0]), int(arrival * 1000))
    send_failure(stack, "400", "400", 1, arrival + 1)
    clients, cfg = target(stack)

    report = failures_lib.redrive(clients, cfg, processor, now=time.time())

    assert [(o.deleted, o.problem.split(" (")[0]) for o in report.outcomes] == [
        (False, f"s3://{BUCKET}/{key} is not a gzip of JSON lines"), (True, "")]
    assert queued(stack) == 1 and [i["value"]["N"] for i in items(stack)] == ["21"]
