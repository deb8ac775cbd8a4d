"""iotpipe's invariants as cfn-lint rules (iotpipe.lintrules): each rule fires on a minimal template that breaks it,
stays quiet on one that keeps it, and the default template and a customised one are judged by them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from deploy_helpers import region_gap
from troposphere import Ref, Sub, kinesis, logs, sqs

from iotpipe import lintrules
from iotpipe.cli import main
from iotpipe.composition import compose
from iotpipe.config import load_config
from iotpipe.lint import RULES_MODULE, Finding, blocking, lint_template
from iotpipe.render import render_template, to_yaml

OWN_RULES = ("E9101", "E9102", "E9103", "E9104")


def template(resources: dict[str, Any], outputs: dict[str, Any] | None = None,
             parameters: dict[str, Any] | None = None) -> str:
    """A JSON template of ``resources`` (JSON is YAML: cfn-lint reads it either way)."""
    body: dict[str, Any] = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}
    if outputs:
        body["Outputs"] = outputs
    if parameters:
        body["Parameters"] = parameters
    return json.dumps(body, indent=1)


def own(text: str, region: str = "us-east-1") -> list[Finding]:
    """The findings of iotpipe's rules only (a minimal template may trip cfn-lint's own rules too)."""
    return [f for f in lint_template(text, (region,)) if f.rule in OWN_RULES]


def role(statement: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": "p", "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}}]}}
    if metadata is not None:
        resource["Metadata"] = metadata
    return resource


ROOT = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
KEY = {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Version": "2012-10-17", "Statement": [{
    "Sid": "Root", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}]}}}
DESCRIBE = {"Sid": "Describe", "Effect": "Allow", "Action": "iot:DescribeEndpoint", "Resource": "*"}
TOPIC = {"Type": "AWS::SNS::Topic", "Properties": {"KmsMasterKeyId": "alias/aws/sns"}}


def alarm(**properties: Any) -> dict[str, Any]:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "MetricName": "Errors", "Namespace": "AWS/Lambda", "Statistic": "Sum", "Period": 300,
        "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanThreshold", **properties}}


def test_rules_are_cfn_lint_rules_with_ids_one_per_module() -> None:
    classes = [lintrules.IamWildcardResource, lintrules.PartitionAwareArns, lintrules.AlarmNotifiesTopic,
               lintrules.EncryptionAtRest]
    assert lintrules.RULE_IDS == OWN_RULES
    assert len({cls.__module__ for cls in classes}) == 4  # one rule per file
    for cls in classes:
        assert cls.id and cls.shortdesc and cls.description and cls.source_url and "iotpipe" in cls.tags
    assert lintrules.__name__ == RULES_MODULE


# ---------------------------------------------------------------- E9101 IAM Resource "*" needs a reason

def test_wildcard_resource_without_a_reason_is_e9101_at_the_statement() -> None:
    [finding] = own(template({"Role": role(DESCRIBE)}))
    assert finding.rule == "E9101" and finding.severity == "error"
    assert finding.path == "Resources/Role/Properties/Policies/0/PolicyDocument/Statement/0/Resource"
    assert "statement Describe allows iot:DescribeEndpoint" in finding.message
    assert "Resources/Role/Metadata/iotpipe/wildcard-resources/Describe" in finding.message


def test_wildcard_resource_with_its_reason_in_metadata_passes() -> None:
    reason = {"iotpipe": {"wildcard-resources": {"Describe": "DescribeEndpoint accepts no resource ARN"}}}
    assert own(template({"Role": role(DESCRIBE, reason)})) == []


@pytest.mark.parametrize("metadata", [
    {"iotpipe": {"wildcard-resources": {"Describe": "  "}}},      # empty reason
    {"iotpipe": {"wildcard-resources": {"OtherSid": "a reason"}}},  # reason for another statement
])
def test_an_empty_or_misplaced_reason_does_not_count(metadata: dict[str, Any]) -> None:
    assert [f.rule for f in own(template({"Role": role(DESCRIBE, metadata)}))] == ["E9101"]


def test_wildcard_without_sid_is_told_to_get_one() -> None:
    statement = {key: value for key, value in DESCRIBE.items() if key != "Sid"}
    [finding] = own(template({"Policy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}}}}))
    assert finding.rule == "E9101" and "has no Sid" in finding.message


def test_deny_on_everything_and_key_policies_are_not_wildcard_grants() -> None:
    deny = {**DESCRIBE, "Effect": "Deny"}
    assert own(template({"Role": role(deny), "Key": KEY})) == []


# ---------------------------------------------------------------- E9102 partition-aware ARNs

def test_literal_partition_is_e9102_in_properties_and_outputs() -> None:
    statement = {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": {"Fn::Sub": "arn:aws:s3:::${AWS::StackName}-bucket/*"}}
    text = template({"Role": role(statement)},
                    outputs={"Arn": {"Value": {"Fn::Sub": "arn:aws:sns:${AWS::Region}:${AWS::AccountId}:t"}}})
    findings = own(text)
    assert [f.rule for f in findings] == ["E9102", "E9102"]
    assert {f.path for f in findings} == {
        "Resources/Role/Properties/Policies/0/PolicyDocument/Statement/0/Resource/Fn::Sub", "Outputs/Arn/Value/Fn::Sub"}
    assert all("arn:${AWS::Partition}:" in f.message for f in findings)


def test_literal_partition_of_a_managed_policy_arn_is_found() -> None:
    resource = role({"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject",
                     "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/*"}})
    resource["Properties"]["ManagedPolicyArns"] = ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    assert [f.rule for f in own(template({"Role": resource}))] == ["E9102"]


def test_partition_pseudo_parameter_and_an_accounts_own_resource_arn_pass() -> None:
    stream = {"Type": "AWS::Kinesis::Stream", "Properties": {"ShardCount": 1, "StreamEncryption": {
        "EncryptionType": "KMS",
        "KeyId": "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-2222-3333-4444-555566667777"}}}
    statement = {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-bucket/*"}}
    assert own(template({"Stream": stream, "Role": role(statement)})) == []


# ---------------------------------------------------------------- E9103 every alarm notifies a topic

def test_alarm_without_actions_is_e9103() -> None:
    [finding] = own(template({"Topic": TOPIC, "Alarm": alarm()}))
    assert (finding.rule, finding.path) == ("E9103", "Resources/Alarm/Properties")
    assert "notifies no SNS topic" in finding.message


@pytest.mark.parametrize("properties", [
    {"AlarmActions": [{"Ref": "Queue"}]},                           # an action, but not a topic
    {"AlarmActions": [{"Ref": "Topic"}], "ActionsEnabled": False},  # a topic, silenced
])
def test_alarm_that_reaches_no_topic_is_e9103(properties: dict[str, Any]) -> None:
    queue = {"Type": "AWS::SQS::Queue", "Properties": {"SqsManagedSseEnabled": True}}
    assert [f.rule for f in own(template({"Topic": TOPIC, "Queue": queue, "Alarm": alarm(**properties)}))] == ["E9103"]


@pytest.mark.parametrize("action", [
    {"Ref": "Topic"},
    {"Fn::GetAtt": ["Topic", "TopicArn"]},
    {"Ref": "OpsTopicArn"},
    {"Fn::Sub": "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:ops"},
])
def test_alarm_that_notifies_a_topic_passes(action: Any) -> None:
    parameters = {"OpsTopicArn": {"Type": "String"}}
    assert own(template({"Topic": TOPIC, "Alarm": alarm(AlarmActions=[action])}, parameters=parameters)) == []


# ---------------------------------------------------------------- E9104 encryption at rest

UNENCRYPTED = {
    "AWS::Kinesis::Stream": {"ShardCount": 1},
    "AWS::S3::Bucket": {},
    "AWS::DynamoDB::Table": {"BillingMode": "PAY_PER_REQUEST",
                             "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                             "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]},
    "AWS::SQS::Queue": {},
    "AWS::SNS::Topic": {},
    "AWS::Logs::LogGroup": {"RetentionInDays": 7},
}
ENCRYPTION = {
    "AWS::Kinesis::Stream": {"StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}},
    "AWS::S3::Bucket": {"BucketEncryption": {"ServerSideEncryptionConfiguration": [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}},
    "AWS::DynamoDB::Table": {"SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"}},
    "AWS::SQS::Queue": {"KmsMasterKeyId": "alias/aws/sqs"},
    "AWS::SNS::Topic": {"KmsMasterKeyId": "alias/aws/sns"},
    "AWS::Logs::LogGroup": {"KmsKeyId": {"Fn::GetAtt": ["Key", "Arn"]}},
}


@pytest.mark.parametrize("resource_type", list(UNENCRYPTED))
def test_data_store_without_encryption_is_e9104(resource_type: str) -> None:
    [finding] = own(template({"Store": {"Type": resource_type, "Properties": UNENCRYPTED[resource_type]}}))
    assert (finding.rule, finding.path) == ("E9104", "Resources/Store")
    assert f"Store: {resource_type} without encryption at rest; set " in finding.message


@pytest.mark.parametrize("resource_type", list(UNENCRYPTED))
def test_data_store_with_encryption_passes(resource_type: str) -> None:
    properties = {**UNENCRYPTED[resource_type], **ENCRYPTION[resource_type]}
    assert own(template({"Key": KEY, "Store": {"Type": resource_type, "Properties": properties}})) == []


def test_encryption_switched_off_or_removed_by_novalue_is_e9104() -> None:
    resources = {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"SqsManagedSseEnabled": False}},
        "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {
            **UNENCRYPTED["AWS::DynamoDB::Table"], "SSESpecification": {"SSEEnabled": False}}},
        "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"KmsKeyId": {"Ref": "AWS::NoValue"}}},
    }
    assert sorted(f.path for f in own(template(resources))) == ["Resources/Logs", "Resources/Queue", "Resources/Table"]


# ---------------------------------------------------------------- the default and a customised template

@pytest.mark.parametrize("overrides", [{}, {"processor.runtime": "nodejs22.x", "analytics.enabled": False},
                                       {"processor.packaging": "inline"}])
@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1"])
def test_default_templates_keep_every_invariant(overrides: dict[str, Any], region: str) -> None:
    assert lint_template(render_template(load_config(None, "dev", overrides)), (region,)) == []


def test_the_default_templates_wildcard_carries_its_reason() -> None:
    """The one justified Resource "*" of the template (not a key policy) says why, where E9101 looks."""
    resource = compose(load_config(None, "dev")).template.resources["IoTEndpointLookupRole"].to_dict()
    reason = resource["Metadata"]["iotpipe"]["wildcard-resources"]["DescribeDataEndpoint"]
    assert "no resource type" in reason


def customised() -> str:
    """The dev template with resources a user added: a queue, a log group and an alarm, none of them right."""
    template = compose(load_config(None, "dev")).template
    template.add_resource(sqs.Queue("ExtraQueue", SqsManagedSseEnabled=False))
    template.add_resource(logs.LogGroup("ExtraLogGroup", RetentionInDays=7))
    template.add_resource(kinesis.Stream("ExtraStream", ShardCount=1, StreamEncryption=kinesis.StreamEncryption(
        EncryptionType="KMS", KeyId=Sub("arn:aws:kms:${AWS::Region}:${AWS::AccountId}:alias/aws/kinesis"))))
    from troposphere import cloudwatch
    template.add_resource(cloudwatch.Alarm(
        "ExtraAlarm", MetricName="IncomingRecords", Namespace="AWS/Kinesis", Statistic="Sum", Period=300,
        EvaluationPeriods=1, Threshold=0, ComparisonOperator="LessThanOrEqualToThreshold",
        AlarmActions=[Ref("ExtraQueue")]))
    return to_yaml(template)


def test_a_customised_template_is_held_to_the_same_invariants() -> None:
    # cfn-lint alone finds nothing blocking in these resources (only informational advice on them).
    assert sorted((f.rule, f.path.split("/")[1]) for f in blocking(lint_template(customised()))) == [
        ("E9102", "ExtraStream"), ("E9103", "ExtraAlarm"), ("E9104", "ExtraLogGroup"), ("E9104", "ExtraQueue")]


def test_iotpipe_lint_cli_reports_the_rules_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "custom.yml"
    path.write_text(customised(), encoding="utf-8")
    result = CliRunner().invoke(main, ["lint", str(path), "--no-checkov", "--output", "json"])
    assert result.exit_code == 1, result.output
    blocking_rules = [f["rule"] for f in json.loads(result.stdout) if f["severity"] != "informational"]
    assert sorted(blocking_rules) == ["E9102", "E9103", "E9104", "E9104"]


def test_lint_checks_the_region_it_is_given() -> None:
    """cfn-lint's region checks run for the region asked for (a type offered in us-east-1 and not there)."""
    type_name, properties, region = region_gap()
    text = template({"Extra": {"Type": type_name, "Properties": properties}})
    assert lint_template(text, ("us-east-1",)) == []
    [finding] = lint_template(text, (region,))
    assert finding.rule == "E3006" and f"does not exist in '{region}'" in finding.message
