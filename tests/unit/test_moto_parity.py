"""Each ``parity`` patch of :mod:`iotpipe.local.emulator.moto_compat` pinned by what AWS does: the same assertion
passes on moto with the library's patches and fails on moto without that one patch (a strict xfail, so it turns
into a failure, XPASS, the day moto answers as AWS does and the patch can go)."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from iotpipe.local.emulator import moto_compat

REGION = "us-east-1"


def client(service: str, endpoint: str | None = None) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def stack_outputs(cloudformation: Any, name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def iot_template(attributes: dict[str, str], suffix: Any = "p") -> str:
    return json.dumps({
        "Resources": {
            "Policy": {"Type": "AWS::IoT::Policy", "Properties": {
                "PolicyName": {"Fn::Sub": ["DevicePolicy-${Suffix}", {"Suffix": suffix}]},
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}},
            "Thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::Sub": ["device-${Suffix}", {"Suffix": suffix}]},
                "AttributePayload": {"Attributes": attributes}}},
        },
        "Outputs": {"PolicyName": {"Value": {"Ref": "Policy"}}, "ThingName": {"Value": {"Ref": "Thing"}}},
    })


def thing_attribute_payload(_endpoint: str) -> None:
    """AWS::IoT::Thing: CloudFormation takes AttributePayload as a mapping and the thing gets its attributes."""
    client("cloudformation").create_stack(StackName="things", TemplateBody=iot_template({"floor": "2"}))
    assert client("iot").describe_thing(thingName="device-p")["attributes"] == {"floor": "2"}


def refs_are_names(_endpoint: str) -> None:
    """``Ref`` of AWS::IoT::Policy and AWS::IoT::Thing is the name."""
    cloudformation = client("cloudformation")
    cloudformation.create_stack(StackName="refs", TemplateBody=iot_template({}))
    assert stack_outputs(cloudformation, "refs") == {"PolicyName": "DevicePolicy-p", "ThingName": "device-p"}


def deletes_by_name(_endpoint: str) -> None:
    """DeleteStack deletes the stack's IoT policy and thing (named from the stack's name, as ours are)."""
    cloudformation = client("cloudformation")
    cloudformation.create_stack(StackName="gone", TemplateBody=iot_template({}, {"Ref": "AWS::StackName"}))
    assert client("iot").list_things()["things"] != []
    cloudformation.delete_stack(StackName="gone")
    iot = client("iot")
    assert (iot.list_things()["things"], iot.list_policies()["policies"]) == ([], [])


def change_set_outputs(_endpoint: str) -> None:
    """A stack created through a change set has its template's outputs and exports."""
    cloudformation = client("cloudformation")
    template = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q-p"}}},
                           "Outputs": {"QueueName": {"Value": {"Fn::GetAtt": ["Queue", "QueueName"]},
                                                     "Export": {"Name": "exported-queue"}}}})
    cloudformation.create_change_set(StackName="planned", ChangeSetName="first", ChangeSetType="CREATE",
                                     TemplateBody=template)
    cloudformation.execute_change_set(StackName="planned", ChangeSetName="first")
    assert stack_outputs(cloudformation, "planned") == {"QueueName": "q-p"}
    assert [export["Name"] for export in cloudformation.list_exports()["Exports"]] == ["exported-queue"]


def key_tags(_endpoint: str) -> None:
    """AWS::KMS::Key takes Tags as Key/Value and the key carries them."""
    cloudformation = client("cloudformation")
    cloudformation.create_stack(StackName="keys", TemplateBody=json.dumps({
        "Resources": {"Key": {"Type": "AWS::KMS::Key", "Properties": {
            "KeyPolicy": {"Version": "2012-10-17", "Statement": []},
            "Tags": [{"Key": "Project", "Value": "iotpipe"}]}}},
        "Outputs": {"KeyId": {"Value": {"Ref": "Key"}}}}))
    key_id = stack_outputs(cloudformation, "keys")["KeyId"]
    assert client("kms").list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "Project", "TagValue": "iotpipe"}]


def protected_stack_delete(_endpoint: str) -> None:
    """DeleteStack of a stack with termination protection fails and the stack stays."""
    from botocore.exceptions import ClientError

    cloudformation = client("cloudformation")
    cloudformation.create_stack(StackName="kept", TemplateBody=iot_template({}), EnableTerminationProtection=True)
    with pytest.raises(ClientError, match="TerminationProtection"):
        cloudformation.delete_stack(StackName="kept")


def stack_delete_recreates(_endpoint: str) -> None:
    """After DeleteStack, describing the stack by its id does not bring its table back."""
    cloudformation = client("cloudformation")
    stack_id = cloudformation.create_stack(StackName="tables", TemplateBody=json.dumps({
        "Resources": {"Table": {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": "readings-p", "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}]}}},
        "Outputs": {"TableName": {"Value": {"Ref": "Table"}}}}))["StackId"]
    cloudformation.delete_stack(StackName="tables")
    cloudformation.describe_stacks(StackName=stack_id)
    assert client("dynamodb").list_tables()["TableNames"] == []


