"""The moto patches iotpipe owns: on the shared test server (parity and api; the speed ones where a test asks for
them) and in ``python -m iotpipe.local.moto_server`` (all)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from iotpipe.local.processes import free_port

REGION = "us-east-1"
TEMPLATE = json.dumps({
    "Resources": {
        "Policy": {"Type": "AWS::IoT::Policy", "Properties": {
            "PolicyName": "DevicePolicy-x",
            "PolicyDocument": {"Version": "2012-10-17",
                               "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}},
        "Thing": {"Type": "AWS::IoT::Thing", "Properties": {
            "ThingName": "device-x", "AttributePayload": {"Attributes": {"location": "floor"}}}},
        "Stream": {"Type": "AWS::Kinesis::Stream", "Properties": {"Name": "s-x", "ShardCount": 1}},
    },
    "Outputs": {"PolicyName": {"Value": {"Ref": "Policy"}}, "ThingName": {"Value": {"Ref": "Thing"}}},
})


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def create(endpoint: str, name: str, protect: bool = False) -> dict[str, str]:
    cloudformation = client("cloudformation", endpoint)
    cloudformation.create_stack(StackName=name, TemplateBody=TEMPLATE, EnableTerminationProtection=protect)
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_ref_of_iot_policy_and_thing_is_their_name(moto_endpoint: str) -> None:
    assert create(moto_endpoint, "refs") == {"PolicyName": "DevicePolicy-x", "ThingName": "device-x"}
    iot = client("iot", moto_endpoint)
    assert iot.describe_thing(thingName="device-x")["attributes"] == {"location": "floor"}


def test_termination_protection_is_kept_and_enforced(moto_endpoint: str) -> None:
    create(moto_endpoint, "protected", protect=True)
    cloudformation = client("cloudformation", moto_endpoint)
    with pytest.raises(ClientError, match="cannot be deleted while TerminationProtection is enabled"):
        cloudformation.delete_stack(StackName="protected")
    cloudformation.update_termination_protection(StackName="protected", EnableTerminationProtection=False)
    assert cloudformation.describe_stacks(StackName="protected")["Stacks"][0]["EnableTerminationProtection"] is False
    cloudformation.delete_stack(StackName="protected")
    iot = client("iot", moto_endpoint)
    assert iot.list_things()["things"] == []  # the stack's delete removed what it created
    assert iot.list_policies()["policies"] == []


def test_python_m_iotpipe_local_moto_server_serves_the_fixes() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iotpipe.local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        assert create(endpoint, "own-server", protect=True)["PolicyName"] == "DevicePolicy-x"
        with pytest.raises(ClientError, match="TerminationProtection"):
            client("cloudformation", endpoint).delete_stack(StackName="own-server")
        # Served with HTTP/1.1 keep-alive (waitress): two requests on one connection, none answered "close".
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(2):
            connection.request("GET", "/moto-api/data.json")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("Connection", "").lower() != "close"
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.usefixtures("emulator_patches")
def test_item_size_limit_still_holds_with_the_linear_check(moto_endpoint: str) -> None:
    dynamodb = client("dynamodb", moto_endpoint)
    dynamodb.create_table(TableName="t", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    wide = {"k": {"S": "wide"}, **{f"a{i}": {"N": str(i)} for i in range(60)}}
    dynamodb.put_item(TableName="t", Item=wide)
    assert dynamodb.get_item(TableName="t", Key={"k": {"S": "wide"}})["Item"] == wide
    near = {"k": {"S": "near"}, "a": {"S": "x" * 200_000}, "b": {"S": "y" * 199_000}}
    dynamodb.put_item(TableName="t", Item=near)
    over = {"k": {"S": "over"}, "a": {"S": "x" * 200_000}, "b": {"S": "y" * 206_000}}
    with pytest.raises(ClientError, match="Item size has exceeded the maximum allowed size"):
        dynamodb.put_item(TableName="t", Item=over)


@pytest.mark.usefixtures("emulator_patches")
def test_batch_writes_keep_every_attribute_type(moto_endpoint: str) -> None:
    """Writes parsed by json.loads (no binary attribute) and by moto's shape walker (binary) store the same types."""
    dynamodb = client("dynamodb", moto_endpoint)
    dynamodb.create_table(TableName="types", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    plain = {"k": {"S": "plain"}, "n": {"N": "1.5"}, "b": {"BOOL": True}, "m": {"M": {"x": {"L": [{"NULL": True}]}}},
             "ss": {"SS": ["a", "b"]}}
    binary = {"k": {"S": "binary"}, "blob": {"B": b"\x00\xff"}, "blobs": {"BS": [b"a", b"b"]}}
    answer = dynamodb.batch_write_item(
        RequestItems={"types": [{"PutRequest": {"Item": item}} for item in (plain, binary)]})
    assert answer["UnprocessedItems"] == {}  # the answer written as plain JSON parses as boto3 expects
    assert answer["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/x-amz-json-1.0"
    with pytest.raises(ClientError, match="duplicates"):  # errors still go through moto's own serializer
        dynamodb.batch_write_item(RequestItems={"types": [{"PutRequest": {"Item": plain}}] * 2})
    dynamodb.put_item(TableName="types", Item={**plain, "k": {"S": "put"}})
    assert dynamodb.get_item(TableName="types", Key={"k": {"S": "plain"}})["Item"] == plain
    assert dynamodb.get_item(TableName="types", Key={"k": {"S": "put"}})["Item"] == {**plain, "k": {"S": "put"}}
    assert dynamodb.get_item(TableName="types", Key={"k": {"S": "binary"}})["Item"] == binary


def test_metric_statistics_match_the_exact_dimension_set(moto_endpoint: str) -> None:
    """As CloudWatch: a count published under (Environment) and (Environment, SensorType) is counted once."""
    from datetime import UTC, datetime, timedelta

    cloudwatch = client("cloudwatch", moto_endpoint)
    now = datetime.now(UTC)
    env = {"Name": "Environment", "Value": f"exact-{time.monotonic_ns()}"}
    cloudwatch.put_metric_data(Namespace="IoT/Exact", MetricData=[
        {"MetricName": "SensorReadingsProcessed", "Dimensions": [env], "Value": 5, "Timestamp": now},
        {"MetricName": "SensorReadingsProcessed", "Dimensions": [env, {"Name": "SensorType", "Value": "temperature"}],
         "Value": 5, "Timestamp": now}])

    def total(dimensions: list[dict[str, str]]) -> float:
        points = cloudwatch.get_metric_statistics(
            Namespace="IoT/Exact", MetricName="SensorReadingsProcessed", StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=1), Period=3600, Statistics=["Sum"], Dimensions=dimensions)["Datapoints"]
        return sum(point["Sum"] for point in points)

    assert total([env]) == 5
    assert total([env, {"Name": "SensorType", "Value": "temperature"}]) == 5
    assert total([{"Name": "SensorType", "Value": "temperature"}]) == 0
