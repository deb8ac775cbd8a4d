"""Golden to_dict() fragments of every resource issue 5 added or hardened, from the group functions.

A change to any of these is a change to the pipeline's security or observability defaults: update the
fragment here on purpose, and say why in the commit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from iotpipe.config import PipelineConfig, load_config
from iotpipe.groups.endpoint import LOOKUP_CODE, build_endpoint
from iotpipe.groups.ingest import build_ingest
from iotpipe.groups.keys import build_keys
from iotpipe.groups.monitoring import build_monitoring
from iotpipe.groups.processor import build_processor
from iotpipe.groups.storage import build_storage
from iotpipe.groups.stream import build_stream

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENV_TAG = {"Key": "Environment", "Value": {"Ref": "EnvironmentSuffix"}}
DELETE = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}
THING = "${!iot:Connection.Thing.ThingName}"
IOT_ARN = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:"
PUBLIC_ACCESS_BLOCKED = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                         "RestrictPublicBuckets": True}
OWNER_ENFORCED = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def tls_only(bucket: str) -> dict[str, Any]:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": ["s3:*"],
            "Resource": [get_att(bucket), sub("${" + bucket + ".Arn}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def resources(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Every resource of every group for ``cfg``, by logical id, as to_dict()."""
    keys, storage, stream = build_keys(), build_storage(cfg.storage), build_stream(cfg.stream)
    processor = build_processor(cfg, keys=keys, stream=stream, storage=storage)
    endpoint = build_endpoint(cfg, keys=keys)
    ingest = build_ingest(cfg.ingest, stream=stream, storage=storage, endpoint=endpoint)
    monitoring = build_monitoring(cfg, keys=keys, stream=stream, processor=processor, ingest=ingest)
    return {r.title: r.to_dict() for group in (keys, storage, stream, processor, endpoint, ingest, monitoring)
            for r in group.resources}


@pytest.fixture(scope="module")
def dev() -> dict[str, dict[str, Any]]:
    return resources(load_config(None, "dev"))


@pytest.fixture(scope="module")
def customer_keys() -> dict[str, dict[str, Any]]:
    return resources(load_config(None, "dev", {
        "stream.mode": "ON_DEMAND", "stream.kms_key_arn": KEY_ARN, "storage.table_kms_key_arn": KEY_ARN,
        "processor.log_kms_key_arn": KEY_ARN}))


# ---------------------------------------------------------------- keys

LOGS_ACTIONS = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
LOG_GROUPS = sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*")


def test_pipeline_key(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["PipelineKey"] == {"Type": "AWS::KMS::Key", **DELETE, "Properties": {
        "Description": sub("iotpipe pipeline key (${EnvironmentSuffix}): alarm topic and processor logs"),
        "EnableKeyRotation": True,
        "PendingWindowInDays": 7,
        "KeyPolicy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "AccountAdministers", "Effect": "Allow",
             "Principal": {"AWS": [sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")]},
             "Action": ["kms:*"], "Resource": ["*"]},
            # Issue 12: the topic policy pinned alarms to this account, the key policy did not.
            {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
             "Principal": {"Service": ["cloudwatch.amazonaws.com"]},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": ["*"],
             "Condition": {
                 "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                 "ArnLike": {"aws:SourceArn": sub(
                     "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*")}}},
            # CloudWatch Logs KMS guide: "kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
            # "kms:Describe*" with the aws:logs:arn encryption context.
            {"Sid": "CloudWatchLogsEncrypt", "Effect": "Allow",
             "Principal": {"Service": [sub("logs.${AWS::Region}.amazonaws.com")]},
             "Action": LOGS_ACTIONS,
             "Resource": ["*"],
             "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": LOG_GROUPS}}},
            # ... and kms:ViaService logs.<region>.amazonaws.com for principals that call CloudWatch Logs.
            {"Sid": "AccountPrincipalsThroughLogs", "Effect": "Allow",
             "Principal": {"AWS": [sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")]},
             "Action": LOGS_ACTIONS,
             "Resource": ["*"],
             "Condition": {"StringEquals": {"kms:ViaService": sub("logs.${AWS::Region}.amazonaws.com")},
                           "ArnLike": {"kms:EncryptionContext:aws:logs:arn": LOG_GROUPS}}},
        ]},
        "Tags": [ENV_TAG],
    }}
    assert dev["PipelineKeyAlias"] == {"Type": "AWS::KMS::Alias", "Properties": {
        "AliasName": sub("alias/iotpipe-${EnvironmentSuffix}"), "TargetKeyId": {"Ref": "PipelineKey"}}}


