"""``iotpipe doctor`` through the CLI against a moto server with the real template deployed, and the doctor's
blocking rows run by ``deploy`` first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe.cli import main

REGION = "us-east-1"
STACK = "iotpipe-dev"


def aws(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def run(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--env", "dev", "--endpoint-url", endpoint, "--region", REGION])


@pytest.fixture
def deployed(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    result = run(moto_endpoint, "deploy", "--yes")
    assert result.exit_code == 0, result.stderr
    # moto's CloudFormation skips AWS::IoT::TopicRule; create it as CloudFormation would.
    aws("iot", moto_endpoint).create_topic_rule(ruleName="SensorDataRule_dev", topicRulePayload={
        "sql": "SELECT * FROM 'sensor/+/data'", "actions": [], "ruleDisabled": False})
    return moto_endpoint


def table(result: Result) -> dict[str, str]:
    return {line.split()[1]: line for line in result.stdout.splitlines() if line[:4] in ("ok  ", "WARN", "FAIL")}


def test_a_healthy_stack_passes_with_warnings_that_say_what_to_do(deployed: str) -> None:
    assert run(deployed, "device", "register", "press-7").exit_code == 0
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in aws("cloudformation", deployed).describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]}
    # DescribeEndpoint (iot:Data-ATS): "identifier.iot.region.amazonaws.com", the seed's account-id form was none.
    assert outputs["IoTEndpoint"].endswith("-ats.iot.us-east-1.amazonaws.com")
    assert not outputs["IoTEndpoint"].startswith("123456789012.")
    aws("sqs", deployed).send_message(QueueUrl=outputs["DeadLetterQueueUrl"], MessageBody="{}")
    result = run(deployed, "doctor", "--no-drift", "--output", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["stack"]["status"] == "pass"
    assert checks["names in the account"]["status"] == "pass"  # the stack's own names are not "taken"
    assert checks["event source mapping"]["status"] == "pass" and "Enabled" in checks["event source mapping"]["detail"]
    assert checks["topic rule"]["status"] == "pass"
    assert checks["device policy"]["status"] == "warn" and "press-7" in checks["device policy"]["detail"]
    assert "--revoke-devices" in checks["device policy"]["action"]
    assert checks["dead-letter queue"]["status"] == "warn" and checks["dead-letter queue"]["detail"] == "1 message(s)"
    assert "iotpipe failures list / redrive --env" in checks["dead-letter queue"]["action"]
    assert checks["imported exports"]["status"] == "pass"
    # moto has no GetAccountSettings: the row says it could not check rather than guessing.
    assert checks["account concurrency"]["status"] == "warn"
    assert checks["account concurrency"]["detail"].startswith("could not check")


def test_a_disabled_mapping_fails_the_doctor(deployed: str) -> None:
    client = aws("lambda", deployed)
    arn = client.get_function(FunctionName="iot-data-processor-dev")["Configuration"]["FunctionArn"]
    [mapping] = client.list_event_source_mappings(FunctionName=arn)["EventSourceMappings"]
    client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    iot = aws("iot", deployed)
    iot.disable_topic_rule(ruleName="SensorDataRule_dev")
    result = run(deployed, "doctor", "--no-drift")
    assert result.exit_code == 1
    rows = table(result)
    assert rows["event"].startswith("FAIL") and "Disabled" in rows["event"]
    assert rows["topic"].startswith("FAIL") and "disabled" in rows["topic"]
    assert "enable-topic-rule --rule-name SensorDataRule_dev" in result.stdout
    assert "2 check(s) failed" in result.stderr


def test_deploy_refuses_names_taken_in_the_account(moto_endpoint: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """IAM role names are per account: a role left by an earlier deploy makes CREATE fail on AWS."""
    monkeypatch.chdir(tmp_path)
    aws("iam", moto_endpoint).create_role(RoleName="IoTRuleRole-dev-us-east-1", AssumeRolePolicyDocument="{}")
    result = run(moto_endpoint, "deploy", "--yes")
    assert result.exit_code == 1
    assert "IAM role IoTRuleRole-dev-us-east-1" in result.stderr and "iotpipe doctor --env dev" in result.stderr
    assert aws("cloudformation", moto_endpoint).list_stacks()["StackSummaries"] == []
