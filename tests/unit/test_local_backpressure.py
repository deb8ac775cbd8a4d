"""A stalled emulator holds the broker back through the rule engine and the feed, and nothing is lost: publishers
over MQTT -> broker -> feed -> rule engine (queue full, its Kinesis call frozen) -> moto server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import paho.mqtt.client as mqtt
import pytest

from iotpipe.aws import ClientFactory
from iotpipe.local import broker as broker_module
from iotpipe.local.broker import BrokerSpec, amqtt_available, start_broker
from iotpipe.local.broker import running as running_module
from iotpipe.local.rules import RuleEngine, rule_from_properties

REGION = "us-east-1"
MESSAGES = 20
RULE = {"RuleName": "SensorDataRule", "TopicRulePayload": {
    "Sql": "SELECT *, topic(2) AS topicDeviceId FROM 'sensor/+/data'", "AwsIotSqlVersion": "2016-03-23",
    "Actions": [{"Kinesis": {"StreamName": "sensor-stream", "PartitionKey": "${topic(2)}"}}]}}


class FrozenKinesis:
    """A ClientFactory whose PutRecords waits until ``thaw`` is set, as a call to a stopped emulator does."""

    def __init__(self, endpoint: str) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.thaw = threading.Event()

    def client(self, service: str) -> Any:
        client = self.factory.client(service)
        original = client.put_records

        def put_records(**kwargs: Any) -> Any:
            assert self.thaw.wait(60), "the test never thawed the emulator"
            return original(**kwargs)

        client.put_records = put_records
        return client


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_a_stalled_emulator_holds_the_broker_back_and_loses_nothing(kind: str, moto_endpoint: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "mosquitto" and broker_module.mosquitto_binary() is None:
        pytest.skip("needs mosquitto (make install)")
    if kind == "amqtt" and not amqtt_available():
        pytest.skip("needs amqtt (pip install 'iotpipe[local]')")
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_endpoint)
    kinesis.create_stream(StreamName="sensor-stream", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="sensor-stream", WaiterConfig={"Delay": 0.1})
    emulator = FrozenKinesis(moto_endpoint)
    problems: list[str] = []
    engine = RuleEngine([rule_from_properties(RULE)], emulator, max_pending=2, on_problem=problems.append)
    monkeypatch.setattr(running_module, "FEED_QUEUE_SIZE", 2)
    broker = start_broker(BrokerSpec(kind=kind), tmp_path, engine.on_message)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="press-1")
    try:
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        sent = [publisher.publish("sensor/press-1/data", json.dumps({"seq": n}).encode(), qos=1)
                for n in range(MESSAGES)]
        # the engine's queue is full and the feed waits in on_message (at least one message waited for room, more
        # when the engine's sender took one out meanwhile); the feed's own queue fills behind it. The three are
        # awaited together: the feed thread takes a message off its queue before on_message counts its wait.
        wait_for(lambda: (engine.stats.pending == 2 and broker.stats.queue_depth == 2
                          and engine.stats.backpressured >= 1), "the feed to stall")
        if kind == "amqtt":
            # the embedded broker stops with its feed: the publisher's QoS 1 acknowledgements wait
            assert sum(info.is_published() for info in sent) < MESSAGES
        assert engine.stats.dropped == 0
        emulator.thaw.set()
        for info in sent:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
        wait_for(lambda: engine.stats.messages_in == MESSAGES, "every message to reach the engine")
        engine.flush()
    finally:
        emulator.thaw.set()
        publisher.loop_stop()
        publisher.disconnect()
        broker.stop()
        engine.close()
    shard = kinesis.list_shards(StreamName="sensor-stream")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="sensor-stream", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    assert [json.loads(r["Data"])["seq"] for r in records] == list(range(MESSAGES))
    assert engine.stats.dropped == 0 and problems == []