# ---------------------------------------------------------------- storage

def test_raw_bucket(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["RawDataBucket"] == {"Type": "AWS::S3::Bucket", **DELETE, "Properties": {
        "BucketName": sub("iot-raw-data-${AWS::AccountId}-${AWS::Region}-${EnvironmentSuffix}"),
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]},
        "VersioningConfiguration": {"Status": "Enabled"},
        "LoggingConfiguration": {"DestinationBucketName": {"Ref": "RawDataAccessLogBucket"},
                                 "LogFilePrefix": "raw-data-bucket/"},
        "OwnershipControls": OWNER_ENFORCED,
        "LifecycleConfiguration": {"Rules": [{
            # S3 transitions no object under 128 KB by default: the filter says so, and large objects still move.
            "Id": "TransitionToIA", "Status": "Enabled", "ObjectSizeGreaterThan": "131071",
            "Transitions": [{"TransitionInDays": 30, "StorageClass": "STANDARD_IA"},
                            {"TransitionInDays": 90, "StorageClass": "GLACIER"}],
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        }, {
            # The archive (objects of a few KB) stays in S3 Standard and expires after the configured retention.
            "Id": "ExpireArchive", "Status": "Enabled", "ExpirationInDays": 365,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }]},
        "PublicAccessBlockConfiguration": PUBLIC_ACCESS_BLOCKED,
        "Tags": [ENV_TAG, {"Key": "Purpose", "Value": "IoT-Raw-Data-Archive"}],
    }}
    assert dev["RawDataBucketPolicy"] == {"Type": "AWS::S3::BucketPolicy", "Properties": {
        "Bucket": {"Ref": "RawDataBucket"},
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [tls_only("RawDataBucket")]}}}


def test_access_log_bucket(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["RawDataAccessLogBucket"] == {"Type": "AWS::S3::Bucket", **DELETE, "Properties": {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}]},
        "VersioningConfiguration": {"Status": "Enabled"},
        "OwnershipControls": OWNER_ENFORCED,
        "LifecycleConfiguration": {"Rules": [{
            "Id": "ExpireAccessLogs", "Status": "Enabled", "ExpirationInDays": 365,
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]},
        "PublicAccessBlockConfiguration": PUBLIC_ACCESS_BLOCKED,
        "Tags": [ENV_TAG, {"Key": "Purpose", "Value": "IoT-Raw-Data-Access-Logs"}],
    }, "Metadata": {"checkov": {"skip": [{
        "id": "CKV_AWS_18", "comment": "This is the access-log bucket itself; logging it into itself would loop."}]}}}
    assert dev["RawDataAccessLogBucketPolicy"] == {"Type": "AWS::S3::BucketPolicy", "Properties": {
        "Bucket": {"Ref": "RawDataAccessLogBucket"},
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            tls_only("RawDataAccessLogBucket"),
            {"Sid": "AllowServerAccessLogDelivery", "Effect": "Allow",
             "Principal": {"Service": ["logging.s3.amazonaws.com"]}, "Action": ["s3:PutObject"],
             "Resource": [sub("${RawDataAccessLogBucket.Arn}/raw-data-bucket/*")],
             "Condition": {"ArnEquals": {"aws:SourceArn": get_att("RawDataBucket")},
                           "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}},
        ]}}}


