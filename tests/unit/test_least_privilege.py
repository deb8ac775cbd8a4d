"""Least privilege, proven: the roles and the device policy of the rendered template, evaluated statement by statement.

The real processor (handler/python/index.py) runs against moto on a batch of valid, anomalous and bad records
while every AWS call it makes is recorded through botocore's ``provide-client-params`` event. Each call becomes
an IAM action (service prefix + operation) and a resource ARN, and is checked against the processor role's
statements (GetAtt/Sub resolved to moto's ARNs) in both directions: every call is granted for its resource, and
every granted action/resource pair is used by a call. The calls Lambda makes for the function (the Kinesis event
source mapping, its on-failure destination, log delivery) are replayed with boto3 against moto the same way,
and they may only use the actions listed in PLATFORM_ACTIONS. The IoT rule role is checked likewise with the
rule's Kinesis action and S3 error action replayed. The device policy is evaluated for connecting things.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode_str
from moto import mock_aws

from iotpipe.config import load_config
from iotpipe.render import render_template

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "handler") not in sys.path:  # the processor tests' helpers
    sys.path.insert(0, str(REPO / "tests" / "handler"))

from processor_support import load_handler  # noqa: E402

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
          "AWS::StackName": "iotpipe-dev", "EnvironmentSuffix": "dev"}

# Actions the processor role grants for calls Lambda itself makes for the function, never the handler code:
# https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html#events-kinesis-permissions and
# https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
PLATFORM_ACTIONS = {
    "kinesis:DescribeStream": "event source mapping: stream metadata",
    "kinesis:DescribeStreamSummary": "event source mapping: stream metadata",
    "kinesis:ListShards": "event source mapping: shard discovery",
    "kinesis:GetShardIterator": "event source mapping: polling",
    "kinesis:GetRecords": "event source mapping: polling",
    "sqs:SendMessage": "event source mapping on-failure destination (and the function's async dead-letter queue)",
    "logs:CreateLogStream": "Lambda log delivery into the function's log group",
    "logs:PutLogEvents": "Lambda log delivery into the function's log group",
}
# What SNS does with the publisher's permissions when a topic is encrypted: "the publisher must have the
# kms:GenerateDataKey* and kms:Decrypt permissions for the AWS KMS key" (Amazon SNS developer guide, "Key
# management", enabling compatibility between event sources and encrypted topics). moto records no such call.
SNS_KMS_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")


# ---------------------------------------------------------------- template and IAM evaluation helpers

def decoded(text: str) -> dict[str, Any]:
    """The YAML template as plain JSON data (short-form intrinsics expanded)."""
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template))


def resolve(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with Ref, Fn::GetAtt and Fn::Sub replaced from ``names`` (``X`` or ``X.Attr`` -> text)."""
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return names[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        return names[target if isinstance(target, str) else ".".join(target)]
    if set(value) == {"Fn::Sub"}:
        pattern, local = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        lookup = {**names, **{key: resolve(item, names) for key, item in local.items()}}

        def substitute(match: re.Match[str]) -> str:
            inner = match.group(1)
            return "${" + inner[1:] + "}" if inner.startswith("!") else str(lookup[inner])

        return re.sub(r"\$\{([^}]+)\}", substitute, pattern)
    assert not any(key.startswith("Fn::") for key in value), f"unresolved intrinsic {value}"
    return {key: resolve(item, names) for key, item in value.items()}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """IAM-style matching: ``*`` any run of characters, ``?`` one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE if ignore_case else 0) is not None


@dataclass(frozen=True)
class Grant:
    """One (action, resource pattern) pair an Allow statement grants."""

    sid: str
    action: str
    resource: str


@dataclass(frozen=True)
class Call:
    """One AWS call as IAM sees it."""

    action: str
    resource: str
    who: str  # "handler", "lambda" (the platform on the function's behalf) or "iot-rule"


def grants(statements: list[dict[str, Any]]) -> list[Grant]:
    """The (action, resource) pairs of Allow statements; unconditional, no NotAction/NotResource."""
    pairs = []
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        assert not {"Condition", "NotAction", "NotResource"} & set(statement), f"unsupported in a role: {statement}"
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                pairs.append(Grant(statement.get("Sid", ""), action, resource))
    return pairs


def allowed(call: Call, granted: list[Grant]) -> bool:
    return any(wildcard(g.action, call.action, ignore_case=True) and wildcard(g.resource, call.resource)
               for g in granted)


def ungranted_calls(calls: list[Call], granted: list[Grant]) -> list[Call]:
    """Calls no grant allows (the role would make them fail with AccessDenied)."""
    return sorted({call for call in calls if not allowed(call, granted)}, key=str)


def unused_grants(calls: list[Call], granted: list[Grant]) -> list[Grant]:
    """Grants no recorded call needs (the role grants more than the code does)."""
    return [g for g in granted
            if not any(wildcard(g.action, c.action, ignore_case=True) and wildcard(g.resource, c.resource)
                       for c in calls)]


def overly_broad(granted: list[Grant], probes: list[str]) -> list[Grant]:
    """Grants whose resource pattern also matches a resource the role has no business with."""
    return [g for g in granted if any(wildcard(g.resource, probe) for probe in probes)]


def outside_probes(names: Mapping[str, str]) -> list[str]:
    """Resources next to the pipeline's own: other keys of the bucket, other tables, streams, queues, logs."""
    bucket, table = names["RawDataBucket.Arn"], names["SensorDataTable.Arn"]
    return [
        bucket, f"{bucket}/exports/x.json", f"{bucket}/x", "arn:aws:s3:::another-bucket/raw/x",
        f"{table}/index/AnomaliesByDay", table.replace(names["SensorDataTable"], "AnotherTable"),
        names["SensorDataStream.Arn"].replace(names["SensorDataStream"], "another-stream"),
        names["DataProcessorDeadLetterQueue.Arn"] + "-other",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/another-function:log-stream:x",
    ]


def role_statements(template: dict[str, Any], logical_id: str, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every statement of the role's inline policies (managed policies are refused), resolved."""
    properties = template["Resources"][logical_id]["Properties"]
    assert "ManagedPolicyArns" not in properties, "a managed policy cannot be proven least-privilege here"
    statements: list[dict[str, Any]] = []
    for policy in properties["Policies"]:
        statements.extend(resolve(policy["PolicyDocument"]["Statement"], names))
    return statements


# ---------------------------------------------------------------- recording calls

def call_resource(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """The resource ARN(s) IAM authorizes ``service:operation`` with ``params`` against."""
    if service == "s3" and operation in ("PutObject", "PutObjectAcl", "GetObject"):
        return [f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"]
    if service == "dynamodb" and operation in ("BatchWriteItem", "BatchGetItem"):
        return [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}" for table in params["RequestItems"]]
    if service == "dynamodb" and "TableName" in params:
        return [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{params['TableName']}"]
    if service == "kinesis":
        arn = params.get("StreamARN") or f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{params['StreamName']}"
        return [arn]
    if service == "sqs":
        account, name = params["QueueUrl"].rstrip("/").split("/")[-2:]
        return [f"arn:aws:sqs:{REGION}:{account}:{name}"]
    if service == "sns" and operation == "Publish":
        return [params["TopicArn"]]
    if service == "iot" and operation == "DescribeEndpoint":
        # No resource type in the Service Authorization Reference: IAM authorizes it against "*".
        return ["*"]
    if service == "logs" and operation in ("CreateLogStream", "PutLogEvents"):
        return [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}"
                f":log-stream:{params['logStreamName']}"]
    raise AssertionError(f"{service}:{operation} has no resource mapping here: map it, then grant it in the role")


class Recorder:
    """Records every call made by clients of the sessions it is attached to, as :class:`Call`."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def attach(self, session: boto3.session.Session) -> boto3.session.Session:
        session.events.register("provide-client-params.*.*", self._record)
        return session

    def _record(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.signing_name
        with self._lock:
            self.calls.extend(Call(f"{service}:{model.name}", arn, self.who)
                              for arn in call_resource(service, model.name, params))


# ---------------------------------------------------------------- moto resources named as the template names them

@dataclass(frozen=True)
class Deployed:
    """The rendered template and the names and ARNs moto gave its resources."""

    template: dict[str, Any]
    names: dict[str, str]  # Ref / GetAtt targets and pseudo parameters -> values


def deploy(template: dict[str, Any], setup: boto3.session.Session) -> Deployed:
    """Create the processor's and the rule's resources in moto, with the template's physical names."""
    resources = template["Resources"]

    def prop(logical_id: str, name: str) -> Any:
        return resolve(resources[logical_id]["Properties"][name], PSEUDO)

    names: dict[str, str] = dict(PSEUDO)
    bucket = prop("RawDataBucket", "BucketName")
    setup.client("s3").create_bucket(Bucket=bucket)
    names.update({"RawDataBucket": bucket, "RawDataBucket.Arn": f"arn:aws:s3:::{bucket}"})

    table_properties = resolve(resources["SensorDataTable"]["Properties"], PSEUDO)
    table = setup.client("dynamodb").create_table(
        TableName=table_properties["TableName"], BillingMode=table_properties["BillingMode"],
        AttributeDefinitions=table_properties["AttributeDefinitions"], KeySchema=table_properties["KeySchema"],
        GlobalSecondaryIndexes=table_properties["GlobalSecondaryIndexes"])["TableDescription"]
    names.update({"SensorDataTable": table["TableName"], "SensorDataTable.Arn": table["TableArn"]})

    kinesis = setup.client("kinesis")
    stream = prop("SensorDataStream", "Name")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    names.update({"SensorDataStream": stream, "SensorDataStream.Arn": summary["StreamARN"]})

    sqs = setup.client("sqs")
    url = sqs.create_queue(QueueName=prop("DataProcessorDeadLetterQueue", "QueueName"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    names.update({"DataProcessorDeadLetterQueue": url, "DataProcessorDeadLetterQueue.Arn": queue_arn})

    logs = setup.client("logs")
    log_group = prop("DataProcessorLogGroup", "LogGroupName")
    logs.create_log_group(logGroupName=log_group)
    group = logs.describe_log_groups(logGroupNamePrefix=log_group)["logGroups"][0]
    # CloudFormation's LogGroup Arn attribute is the ARN ending in ":*", as moto's "arn" field is.
    names.update({"DataProcessorLogGroup": log_group, "DataProcessorLogGroup.Arn": group["arn"]})
    key = setup.client("kms").create_key(Description="pipeline key")["KeyMetadata"]["Arn"]
    names.update({"PipelineKey": key.split("/")[-1], "PipelineKey.Arn": key})
    topic = setup.client("sns").create_topic(Name=prop("AlarmTopic", "TopicName"),
                                             Attributes={"KmsMasterKeyId": key})["TopicArn"]
    names.update({"AlarmTopic": topic})
    lookup_group = prop("IoTEndpointLookupLogGroup", "LogGroupName")
    logs.create_log_group(logGroupName=lookup_group)
    lookup = logs.describe_log_groups(logGroupNamePrefix=lookup_group)["logGroups"][0]
    names.update({"IoTEndpointLookupLogGroup": lookup_group, "IoTEndpointLookupLogGroup.Arn": lookup["arn"]})
    return Deployed(template, names)


@pytest.fixture(scope="module")
def dev_template() -> dict[str, Any]:
    return decoded(render_template(load_config(None, "dev")))


@dataclass(frozen=True)
class World:
    """In-process moto with the template's resources and an unrecorded session to set things up."""

    deployed: Deployed
    setup: boto3.session.Session


@pytest.fixture(scope="module")
def world(dev_template: dict[str, Any]) -> Iterator[World]:
    """One moto world for the module: the processor's and the rule's calls go to the same resources."""
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        # Module scope runs before conftest's per-test fake credentials: set them here too.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.setenv(key, "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.delenv("AWS_PROFILE", raising=False)
        setup = boto3.session.Session(region_name=REGION)
        yield World(deploy(dev_template, setup), setup)


# ---------------------------------------------------------------- the processor

def payloads() -> list[bytes]:
    """Valid, anomalous, multi-reading and bad records, as the IoT rule would put them into the stream."""
    now = int(time.time() * 1000)

    def rule_output(device: str, body: dict[str, Any]) -> bytes:
        return json.dumps({**body, "receivedAt": now, "topicDeviceId": device}).encode()

    return [
        rule_output("press-1", {"deviceId": "press-1", "sensorType": "temperature", "value": 50.5, "timestamp": now}),
        rule_output("press-1", {"deviceId": "press-1", "sensorType": "temperature", "value": 95.0,
                                "timestamp": now + 1}),
        rule_output("press-2", {"deviceId": "press-2", "readings": {"pressure": 151.0, "vibration": 1.5}}),
        b"{not json",
        rule_output("press-3", {"deviceId": "press-3", "sensorType": "humidity", "value": 40}),
        rule_output("press-4", {"deviceId": "press-9", "sensorType": "temperature", "value": 20}),
        b"\xff\xfe binary",
    ]


def kinesis_event(setup: boto3.session.Session, stream_arn: str, lambda_calls: Recorder) -> dict[str, Any]:
    """Put the payloads into the stream and read them back as the event source mapping does (recorded)."""
    producer = setup.client("kinesis")
    ours = {producer.put_record(StreamARN=stream_arn, Data=data, PartitionKey=f"press-{index}")["SequenceNumber"]
            for index, data in enumerate(payloads())}
    poller = lambda_calls.attach(boto3.session.Session(region_name=REGION)).client("kinesis")
    poller.describe_stream(StreamARN=stream_arn)
    poller.describe_stream_summary(StreamARN=stream_arn)
    shard = poller.list_shards(StreamARN=stream_arn)["Shards"][0]["ShardId"]
    iterator = poller.get_shard_iterator(StreamARN=stream_arn, ShardId=shard,
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = [r for r in poller.get_records(StreamARN=stream_arn, ShardIterator=iterator, Limit=1000)["Records"]
               if r["SequenceNumber"] in ours]
    assert len(records) == len(payloads())
    return {"Records": [{
        "eventSource": "aws:kinesis",
        "eventID": f"{shard}:{r['SequenceNumber']}",
        "eventSourceARN": stream_arn,
        "kinesis": {"data": base64.b64encode(r["Data"]).decode(), "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp()},
    } for r in records]}


class FakeContext:
    """The part of the Lambda context the handler reads."""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def function_environment(deployed: Deployed) -> dict[str, str]:
    variables = deployed.template["Resources"]["DataProcessorFunction"]["Properties"]["Environment"]["Variables"]
    return {key: str(value) for key, value in resolve(variables, deployed.names).items()}


def sns_key_calls(deployed: Deployed, handler_calls: list[Call]) -> list[Call]:
    """The key calls SNS makes with the publisher's permissions for each publish to the encrypted alarm topic."""
    key = deployed.names["PipelineKey.Arn"]
    return [Call(action, key, "sns") for call in handler_calls
            if call.action == "sns:Publish" and call.resource == deployed.names["AlarmTopic"]
            for action in SNS_KMS_ACTIONS]


def replay_lambda_platform(deployed: Deployed, lambda_calls: Recorder) -> None:
    """What Lambda does with the role besides polling: deliver logs, send a failed batch to the destination."""
    session = lambda_calls.attach(boto3.session.Session(region_name=REGION))
    logs = session.client("logs")
    group = deployed.names["DataProcessorLogGroup"]
    stream = "2026/01/01/[$LATEST]0123456789abcdef"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "START"}])
    failure = {"requestContext": {"condition": "RetryAttemptsExhausted"}}
    session.client("sqs").send_message(QueueUrl=deployed.names["DataProcessorDeadLetterQueue"],
                                       MessageBody=json.dumps(failure))


@dataclass(frozen=True)
class ProcessorRun:
    deployed: Deployed
    result: dict[str, Any]
    handler_calls: list[Call]
    lambda_calls: list[Call]
    object_keys: list[str]
    statuses: set[str]


@pytest.fixture(scope="module")
def processor_run(world: World) -> Iterator[ProcessorRun]:
    """The real handler run once on a mixed batch against moto, every call recorded (shared by the module)."""
    setup, deployed = world.setup, world.deployed
    with pytest.MonkeyPatch.context() as patch:
        platform = Recorder("lambda")
        event = kinesis_event(setup, deployed.names["SensorDataStream.Arn"], platform)
        for key, value in function_environment(deployed).items():
            patch.setenv(key, value)
        handler_calls = Recorder("handler")
        # The handler builds its clients with boto3.client(...), i.e. from the default session.
        patch.setattr(boto3, "DEFAULT_SESSION", handler_calls.attach(boto3.session.Session(region_name=REGION)))
        module = load_handler()
        try:
            result = module.handler(event, FakeContext())
        finally:
            if module._RUNTIME is not None:
                module._RUNTIME.pool.shutdown(wait=True)
        replay_lambda_platform(deployed, platform)
        listing = setup.client("s3").list_objects_v2(Bucket=deployed.names["RawDataBucket"]).get("Contents", [])
        items = setup.client("dynamodb").scan(TableName=deployed.names["SensorDataTable"])["Items"]
        yield ProcessorRun(deployed, result, handler_calls.calls + sns_key_calls(deployed, handler_calls.calls),
                           platform.calls, [o["Key"] for o in listing],
                           {i["status"]["S"] for i in items if "status" in i})


# ---------------------------------------------------------------- processor role tests

def test_processor_run_exercises_every_path(processor_run: ProcessorRun) -> None:
    """The batch really stored readings, archived raw records and quarantined bad ones (the calls are real)."""
    assert processor_run.result == {"batchItemFailures": []}
    keys = processor_run.object_keys
    assert any(k.startswith("raw/") for k in keys) and any(k.startswith("quarantine/") for k in keys), keys
    assert processor_run.statuses == {"NORMAL", "ANOMALY"}
    actions = {c.action for c in processor_run.handler_calls}
    # press-1's temperature 95.0 and press-2's pressure 151.0 each start an anomaly episode: one notification
    # each (and SNS's key calls)
    assert actions == {"s3:PutObject", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem", "sns:Publish",
                       *SNS_KMS_ACTIONS}
    assert [c.resource for c in processor_run.handler_calls if c.action == "sns:Publish"] == [
        processor_run.deployed.names["AlarmTopic"]] * 2


def test_every_processor_call_is_granted_for_its_resource(processor_run: ProcessorRun) -> None:
    granted = grants(role_statements(processor_run.deployed.template, "DataProcessorRole",
                                     processor_run.deployed.names))
    calls = processor_run.handler_calls + processor_run.lambda_calls
    assert ungranted_calls(calls, granted) == []


def test_every_processor_grant_is_used(processor_run: ProcessorRun) -> None:
    granted = grants(role_statements(processor_run.deployed.template, "DataProcessorRole",
                                     processor_run.deployed.names))
    assert unused_grants(processor_run.handler_calls + processor_run.lambda_calls, granted) == []


def test_no_processor_grant_reaches_beyond_the_pipeline(processor_run: ProcessorRun) -> None:
    names = processor_run.deployed.names
    granted = grants(role_statements(processor_run.deployed.template, "DataProcessorRole", names))
    assert overly_broad(granted, outside_probes(names)) == []


def test_platform_calls_use_only_the_documented_actions(processor_run: ProcessorRun) -> None:
    """Grants kept for Lambda's own calls are exactly the documented ones; the handler needs none of them."""
    platform = {c.action for c in processor_run.lambda_calls}
    assert platform == set(PLATFORM_ACTIONS)
    assert not platform & {c.action for c in processor_run.handler_calls}


def test_processor_role_never_grants_star_resources(dev_template: dict[str, Any]) -> None:
    for statement in role_statements(dev_template, "DataProcessorRole", _symbolic_names(dev_template)):
        assert "*" not in as_list(statement["Resource"]), statement


@pytest.mark.parametrize("extra", [
    {"Sid": "Extra", "Effect": "Allow", "Action": ["s3:PutObjectAcl"], "Resource": ["${RawDataBucket.Arn}/raw/*"]},
    {"Sid": "Extra", "Effect": "Allow", "Action": ["dynamodb:PutItem"], "Resource": ["${SensorDataTable.Arn}"]},
    {"Sid": "Extra", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["${RawDataBucket.Arn}/*"]},
])
def test_a_broader_role_is_caught(processor_run: ProcessorRun, extra: dict[str, Any]) -> None:
    """Adding an action or widening a resource the code does not need shows up as an unused grant."""
    names = processor_run.deployed.names
    statements = role_statements(processor_run.deployed.template, "DataProcessorRole", names)
    widened = {**extra, "Resource": [resolve({"Fn::Sub": r}, names) for r in extra["Resource"]]}
    granted = grants([*statements, widened])
    caught = unused_grants(processor_run.handler_calls + processor_run.lambda_calls, granted) + \
        overly_broad(granted, outside_probes(names))
    assert [(g.sid, g.action) for g in caught] == [("Extra", extra["Action"][0])]


def test_every_processor_statement_is_needed(processor_run: ProcessorRun) -> None:
    """Dropping any one statement leaves some recorded call without a grant."""
    names = processor_run.deployed.names
    statements = role_statements(processor_run.deployed.template, "DataProcessorRole", names)
    calls = processor_run.handler_calls + processor_run.lambda_calls
    for index, statement in enumerate(statements):
        remaining = grants(statements[:index] + statements[index + 1:])
        assert ungranted_calls(calls, remaining), f"statement {statement['Sid']} is not needed"


def test_a_call_outside_the_role_is_caught(processor_run: ProcessorRun) -> None:
    """Were the processor to call PutItem or write outside raw/ and quarantine/, the role would refuse it."""
    names = processor_run.deployed.names
    granted = grants(role_statements(processor_run.deployed.template, "DataProcessorRole", names))
    table = names["SensorDataTable.Arn"]
    rogue = [Call("dynamodb:PutItem", table, "handler"),
             Call("s3:PutObject", f"{names['RawDataBucket.Arn']}/exports/x.json", "handler"),
             Call("dynamodb:BatchWriteItem", table.replace(names["SensorDataTable"], "OtherTable"), "handler")]
    assert ungranted_calls(rogue, granted) == sorted(rogue, key=str)


# ---------------------------------------------------------------- IoT rule role

def replay_topic_rule(deployed: Deployed, rule_calls: Recorder, device: str) -> None:
    """What the rule does with its role for one message on sensor/<device>/data: the Kinesis action, and
    the S3 error action when that fails."""
    payload = deployed.template["Resources"]["SensorDataRule"]["Properties"]["TopicRulePayload"]
    session = rule_calls.attach(boto3.session.Session(region_name=REGION))
    substitutions = {"${topic(2)}": device, "${timestamp()}": "1767225600000",
                     "${newuuid()}": "3f1c2a9e-0000-4000-8000-000000000000"}

    def iot_template(text: str) -> str:
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        assert "${" not in text, f"unreplayed substitution in {text}"
        return text

    [action] = payload["Actions"]
    kinesis = resolve(action["Kinesis"], deployed.names)
    assert kinesis["RoleArn"] == deployed.names["IoTRuleRole.Arn"]
    session.client("kinesis").put_record(StreamName=kinesis["StreamName"], Data=b"{}",
                                         PartitionKey=iot_template(kinesis["PartitionKey"]))
    error = resolve(payload["ErrorAction"]["S3"], deployed.names)
    assert error["RoleArn"] == deployed.names["IoTRuleRole.Arn"]
    session.client("s3").put_object(Bucket=error["BucketName"], Key=iot_template(error["Key"]), Body=b"{}")


@pytest.fixture(scope="module")
def rule_run(world: World) -> tuple[Deployed, list[Call]]:
    role_name = resolve(world.deployed.template["Resources"]["IoTRuleRole"]["Properties"]["RoleName"], PSEUDO)
    names = {**world.deployed.names, "IoTRuleRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{role_name}"}
    deployed = Deployed(world.deployed.template, names)
    recorder = Recorder("iot-rule")
    replay_topic_rule(deployed, recorder, "press-1")
    return deployed, recorder.calls


def test_rule_calls_are_granted_and_every_rule_grant_is_used(rule_run: tuple[Deployed, list[Call]]) -> None:
    deployed, calls = rule_run
    granted = grants(role_statements(deployed.template, "IoTRuleRole", deployed.names))
    assert {c.action for c in calls} == {"kinesis:PutRecord", "s3:PutObject"}
    assert ungranted_calls(calls, granted) == []
    assert unused_grants(calls, granted) == []
    assert overly_broad(granted, outside_probes(deployed.names)) == []


def test_rule_error_action_may_write_only_under_rule_errors(rule_run: tuple[Deployed, list[Call]]) -> None:
    deployed, _ = rule_run
    granted = grants(role_statements(deployed.template, "IoTRuleRole", deployed.names))
    bucket = deployed.names["RawDataBucket.Arn"]
    assert not allowed(Call("s3:PutObject", f"{bucket}/raw/year=2026/x.jsonl.gz", "iot-rule"), granted)
    assert not allowed(Call("kinesis:PutRecords", deployed.names["SensorDataStream.Arn"], "iot-rule"), granted)
    assert allowed(Call("s3:PutObject", f"{bucket}/rule-errors/press-1/1-x.json", "iot-rule"), granted)


def test_a_broader_rule_role_is_caught(rule_run: tuple[Deployed, list[Call]]) -> None:
    deployed, calls = rule_run
    statements = role_statements(deployed.template, "IoTRuleRole", deployed.names)
    extra = {"Sid": "Extra", "Effect": "Allow", "Action": ["s3:PutObjectAcl"],
             "Resource": [deployed.names["RawDataBucket.Arn"] + "/rule-errors/*"]}
    assert [(g.sid, g.action) for g in unused_grants(calls, grants([*statements, extra]))] == \
        [("Extra", "s3:PutObjectAcl")]


# ---------------------------------------------------------------- device policy

def _symbolic_names(template: dict[str, Any]) -> dict[str, str]:
    """Every Ref/GetAtt target as a readable placeholder, for checks that need no real ARNs."""
    names = dict(PSEUDO)
    for logical_id in template["Resources"]:
        names[logical_id] = logical_id
        for attribute in ("Arn", "QueueName"):
            names[f"{logical_id}.{attribute}"] = f"arn:aws:placeholder:::{logical_id}"
    return names


@dataclass(frozen=True)
class IotRequest:
    action: str
    resource: str


def device_may(template: dict[str, Any], thing: str, request: IotRequest, *, attached: bool = True) -> bool:
    """Evaluate the device policy for a connection authenticated as ``thing`` (policy variables substituted)."""
    document = resolve(template["Resources"]["SensorDevicePolicy"]["Properties"]["PolicyDocument"], PSEUDO)
    context = {"iot:Connection.Thing.IsAttached": "true" if attached else "false"}
    decision = False
    for statement in document["Statement"]:
        if not any(wildcard(a, request.action, ignore_case=True) for a in as_list(statement["Action"])):
            continue
        resources = [r.replace("${iot:Connection.Thing.ThingName}", thing) for r in as_list(statement["Resource"])]
        assert not any("${" in r for r in resources), f"unknown policy variable in {resources}"
        if not any(wildcard(r, request.resource) for r in resources):
            continue
        if not _conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            return False
        decision = True
    return decision


def _conditions_hold(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        assert operator in ("Bool", "StringEquals"), f"operator {operator} not modelled"
        for key, expected in tests.items():
            if context.get(key) not in [str(v).lower() for v in as_list(expected)]:
                return False
    return True


IOT = f"arn:aws:iot:{REGION}:{ACCOUNT}"


def connect(client_id: str) -> IotRequest:
    return IotRequest("iot:Connect", f"{IOT}:client/{client_id}")


def publish(topic: str) -> IotRequest:
    return IotRequest("iot:Publish", f"{IOT}:topic/{topic}")


def subscribe(topic_filter: str) -> IotRequest:
    return IotRequest("iot:Subscribe", f"{IOT}:topicfilter/{topic_filter}")


def receive(topic: str) -> IotRequest:
    return IotRequest("iot:Receive", f"{IOT}:topic/{topic}")


@pytest.mark.parametrize("request_", [
    connect("press-A"), publish("sensor/press-A/data"), subscribe("sensor/press-A/commands"),
    receive("sensor/press-A/commands"),
], ids=str)
def test_device_may_act_as_itself(dev_template: dict[str, Any], request_: IotRequest) -> None:
    assert device_may(dev_template, "press-A", request_)


@pytest.mark.parametrize("request_", [
    connect("press-B"), connect("press-A-2"), publish("sensor/press-B/data"), publish("sensor/press-A/commands"),
    publish("sensor/press-A/data/extra"), publish("sensor/+/data"), subscribe("sensor/press-B/commands"),
    subscribe("sensor/+/commands"), subscribe("sensor/#"), receive("sensor/press-B/commands"),
    receive("sensor/press-B/data"), IotRequest("iot:UpdateThingShadow", f"{IOT}:thing/press-A"),
], ids=str)
def test_device_may_not_act_as_another(dev_template: dict[str, Any], request_: IotRequest) -> None:
    assert not device_may(dev_template, "press-A", request_)


def test_device_policy_pins_each_thing_to_its_own_topics(dev_template: dict[str, Any]) -> None:
    """The same policy document lets B do for B exactly what it lets A do for A, and nothing across."""
    assert device_may(dev_template, "press-B", publish("sensor/press-B/data"))
    assert not device_may(dev_template, "press-B", publish("sensor/press-A/data"))


def test_device_must_connect_with_a_certificate_attached_to_its_thing(dev_template: dict[str, Any]) -> None:
    assert not device_may(dev_template, "press-A", connect("press-A"), attached=False)


# ---------------------------------------------------------------- the IoT endpoint lookup (issue 12)

class ResponseCatcher:
    """A loopback HTTP server standing in for CloudFormation's pre-signed response URL."""

    def __init__(self) -> None:
        import http.server

        bodies: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.bodies = bodies
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/response?signature=x"

    def __enter__(self) -> ResponseCatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class LookupContext:
    log_stream_name = "2026/01/01/[$LATEST]abc"


def lookup_event(request_type: str, url: str) -> dict[str, Any]:
    return {"RequestType": request_type, "ResponseURL": url, "StackId": "arn:aws:cloudformation:stack/x",
            "RequestId": "r-1", "LogicalResourceId": "IoTDataEndpoint", "ResourceType": "Custom::IoTEndpoint",
            "ResourceProperties": {"ServiceToken": "arn", "EndpointType": "iot:Data-ATS"},
            **({"PhysicalResourceId": "iot-data-endpoint"} if request_type != "Create" else {})}


def load_lookup() -> Any:
    import types

    from iotpipe.groups.endpoint import LOOKUP_CODE

    module = types.ModuleType("iot_endpoint_lookup")
    exec(compile(LOOKUP_CODE, "index.py", "exec"), module.__dict__)
    return module


@dataclass(frozen=True)
class LookupRun:
    responses: list[dict[str, Any]]
    calls: list[Call]


@pytest.fixture(scope="module")
def lookup_run(world: World) -> Iterator[LookupRun]:
    """The inline lookup function run for Create and Delete against moto, its calls recorded, its answers caught."""
    with pytest.MonkeyPatch.context() as patch, ResponseCatcher() as catcher:
        recorder = Recorder("lookup")
        patch.setattr(boto3, "DEFAULT_SESSION", recorder.attach(boto3.session.Session(region_name=REGION)))
        module = load_lookup()
        module.handler(lookup_event("Create", catcher.url), LookupContext())
        module.handler(lookup_event("Delete", catcher.url), LookupContext())
        # Lambda's own log delivery for the function, as for the processor.
        logs = recorder.attach(boto3.session.Session(region_name=REGION)).client("logs")
        group = world.deployed.names["IoTEndpointLookupLogGroup"]
        logs.create_log_stream(logGroupName=group, logStreamName="s")
        logs.put_log_events(logGroupName=group, logStreamName="s",
                            logEvents=[{"timestamp": int(time.time() * 1000), "message": "START"}])
        yield LookupRun(list(catcher.bodies), recorder.calls)


def test_lookup_answers_cloudformation_with_the_ats_endpoint(lookup_run: LookupRun) -> None:
    create, delete = lookup_run.responses
    assert create["Status"] == "SUCCESS" and create["PhysicalResourceId"] == "iot-data-endpoint"
    # DescribeEndpoint (iot:Data-ATS): "identifier-ats.iot.region.amazonaws.com", not the account id.
    assert re.fullmatch(r"[a-z0-9]+-ats\.iot\.us-east-1\.amazonaws\.com", create["Data"]["Address"])
    assert not create["Data"]["Address"].startswith(ACCOUNT)
    assert delete == {**delete, "Status": "SUCCESS", "Data": {}, "PhysicalResourceId": "iot-data-endpoint"}


def test_lookup_role_grants_exactly_its_calls(world: World, lookup_run: LookupRun) -> None:
    granted = grants(role_statements(world.deployed.template, "IoTEndpointLookupRole", world.deployed.names))
    assert ungranted_calls(lookup_run.calls, granted) == []
    assert unused_grants(lookup_run.calls, granted) == []
    assert {c.action for c in lookup_run.calls} == {"iot:DescribeEndpoint", "logs:CreateLogStream",
                                                    "logs:PutLogEvents"}
    other_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/another-function:log-stream:x"
    assert overly_broad([g for g in granted if g.action.startswith("logs:")], [other_group]) == []


@pytest.mark.usefixtures("world")
def test_a_failing_lookup_still_answers_cloudformation() -> None:
    """Without an answer CloudFormation waits an hour; a failed DescribeEndpoint must say FAILED with the reason."""
    from botocore.stub import Stubber

    iot = boto3.client("iot", region_name=REGION)
    with Stubber(iot) as stub, ResponseCatcher() as catcher, pytest.MonkeyPatch.context() as patch:
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not authorized: iot:DescribeEndpoint")
        module = load_lookup()
        patch.setattr(module.boto3, "client", lambda _service: iot)
        module.handler(lookup_event("Create", catcher.url), LookupContext())
    [answer] = catcher.bodies
    assert answer["Status"] == "FAILED" and "iot:DescribeEndpoint" in answer["Reason"]


# ---------------------------------------------------------------- the iotpipe sql query policy (AnalyticsQueryPolicy)
# `iotpipe sql` runs as the user; the policy is proven the same way: its own calls are recorded (DuckDB over moto,
# Athena through botocore's Stubber), and the calls Athena makes with the caller's credentials for a query are
# listed, as documented: the Glue catalog reads ("Fine-grained access to databases and tables in the AWS Glue Data
# Catalog") and S3 for the data and the results ("Control access to Amazon S3 from Athena").

ANALYTICS_NAMES = {"AnalyticsWorkGroup": "iotpipe-dev", "AnalyticsDatabase": "iotpipe_dev",
                   "AnalyticsResultsBucket": "iotpipe-dev-analyticsresultsbucket-abc123",
                   "AnalyticsResultsBucket.Arn": "arn:aws:s3:::iotpipe-dev-analyticsresultsbucket-abc123"}


@dataclass(frozen=True)
class ContextCall:
    """A call with the condition keys IAM evaluates it with (``s3:prefix`` for ListBucket)."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


def athena_on_behalf(names: Mapping[str, str]) -> list[ContextCall]:
    """What Athena does with the caller's credentials to run a query over the archive tables of the window."""
    glue = f"arn:aws:glue:{REGION}:{ACCOUNT}:"
    raw, results = names["RawDataBucket.Arn"], names["AnalyticsResultsBucket.Arn"]
    hour = "year=2026/month=03/day=01/hour=10/"
    return [
        *(ContextCall(f"glue:{action}", resource) for action in ("GetDatabase", "GetTable")
          for resource in (f"{glue}catalog", f"{glue}database/iotpipe_dev")),
        ContextCall("glue:GetTable", f"{glue}table/iotpipe_dev/raw_archive"),
        ContextCall("glue:GetTable", f"{glue}table/iotpipe_dev/quarantine_archive"),
        # Athena's IAM guide lists glue:GetDatabase on the default database as needed to run queries.
        ContextCall("glue:GetDatabase", f"{glue}database/default"),
        ContextCall("s3:ListBucket", raw, (("s3:prefix", f"raw/{hour}"),)),
        ContextCall("s3:ListBucket", raw, (("s3:prefix", f"quarantine/{hour}"),)),
        ContextCall("s3:GetObject", f"{raw}/raw/{hour}shardId-000000000000/1-2.jsonl.gz"),
        ContextCall("s3:GetObject", f"{raw}/quarantine/{hour}shardId-000000000000/1-2.jsonl.gz"),
        ContextCall("s3:GetBucketLocation", raw),
        ContextCall("s3:GetBucketLocation", results),
        ContextCall("s3:ListBucket", results, (("s3:prefix", "results/"),)),
        *(ContextCall(f"s3:{action}", f"{results}/results/q-1.csv")
          for action in ("PutObject", "GetObject", "AbortMultipartUpload", "ListMultipartUploadParts")),
    ]


def statement_allows(statement: Mapping[str, Any], call: ContextCall) -> bool:
    """IAM evaluation of one Allow statement, with the StringLike conditions the query policy uses."""
    if not any(wildcard(a, call.action, ignore_case=True) for a in as_list(statement["Action"])):
        return False
    if not any(wildcard(r, call.resource) for r in as_list(statement["Resource"])):
        return False
    context = dict(call.context)
    for operator, keys in statement.get("Condition", {}).items():
        assert operator == "StringLike", f"unsupported condition {operator}"
        for key, patterns in keys.items():
            if key not in context or not any(wildcard(p, context[key]) for p in as_list(patterns)):
                return False
    return True


def query_policy_statements(template: dict[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    document = template["Resources"]["AnalyticsQueryPolicy"]["Properties"]["PolicyDocument"]
    statements = resolve(document["Statement"], {**names, **ANALYTICS_NAMES})
    assert all(s["Effect"] == "Allow" for s in statements)
    return statements


def sql_calls(world: World) -> list[ContextCall]:
    """Every AWS call `iotpipe sql` makes: DuckDB's fetch over moto, the stack lookup, the Athena flow."""
    from botocore.stub import ANY, Stubber

    from iotpipe.aws import stack_outputs
    from iotpipe.errors import AwsError
    from iotpipe.sql import SqlError, Window, fetch_archive, run_athena

    names = world.deployed.names
    bucket = names["RawDataBucket"]
    setup_s3 = world.setup.client("s3")
    for kind in ("raw", "quarantine"):
        setup_s3.put_object(Bucket=bucket, Key=f"{kind}/year=2026/month=03/day=01/hour=10/shardId-000000000000/"
                                               "1-2.jsonl.gz", Body=b"")
    calls: list[ContextCall] = []

    def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        service, operation = model.service_model.signing_name, model.name
        if operation == "ListObjectsV2":
            calls.append(ContextCall("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}",
                                     (("s3:prefix", params.get("Prefix", "")),)))
        elif operation == "GetObject":
            calls.append(ContextCall("s3:GetObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"))
        elif operation == "DescribeStacks":
            calls.append(ContextCall("cloudformation:DescribeStacks",
                                     f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{params['StackName']}/id"))
        elif service == "athena":
            # Query operations are authorized against the workgroup the query runs in.
            calls.append(ContextCall(f"athena:{operation}",
                                     f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/iotpipe-dev"))
        else:
            raise AssertionError(f"{service}:{operation}: map it here, then grant it in the query policy")

    session = boto3.session.Session(region_name=REGION)
    session.events.register("provide-client-params.*.*", record)
    window = Window(1772323200000, 1772409600000)  # 2026-03-01
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        fetch_archive(session.client("s3"), bucket, window, Path(cache))
    with pytest.raises(AwsError):
        stack_outputs(session.client("cloudformation"), "iotpipe-dev")
    athena = session.client("athena")
    with Stubber(athena) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"}, {
            "QueryString": ANY, "WorkGroup": "iotpipe-dev", "QueryExecutionContext": {"Database": "iotpipe_dev"}})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}},
                          {"QueryExecutionId": "q-1"})
        stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-1"})

        def interrupt(_: float) -> None:
            raise KeyboardInterrupt

        with pytest.raises(SqlError):
            run_athena(athena, "SELECT 1", workgroup="iotpipe-dev", database="iotpipe_dev", window=window,
                       thresholds=(), ttl_days=90, sleep=interrupt)
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"}, {
            "QueryString": ANY, "WorkGroup": "iotpipe-dev", "QueryExecutionContext": {"Database": "iotpipe_dev"}})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}},
                          {"QueryExecutionId": "q-1"})
        stub.add_response("get_query_results", {"ResultSet": {"Rows": []}}, {"QueryExecutionId": "q-1"})
        run_athena(athena, "SELECT 1", workgroup="iotpipe-dev", database="iotpipe_dev", window=window,
                   thresholds=(), ttl_days=90)
    return calls


def test_query_policy_grants_exactly_what_iotpipe_sql_and_athena_use(world: World) -> None:
    names = world.deployed.names
    statements = query_policy_statements(world.deployed.template, names)
    calls = sql_calls(world) + athena_on_behalf({**names, **ANALYTICS_NAMES})
    assert {c.action for c in calls} >= {"s3:ListBucket", "s3:GetObject", "cloudformation:DescribeStacks",
                                         "athena:StartQueryExecution", "athena:GetQueryExecution",
                                         "athena:GetQueryResults", "athena:StopQueryExecution"}
    assert [c for c in calls if not any(statement_allows(s, c) for s in statements)] == []
    for statement in statements:  # every action/resource pair of every statement is needed by some call
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                narrowed = {**statement, "Action": action, "Resource": resource}
                assert any(statement_allows(narrowed, c) for c in calls), (statement["Sid"], action, resource)


@pytest.mark.parametrize("call", [
    ContextCall("s3:GetObject", "arn:aws:s3:::{raw}/exports/x.json"),
    ContextCall("s3:ListBucket", "arn:aws:s3:::{raw}", (("s3:prefix", ""),)),
    ContextCall("s3:ListBucket", "arn:aws:s3:::{raw}", ()),
    ContextCall("s3:PutObject", "arn:aws:s3:::{raw}/raw/x.jsonl.gz"),
    ContextCall("athena:StartQueryExecution", f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/primary"),
    ContextCall("glue:GetTable", f"arn:aws:glue:{REGION}:{ACCOUNT}:table/other_db/raw_archive"),
    # partition projection: Athena does not call GetPartitions (policies.glue_table_reader cites the doc)
    ContextCall("glue:GetPartitions", f"arn:aws:glue:{REGION}:{ACCOUNT}:table/iotpipe_dev/raw_archive"),
    ContextCall("cloudformation:DescribeStacks", f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/other/id"),
])
def test_query_policy_refuses_what_lies_outside(world: World, call: ContextCall) -> None:
    names = world.deployed.names
    statements = query_policy_statements(world.deployed.template, names)
    probe = ContextCall(call.action, call.resource.replace("{raw}", names["RawDataBucket"]), call.context)
    assert not any(statement_allows(s, probe) for s in statements)