def seed_update_replacements(_endpoint: str) -> None:
    """Updating an AWS::IAM::Role's RoleName replaces the role: the new name exists, the old one is gone."""
    cloudformation = client("cloudformation")

    def template(role_name: str) -> str:
        return json.dumps({"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": role_name, "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}}}}})

    cloudformation.create_stack(StackName="roles", TemplateBody=template("old-role"))
    cloudformation.update_stack(StackName="roles", TemplateBody=template("new-role"))
    assert [role["RoleName"] for role in client("iam").list_roles()["Roles"]] == ["new-role"]


def exact_dimensions(_endpoint: str) -> None:
    """GetMetricStatistics reads the metric with exactly the dimensions asked for."""
    cloudwatch = client("cloudwatch")
    now = datetime.now(UTC)
    env = {"Name": "Environment", "Value": "dev"}
    cloudwatch.put_metric_data(Namespace="IoT/Parity", MetricData=[
        {"MetricName": "Readings", "Dimensions": [env], "Value": 5, "Timestamp": now},
        {"MetricName": "Readings", "Dimensions": [env, {"Name": "SensorType", "Value": "temperature"}],
         "Value": 5, "Timestamp": now}])
    points = cloudwatch.get_metric_statistics(
        Namespace="IoT/Parity", MetricName="Readings", StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=1), Period=3600, Statistics=["Sum"], Dimensions=[env])["Datapoints"]
    assert sum(point["Sum"] for point in points) == 5


def closed_shards(_endpoint: str) -> None:
    """A split leaves the parent's records in the parent, under their sequence numbers, and new records go to the
    open children."""
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName="split", ShardCount=1)
    written = kinesis.put_record(StreamName="split", Data=b"before", PartitionKey="p")
    kinesis.split_shard(StreamName="split", ShardToSplit=written["ShardId"],
                        NewStartingHashKey=str(2 ** 127))
    after = kinesis.put_record(StreamName="split", Data=b"after", PartitionKey="p")
    iterator = kinesis.get_shard_iterator(StreamName="split", ShardId=written["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [(r["Data"], r["SequenceNumber"]) for r in records] == [(b"before", written["SequenceNumber"])]
    assert after["ShardId"] != written["ShardId"]


def kinesis_trigger(_endpoint: str) -> None:
    """PutRecord returns without running the functions mapped to the stream (Lambda polls the stream after): the
    function, never run, has no log events."""
    iam, functions, kinesis, logs = client("iam"), client("lambda"), client("kinesis"), client("logs")
    role = iam.create_role(RoleName="processor", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return None\n")
    functions.create_function(FunctionName="processor", Runtime="python3.12", Role=role, Handler="index.handler",
                              Code={"ZipFile": code.getvalue()})
    kinesis.create_stream(StreamName="mapped", ShardCount=1)
    stream_arn = kinesis.describe_stream(StreamName="mapped")["StreamDescription"]["StreamARN"]
    functions.create_event_source_mapping(EventSourceArn=stream_arn, FunctionName="processor",
                                          StartingPosition="TRIM_HORIZON")
    kinesis.put_record(StreamName="mapped", Data=b"x", PartitionKey="p")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/processor")["logGroups"]
    events = logs.filter_log_events(logGroupName="/aws/lambda/processor")["events"] if groups else []
    assert events == []


def serialized_backends(endpoint: str) -> None:
    """Two PutRecords on one shard at once store two records under two sequence numbers. Both requests are held
    where moto reads the shard's last sequence number until the other has read it too (at most 2 s: with one
    request at a time the first waits alone and goes on)."""
    from moto.kinesis.models import Shard

    kinesis = client("kinesis", endpoint)
    kinesis.create_stream(StreamName="racing", ShardCount=1)
    kinesis.put_record(StreamName="racing", Data=b"first", PartitionKey="p")  # moto reads the last number from now
    together = threading.Barrier(2, timeout=2)
    original = Shard.get_max_sequence_number

    def held(self: Any) -> Any:
        last = original(self)
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        return last

    Shard.get_max_sequence_number = held  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=kinesis.put_record,
                                    kwargs={"StreamName": "racing", "Data": str(n).encode(), "PartitionKey": "p"})
                   for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        Shard.get_max_sequence_number = original  # type: ignore[method-assign]
    shard = kinesis.list_shards(StreamName="racing")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName="racing", ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert sorted(record["Data"] for record in records) == [b"0", b"1", b"first"]


# Patch name -> what AWS does, given the emulator's endpoint ('': in-process moto).
CASES: dict[str, Callable[[str], None]] = {
    "cloudformation.change_set_outputs": change_set_outputs,
    "cloudformation.protected_stack_delete": protected_stack_delete,
    "cloudformation.seed_update_replacements": seed_update_replacements,
    "cloudformation.stack_delete_recreates": stack_delete_recreates,
    "iot.thing_attribute_payload": thing_attribute_payload,
    "iot.deletes_by_name": deletes_by_name,
    "iot.refs_are_names": refs_are_names,
    "kms.key_tags": key_tags,
    "lambda.kinesis_trigger": kinesis_trigger,
    "cloudwatch.exact_dimensions": exact_dimensions,
    "kinesis.closed_shards": closed_shards,
    "core.serialized_backends": serialized_backends,
}
# Cases that need moto's server (concurrent requests); the others run on in-process moto.
ON_SERVER = {"core.serialized_backends"}


def test_every_parity_patch_has_a_case() -> None:
    assert set(CASES) == {patch.name for patch in moto_compat.PATCHES if patch.kind == "parity"}


@pytest.fixture
def aws(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the case runs: the session moto server, reset (cases in ``ON_SERVER``), else in-process moto."""
    if request.node.callspec.params["name"] in ON_SERVER:
        yield request.getfixturevalue("moto_endpoint")
        return
    with mock_aws():
        yield ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_patched_moto_does_what_aws_does(name: str, aws: str) -> None:
    moto_compat.apply(moto_compat.LIBRARY_KINDS)  # what the library's tests run on (the session server's too)
    CASES[name](aws)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.xfail(strict=True, reason="moto differs from AWS here; an XPASS means upstream fixed it: drop the patch")
def test_plain_moto_differs_from_aws(name: str, aws: str) -> None:
    moto_compat.apply(moto_compat.LIBRARY_KINDS)
    with moto_compat.suspended([name]):  # moto as it is here; the other patches stay, so only this one is tested
        CASES[name](aws)
