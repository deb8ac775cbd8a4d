"""Secure and observable by default, on the rendered template: checkov clean, cfn-lint clean, alarms reach people."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cfnlint.decode import decode_str

from iotpipe.config import PipelineConfig, load_config
from iotpipe.lint import CheckovReport, lint_template, run_checkov
from iotpipe.render import render_template

KEY = "arn:aws:kms:us-east-1:123456789012:key/{}-2222-3333-4444-555566667777"
CUSTOMER_KEYS_ON_DEMAND = {
    "stream.mode": "ON_DEMAND",
    "stream.kms_key_arn": KEY.format("1111aaaa"),
    "storage.table_kms_key_arn": KEY.format("2222aaaa"),
    "processor.log_kms_key_arn": KEY.format("3333aaaa"),
}

# Every checkov check skipped in a resource's Metadata, and why. Issue 5 allowed three; issue 12 added the IoT
# endpoint lookup function and dropped the default key's name from the table, each skip with its reason.
EXPECTED_SKIPS = {
    ("CKV_AWS_18", "Resources/RawDataAccessLogBucket"): "the access-log bucket cannot log into itself",
    ("CKV_AWS_117", "Resources/DataProcessorFunction"): "talks only to AWS APIs; a VPC adds NAT cost only",
    ("CKV_AWS_173", "Resources/DataProcessorFunction"): "environment holds names and thresholds, no secrets",
    ("CKV_AWS_115", "Resources/IoTEndpointLookupFunction"):
        "runs once per stack operation; the account must keep 100 unreserved executions",
    ("CKV_AWS_116", "Resources/IoTEndpointLookupFunction"): "CloudFormation waits for its answer; nothing to keep",
    ("CKV_AWS_117", "Resources/IoTEndpointLookupFunction"): "one AWS API call over TLS; a VPC adds NAT cost only",
    ("CKV_AWS_18", "Resources/AnalyticsResultsBucket"):
        "query results are copies of archive data that expire within days; Athena's history and CloudTrail log "
        "who ran what",
}
# Only without storage.table_kms_key_arn: naming alias/aws/dynamodb makes drift detection report a false change.
DEFAULT_TABLE_KEY_SKIP = {("CKV_AWS_119", "Resources/SensorDataTable"): "the AWS-managed key, not named"}
SEED_ALARMS = ("LambdaErrorAlarm", "AnomalyAlarm", "KinesisIteratorAgeAlarm")
ALARM_ARNS = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*"
# Service-principal grants in resource policies that carry no source condition, and why that is safe.
# Issue 12 pinned the key's CloudWatchAlarmsPublish statement to this account's alarms too: none is left.
UNCONDITIONED_SERVICE_GRANTS: dict[tuple[str, str], str] = {}


def configs() -> dict[str, PipelineConfig]:
    return {"dev": load_config(None, "dev"),
            "customer-keys-on-demand": load_config(None, "dev", CUSTOMER_KEYS_ON_DEMAND)}


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: render_template(cfg) for name, cfg in configs().items()}


@pytest.fixture(scope="module")
def checkov_reports(rendered: dict[str, str]) -> dict[str, CheckovReport]:
    return {name: run_checkov(text) for name, text in rendered.items()}


def decoded(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template))


def of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {logical_id: r for logical_id, r in template["Resources"].items() if r["Type"] == resource_type}


# ---------------------------------------------------------------- the gates

@pytest.mark.parametrize("name", list(configs()))
def test_checkov_has_no_failed_check(checkov_reports: dict[str, CheckovReport], name: str) -> None:
    report = checkov_reports[name]
    assert [f"{f.rule} {f.path}: {f.message}" for f in report.failed] == []
    assert report.passed >= 40  # the checks really ran (49 on the dev template when this was written)


@pytest.mark.parametrize("name", list(configs()))
def test_checkov_skips_are_the_known_ones_each_with_a_reason(checkov_reports: dict[str, CheckovReport],
                                                             name: str) -> None:
    skipped = checkov_reports[name].skipped
    expected = set(EXPECTED_SKIPS) | (set(DEFAULT_TABLE_KEY_SKIP) if name == "dev" else set())
    assert {(f.rule, f.path) for f in skipped} == expected
    assert len(skipped) == len(expected)
    for finding in skipped:
        assert finding.severity == "informational"
        assert not finding.message.endswith("(no reason given)"), finding


@pytest.mark.parametrize("name", list(configs()))
def test_cfn_lint_is_clean(rendered: dict[str, str], name: str) -> None:
    assert [f"{f.line} {f.rule} {f.message}" for f in lint_template(rendered[name])] == []


def test_customer_keys_reach_the_template(rendered: dict[str, str]) -> None:
    """The KMS config really changes what is linted (the second config is not the first one again)."""
    resources = decoded(rendered["customer-keys-on-demand"])["Resources"]
    stream = resources["SensorDataStream"]["Properties"]
    stream_key = CUSTOMER_KEYS_ON_DEMAND["stream.kms_key_arn"]
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": stream_key}
    assert stream["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"} and "ShardCount" not in stream
    table_sse = resources["SensorDataTable"]["Properties"]["SSESpecification"]
    assert table_sse["KMSMasterKeyId"] == CUSTOMER_KEYS_ON_DEMAND["storage.table_kms_key_arn"]
    log_group = resources["DataProcessorLogGroup"]["Properties"]
    assert log_group["KmsKeyId"] == CUSTOMER_KEYS_ON_DEMAND["processor.log_kms_key_arn"]


# ---------------------------------------------------------------- alarms that reach people

@pytest.fixture(scope="module")
def dev(rendered: dict[str, str]) -> dict[str, Any]:
    return decoded(rendered["dev"])


def test_every_alarm_notifies_the_alarm_topic(dev: dict[str, Any]) -> None:
    alarms = of_type(dev, "AWS::CloudWatch::Alarm")
    # the seed's three and iotpipe's, the IoT rule's ParseError and RuleNotFound among them
    assert len(alarms) == 10 and set(SEED_ALARMS) | {"RuleParseErrorAlarm", "RuleNotFoundAlarm"} <= set(alarms)
    for logical_id, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
    assert set(of_type(dev, "AWS::SNS::Topic")) == {"AlarmTopic"}


def test_seed_alarm_names_are_kept(dev: dict[str, Any]) -> None:
    names = {logical_id: dev["Resources"][logical_id]["Properties"]["AlarmName"] for logical_id in SEED_ALARMS}
    assert names == {"LambdaErrorAlarm": {"Fn::Sub": "IoT-Lambda-Errors-${EnvironmentSuffix}"},
                     "AnomalyAlarm": {"Fn::Sub": "IoT-High-Anomalies-${EnvironmentSuffix}"},
                     "KinesisIteratorAgeAlarm": {"Fn::Sub": "IoT-Kinesis-Iterator-Age-${EnvironmentSuffix}"}}


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(dev: dict[str, Any]) -> None:
    """An alarm cannot publish to a topic under aws/sns; the pipeline key lets CloudWatch in."""
    topic = dev["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["PipelineKey", "Arn"]}
    key = dev["Resources"]["PipelineKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [s for s in key["KeyPolicy"]["Statement"]
                  if s["Principal"] == {"Service": ["cloudwatch.amazonaws.com"]}]
    assert len(cloudwatch) == 1 and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(cloudwatch[0]["Action"])
    publish = dev["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert publish == [{
        "Sid": "CloudWatchAlarmsPublish", "Effect": "Allow", "Principal": {"Service": ["cloudwatch.amazonaws.com"]},
        "Action": ["sns:Publish"], "Resource": [{"Ref": "AlarmTopic"}],
        # only this account's alarms: another account's alarms must not page this one's on-call
        "Condition": {
            "ArnLike": {"aws:SourceArn": {"Fn::Sub": ALARM_ARNS}},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        },
    }]


def resource_policies(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Statements of every bucket policy, topic policy and key policy, by logical id."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        properties = resource["Properties"]
        document = properties.get("PolicyDocument") if resource["Type"] in (
            "AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy") else properties.get("KeyPolicy")
        if document:
            found[logical_id] = document["Statement"]
    return found


def test_service_principals_act_only_for_this_account(dev: dict[str, Any]) -> None:
    """Every Allow to an AWS service in a resource policy is pinned to this account's sources (confused deputy)."""
    policies = resource_policies(dev)
    assert {"RawDataBucketPolicy", "RawDataAccessLogBucketPolicy", "AlarmTopicPolicy", "PipelineKey"} <= set(policies)
    unconditioned = set()
    for logical_id, statements in policies.items():
        for statement in statements:
            if statement["Effect"] != "Allow" or "Service" not in statement.get("Principal", {}):
                continue
            keys = {key for tests in statement.get("Condition", {}).values() for key in tests}
            if not keys & {"aws:SourceArn", "aws:SourceAccount", "kms:EncryptionContext:aws:logs:arn"}:
                unconditioned.add((logical_id, statement["Sid"]))
    assert unconditioned == set(UNCONDITIONED_SERVICE_GRANTS)


