"""A reshard on a moto Kinesis stream: the parent shard's records, then a child shard's whose sequence numbers
restart (AWS makes them unique within a shard only), go through the processor; every reading must survive."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest
from processor_support import clients, create_resources, kinesis_event, load_handler, make_runtime, scan_items

from iotpipe.query.dynamodb import to_readings

index = load_handler()
STREAM = "iot-sensor-data-stream-test"
RECEIVED = 1718000000000  # 2024-06-10T06:13:20Z; its 60 s window starts at RECEIVED - 20_000
ENV = {"ENVIRONMENT": "test", "UNKNOWN_SENSOR": "quarantine", "TTL_DAYS": 90,
       "THRESHOLDS": {"temperature": {"min": 10, "max": 80, "unit": "celsius"}}}


def payload(n: int, *, timed: bool = True) -> bytes:
    """What the IoT rule puts on the stream for reading ``n`` of press-1 (one 60 s window); ``timed`` False is a
    device without a clock (dated by its arrival)."""
    body: dict[str, Any] = {"deviceId": "press-1", "sensorType": "temperature", "value": 20 + n,
                            "receivedAt": RECEIVED, "topicDeviceId": "press-1"}
    if timed:
        body["timestamp"] = RECEIVED - 10_000 + n * 1000
    return json.dumps(body).encode()


def shard_records(kinesis: Any, shard_id: str) -> list[dict[str, Any]]:
    """Every record of a shard from its start (one GetRecords call holds them all here)."""
    iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard_id,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return list(kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"])


def event_of(records: list[dict[str, Any]], shard_id: str) -> dict[str, Any]:
    """The Lambda event of one shard's records, as the event source mapping builds it."""
    return kinesis_event([{"sequenceNumber": r["SequenceNumber"], "partitionKey": r["PartitionKey"],
                           "arrivedAt": int(r["ApproximateArrivalTimestamp"].timestamp() * 1000),
                           "base64": base64.b64encode(r["Data"]).decode()} for r in records], shard_id)


@pytest.mark.parametrize("layout", ["packed", "item-per-reading"])
def test_every_reading_survives_a_shard_split_mid_stream(moto_endpoint: str, layout: str) -> None:
    kinesis = boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-east-1")
    kinesis.create_stream(StreamName=STREAM, ShardCount=1)
    sent = [payload(n) for n in range(10)] + [payload(10, timed=False), payload(10, timed=False)]
    for data in [*sent[:5], sent[10]]:
        kinesis.put_record(StreamName=STREAM, Data=data, PartitionKey="press-1")
    parent = kinesis.list_shards(StreamName=STREAM)["Shards"][0]
    kinesis.split_shard(StreamName=STREAM, ShardToSplit=parent["ShardId"],
                        NewStartingHashKey=str(2**127))  # the middle of the hash key range
    for data in [*sent[5:10], sent[11]]:
        kinesis.put_record(StreamName=STREAM, Data=data, PartitionKey="press-1")

    batches = [(shard["ShardId"], shard_records(kinesis, shard["ShardId"]))
               for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]]
    batches = [(shard, records) for shard, records in batches if records]
    assert [len(records) for _, records in batches] == [6, 6]  # the parent's, then one child's
    numbers = [[r["SequenceNumber"] for r in records] for _, records in batches]
    assert set(numbers[0]) & set(numbers[1]), "the child shard's sequence numbers restart, as the issue saw"

    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    env = {**ENV, **({"STORAGE_LAYOUT": "packed", "PACK_WINDOW_SECONDS": "60"} if layout == "packed" else {})}
    runtime = make_runtime(index, env, s3, dynamodb, emit=lambda _line: None)
    for shard, records in batches:
        assert index.process(event_of(records, shard), None, runtime) == {"batchItemFailures": []}

    items = dynamodb.scan(TableName="SensorReadings-test")["Items"]
    stored = sorted((r.timestamp - RECEIVED, r.value) for item in items for r in to_readings(item))
    assert stored == sorted([(n * 1000 - 10_000, 20.0 + n) for n in range(10)] + [(0, 30.0), (0, 30.0)])
    if layout == "packed":  # one packed item per shard in the same window, each keyed with its shard
        assert sorted(i["sk"] for i in scan_items(dynamodb) if "#packed#" in i["sk"]) == [
            f"{RECEIVED - 20_000}#temperature#packed#{shard}#{records[0]['SequenceNumber']}#0"
            for shard, records in batches]
