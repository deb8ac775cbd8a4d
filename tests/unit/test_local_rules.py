"""The topic rule engine of ``iotpipe local``: rules read from the template (the model), then the engine end to end
on moto (the SQL itself is tested in test_local_rules_iotsql.py).

Quoted doc passages are from the AWS IoT Core developer guide pages named next to them.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cfnlint.decode import decode_str

from iotpipe.aws import ClientFactory
from iotpipe.composition import compose
from iotpipe.config import build_config
from iotpipe.groups.ingest import RULE_SQL
from iotpipe.local.rules.boto_actions import BotoActions
from iotpipe.local.rules.engine import RuleEngine, RuleEngineStats
from iotpipe.local.rules.iotsql import RuleError
from iotpipe.local.rules.model import rule_from_properties

NOW = 1_700_000_000_123
SEED_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "seed_TapStack.yml"
REGION = "us-east-1"


# ---------------------------------------------------------------------------------------------- rule_from_properties

def pipeline_rule_properties(stream: str = "sensor-stream", bucket: str = "raw-bucket",
                             name: str = "SensorDataRule_dev") -> dict[str, Any]:
    """The pipeline's rule as iotpipe renders it (groups/ingest.py), intrinsic functions resolved."""
    role = "arn:aws:iam::123456789012:role/IoTRuleRole-dev"
    return {
        "RuleName": name,
        "TopicRulePayload": {
            "Description": "Route sensor data from IoT devices to Kinesis stream",
            "Sql": RULE_SQL,
            "AwsIotSqlVersion": "2016-03-23",
            "RuleDisabled": False,
            "Actions": [{"Kinesis": {"StreamName": stream, "PartitionKey": "${topic(2)}", "RoleArn": role}}],
            "ErrorAction": {"S3": {"BucketName": bucket,
                                   "Key": "rule-errors/${topic(2)}/${timestamp()}-${newuuid()}.json",
                                   "RoleArn": role}},
        },
    }


def test_rule_from_the_pipeline_properties() -> None:
    rule = rule_from_properties(pipeline_rule_properties())
    assert rule.name == "SensorDataRule_dev" and not rule.disabled
    assert rule.query.topic_filter == "sensor/+/data" and rule.query.version == "2016-03-23"
    (action,) = rule.actions
    assert action.stream_name.source == "sensor-stream"
    assert action.partition_key is not None and action.partition_key.source == "${topic(2)}"
    assert rule.error_action is not None and rule.error_action.key.source.startswith("rule-errors/")