def evaluate_condition(expression: Any, parameters: dict[str, str]) -> Any:
    """Evaluate the condition functions the template uses (Fn::Not, Fn::Equals, Ref) for parameter values."""
    if isinstance(expression, dict):
        [(function, argument)] = expression.items()
        if function == "Ref":
            return parameters[argument]
        if function == "Fn::Not":
            return not evaluate_condition(argument[0], parameters)
        if function == "Fn::Equals":
            return evaluate_condition(argument[0], parameters) == evaluate_condition(argument[1], parameters)
        raise AssertionError(f"{function} not modelled")
    return expression


@pytest.mark.parametrize(("email", "subscribed"), [("", False), ("ops@example.com", True)])
def test_email_subscription_exists_only_when_alarm_email_is_given(dev: dict[str, Any], email: str,
                                                                  subscribed: bool) -> None:
    subscriptions = of_type(dev, "AWS::SNS::Subscription")
    assert list(subscriptions) == ["AlarmEmailSubscription"]
    subscription = subscriptions["AlarmEmailSubscription"]
    assert subscription["Properties"] == {"Protocol": "email", "TopicArn": {"Ref": "AlarmTopic"},
                                          "Endpoint": {"Ref": "AlarmEmail"}}
    condition = dev["Conditions"][subscription["Condition"]]
    assert evaluate_condition(condition, {"AlarmEmail": email}) is subscribed


def test_alarm_email_parameter_defaults_to_none_and_accepts_only_addresses(dev: dict[str, Any]) -> None:
    parameter = dev["Parameters"]["AlarmEmail"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("not an address")


def test_configured_alarm_email_becomes_the_parameter_default() -> None:
    template = decoded(render_template(load_config(None, "dev", {"alarms.email": "ops@example.com"})))
    assert template["Parameters"]["AlarmEmail"]["Default"] == "ops@example.com"