def test_table_recovery_encryption_and_sparse_index(dev: dict[str, dict[str, Any]],
                                                    customer_keys: dict[str, dict[str, Any]]) -> None:
    table = dev["SensorDataTable"]["Properties"]
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # Issue 12: naming the default alias/aws/dynamodb made drift detection report a false difference.
    assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
    assert [skip["id"] for skip in dev["SensorDataTable"]["Metadata"]["checkov"]["skip"]] == ["CKV_AWS_119"]
    assert "Metadata" not in customer_keys["SensorDataTable"]
    assert table["GlobalSecondaryIndexes"] == [{
        "IndexName": "AnomaliesByDay",
        "KeySchema": [{"AttributeName": "anomalyDay", "KeyType": "HASH"},
                      {"AttributeName": "anomalySk", "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"}}]
    assert customer_keys["SensorDataTable"]["Properties"]["SSESpecification"] == {
        "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}


# ---------------------------------------------------------------- stream

def test_stream_encryption(dev: dict[str, dict[str, Any]], customer_keys: dict[str, dict[str, Any]]) -> None:
    assert dev["SensorDataStream"] == {"Type": "AWS::Kinesis::Stream", **DELETE, "Properties": {
        "Name": sub("sensor-data-stream-${EnvironmentSuffix}"),
        "RetentionPeriodHours": 24,
        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
        "Tags": [ENV_TAG, {"Key": "Purpose", "Value": "IoT-Data-Ingestion"}],
        "ShardCount": 1,
    }}
    on_demand = customer_keys["SensorDataStream"]["Properties"]
    assert on_demand["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": KEY_ARN}
    assert on_demand["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"} and "ShardCount" not in on_demand


# ---------------------------------------------------------------- processor

def test_processor_role(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["DataProcessorRole"] == {"Type": "AWS::IAM::Role", "Properties": {
        # Issue 12: IAM role names are per account; the region keeps two regions of one env apart.
        "RoleName": sub("IoTDataProcessorRole-${EnvironmentSuffix}-${AWS::Region}"),
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}]},
        "Policies": [{"PolicyName": "DataProcessorPolicy", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [get_att("DataProcessorLogGroup")]},
            {"Sid": "ReadSensorStream", "Effect": "Allow",
             "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                        "kinesis:GetShardIterator", "kinesis:ListShards"],
             "Resource": [get_att("SensorDataStream")]},
            {"Sid": "WriteReadings", "Effect": "Allow", "Action": ["dynamodb:BatchWriteItem"],
             "Resource": [get_att("SensorDataTable")]},
            {"Sid": "ReadDetectorState", "Effect": "Allow", "Action": ["dynamodb:BatchGetItem"],
             "Resource": [get_att("SensorDataTable")]},
            {"Sid": "ArchiveRawRecords", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [sub("${RawDataBucket.Arn}/raw/*"), sub("${RawDataBucket.Arn}/quarantine/*")]},
            {"Sid": "SendToDeadLetterQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"],
             "Resource": [get_att("DataProcessorDeadLetterQueue")]},
            # One notification per anomaly episode: the alarm topic only, and its key.
            {"Sid": "NotifyAnomalies", "Effect": "Allow", "Action": ["sns:Publish"],
             "Resource": [{"Ref": "AlarmTopic"}]},
            {"Sid": "EncryptAlarms", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": [get_att("PipelineKey")]},
        ]}}],
        "Tags": [ENV_TAG],
    }}