def resolved(value: Any) -> Any:
    """Intrinsic functions replaced by plain strings, roughly as CloudFormation would (enough for a rule)."""
    if isinstance(value, list):
        return [resolved(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return f"ref-{value['Ref']}"
    if set(value) == {"Fn::GetAtt"}:
        return f"arn:aws:iam::123456789012:role/{value['Fn::GetAtt'][0]}"
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{EnvironmentSuffix\}", "dev", value["Fn::Sub"])
    return {k: resolved(v) for k, v in value.items()}


def topic_rules(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [resolved(r["Properties"]) for r in template["Resources"].values() if r["Type"] == "AWS::IoT::TopicRule"]


def test_the_composed_rule_runs_locally() -> None:
    template = json.loads(json.dumps(compose(build_config({}, "dev", {})).template.to_dict()))
    (properties,) = topic_rules(template)
    rule = rule_from_properties(properties)
    assert rule.name == "SensorDataRule_dev" and rule.query.version == "2016-03-23"
    payload = {"deviceId": "d1", "sensorType": "temperature", "value": 70.5}
    assert rule.query.evaluate(json.dumps(payload).encode(), topic="sensor/d1/data", client_id=None,
                               now_ms=NOW) == {**payload, "receivedAt": NOW, "topicDeviceId": "d1"}


def test_the_seed_rule_runs_locally_and_overwrites_the_device_timestamp() -> None:
    template, errors = decode_str(SEED_TEMPLATE.read_text(encoding="utf-8"))
    assert not errors
    (properties,) = topic_rules(json.loads(json.dumps(template)))
    rule = rule_from_properties(properties)
    assert rule.query.version == "2015-10-08" and rule.error_action is None
    out = rule.query.evaluate(b'{"deviceId": "d1", "timestamp": 5}', topic="sensor/d1/data", client_id=None,
                              now_ms=NOW)
    assert out == {"deviceId": "d1", "timestamp": NOW}


def test_sql_version_defaults_to_2015() -> None:
    # Creating an AWS IoT rule: if the SQL version is not set "in a CloudFormation template, 2015-10-08 is used".
    properties = pipeline_rule_properties()
    del properties["TopicRulePayload"]["AwsIotSqlVersion"]
    assert rule_from_properties(properties).query.version == "2015-10-08"


def _with(payload_changes: dict[str, Any]) -> dict[str, Any]:
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"].update(payload_changes)
    return properties


@pytest.mark.parametrize(("properties", "message"), [
    (_with({"Actions": [{"Lambda": {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f"}}]}),
     "the Lambda action is not supported by iotpipe local"),
    (_with({"ErrorAction": {"Sqs": {"QueueUrl": "q", "RoleArn": "r"}}}),
     "ErrorAction: the Sqs action is not supported"),
    (_with({"Sql": "SELECT * FROM 'a' JOIN 'b'"}), "unsupported construct 'JOIN'"),
    (_with({"Sql": "SELECT md5(x) AS h FROM 'a'"}), r"function md5\(\)"),
    (_with({"AwsIotSqlVersion": "beta"}), "AwsIotSqlVersion 'beta'"),
    (_with({"Actions": [{"Kinesis": {"PartitionKey": "${topic(2)}"}}]}), "Kinesis action has missing StreamName"),
    (_with({"Actions": [{"Kinesis": {"StreamName": {"Ref": "SensorDataStream"}}}]}),
     "resolve intrinsic functions first"),
    (_with({"Actions": [{"Kinesis": {"StreamName": "s", "PartitionKey": "${bogus(1)}"}}]}), r"function bogus\(\)"),
    (_with({"Actions": []}), "at least one action"),
    (_with({"RuleDisabled": "maybe"}), "RuleDisabled must be true or false"),
    ({"TopicRulePayload": {"Sql": "SELECT * FROM 'a'"}}, "has no RuleName"),
])
def test_rule_from_properties_errors_name_the_rule_and_the_problem(properties: dict[str, Any],
                                                                    message: str) -> None:
    with pytest.raises(RuleError, match=message) as info:
        rule_from_properties(properties)
    assert "\n" not in str(info.value)
    if "RuleName" in properties:
        assert str(info.value).startswith("topic rule SensorDataRule_dev: ")


# ---------------------------------------------------------------------------------------------- the engine on moto

class CountingFactory:
    """A ClientFactory whose Kinesis client records the size of each PutRecords call."""

    def __init__(self, endpoint: str) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.put_records_sizes: list[int] = []

    def client(self, service: str) -> Any:
        client = self.factory.client(service)
        if service == "kinesis":
            original = client.put_records

            def put_records(**kwargs: Any) -> Any:
                self.put_records_sizes.append(len(kwargs["Records"]))
                return original(**kwargs)

            client.put_records = put_records
        return client


@pytest.fixture
def aws(moto_endpoint: str) -> dict[str, Any]:
    """A 2-shard stream and a bucket on the moto server."""
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_endpoint)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    kinesis.create_stream(StreamName="sensor-stream", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="sensor-stream", WaiterConfig={"Delay": 0.1})
    s3.create_bucket(Bucket="raw-bucket")
    return {"endpoint": moto_endpoint, "kinesis": kinesis, "s3": s3}


@pytest.fixture
def engines() -> Iterator[list[RuleEngine]]:
    """Engines made by a test, closed after it whatever happens."""
    made: list[RuleEngine] = []
    yield made
    for engine in made:
        engine.close()


def make_engine(aws: dict[str, Any], engines: list[RuleEngine], *rules_properties: dict[str, Any],
                **kwargs: Any) -> RuleEngine:
    factory = kwargs.pop("factory", None) or ClientFactory(region=REGION, endpoint_url=aws["endpoint"])
    rules = [rule_from_properties(p) for p in (rules_properties or (pipeline_rule_properties(),))]
    engine = RuleEngine(rules, BotoActions(factory), clock_ms=lambda: NOW, **kwargs)
    engines.append(engine)
    return engine


def stream_records(kinesis: Any, stream: str = "sensor-stream") -> list[dict[str, Any]]:
    """Every record of every shard, each shard in sequence order."""
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records.extend(kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"])
    return records


def error_objects(s3: Any, bucket: str = "raw-bucket") -> dict[str, dict[str, Any]]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="rule-errors/").get("Contents", [])
    return {o["Key"]: json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listing}


def reading(device: str, n: int) -> bytes:
    return json.dumps({"deviceId": device, "sensorType": "temperature", "value": 70 + n / 10, "seq": n}).encode()


def test_engine_delivers_to_kinesis_keyed_by_device_in_order(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    devices = ["press-1", "press-2", "lathe-3"]
    for n in range(60):
        device = devices[n % 3]
        engine.on_message(f"sensor/{device}/data", reading(device, n), "client-1")
    engine.on_message("other/topic", b"{}", None)
    engine.flush()

    records = stream_records(aws["kinesis"])
    assert len(records) == 60
    by_device: dict[str, list[int]] = {}
    for record in records:
        data = json.loads(record["Data"])
        assert record["PartitionKey"] == data["topicDeviceId"] == data["deviceId"]
        assert data["receivedAt"] == NOW and data["sensorType"] == "temperature"
        by_device.setdefault(record["PartitionKey"], []).append(data["seq"])
    assert by_device == {d: [n for n in range(60) if devices[n % 3] == d] for d in devices}
    assert engine.stats == RuleEngineStats(messages_in=61, unrouted=1, matched=60, actions_ok=60)
    assert error_objects(aws["s3"]) == {}


def test_engine_thread_delivers_without_flush(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    deadline = time.monotonic() + 10
    while engine.stats.actions_ok < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats.actions_ok == 1
    assert [r["PartitionKey"] for r in stream_records(aws["kinesis"])] == ["d1"]


def test_engine_coalesces_into_put_records_batches(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    factory = CountingFactory(aws["endpoint"])
    engine = make_engine(aws, engines, factory=factory, max_batch=2, flush_interval_s=60)
    for n in range(5):
        engine.on_message("sensor/d1/data", reading("d1", n), None)
    engine.flush()
    assert factory.put_records_sizes == [2, 2, 1]
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 3, 4]


def test_failed_kinesis_action_goes_to_the_s3_error_action(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    engine = make_engine(aws, engines, pipeline_rule_properties(stream="no-such-stream"), on_problem=problems.append)
    payload = reading("press-9", 1)
    engine.on_message("sensor/press-9/data", payload, "device-press-9")
    engine.flush()

    objects = error_objects(aws["s3"])
    assert len(objects) == 1
    ((key, body),) = objects.items()
    assert re.fullmatch(rf"rule-errors/press-9/{NOW}-[0-9a-f-]{{36}}\.json", key)
    # "Error action message format": ruleName, topic, cloudwatchTraceId, clientId, base64OriginalPayload, failures.
    assert set(body) == {"ruleName", "topic", "cloudwatchTraceId", "clientId", "base64OriginalPayload", "failures"}
    assert body["ruleName"] == "SensorDataRule_dev"
    assert body["topic"] == "sensor/press-9/data"
    assert body["clientId"] == "device-press-9"
    assert uuid.UUID(body["cloudwatchTraceId"])
    assert base64.b64decode(body["base64OriginalPayload"]) == payload
    (failure,) = body["failures"]
    assert failure["failedAction"] == "KinesisAction"
    assert failure["failedResource"] == "no-such-stream"
    assert "ResourceNotFoundException" in failure["errorMessage"]
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions=1)
    assert problems == []


class StubbedKinesisFactory:
    """moto's clients, except a Kinesis client whose PutRecords answers come from a botocore Stubber."""

    def __init__(self, endpoint: str, put_records_answers: list[dict[str, Any]]) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.kinesis = self.factory.client("kinesis")
        self.stubber = Stubber(self.kinesis)
        for answer in put_records_answers:
            self.stubber.add_response("put_records", answer)
        self.stubber.activate()

    def client(self, service: str) -> Any:
        return self.kinesis if service == "kinesis" else self.factory.client(service)


def test_a_record_put_records_reports_failed_goes_to_the_error_action(aws: dict[str, Any],
                                                                     engines: list[RuleEngine]) -> None:
    # PutRecords can fail single records (moto never does): only that message goes to the error action.
    answer = {"FailedRecordCount": 1, "Records": [
        {"SequenceNumber": "1", "ShardId": "shardId-000000000000"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"},
        {"SequenceNumber": "2", "ShardId": "shardId-000000000000"}]}
    factory = StubbedKinesisFactory(aws["endpoint"], [answer])
    engine = make_engine(aws, engines, factory=factory)
    for device in ("d1", "d2", "d3"):
        engine.on_message(f"sensor/{device}/data", reading(device, 1), None)
    engine.flush()
    factory.stubber.assert_no_pending_responses()
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d2/")
    assert base64.b64decode(body["base64OriginalPayload"]) == reading("d2", 1)
    assert "ProvisionedThroughputExceededException: Rate exceeded for shard" in body["failures"][0]["errorMessage"]
    assert engine.stats == RuleEngineStats(messages_in=3, matched=3, actions_ok=2, actions_failed=1, error_actions=1)


def test_one_bad_partition_key_does_not_fail_the_others(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    # The seed keyed on ${deviceId}: a payload without deviceId renders "" ("Undefined is converted to an empty
    # string when serialized by itself"), which Kinesis refuses; that message goes to the error action.
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"]["Actions"][0]["Kinesis"]["PartitionKey"] = "${deviceId}"
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.on_message("sensor/d2/data", b'{"value": 5}', None)
    engine.on_message("sensor/d3/data", reading("d3", 3), None)
    engine.flush()

    assert [r["PartitionKey"] for r in sorted(stream_records(aws["kinesis"]), key=lambda r: r["PartitionKey"])] == [
        "d1", "d3"]
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d2/") and body["clientId"] == "n/a"
    assert "partition key" in body["failures"][0]["errorMessage"]
    assert engine.stats.actions_ok == 2 and engine.stats.error_actions == 1


def test_error_action_failure_is_counted_and_reported(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    properties = pipeline_rule_properties(stream="no-such-stream", bucket="no-such-bucket")
    engine = make_engine(aws, engines, properties, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert engine.stats == RuleEngineStats(messages_in=1, matched=1, actions_failed=1, error_actions_failed=1,
                                           dropped=1)
    (problem,) = problems
    assert "SensorDataRule_dev" in problem and "sensor/d1/data" in problem and "NoSuchBucket" in problem


def test_on_problem_runs_after_the_batch_is_counted(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    seen: list[RuleEngineStats] = []
    engine = make_engine(aws, engines, on_problem=lambda _problem: seen.append(engine.stats))
    engine.on_message("sensor/d1/data", b"not json", None)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert len(seen) == 1 and seen[0].sql_failed == 1 and seen[0].actions_ok == 1


def test_rule_without_error_action_reports_the_lost_message(aws: dict[str, Any],
                                                           engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    properties = pipeline_rule_properties(stream="no-such-stream")
    del properties["TopicRulePayload"]["ErrorAction"]
    engine = make_engine(aws, engines, properties, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.flush()
    assert engine.stats.dropped == 1
    assert len(problems) == 1 and "no error action" in problems[0]


def test_non_json_payload_is_counted_not_sent(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    engine = make_engine(aws, engines, on_problem=problems.append)
    engine.on_message("sensor/d1/data", b"not json", None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == [] and error_objects(aws["s3"]) == {}
    assert engine.stats == RuleEngineStats(messages_in=1, sql_failed=1, dropped=1)
    assert len(problems) == 1 and "not a JSON object" in problems[0]


def test_where_filters_and_s3_action(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    properties = {
        "RuleName": "HotOnly",
        "TopicRulePayload": {
            "Sql": "SELECT deviceId, value FROM 'sensor/+/data' WHERE value > 80",
            "AwsIotSqlVersion": "2016-03-23",
            "Actions": [{"S3": {"BucketName": "raw-bucket", "Key": "hot/${topic(2)}/${seq}.json"}}],
        },
    }
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", json.dumps({"deviceId": "d1", "value": 81, "seq": 1}).encode(), None)
    engine.on_message("sensor/d1/data", json.dumps({"deviceId": "d1", "value": 20, "seq": 2}).encode(), None)
    engine.flush()
    listing = aws["s3"].list_objects_v2(Bucket="raw-bucket")["Contents"]
    assert [o["Key"] for o in listing] == ["hot/d1/1.json"]
    body = aws["s3"].get_object(Bucket="raw-bucket", Key="hot/d1/1.json")["Body"].read()
    assert json.loads(body) == {"deviceId": "d1", "value": 81}
    assert engine.stats == RuleEngineStats(messages_in=2, matched=1, filtered=1, actions_ok=1)


def test_basic_ingest_routes_to_the_named_rule_only(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    other = {"RuleName": "Everything", "TopicRulePayload": {
        "Sql": "SELECT * FROM '#'", "AwsIotSqlVersion": "2016-03-23",
        "Actions": [{"S3": {"BucketName": "raw-bucket", "Key": "all/${newuuid()}"}}]}}
    engine = make_engine(aws, engines, pipeline_rule_properties(), other, on_problem=problems.append)
    engine.on_message("$aws/rules/SensorDataRule_dev/sensor/d9/data", reading("d9", 1), None)
    engine.on_message("$aws/rules/NoSuchRule/sensor/d9/data", reading("d9", 2), None)
    engine.flush()

    (record,) = stream_records(aws["kinesis"])
    assert record["PartitionKey"] == "d9"
    assert json.loads(record["Data"])["topicDeviceId"] == "d9"
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket="raw-bucket")  # '#' does not see $aws topics
    assert engine.stats.dropped == 1
    assert len(problems) == 1 and "rule NoSuchRule does not exist" in problems[0]


def test_disabled_rule_does_not_run(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    properties = pipeline_rule_properties()
    properties["TopicRulePayload"]["RuleDisabled"] = True
    engine = make_engine(aws, engines, properties)
    engine.on_message("sensor/d1/data", reading("d1", 1), None)
    engine.on_message("$aws/rules/SensorDataRule_dev/sensor/d1/data", reading("d1", 2), None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == []
    assert engine.stats == RuleEngineStats(messages_in=2, unrouted=1, dropped=1)


def test_close_delivers_queued_messages_and_is_idempotent(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines, flush_interval_s=60)
    for n in range(3):
        engine.on_message("sensor/d1/data", reading("d1", n), None)
    engine.close()
    engine.close()
    assert len(stream_records(aws["kinesis"])) == 3
    # a message the broker's feed hands over while a redeploy replaces the engine is still delivered
    engine.on_message("sensor/d1/data", reading("d1", 9), None)
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 9]
    assert engine.stats.dropped == 0 and engine.stats.actions_ok == 4


class FrozenKinesis:
    """A ClientFactory whose Kinesis calls wait until ``thaw`` is set, as calls to a stopped emulator do."""

    def __init__(self, endpoint: str) -> None:
        self.factory = ClientFactory(region=REGION, endpoint_url=endpoint)
        self.thaw = threading.Event()
        self.waiting = threading.Event()

    def client(self, service: str) -> Any:
        client = self.factory.client(service)
        if service == "kinesis":
            original = client.put_records

            def put_records(**kwargs: Any) -> Any:
                self.waiting.set()
                assert self.thaw.wait(60), "the test never thawed the emulator"
                return original(**kwargs)

            client.put_records = put_records
        return client


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_full_queue_holds_the_publisher_back_instead_of_dropping(aws: dict[str, Any],
                                                                  engines: list[RuleEngine]) -> None:
    problems: list[str] = []
    emulator = FrozenKinesis(aws["endpoint"])
    engine = make_engine(aws, engines, factory=emulator, max_pending=3, on_problem=problems.append)
    engine.on_message("sensor/d1/data", reading("d1", 0), None)
    wait_for(emulator.waiting.is_set, "the engine to call the frozen emulator")
    feed = threading.Thread(target=lambda: [engine.on_message("sensor/d1/data", reading("d1", n), None)
                                            for n in range(1, 6)])
    feed.start()
    # three messages fill the queue; the fourth waits in on_message (the broker's feed thread: no PUBACK yet)
    wait_for(lambda: engine.stats.backpressured == 1, "the feed to be held back")
    assert feed.is_alive() and engine.stats.pending == 3 and engine.stats.dropped == 0
    emulator.thaw.set()
    feed.join(30)
    assert not feed.is_alive()
    engine.flush()
    assert [json.loads(r["Data"])["seq"] for r in stream_records(aws["kinesis"])] == [0, 1, 2, 3, 4, 5]
    assert engine.stats.dropped == 0 and engine.stats.actions_ok == 6 and problems == []


def test_every_lost_message_is_logged(aws: dict[str, Any], engines: list[RuleEngine],
                                      caplog: pytest.LogCaptureFixture) -> None:
    properties = pipeline_rule_properties(stream="no-such-stream")
    del properties["TopicRulePayload"]["ErrorAction"]
    engine = make_engine(aws, engines, properties)  # no on_problem: the log is where a user finds it
    with caplog.at_level(logging.WARNING, logger="iotpipe.local.rules"):
        engine.on_message("sensor/d1/data", reading("d1", 1), None)
        engine.on_message("sensor/d2/data", b"not json", None)
        engine.flush()
    lost = sorted(r.getMessage() for r in caplog.records if r.name == "iotpipe.local.rules")
    assert engine.stats.dropped == 2 and len(lost) == 2
    assert "sensor/d1/data lost" in lost[0] and "no error action" in lost[0]
    assert "sensor/d2/data dropped" in lost[1] and "not a JSON object" in lost[1]


def test_a_lone_surrogate_escape_reaches_the_stream(aws: dict[str, Any], engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    payload = b'{"deviceId": "d1", "sensorType": "temperature", "value": 1.5, "note": "\\ud800 \\udc00x"}'
    engine.on_message("sensor/d1/data", payload, None)
    engine.flush()
    (record,) = stream_records(aws["kinesis"])
    data = json.loads(record["Data"])
    assert data["note"] == "\ud800 \udc00x" and data["value"] == 1.5 and data["topicDeviceId"] == "d1"
    assert engine.stats.dropped == 0


def test_a_payload_nested_too_deeply_goes_to_the_error_action(aws: dict[str, Any],
                                                              engines: list[RuleEngine]) -> None:
    engine = make_engine(aws, engines)
    payload = b'{"deviceId": "d1", "sensorType": "t", "value": 1, "extra": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    # valid JSON: the processors take it and quarantine it (deeper than the contract's 64 levels)
    engine.on_message("sensor/d1/data", payload, None)
    engine.flush()
    assert stream_records(aws["kinesis"]) == []
    ((key, body),) = error_objects(aws["s3"]).items()
    assert key.startswith("rule-errors/d1/") and base64.b64decode(body["base64OriginalPayload"]) == payload
    assert body["failures"][0]["failedAction"] == "KinesisAction"
    assert "nests too deeply" in body["failures"][0]["errorMessage"]
    assert engine.stats.error_actions == 1 and engine.stats.dropped == 0


@pytest.mark.parametrize(("literal", "written"), [
    # Data types: Decimal has "a minimum non-zero magnitude of 1E-999 and a maximum magnitude 9.999...E999"
    (b"1e-400", b"1E-400"),
    (b"-2.5E-999", b"-2.5E-999"),
    (b"1e400", b"1E+400"),
    # "A Decimal with a precision of 34 digits"
    (b"3.14159265358979323846264338327950288419", b"3.141592653589793238462643383279503"),
    # beyond the documented range the docs are silent: the literal passes as it was written
    (b"1e-1000", b"1e-1000"),
    (b"-7.5E+1000", b"-7.5E+1000"),
    (b"71.25", b"71.25"),
])
def test_number_literals_reach_the_stream_as_aws_iot_holds_them(aws: dict[str, Any], engines: list[RuleEngine],
                                                               literal: bytes, written: bytes) -> None:
    engine = make_engine(aws, engines)
    engine.on_message("sensor/d1/data", b'{"deviceId": "d1", "sensorType": "t", "value": ' + literal + b"}", None)
    engine.flush()
    (record,) = stream_records(aws["kinesis"])
    assert record["Data"].startswith(b'{"deviceId":"d1","sensorType":"t","value":' + written + b",")


def test_engine_refuses_duplicate_rule_names(aws: dict[str, Any]) -> None:
    rule = rule_from_properties(pipeline_rule_properties())
    with pytest.raises(RuleError, match="SensorDataRule_dev appear more than once"):
        RuleEngine([rule, rule], ClientFactory(region=REGION, endpoint_url=aws["endpoint"]))
