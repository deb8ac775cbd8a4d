"""The rule engine reaches AWS only through its action sink: here a sink in memory, no boto3 and no emulator."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from iotpipe.groups.ingest import RULE_SQL
from iotpipe.local.rules.engine import RuleEngine, RuleEngineStats
from iotpipe.local.rules.model import rule_from_properties
from iotpipe.local.rules.sink import ActionError, ActionSink, KinesisRecord

NOW = 1_700_000_000_123
THROTTLED = "ProvisionedThroughputExceededException: Rate exceeded for shard"


@dataclass
class MemorySink:
    """Streams and buckets in memory; ``throttled`` partition keys fail inside PutRecords, as AWS can."""

    streams: dict[str, list[KinesisRecord]] = field(default_factory=dict)
    buckets: dict[str, dict[str, tuple[bytes, str | None]]] = field(default_factory=dict)
    throttled: set[str] = field(default_factory=set)
    put_records_sizes: list[int] = field(default_factory=list)

    def put_records(self, stream: str, records: Sequence[KinesisRecord]) -> list[str | None]:
        self.put_records_sizes.append(len(records))
        shard = self._stream(stream)
        results: list[str | None] = []
        for record in records:
            if record.partition_key in self.throttled:
                results.append(THROTTLED)
            else:
                shard.append(record)
                results.append(None)
        return results

    def put_record(self, stream: str, record: KinesisRecord) -> None:
        self._stream(stream).append(record)

    def put_object(self, bucket: str, key: str, body: bytes, *, canned_acl: str | None = None) -> None:
        if bucket not in self.buckets:
            raise ActionError("NoSuchBucket: The specified bucket does not exist")
        self.buckets[bucket][key] = (body, canned_acl)

    def _stream(self, stream: str) -> list[KinesisRecord]:
        if stream not in self.streams:
            raise ActionError(f"ResourceNotFoundException: Stream {stream} under account 123456789012 not found.")
        return self.streams[stream]


def rule_properties(*, error_action: dict[str, Any] | None = None,
                    action: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline's rule (groups/ingest.py) with an S3 error action, intrinsic functions resolved."""
    return {"RuleName": "SensorDataRule_dev", "TopicRulePayload": {
        "Sql": RULE_SQL, "AwsIotSqlVersion": "2016-03-23",
        "Actions": [action or {"Kinesis": {"StreamName": "sensor-stream", "PartitionKey": "${topic(2)}"}}],
        "ErrorAction": error_action or {"S3": {"BucketName": "raw-bucket", "CannedAcl": "private",
                                               "Key": "rule-errors/${topic(2)}/${timestamp()}.json"}}}}


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink(streams={"sensor-stream": [], "errors": []}, buckets={"raw-bucket": {}})


@pytest.fixture
def engines() -> Iterator[list[RuleEngine]]:
    made: list[RuleEngine] = []
    yield made
    for engine in made:
        engine.close()


def make_engine(sink: ActionSink, engines: list[RuleEngine], properties: dict[str, Any] | None = None,
                **kwargs: Any) -> RuleEngine:
    engine = RuleEngine([rule_from_properties(properties or rule_properties())], sink, clock_ms=lambda: NOW,
                        **kwargs)
    engines.append(engine)
    return engine


def reading(device: str, n: int) -> bytes:
    return json.dumps({"deviceId": device, "sensorType": "temperature", "value": 70 + n, "seq": n}).encode()


def test_the_memory_sink_is_an_action_sink(sink: MemorySink) -> None:
    assert isinstance(sink, ActionSink)


def test_engine_delivers_evaluated_records_to_the_sink_in_batches(sink: MemorySink,
                                                                 engines: list[RuleEngine]) -> None:
    engine = make_engine(sink, engines, max_batch=2, flush_interval_s=60)
    for n in range(5):
        engine.on_message(f"sensor/d{n % 2}/data", reading(f"d{n % 2}", n), "client-1")
    engine.on_message("other/topic", b"{}", None)
    engine.flush()

    records = sink.streams["sensor-stream"]
    assert [r.partition_key for r in records] == ["d0", "d1", "d0", "d1", "d0"]
    bodies = [json.loads(r.data) for r in records]
    assert [b["seq"] for b in bodies] == [0, 1, 2, 3, 4]
    assert all(b["receivedAt"] == NOW and b["topicDeviceId"] == b["deviceId"] for b in bodies)
    assert sink.put_records_sizes == [2, 2, 1]
    assert engine.stats == RuleEngineStats(messages_in=6, unrouted=1, matched=5, actions_ok=5)
    assert sink.buckets["raw-bucket"] == {}