def test_processor_role_with_customer_keys(customer_keys: dict[str, dict[str, Any]]) -> None:
    statements = customer_keys["DataProcessorRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert statements[-2:] == [
        {"Sid": "DecryptStreamRecords", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [KEY_ARN]},
        {"Sid": "EncryptReadings", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": [KEY_ARN]},
    ]


def test_processor_function_limits_dead_letters_and_logging(dev: dict[str, dict[str, Any]]) -> None:
    function = dev["DataProcessorFunction"]
    properties = function["Properties"]
    assert {key: properties[key] for key in ("ReservedConcurrentExecutions", "DeadLetterConfig", "LoggingConfig")} == {
        "ReservedConcurrentExecutions": 10,
        "DeadLetterConfig": {"TargetArn": get_att("DataProcessorDeadLetterQueue")},
        "LoggingConfig": {"LogGroup": {"Ref": "DataProcessorLogGroup"}},
    }
    assert "VpcConfig" not in properties and "KmsKeyArn" not in properties
    assert function["Metadata"] == {"checkov": {"skip": [
        {"id": "CKV_AWS_117", "comment": "Talks only to AWS APIs over TLS; a VPC would add NAT cost only."},
        {"id": "CKV_AWS_173", "comment": "Environment holds names and thresholds, no secrets."},
    ]}}


def test_processor_log_group_and_dead_letter_queue(dev: dict[str, dict[str, Any]],
                                                   customer_keys: dict[str, dict[str, Any]]) -> None:
    assert dev["DataProcessorLogGroup"] == {"Type": "AWS::Logs::LogGroup", **DELETE, "Properties": {
        "LogGroupName": sub("/aws/lambda/iot-data-processor-${EnvironmentSuffix}"),
        "RetentionInDays": 7,
        "KmsKeyId": get_att("PipelineKey"),
    }}
    assert customer_keys["DataProcessorLogGroup"]["Properties"]["KmsKeyId"] == KEY_ARN
    assert dev["DataProcessorDeadLetterQueue"] == {"Type": "AWS::SQS::Queue", **DELETE, "Properties": {
        "QueueName": sub("iot-data-processor-dlq-${EnvironmentSuffix}"),
        "MessageRetentionPeriod": 14 * 86400,
        "KmsMasterKeyId": "alias/aws/sqs",
        "Tags": [ENV_TAG, {"Key": "Purpose", "Value": "IoT-Processor-Dead-Letters"}],
    }}


def test_event_source_mapping_sends_exhausted_batches_to_the_queue(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["KinesisEventSourceMapping"] == {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
        "EventSourceArn": get_att("SensorDataStream"),
        "FunctionName": get_att("DataProcessorFunction"),
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 5,
        "MaximumRetryAttempts": 3,
        "MaximumRecordAgeInSeconds": 3600,
        "BisectBatchOnFunctionError": True,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "DestinationConfig": {"OnFailure": {"Destination": get_att("DataProcessorDeadLetterQueue")}},
        "ParallelizationFactor": 1,
        "Enabled": True,
    }}


# ---------------------------------------------------------------- ingest

def test_rule_role_and_error_action(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["IoTRuleRole"] == {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": sub("IoTRuleRole-${EnvironmentSuffix}-${AWS::Region}"),
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": ["iot.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}]},
        "Policies": [{"PolicyName": "KinesisWritePolicy", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Sid": "WriteSensorStream", "Effect": "Allow", "Action": ["kinesis:PutRecord"],
             "Resource": [get_att("SensorDataStream")]},
            {"Sid": "KeepFailedMessages", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [sub("${RawDataBucket.Arn}/rule-errors/*")]},
        ]}}],
        "Tags": [ENV_TAG],
    }}
    assert dev["SensorDataRule"]["Properties"]["TopicRulePayload"]["ErrorAction"] == {"S3": {
        "BucketName": {"Ref": "RawDataBucket"},
        "Key": "rule-errors/${topic(2)}/${timestamp()}-${newuuid()}.json",
        "RoleArn": get_att("IoTRuleRole"),
    }}


def test_rule_role_with_a_customer_stream_key(customer_keys: dict[str, dict[str, Any]]) -> None:
    statements = customer_keys["IoTRuleRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert statements[-1] == {"Sid": "EncryptStreamRecords", "Effect": "Allow", "Action": ["kms:GenerateDataKey"],
                              "Resource": [KEY_ARN]}


def test_device_policy_uses_the_thing_name_policy_variable(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["SensorDevicePolicy"] == {"Type": "AWS::IoT::Policy", "Properties": {
        "PolicyName": sub("SensorDevicePolicy-${EnvironmentSuffix}"),
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Sid": "ConnectAsOwnThing", "Effect": "Allow", "Action": ["iot:Connect"],
             "Resource": [sub(f"{IOT_ARN}client/{THING}")],
             "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
            {"Sid": "PublishOwnReadings", "Effect": "Allow", "Action": ["iot:Publish"],
             "Resource": [sub(f"{IOT_ARN}topic/sensor/{THING}/data")]},
            {"Sid": "SubscribeOwnCommands", "Effect": "Allow", "Action": ["iot:Subscribe"],
             "Resource": [sub(f"{IOT_ARN}topicfilter/sensor/{THING}/commands")]},
            {"Sid": "ReceiveOwnCommands", "Effect": "Allow", "Action": ["iot:Receive"],
             "Resource": [sub(f"{IOT_ARN}topic/sensor/{THING}/commands")]},
        ]}}}


