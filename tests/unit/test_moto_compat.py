"""The versioned seam to moto: the patches are declared, checked against the installed moto, undone on request,
documented from their declarations, and the speed patches answer exactly as plain moto does."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from iotpipe.errors import LocalError
from iotpipe.local.emulator import moto_compat
from iotpipe.local.emulator.clients import RAW_DYNAMODB_READS, RAW_KINESIS_PARSER, raw_dynamodb_reads
from iotpipe.local.emulator.moto_compat import base, versions
from iotpipe.local.emulator.server import SERVER_THREADS, application

ROOT = Path(__file__).resolve().parents[2]
SPEED = tuple(patch.name for patch in moto_compat.PATCHES if patch.kind == "speed")
LEFT_ON = "an earlier test left speed patches on: take the emulator_patches fixture, which undoes them"


def test_each_patch_is_declared_once_in_its_services_module() -> None:
    names = [patch.name for patch in moto_compat.PATCHES]
    assert len(names) == len(set(names)) == 33
    for patch in moto_compat.PATCHES:
        module = "awslambda" if patch.service == "lambda" else patch.service
        assert patch.install is not None and patch.install.__module__.endswith(f"moto_compat.{module}")
        assert patch.kind in moto_compat.KINDS and patch.summary and patch.upstream
        assert patch.tested == versions.MOTO
    assert {kind: sum(patch.kind == kind for patch in moto_compat.PATCHES) for kind in moto_compat.KINDS} == \
        {"parity": 12, "api": 3, "speed": 18}


def test_docs_list_every_patch_as_declared() -> None:
    table = moto_compat.markdown_table((*moto_compat.PATCHES, RAW_KINESIS_PARSER, RAW_DYNAMODB_READS))
    assert table in (ROOT / "docs" / "local.md").read_text()


def test_an_untested_moto_is_refused_before_anything_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.ALLOW_UNTESTED, raising=False)
    before = moto_compat.active()
    with pytest.raises(LocalError) as caught:
        moto_compat.apply(moto_compat.ALL_KINDS, version="5.3.0")
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "moto 5.3.0 is installed but iotpipe's moto patch cloudformation.change_set_outputs is tested with " \
           "moto>=5.2.5,<5.2.7" in message
    assert "IOTPIPE_ALLOW_UNTESTED_MOTO=1" in message
    assert moto_compat.active() == before


def test_each_patch_is_checked_against_its_own_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.ALLOW_UNTESTED, raising=False)
    narrow = base.Patch("kinesis.narrow", "speed", "tested on one release", None,
                        tested=versions.TestedRange("moto", minimum="5.2.5", below="5.2.6"))
    moto_compat.check_versions([narrow], "5.2.5")
    with pytest.raises(LocalError, match=r"moto 5\.2\.6 is installed but iotpipe's moto patch kinesis\.narrow is "
                                         r"tested with moto>=5\.2\.5,<5\.2\.6"):
        moto_compat.check_versions([narrow], "5.2.6")
    monkeypatch.setenv(versions.ALLOW_UNTESTED, "1")
    moto_compat.check_versions([narrow], "5.2.6")  # on purpose (make test-latest)


def test_a_missing_moto_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_compat, "installed_version", lambda _package: None)
    with pytest.raises(LocalError, match=r"pip install 'iotpipe\[local\]'"):
        moto_compat.apply(moto_compat.LIBRARY_KINDS)


def test_undo_puts_every_original_back() -> None:
    import moto.backends
    from moto.core.base_backend import BackendDict
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.kinesis.models import Shard
    from moto.kinesis.responses import KinesisResponse

    watched = [(DynamoType, "__init__"), (DynamoType, "__hash__"), (Shard, "get_records"),
               (KinesisResponse, "put_records"), (BackendDict, "__getitem__"), (moto.backends, "list_of_moto_modules")]
    missing = object()
    before = [vars(target).get(name, missing) for target, name in watched]
    applied = moto_compat.apply(names=SPEED)
    assert applied.names == SPEED, LEFT_ON
    during = [vars(target).get(name, missing) for target, name in watched]
    assert all(now is not then for now, then in zip(during, before, strict=True))
    applied.undo()
    assert [vars(target).get(name, missing) for target, name in watched] == before
    assert not set(SPEED) & set(moto_compat.active())
    again = moto_compat.apply(names=SPEED)
    try:
        assert again.names == SPEED  # undone patches can be applied again
        assert moto_compat.apply(names=SPEED).names == ()  # ... once: a second call changes nothing
    finally:
        again.undo()
    assert not set(SPEED) & set(moto_compat.active())


def test_undo_in_a_fresh_process_leaves_moto_as_imported() -> None:
    """Every kind applied then undone in a process of its own: each attribute a patch touched is moto's again
    (added methods such as ListImports are gone)."""
    script = """
