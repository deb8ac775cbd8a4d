"""``iotpipe doctor`` rows, on moto (in-process) and with botocore's Stubber for what moto cannot produce
(GetAccountSettings, drift detection, CloudWatch datapoints of AWS/Lambda metrics)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from iotpipe.config import build_config
from iotpipe.doctor import (
    FAIL,
    PASS,
    WARN,
    Context,
    deploy_blockers,
    drift,
    local_topic_rule,
    recent_metrics,
    run_doctor,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Factory:
    """moto clients, except the services given stubbed clients."""

    def __init__(self, **stubbed: Any) -> None:
        self.stubbed = stubbed
        self.region = REGION

    def client(self, service: str) -> Any:
        return self.stubbed.get(service) or boto3.client(service, region_name=REGION)


def lambda_settings(limit: int, unreserved: int) -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name=REGION)
    stub = Stubber(client)
    stub.add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved}, "AccountUsage": {}})
    stub.add_client_error("get_function_concurrency", "ResourceNotFoundException", "no function")
    return client, stub


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


def rows(report: Any) -> dict[str, tuple[str, str, str]]:
    return {check.name: (check.status, check.detail, check.action) for check in report.checks}


@pytest.mark.usefixtures("moto")
def test_a_new_account_fails_on_concurrency_and_taken_names() -> None:
    cfg = build_config({}, "dev", {})
    boto3.client("iam").create_role(RoleName="IoTDataProcessorRole-dev-us-east-1", AssumeRolePolicyDocument="{}")
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName="SensorReadings-dev", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"}])
    client, stub = lambda_settings(10, 10)
    with stub:
        report = run_doctor(Factory(**{"lambda": client}), cfg, REGION, now=NOW)
    found = rows(report)
    assert report.failed
    assert found["credentials and region"][0] == PASS and ACCOUNT in found["credentials and region"][1]
    # Lambda guide: "You can reserve up to the Unreserved account concurrency value minus 100".
    status, detail, action = found["account concurrency"]
    assert status == FAIL and "limit 10" in detail and "L-B99A9384" in action and "reserved_concurrency = 0" in action
    status, detail, _ = found["names in the account"]
    assert status == FAIL
    assert "IAM role IoTDataProcessorRole-dev-us-east-1" in detail and "table SensorReadings-dev" in detail
    assert "IoTRuleRole" not in detail
    assert found["stack"][0] == WARN


@pytest.mark.usefixtures("moto")
def test_deploy_blockers_are_the_taken_names() -> None:
    cfg = build_config({}, "dev", {})
    assert deploy_blockers(Factory(), cfg, ACCOUNT, REGION) == ()
    boto3.client("cloudwatch", region_name=REGION).put_dashboard(DashboardName="iot-pipeline-dev-us-east-1",
                                                                 DashboardBody='{"widgets": []}')
    [blocker] = deploy_blockers(Factory(), cfg, ACCOUNT, REGION)
    assert "dashboard iot-pipeline-dev-us-east-1" in blocker.detail
    # Another region's names are not this region's: region-unique names do not collide.
    assert deploy_blockers(Factory(), cfg, ACCOUNT, "eu-west-1") == ()


@pytest.mark.usefixtures("moto")
def test_reserving_nothing_passes_on_a_new_account() -> None:
    cfg = build_config({}, "dev", {"processor.reserved_concurrency": 0})
    report = run_doctor(Factory(), cfg, REGION, now=NOW)
    assert rows(report)["account concurrency"][0] == PASS
    assert not report.failed


@pytest.mark.usefixtures("moto")
def test_no_credentials_stop_the_report() -> None:
    sts = boto3.client("sts", region_name=REGION)
    stub = Stubber(sts)
    stub.add_client_error("get_caller_identity", "InvalidClientTokenId", "The security token is invalid.")
    with stub:
        report = run_doctor(Factory(sts=sts), build_config({}, "dev", {}), REGION)
    [only] = report.checks
    assert only.status == FAIL and "aws configure" in only.action


def ctx() -> Context:
    stack = {"StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/iotpipe-dev/1",
             "StackStatus": "CREATE_COMPLETE",
             "Outputs": [{"OutputKey": "DataProcessorFunctionName", "OutputValue": "iot-data-processor-dev"}]}
    return Context(build_config({}, "dev", {}), ACCOUNT, REGION, stack)


def test_drift_is_a_warning_with_what_to_do() -> None:
    client = boto3.client("cloudformation", region_name=REGION)
    stub = Stubber(client)
    stub.add_response("detect_stack_drift", {"StackDriftDetectionId": "d-1"})
    stub.add_response("describe_stack_drift_detection_status", {
        "StackId": "s", "StackDriftDetectionId": "d-1", "DetectionStatus": "DETECTION_IN_PROGRESS",
        "Timestamp": NOW})
    stub.add_response("describe_stack_drift_detection_status", {
        "StackId": "s", "StackDriftDetectionId": "d-1", "DetectionStatus": "DETECTION_COMPLETE",
        "StackDriftStatus": "DRIFTED", "DriftedStackResourceCount": 2, "Timestamp": NOW})
    slept: list[float] = []
    with stub:
        [row] = drift(client, ctx(), sleep=slept.append)
    assert row.status == WARN and "2 resource(s) changed outside CloudFormation" in row.detail
    assert "describe-stack-resource-drifts" in row.action and slept == [2.0]


def test_high_iterator_age_errors_and_throttles_and_no_readings() -> None:
    client = boto3.client("cloudwatch", region_name=REGION)
    stub = Stubber(client)

    def answer(metric: str, statistic: str, value: float | None) -> None:
        points = [] if value is None else [{"Timestamp": NOW, statistic: value, "Unit": "Count"}]
        stub.add_response("get_metric_statistics", {"Label": metric, "Datapoints": points},
                          {"Namespace": ANY, "MetricName": metric, "StartTime": ANY, "EndTime": ANY,
                           "Period": 3600, "Statistics": [statistic], "Dimensions": ANY})

    answer("SensorReadingsProcessed", "Sum", None)
    # Rule failures are summed over both ActionType spellings (see naming.KINESIS_ACTION_TYPES).
    answer("Failure", "Sum", None)
    answer("Failure", "Sum", 3.0)
    answer("Failure", "Sum", None)
    answer("IteratorAge", "Maximum", 250_000.0)
    answer("Errors", "Sum", 4.0)
    answer("Throttles", "Sum", 0.0)
    with stub:
        found = {row.name: row for row in recent_metrics(client, ctx(), NOW)}
    assert found["readings processed (1 h)"].status == WARN and "no data in DynamoDB" in \
        found["readings processed (1 h)"].action
    assert found["rule failures (1 h)"].status == WARN and "rule-errors/" in found["rule failures (1 h)"].action
    assert found["iterator age (1 h max)"].status == FAIL and "250,000 ms, above 60,000 ms" in \
        found["iterator age (1 h max)"].detail
    assert found["processor errors (1 h)"].status == WARN
    assert found["processor throttles (1 h)"].status == PASS


def _local_stack(cfg: Any, disabled: bool | None) -> None:
    resources: dict[str, Any] = {"Queue": {"Type": "AWS::SQS::Queue"}}
    if disabled is not None:
        resources["Rule"] = {"Type": "AWS::IoT::TopicRule", "Properties": {
            "RuleName": {"Fn::Sub": "SensorDataRule_${AWS::Region}"},
            "TopicRulePayload": {"Sql": "SELECT * FROM 'sensor/+/data'", "RuleDisabled": disabled,
                                 "Actions": []}}}
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=cfg.resolved_stack_name, TemplateBody=json.dumps({"Resources": resources}))


@pytest.mark.usefixtures("moto")
@pytest.mark.parametrize(("disabled", "expected"), [
    (False, [(PASS, "SensorDataRule_us-east-1 runs in iotpipe local's rule engine")]),
    (True, [(FAIL, "SensorDataRule_us-east-1 is disabled in the template")]),
    (None, [(FAIL, "the deployed template has no topic rule")]),
])
def test_under_iotpipe_local_the_rule_is_read_from_the_template_the_engine_runs(
        disabled: bool | None, expected: list[tuple[str, str]]) -> None:
    cfg = build_config({}, "local", {})
    _local_stack(cfg, disabled)
    ctx = Context(cfg, ACCOUNT, REGION, {"StackName": cfg.resolved_stack_name})
    assert [(row.status, row.detail) for row in local_topic_rule(Factory(), ctx)] == expected
    report = run_doctor(Factory(), cfg, REGION, drift_check=False, now=NOW, local=True)
    assert [(row.status, row.detail) for row in report.checks if row.name == "topic rule"] == expected
    # the same stack judged as AWS: moto (like the local emulator) has no such rule in its IoT API
    aws = run_doctor(Factory(), cfg, REGION, drift_check=False, now=NOW)
    if disabled is False:
        assert [row.status for row in aws.checks if row.name == "topic rule"] == [FAIL]