def test_basic_ingest_policy_allows_only_the_rules_topic_for_the_own_thing() -> None:
    basic = resources(load_config(None, "dev", {"ingest.basic_ingest": True}))
    statements = basic["SensorDevicePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    publish = [s for s in statements if s["Action"] == ["iot:Publish"]]
    # Basic Ingest topics are $aws/rules/<rule name>/<topic>: this rule only, this thing only.
    assert publish == [{"Sid": "PublishOwnReadings", "Effect": "Allow", "Action": ["iot:Publish"],
                        "Resource": [sub(f"{IOT_ARN}topic/$aws/rules/SensorDataRule_${{EnvironmentSuffix}}/"
                                         f"sensor/{THING}/data")]}]
    assert basic["SensorDataRule"] == resources(load_config(None, "dev"))["SensorDataRule"]  # the rule is unchanged


# ---------------------------------------------------------------- monitoring

def test_alarm_topic_policy_and_subscription(dev: dict[str, dict[str, Any]]) -> None:
    assert dev["AlarmTopic"] == {"Type": "AWS::SNS::Topic", "Properties": {
        "TopicName": sub("iot-pipeline-alarms-${EnvironmentSuffix}"),
        "KmsMasterKeyId": get_att("PipelineKey"),
        "Tags": [ENV_TAG],
    }}
    assert dev["AlarmTopicPolicy"] == {"Type": "AWS::SNS::TopicPolicy", "Properties": {
        "Topics": [{"Ref": "AlarmTopic"}],
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
            "Principal": {"Service": ["cloudwatch.amazonaws.com"]},
            "Action": ["sns:Publish"], "Resource": [{"Ref": "AlarmTopic"}],
            "Condition": {
                "ArnLike": {"aws:SourceArn": sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}"
                                                 ":alarm:*")},
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            },
        }]}}}
    assert dev["AlarmEmailSubscription"] == {"Type": "AWS::SNS::Subscription", "Condition": "HasAlarmEmail",
                                             "Properties": {"Protocol": "email", "TopicArn": {"Ref": "AlarmTopic"},
                                                            "Endpoint": {"Ref": "AlarmEmail"}}}


FUNCTION = [("FunctionName", {"Ref": "DataProcessorFunction"})]
ENVIRONMENT = [("Environment", {"Ref": "EnvironmentSuffix"})]
# logical id, name (before -<env>), namespace, metric, statistic, threshold, dimensions
ALARMS = [
    ("LambdaErrorAlarm", "IoT-Lambda-Errors", "AWS/Lambda", "Errors", "Sum", 5, FUNCTION),
    ("AnomalyAlarm", "IoT-High-Anomalies", "IoT/Manufacturing", "AnomaliesDetected", "Sum", 10, ENVIRONMENT),
    ("KinesisIteratorAgeAlarm", "IoT-Kinesis-Iterator-Age", "AWS/Lambda", "IteratorAge", "Maximum", 60000, FUNCTION),
    ("DeadLetterQueueAlarm", "IoT-Processor-Dead-Letters", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
     "Maximum", 0, [("QueueName", get_att("DataProcessorDeadLetterQueue", "QueueName"))]),
    ("ProcessorThrottleAlarm", "IoT-Processor-Throttles", "AWS/Lambda", "Throttles", "Sum", 0, FUNCTION),
    ("KinesisWriteThrottleAlarm", "IoT-Kinesis-Write-Throttled", "AWS/Kinesis", "WriteProvisionedThroughputExceeded",
     "Sum", 0, [("StreamName", {"Ref": "SensorDataStream"})]),
    ("RuleActionFailureAlarm", "IoT-Rule-Action-Failures", "AWS/IoT", "Failure", "Sum", 0,
     [[("RuleName", sub("SensorDataRule_${EnvironmentSuffix}")), ("ActionType", kind)]
      for kind in ("kinesis", "Kinesis", "KinesisAction")]),
    # Non-JSON payloads never reach the error action: ParseError is their only trace.
    ("RuleParseErrorAlarm", "IoT-Rule-Parse-Errors", "AWS/IoT", "ParseError", "Sum", 0,
     [("RuleName", sub("SensorDataRule_${EnvironmentSuffix}"))]),
    ("RuleNotFoundAlarm", "IoT-Rule-Not-Found", "AWS/IoT", "RuleNotFound", "Sum", 0,
     [("RuleName", sub("SensorDataRule_${EnvironmentSuffix}"))]),
    ("QuarantineAlarm", "IoT-Records-Quarantined", "IoT/Manufacturing", "RecordsQuarantined", "Sum", 0, ENVIRONMENT),
]


