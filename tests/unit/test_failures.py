"""The pure parts of ``iotpipe.failures``: the on-failure documents, event building and chunking, and the Lambda
invoker (botocore's Stubber: the request Lambda gets and how its answer is read)."""

from __future__ import annotations

import base64
import gzip
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from iotpipe import failures

INFO = {"shardId": "shardId-000000000002", "startSequenceNumber": "495", "endSequenceNumber": "497",
        "approximateArrivalOfFirstRecord": "2026-03-02T10:00:00.000Z", "batchSize": 3,
        "streamArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/s"}


def test_an_sqs_on_failure_record_is_read_with_its_batch_info() -> None:
    body = json.dumps({"requestContext": {"condition": "RecordAgeExceeded"}, "responseContext": {},
                       "timestamp": "2026-03-02T10:05:00.000Z", "KinesisBatchInfo": INFO})
    batch = failures.parse_message("m-1", "rh", body)
    assert (batch.shard_id, batch.start_sequence, batch.end_sequence, batch.batch_size) == (
        "shardId-000000000002", "495", "497", 3)
    assert batch.condition == "RecordAgeExceeded" and batch.kind == "sqs"
    assert batch.first_arrival == 1772445600.0 and batch.failed_at == 1772445900.0
    assert batch.retention_left_s(batch.first_arrival + 3600, 24) == 23 * 3600


@pytest.mark.parametrize(("body", "problem"), [
    ("{}", "no KinesisBatchInfo"),
    (json.dumps({"KinesisBatchInfo": {k: v for k, v in INFO.items() if k != "batchSize"}}), "lacks batchSize"),
])
def test_a_message_that_is_not_a_kinesis_failure_says_what_it_lacks(body: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        failures.parse_message("m", "rh", body)


@pytest.mark.parametrize(("document", "problem"), [
    ({"requestContext": "RetryAttemptsExhausted", "KinesisBatchInfo": INFO}, "requestContext is not an object"),
    ({"responseContext": "Unhandled", "KinesisBatchInfo": INFO}, "responseContext is not an object"),
    ({"KinesisBatchInfo": {**INFO, "startSequenceNumber": "abc"}}, "startSequenceNumber 'abc' is not a sequence"),
    ({"KinesisBatchInfo": {**INFO, "endSequenceNumber": None}}, "endSequenceNumber None is not a sequence"),
    ({"KinesisBatchInfo": {**INFO, "startSequenceNumber": "498"}}, "starts after it ends"),
    ({"KinesisBatchInfo": {**INFO, "batchSize": 0}}, "batchSize 0 is not a number of records"),
    ([INFO], "no KinesisBatchInfo"),
])
def test_a_malformed_message_is_unreadable_rather_than_a_crash(document: object, problem: str) -> None:
    # list and redrive leave such a message in the queue (they catch ValueError), never stop with a traceback
    with pytest.raises(ValueError, match=problem):
        failures.parse_message("m", "rh", json.dumps(document))


def test_an_s3_record_carries_its_records_as_an_object_or_as_json_text() -> None:
    record = failures.StoredRecord("495", "press-07", 1772445600123, b'{"deviceId":"press-07"}')
    event = failures.kinesis_event([record], INFO["shardId"], INFO["streamArn"])
    assert event["Records"][0]["eventID"] == "shardId-000000000002:495"
    assert event["Records"][0]["awsRegion"] == "eu-west-1"
    for payload in (event, json.dumps(event)):
        batch = failures.parse_object("aws/lambda/x", json.dumps({"KinesisBatchInfo": {**INFO, "batchSize": 1},
                                                                  "payload": payload}))
        assert batch.kind == "s3" and batch.records == (record,)
    with pytest.raises(ValueError, match="no payload"):
        failures.parse_object("aws/lambda/y", json.dumps({"KinesisBatchInfo": INFO}))


def test_records_are_cut_into_events_lambda_accepts() -> None:
    small = [failures.StoredRecord(str(i), "k", 0, b"x") for i in range(2500)]
    assert [len(c) for c in failures.chunks(small)] == [1000, 1000, 500]
    big = [failures.StoredRecord(str(i), "k", 0, b"x" * 1_000_000) for i in range(9)]
    sizes = [len(c) for c in failures.chunks(big)]
    assert sum(sizes) == 9 and all(n * 1_000_000 * 4 // 3 < failures.MAX_EVENT_BYTES for n in sizes)


def test_the_lambda_invoker_sends_the_event_and_reads_a_function_error() -> None:
    client = boto3.client("lambda", region_name="us-east-1")
    event = {"Records": []}
    answer = json.dumps({"errorMessage": "boom"}).encode()
    with Stubber(client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                     "Payload": StreamingBody(io.BytesIO(answer), len(answer))},
                          {"FunctionName": "proc", "InvocationType": "RequestResponse",
                           "Payload": json.dumps(event).encode()})
        result = failures.lambda_invoker(client, "proc")(event)
    assert (result.function_error, result.payload) == ("Unhandled", {"errorMessage": "boom"})


def test_archive_lines_become_records_text_or_base64() -> None:
    lines = [{"sequenceNumber": "5", "partitionKey": "p", "arrivedAt": 7, "data": "{}"},
             {"sequenceNumber": "6", "partitionKey": "p", "arrivedAt": 8,
              "dataBase64": base64.b64encode(b"\xff").decode()}]
    assert [r.data for r in failures.archive_records(lines)] == [b"{}", b"\xff"]


def test_the_local_runner_gets_the_processor_of_the_functions_runtime() -> None:
    python, node = failures.shipped_processor_code("python3.13"), failures.shipped_processor_code("nodejs22.x")
    assert "def handler(" in python and "async function handler(" in node


class _Bucket:
    """An S3 client of one object's body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def get_object(self, **_: str) -> dict[str, io.BytesIO]:
        return {"Body": io.BytesIO(self.body)}


@pytest.mark.parametrize("body", [b"not gzip", gzip.compress(b'{"sequenceNumber": "5"}\n')[:-6],
                                  gzip.compress(b"{not json}\n"), gzip.compress(b"\xff\xfe\n")])
def test_a_corrupt_archive_object_is_an_error_naming_its_key(body: bytes) -> None:
    # replay stopped with a BadGzipFile/EOFError/JSONDecodeError traceback that named no object
    with pytest.raises(failures.CorruptArchive, match=r"s3://raw-b/raw/k\.jsonl\.gz is not a gzip of JSON lines"):
        failures.read_archive_object(_Bucket(body), "raw-b", "raw/k.jsonl.gz")
