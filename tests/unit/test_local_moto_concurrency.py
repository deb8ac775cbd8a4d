"""Concurrent writes through the emulator as ``iotpipe local`` serves it (moto's WSGI app on waitress's thread
pool, iotpipe's fixes applied): every record and item sent is stored.

Python switches threads every 5 ms; these tests switch every 10 us, so the races that a long local run meets now
and then (a run once stored 105 of 180 readings) show up within a few thousand writes."""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from iotpipe.local.emulator import moto_compat
from iotpipe.local.emulator.server import SERVER_THREADS, application

WRITERS = 8


@pytest.fixture
def emulator(emulator_patches: moto_compat.Applied) -> Iterator[str]:
    """The emulator's application, with every patch, on waitress with the thread pool of ``iotpipe local``;
    frequent thread switches while it runs."""
    del emulator_patches  # requested for its effect: moto patched as iotpipe local runs it
    import waitress.server

    server = waitress.server.create_server(application(), host="127.0.0.1", port=0, threads=SERVER_THREADS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield url
    finally:
        sys.setswitchinterval(interval)
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).read()
        server.close()
        thread.join(10)


def client(service: str, url: str) -> Any:
    # no retries: a write the emulator failed must show as a failure, not be sent again
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=Config(
        max_pool_connections=WRITERS * 2, retries={"max_attempts": 1, "mode": "standard"}))


def run_writers(write: Callable[[int], None]) -> None:
    with ThreadPoolExecutor(WRITERS) as pool:
        for future in [pool.submit(write, writer) for writer in range(WRITERS)]:
            future.result(timeout=300)


def test_concurrent_put_records_on_one_shard_store_every_record(emulator: str) -> None:
    kinesis = client("kinesis", emulator)
    kinesis.create_stream(StreamName="race", ShardCount=1)
    calls, per_call = 25, 20

    def write(writer: int) -> None:
        for call in range(calls):
            answer = kinesis.put_records(StreamName="race", Records=[
                {"Data": f"{writer}/{call}/{i}".encode(), "PartitionKey": "one-device"} for i in range(per_call)])
            assert answer["FailedRecordCount"] == 0

    run_writers(write)
    shard = kinesis.list_shards(StreamName="race")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="race", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    stored: list[dict[str, Any]] = []
    for _ in range(100):
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        stored += page["Records"]
        iterator = page["NextShardIterator"]
        if not page["Records"]:
            break
    # moto's put_record reads the last sequence number and stores under the next: two racing calls stored two
    # records under one number, and one of them was gone
    assert sorted(r["Data"].decode() for r in stored) == sorted(
        f"{w}/{c}/{i}" for w in range(WRITERS) for c in range(calls) for i in range(per_call))
    assert len({r["SequenceNumber"] for r in stored}) == len(stored)


def test_concurrent_batch_writes_of_new_partition_keys_store_every_item(emulator: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_key = DynamoType.__hash__

    def switching_hash(self: Any) -> int:
        # where the GIL may change hands in a real run: between the table's lookup of a partition key and its
        # insertion of the key's new dict (items is a defaultdict keyed by DynamoType)
        value = hash_key(self)
        time.sleep(0)
        return value

    monkeypatch.setattr(DynamoType, "__hash__", switching_hash)
    dynamodb = client("dynamodb", emulator)
    dynamodb.create_table(TableName="race", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}],
                          AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"},
                                                {"AttributeName": "sk", "AttributeType": "S"}])
    devices, per_call = 30, 25
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> None:
        for device in range(devices):
            start.wait(timeout=60)  # every writer stores the first items of the same new device at once
            answer = dynamodb.batch_write_item(RequestItems={"race": [
                {"PutRequest": {"Item": {"deviceId": {"S": f"device-{device}"}, "sk": {"S": f"{writer}#{i:02d}"},
                                         "value": {"N": str(i)}}}} for i in range(per_call)]})
            assert answer["UnprocessedItems"] == {}

    run_writers(write)
    stored = sum(page["Count"] for page in dynamodb.get_paginator("scan").paginate(TableName="race",
                                                                                   Select="COUNT"))
    assert stored == devices * WRITERS * per_call