def test_a_record_the_sink_refuses_goes_to_the_error_action(sink: MemorySink, engines: list[RuleEngine]) -> None:
    sink.throttled.add("d2")
    engine = make_engine(sink, engines)
    for device in ("d1", "d2", "d3"):
        engine.on_message(f"sensor/{device}/data", reading(device, 1), "device-" + device)
    engine.flush()

    assert [r.partition_key for r in sink.streams["sensor-stream"]] == ["d1", "d3"]
    ((key, (body, acl)),) = sink.buckets["raw-bucket"].items()
    assert key == f"rule-errors/d2/{NOW}.json" and acl == "private"
    message = json.loads(body)
    assert message["ruleName"] == "SensorDataRule_dev" and message["clientId"] == "device-d2"
    assert base64.b64decode(message["base64OriginalPayload"]) == reading("d2", 1)
    (failure,) = message["failures"]
    assert failure["failedAction"] == "KinesisAction" and failure["failedResource"] == "sensor-stream"
    assert f"The error received was {THROTTLED}." in failure["errorMessage"]
    assert engine.stats == RuleEngineStats(messages_in=3, matched=3, actions_ok=2, actions_failed=1, error_actions=1)


def test_the_reason_a_sink_raises_is_the_error_messages_reason(sink: MemorySink,
                                                               engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    properties = rule_properties(action={"Kinesis": {"StreamName": "no-such-stream", "PartitionKey": "k"}},
                                 error_action={"Kinesis": {"StreamName": "errors", "PartitionKey": "${topic(2)}"}})
    engine = make_engine(sink, engines, properties, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()

    (record,) = sink.streams["errors"]  # a Kinesis error action: one PutRecord keyed by its own template
    assert record.partition_key == "d1"
    (failure,) = json.loads(record.data)["failures"]
    assert failure["errorMessage"].startswith(
        "Failed to send message to Kinesis. The error received was ResourceNotFoundException: Stream "
        "no-such-stream under account 123456789012 not found.. Message arrived on: sensor/d1/data")
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions=1)
    assert problems == []


def test_an_error_action_the_sink_refuses_is_counted_and_reported(engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    engine = make_engine(MemorySink(), engines, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions_failed=1,
                                           dropped=1)
    (problem,) = problems
    assert problem.startswith("rule SensorDataRule_dev: message on sensor/d1/data lost: ")
    assert problem.endswith("its error action failed too: NoSuchBucket: The specified bucket does not exist")


def test_a_sink_that_raises_anything_else_fails_the_action_with_its_type(engines: list[RuleEngine]) -> None:
    class Broken(MemorySink):
        def put_records(self, _stream: str, _records: Sequence[KinesisRecord]) -> list[str | None]:
            raise ConnectionResetError("peer went away")

    sink = Broken(buckets={"raw-bucket": {}})
    engine = make_engine(sink, engines)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    ((_, (body, _)),) = sink.buckets["raw-bucket"].items()
    assert "The error received was ConnectionResetError: peer went away." in body.decode()


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one has boto3 loaded); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_engine_runs_with_boto3_and_botocore_unimportable() -> None:
    out = run_python(f"""
        import json, sys
        sys.modules["boto3"] = sys.modules["botocore"] = None  # importing either now raises ImportError
        from iotpipe.local.rules import RuleEngine, rule_from_properties

        class Sink:
            def __init__(self):
                self.records = []
            def put_records(self, stream, records):
                self.records.extend((stream, r.partition_key, json.loads(r.data)["value"]) for r in records)
                return [None] * len(records)
            def put_record(self, stream, record):
                raise AssertionError("no error action expected")
            def put_object(self, bucket, key, body, *, canned_acl=None):
                raise AssertionError("no error action expected")

        sink = Sink()
        engine = RuleEngine([rule_from_properties({json.dumps(rule_properties())})], sink)
        engine.on_message("sensor/d7/data", b'{{"deviceId": "d7", "value": 70.5}}', None)
        engine.close()
        print(json.dumps([sink.records, engine.stats.actions_ok]))
    """)
    assert json.loads(out) == [[["sensor-stream", "d7", 70.5]], 1]