def watched(properties: dict[str, Any]) -> tuple[str, str, str, object]:
    """Namespace, metric, statistic and dimensions of an alarm; a metric-math alarm's list of dimension sets."""
    if "Metrics" not in properties:
        return (properties["Namespace"], properties["MetricName"], properties["Statistic"],
                [(d["Name"], d["Value"]) for d in properties["Dimensions"]])
    total, *queries = properties["Metrics"]
    assert total["Expression"] == " + ".join(f"FILL(m{i}, 0)" for i in range(len(queries)))
    assert total["ReturnData"] is True and all(q["ReturnData"] is False for q in queries)
    stats = [q["MetricStat"] for q in queries]
    assert {(s["Metric"]["Namespace"], s["Metric"]["MetricName"], s["Stat"], s["Period"]) for s in stats} == {
        (stats[0]["Metric"]["Namespace"], stats[0]["Metric"]["MetricName"], stats[0]["Stat"], 300)}
    return (stats[0]["Metric"]["Namespace"], stats[0]["Metric"]["MetricName"], stats[0]["Stat"],
            [[(d["Name"], d["Value"]) for d in s["Metric"]["Dimensions"]] for s in stats])


def test_alarms_watch_the_right_metrics_and_notify_the_topic(dev: dict[str, dict[str, Any]]) -> None:
    alarms = {k: v["Properties"] for k, v in dev.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert [(k, p["AlarmName"], *watched(p)[:3], p["Threshold"], watched(p)[3]) for k, p in alarms.items()] == [
        (k, sub(name + "-${EnvironmentSuffix}"), namespace, metric, statistic, threshold, dimensions)
        for k, name, namespace, metric, statistic, threshold, dimensions in ALARMS]
    for properties in alarms.values():
        assert properties.get("Period", 300) == 300
        assert {key: properties[key] for key in (
            "EvaluationPeriods", "ComparisonOperator", "TreatMissingData", "AlarmActions", "OKActions")} == {
            "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [{"Ref": "AlarmTopic"}],
            "OKActions": [{"Ref": "AlarmTopic"}]}


def test_dashboard_shows_what_the_issue_asks_for(dev: dict[str, dict[str, Any]]) -> None:
    dashboard = dev["PipelineDashboard"]["Properties"]
    # PutDashboard: "All dashboards in your account are global".
    assert dashboard["DashboardName"] == sub("iot-pipeline-${EnvironmentSuffix}-${AWS::Region}")
    body, variables = dashboard["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    assert variables == {"MetricEnvironment": {"Ref": "EnvironmentSuffix"},
                         "ProcessorFunctionName": {"Ref": "DataProcessorFunction"},
                         "DeadLetterQueueName": {"Fn::GetAtt": ["DataProcessorDeadLetterQueue", "QueueName"]}}
    per_sensor = ("pressure", "temperature", "vibration")
    assert [(w["properties"]["title"], [tuple(m[:2]) + tuple(m[5:6]) for m in w["properties"]["metrics"]])
            for w in widgets] == [
        ("Readings processed by sensor type",
         [("IoT/Manufacturing", "SensorReadingsProcessed", s) for s in per_sensor]),
        ("Anomalies by sensor type", [("IoT/Manufacturing", "AnomaliesDetected", s) for s in per_sensor]),
        ("Quarantined records", [("IoT/Manufacturing", "RecordsQuarantined")]),
        ("Iterator age (ms)", [("AWS/Lambda", "IteratorAge")]),
        ("Processor errors, throttles and duration",
         [("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles"), ("AWS/Lambda", "Duration")]),
        ("Dead-letter queue depth", [("AWS/SQS", "ApproximateNumberOfMessagesVisible")]),
    ]


def test_reserved_concurrency_zero_reserves_none_and_says_why() -> None:
    # Lambda guide: "You can reserve up to the Unreserved account concurrency value minus 100"; a new account
    # with a limit of 10 cannot reserve any, so 0 leaves the property out (and tells checkov why).
    function = resources(load_config(None, "dev", {"processor.reserved_concurrency": 0}))["DataProcessorFunction"]
    assert "ReservedConcurrentExecutions" not in function["Properties"]
    assert "CKV_AWS_115" in [skip["id"] for skip in function["Metadata"]["checkov"]["skip"]]


def test_starting_position_follows_the_config(dev: dict[str, dict[str, Any]]) -> None:
    migrated = resources(load_config(None, "dev", {"processor.starting_position": "LATEST"}))
    assert migrated["KinesisEventSourceMapping"]["Properties"]["StartingPosition"] == "LATEST"
    assert dev["KinesisEventSourceMapping"]["Properties"]["StartingPosition"] == "TRIM_HORIZON"


# ---------------------------------------------------------------- IoT endpoint lookup (issue 12)

def test_endpoint_lookup_role_may_only_describe_the_endpoint_and_log(dev: dict[str, dict[str, Any]]) -> None:
    # DescribeEndpoint has no resource type in the Service Authorization Reference: "*" is the only resource,
    # and the role says so where lint rule E9101 looks for the reason.
    reasons = dev["IoTEndpointLookupRole"]["Metadata"]["iotpipe"]["wildcard-resources"]
    assert list(reasons) == ["DescribeDataEndpoint"] and "no resource type" in reasons["DescribeDataEndpoint"]
    assert dev["IoTEndpointLookupRole"] == {"Type": "AWS::IAM::Role", "Metadata": {"iotpipe": {
        "wildcard-resources": reasons}}, "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}]},
        "Policies": [{"PolicyName": "IoTEndpointLookupPolicy", "PolicyDocument": {"Version": "2012-10-17",
                                                                                  "Statement": [
            {"Sid": "DescribeDataEndpoint", "Effect": "Allow", "Action": ["iot:DescribeEndpoint"], "Resource": ["*"]},
            {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [get_att("IoTEndpointLookupLogGroup")]},
        ]}}],
        "Tags": [ENV_TAG],
    }}