from iotpipe.local.emulator import moto_compat
from moto.cloudformation.responses import CloudFormationResponse
applied = moto_compat.apply(moto_compat.ALL_KINDS)
changes = [change for name in applied.names for change in applied._changes[name]]
count = len(applied.names)
assert hasattr(CloudFormationResponse, "list_imports")
applied.undo()
assert not hasattr(CloudFormationResponse, "list_imports")
from iotpipe.local.emulator.moto_compat.base import _MISSING
assert all(vars(target).get(name, _MISSING) is original for target, name, original, _v in changes)
assert moto_compat.active() == ()
assert applied.names == ()
print(count, len(changes))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "33"


def dynamodb_requests(dynamodb: Any, record: Callable[..., None]) -> None:
    """Writes and reads that take every path the DynamoDB speed patches change, and their errors."""
    dynamodb.create_table(TableName="readings", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}],
                          AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"},
                                                {"AttributeName": "sk", "AttributeType": "S"}])
    every_type = {"n": {"N": "71.25"}, "s": {"S": "température"}, "t": {"BOOL": False}, "z": {"NULL": True},
                  "m": {"M": {"l": {"L": [{"N": "1"}, {"S": "x"}, {"M": {}}]}}}, "ss": {"SS": ["a", "b"]},
                  "ns": {"NS": ["1", "2.5"]}}
    binary = {"b": {"B": b"\x00\xff"}, "bs": {"BS": [b"a", b"b"]}}
    record(dynamodb.put_item, TableName="readings", Item={"deviceId": {"S": "d1"}, "sk": {"S": "0"}, **every_type})
    record(dynamodb.put_item, TableName="readings", Item={"deviceId": {"S": "d1"}, "sk": {"S": "1"}, **binary})
    record(dynamodb.put_item, TableName="readings", ReturnValues="ALL_OLD",
           Item={"deviceId": {"S": "d1"}, "sk": {"S": "0"}, "n": {"N": "1"}})
    batch = [{"PutRequest": {"Item": {"deviceId": {"S": f"d{i % 3}"}, "sk": {"S": f"{i:04d}"}, "v": {"N": str(i)},
                                      "unit": {"S": "C"}}}} for i in range(25)]
    record(dynamodb.batch_write_item, RequestItems={"readings": batch})
    record(dynamodb.batch_write_item, RequestItems={"readings": [
        {"PutRequest": {"Item": {"deviceId": {"S": "d9"}, "sk": {"S": "b"}, **binary}}},
        {"DeleteRequest": {"Key": {"deviceId": {"S": "d0"}, "sk": {"S": "0003"}}}}]})
    record(dynamodb.batch_write_item, RequestItems={"readings": batch[:1] * 2})  # duplicates
    record(dynamodb.batch_write_item, RequestItems={"nowhere": batch[:1]})
    big = {"deviceId": {"S": "d1"}, "sk": {"S": "big"}, "a": {"S": "x" * 200_000}}
    record(dynamodb.put_item, TableName="readings", Item={**big, "b": {"S": "y" * 199_000}})
    record(dynamodb.put_item, TableName="readings", Item={**big, "b": {"S": "y" * 206_000}})  # over 400 KB
    record(dynamodb.batch_write_item, RequestItems={"readings": [{"PutRequest": {"Item": {
        **big, "sk": {"S": "big2"}, "b": {"S": "y" * 206_000}}}}]})
    record(dynamodb.put_item, TableName="readings", Item={"deviceId": {"S": "d1"}, "sk": {"S": "2"},
                                                         "n": {"N": "not a number"}})
    record(dynamodb.put_item, TableName="readings", Item={"deviceId": {"N": "1"}, "sk": {"S": "3"}})
    record(dynamodb.put_item, TableName="readings", Item={"deviceId": {"S": "d1"}, "sk": {"S": "4"},
                                                         "empty": {"SS": []}})
    record(dynamodb.update_item, TableName="readings", Key={"deviceId": {"S": "d1"}, "sk": {"S": "0"}},
           UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    # BatchGetItem (the batch_get path): plain items, a missing key, binary attributes (the slow way both ways),
    # a projection, another table's keys, and the request errors
    state_keys = [{"deviceId": {"S": f"d{i % 3}"}, "sk": {"S": f"{i:04d}"}} for i in range(0, 25, 4)]
    record(dynamodb.batch_get_item, RequestItems={"readings": {
        "Keys": [*state_keys, {"deviceId": {"S": "nobody"}, "sk": {"S": "#detector"}}], "ConsistentRead": True}})
    record(dynamodb.batch_get_item, RequestItems={"readings": {"Keys": [
        {"deviceId": {"S": "d1"}, "sk": {"S": "0"}}, {"deviceId": {"S": "d9"}, "sk": {"S": "b"}}]}})
    record(dynamodb.batch_get_item, RequestItems={"readings": {
        "Keys": [{"deviceId": {"S": "d9"}, "sk": {"S": "b"}}], "ProjectionExpression": "sk, #v",
        "ExpressionAttributeNames": {"#v": "v"}}})
    record(dynamodb.batch_get_item, RequestItems={"readings": {"Keys": [{"deviceId": {"S": "d1"}, "sk": {
        "B": b"\x01"}}]}})  # a binary key value where the table's key is a string: moto's error
    record(dynamodb.batch_get_item, RequestItems={"readings": {"Keys": state_keys[:1] * 2}})  # duplicates
    record(dynamodb.batch_get_item, RequestItems={"readings": {"Keys": [
        {"deviceId": {"S": "d1"}, "sk": {"S": f"{i:04d}"}} for i in range(101)]}})  # over 100 keys
    record(dynamodb.batch_get_item, RequestItems={"nowhere": {"Keys": state_keys[:1]}})
    record(dynamodb.get_item, TableName="readings", Key={"deviceId": {"S": "d1"}, "sk": {"S": "1"}})
    record(dynamodb.get_item, TableName="readings", Key={"deviceId": {"S": "d9"}, "sk": {"S": "b"}})
    for device in ("d0", "d1", "d2"):
        record(dynamodb.query, TableName="readings", KeyConditionExpression="deviceId = :d",
               ExpressionAttributeValues={":d": {"S": device}})
    record(dynamodb.query, TableName="readings", KeyConditionExpression="deviceId = :d AND sk BETWEEN :a AND :b",
           ExpressionAttributeValues={":d": {"S": "d1"}, ":a": {"S": "0004"}, ":b": {"S": "0016"}}, Limit=3)
    # a partition read page by page, both ways, from a start key, filtered and projected (the partition_query path)
    for forward in (True, False):
        record(dynamodb.query, TableName="readings", KeyConditionExpression="deviceId = :d AND sk > :a",
               ExpressionAttributeValues={":d": {"S": "d2"}, ":a": {"S": "0004"}, ":v": {"N": "10"}},
               FilterExpression="v > :v", ProjectionExpression="sk, v", ScanIndexForward=forward, Limit=2,
               ExclusiveStartKey={"deviceId": {"S": "d2"}, "sk": {"S": "0008" if forward else "0020"}})
    record(dynamodb.query, TableName="readings", KeyConditionExpression="deviceId = :d",
           ExpressionAttributeValues={":d": {"S": "nobody"}})
    record(dynamodb.query, TableName="readings", KeyConditionExpression="deviceId = :d",
           ExpressionAttributeValues={":d": {"N": "1"}})  # a key of the wrong type: moto's error
    record(dynamodb.scan, TableName="readings", Select="COUNT")
    record(dynamodb.scan, TableName="readings", ProjectionExpression="deviceId, sk, v", Limit=7)  # then binary
    record(dynamodb.scan, TableName="readings", FilterExpression="v > :v", ExpressionAttributeValues={
        ":v": {"N": "5"}}, ExclusiveStartKey={"deviceId": {"S": "d1"}, "sk": {"S": "0004"}})


def kinesis_requests(kinesis: Any, record: Callable[..., None]) -> None:
    """Puts and reads that take every path the Kinesis speed patches change, paging through a shard."""
    kinesis.create_stream(StreamName="telemetry", ShardCount=2)
    for i in range(5):
        record(kinesis.put_record, StreamName="telemetry", Data=f"reading {i}".encode(), PartitionKey=f"device-{i}")
    record(kinesis.put_records, StreamName="telemetry", Records=[
        {"Data": bytes([i, 255 - i]) * 3, "PartitionKey": f"device-{i % 4}"} for i in range(30)])
    record(kinesis.put_records, StreamName="telemetry", Records=[
        {"Data": b"explicit", "PartitionKey": "p", "ExplicitHashKey": str(2 ** 127 + 1)}])
    for shard in sorted(s["ShardId"] for s in kinesis.list_shards(StreamName="telemetry")["Shards"]):
        iterator = kinesis.get_shard_iterator(StreamName="telemetry", ShardId=shard,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(10):
            page = kinesis.get_records(ShardIterator=iterator, Limit=7)
            record(lambda page=page: page)
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        first = kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
            StreamName="telemetry", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]
        if first:
            for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
                at = kinesis.get_shard_iterator(StreamName="telemetry", ShardId=shard, ShardIteratorType=kind,
                                                StartingSequenceNumber=first[1]["SequenceNumber"])["ShardIterator"]
                record(kinesis.get_records, ShardIterator=at, Limit=3)
        latest = kinesis.get_shard_iterator(StreamName="telemetry", ShardId=shard,
                                            ShardIteratorType="LATEST")["ShardIterator"]
        record(kinesis.get_records, ShardIterator=latest)
    record(kinesis.get_records, ShardIterator=base64.b64encode(b"not an iterator").decode())
    record(kinesis.put_records, StreamName="missing", Records=[{"Data": b"x", "PartitionKey": "p"}])


def comparable(value: Any) -> Any:
    """An answer without what differs from run to run by time alone (arrival times, iterators, how far behind
    the newest record a read is: only its type is compared)."""
    if isinstance(value, dict):
        return {key: type(item).__name__ if key == "MillisBehindLatest" else comparable(item)
                for key, item in value.items()
                if key not in ("ResponseMetadata", "ApproximateArrivalTimestamp", "NextShardIterator")}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


def answers(url: str, dynamodb_client: Callable[[Any], Any] = lambda client: client) -> list[Any]:
    """The answers of the same requests to the emulator at ``url``, from a reset state (the DynamoDB client
    made by boto3 and given to ``dynamodb_client``)."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).read()
    config = Config(retries={"max_attempts": 1, "mode": "standard"})
    found: list[Any] = []

    def record(call: Callable[..., Any], **kwargs: Any) -> None:
        try:
            found.append(comparable(call(**kwargs)))
        except ClientError as error:
            found.append({"Error": error.response["Error"], "Status": error.response["ResponseMetadata"].get(
                "HTTPStatusCode")})

    for service, requests in (("dynamodb", dynamodb_requests), ("kinesis", kinesis_requests)):
        client = boto3.client(service, endpoint_url=url, region_name="us-east-1", config=config)
        requests(dynamodb_client(client) if service == "dynamodb" else client, record)
    return found


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """The emulator's application on waitress, in this process (so patches applied here change it)."""
    import waitress.server

    server = waitress.server.create_server(application(), host="127.0.0.1", port=0, threads=SERVER_THREADS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(10)


@pytest.mark.parametrize("names", [*((name,) for name in SPEED), SPEED], ids=[*SPEED, "all"])
def test_speed_patches_answer_as_plain_moto_does(emulator_url: str, names: tuple[str, ...]) -> None:
    assert not set(SPEED) & set(moto_compat.active()), LEFT_ON
    plain = answers(emulator_url)
    applied = moto_compat.apply(names=names)
    try:
        assert applied.names == names
        patched = answers(emulator_url)
    finally:
        applied.undo()
    assert len(plain) == 57 and any("Error" in answer for answer in plain)
    assert patched == plain


def test_raw_dynamodb_reads_give_what_botocore_parses(emulator_url: str) -> None:
    # the same requests (Queries and Scans with and without binary attributes, errors) through both parsers
    assert not set(SPEED) & set(moto_compat.active()), LEFT_ON
    parsed = answers(emulator_url)
    raw = answers(emulator_url, raw_dynamodb_reads)
    assert len(parsed) == 57 and any(isinstance(a, dict) and "Items" in a and a["Items"] for a in parsed)
    assert raw == parsed


def test_raw_dynamodb_reads_skip_botocore_walking_a_plain_answer(emulator_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.parsers import BaseJSONParser

    walked: list[str] = []
    original = BaseJSONParser._parse_shape
    monkeypatch.setattr(BaseJSONParser, "_parse_shape", lambda self, shape, node: (
        walked.append(shape.name), original(self, shape, node))[1])
    answers(emulator_url, raw_dynamodb_reads)
    with_bytes = walked.count("QueryOutput") + walked.count("ScanOutput")
    walked.clear()
    answers(emulator_url)
    assert 0 < with_bytes < walked.count("QueryOutput") + walked.count("ScanOutput")