def test_endpoint_lookup_function_logs_to_its_encrypted_group(dev: dict[str, dict[str, Any]],
                                                              customer_keys: dict[str, dict[str, Any]]) -> None:
    function = dev["IoTEndpointLookupFunction"]["Properties"]
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "IoTEndpointLookupLogGroup"}}
    assert function["Role"] == get_att("IoTEndpointLookupRole")
    assert function["Code"] == {"ZipFile": LOOKUP_CODE}
    assert dev["IoTEndpointLookupLogGroup"] == {"Type": "AWS::Logs::LogGroup", **DELETE, "Properties": {
        "LogGroupName": sub("/aws/lambda/iot-endpoint-lookup-${EnvironmentSuffix}"),
        "RetentionInDays": 7,
        "KmsKeyId": get_att("PipelineKey"),
    }}
    assert customer_keys["IoTEndpointLookupLogGroup"]["Properties"]["KmsKeyId"] == KEY_ARN
    assert dev["IoTDataEndpoint"] == {"Type": "Custom::IoTEndpoint", "Properties": {
        "ServiceToken": get_att("IoTEndpointLookupFunction"), "EndpointType": "iot:Data-ATS"}}


def test_archive_retention_comes_from_config() -> None:
    cfg = load_config(None, "dev", {"storage.archive_retention_days": 30})
    rules = resources(cfg)["RawDataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [(rule["Id"], rule.get("ExpirationInDays")) for rule in rules] == [("TransitionToIA", None),
                                                                             ("ExpireArchive", 30)]
