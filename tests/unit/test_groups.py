"""Each resource group: the resources and outputs it makes, as to_dict() fragments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iotpipe.config import StorageConfig, StreamConfig, build_config
from iotpipe.errors import ConfigError
from iotpipe.groups.endpoint import build_endpoint
from iotpipe.groups.ingest import RULE_SQL, build_ingest
from iotpipe.groups.keys import build_keys
from iotpipe.groups.monitoring import build_monitoring
from iotpipe.groups.processor import build_processor
from iotpipe.groups.storage import build_storage
from iotpipe.groups.stream import build_stream
from iotpipe.package import ARTEFACT_BUCKET_PATTERN, processor_artefact, read_zip_member

HANDLER = Path(__file__).resolve().parents[2] / "handler" / "python" / "index.py"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def by_id(group: Any) -> dict[str, dict[str, Any]]:
    return {resource.title: resource.to_dict() for resource in group.resources}


def outputs(group: Any) -> dict[str, dict[str, Any]]:
    return {output.title: output.to_dict() for output in group.outputs}


def test_storage_bucket_is_unique_versioned_logged_and_tls_only() -> None:
    resources = by_id(build_storage(StorageConfig()))
    bucket = resources["RawDataBucket"]["Properties"]
    assert bucket["BucketName"] == {"Fn::Sub": "iot-raw-data-${AWS::AccountId}-${AWS::Region}-${EnvironmentSuffix}"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "RawDataAccessLogBucket"}
    assert bucket["LifecycleConfiguration"]["Rules"][0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    log_bucket = resources["RawDataAccessLogBucket"]["Properties"]
    assert "BucketName" not in log_bucket and log_bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    for policy_id in ("RawDataBucketPolicy", "RawDataAccessLogBucketPolicy"):
        deny = resources[policy_id]["Properties"]["PolicyDocument"]["Statement"][0]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_storage_table_keys_index_and_recovery() -> None:
    group = build_storage(StorageConfig(table_kms_key_arn=KEY_ARN))
    table = by_id(group)["SensorDataTable"]
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "deviceId", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    index = props["GlobalSecondaryIndexes"][0]
    assert index["IndexName"] == "AnomaliesByDay"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["anomalyDay", "anomalySk"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["UpdateReplacePolicy"] == "Retain"
    assert outputs(group)["SensorDataTableName"]["Export"] == {"Name": {"Fn::Sub": "${AWS::StackName}-SensorDataTable"}}


def test_stream_encryption_and_modes() -> None:
    provisioned = by_id(build_stream(StreamConfig(shard_count=3, retention_hours=48)))["SensorDataStream"]
    assert provisioned["Properties"]["ShardCount"] == 3
    assert provisioned["Properties"]["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
    on_demand = by_id(build_stream(StreamConfig(mode="ON_DEMAND", kms_key_arn=KEY_ARN)))["SensorDataStream"]
    assert "ShardCount" not in on_demand["Properties"]
    assert on_demand["Properties"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert on_demand["Properties"]["StreamEncryption"]["KeyId"] == KEY_ARN


def processor_group(overrides: dict[str, Any] | None = None) -> Any:
    cfg = build_config({}, "dev", overrides or {})
    return build_processor(cfg, keys=build_keys(), stream=build_stream(cfg.stream),
                           storage=build_storage(cfg.storage))


def test_processor_function_runtime_code_and_environment() -> None:
    function = by_id(processor_group({"processor.memory_mb": 512}))["DataProcessorFunction"]["Properties"]
    assert (function["Runtime"], function["Architectures"], function["MemorySize"]) == ("python3.13", ["arm64"], 512)
    artefact = processor_artefact("python3.13")  # processor.packaging = "zip", the default
    assert function["Code"] == {"S3Bucket": {"Fn::Sub": ARTEFACT_BUCKET_PATTERN}, "S3Key": artefact.key}
    assert read_zip_member(artefact.body, "index.py") == HANDLER.read_text(encoding="utf-8")
    variables = function["Environment"]["Variables"]
    assert json.loads(variables["THRESHOLDS"])["vibration"] == {"min": None, "max": 5.0, "unit": "mm/s",
                                                             "detector": "onset"}
    assert variables["UNKNOWN_SENSOR"] == "quarantine" and variables["TTL_DAYS"] == "90"
    assert (variables["STORAGE_LAYOUT"], variables["PACK_WINDOW_SECONDS"]) == ("item-per-reading", "60")
    assert function["ReservedConcurrentExecutions"] == 10
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "DataProcessorLogGroup"}}


def test_processor_environment_carries_the_packed_layout() -> None:
    group = processor_group({"storage.layout": "packed", "storage.pack_window_seconds": 300})
    variables = by_id(group)["DataProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert (variables["STORAGE_LAYOUT"], variables["PACK_WINDOW_SECONDS"]) == ("packed", "300")


def test_processor_notifies_episodes_to_the_alarm_topic_with_the_configured_quiet_period() -> None:
    default = by_id(processor_group({}))["DataProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert default["ALARM_TOPIC_ARN"] == {"Ref": "AlarmTopic"}
    assert "episodeQuiet" not in json.loads(default["THRESHOLDS"])["vibration"]  # the contract's default, 3600 s
    quiet = processor_group({"thresholds.vibration.episode_quiet": 600, "thresholds.temperature.episode_quiet": 0})
    variables = by_id(quiet)["DataProcessorFunction"]["Properties"]["Environment"]["Variables"]
    thresholds = json.loads(variables["THRESHOLDS"])
    assert (thresholds["vibration"]["episodeQuiet"], thresholds["temperature"]["episodeQuiet"]) == (600, 0)
    with pytest.raises(ConfigError, match="episode_quiet"):
        processor_group({"thresholds.vibration.episode_quiet": 604_801})


def test_processor_event_source_mapping_is_bounded_and_reports_partial_failures() -> None:
    mapping = by_id(processor_group({"processor.batch_size": 500}))["KinesisEventSourceMapping"]["Properties"]
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    bounds = (mapping["BatchSize"], mapping["MaximumRetryAttempts"], mapping["MaximumRecordAgeInSeconds"])
    assert bounds == (500, 3, 3600)
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["DataProcessorDeadLetterQueue", "Arn"]}


def test_processor_on_failure_s3_sends_failed_batches_to_the_raw_bucket_under_aws_lambda() -> None:
    group = by_id(processor_group({"processor.on_failure": "s3"}))
    mapping = group["KinesisEventSourceMapping"]["Properties"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["RawDataBucket", "Arn"]}
    statements = {s["Sid"]: s for s in group["DataProcessorRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]}
    assert statements["WriteFailedBatches"]["Action"] == ["s3:PutObject"]
    assert statements["WriteFailedBatches"]["Resource"] == [{"Fn::Sub": "${RawDataBucket.Arn}/aws/lambda/*"}]
    assert statements["ListFailedBatches"]["Condition"] == {"StringLike": {"s3:prefix": ["aws/lambda/*"]}}


def test_processor_role_grants_exactly_the_processor_calls() -> None:
    role = by_id(processor_group())["DataProcessorRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    actions = sorted(action for statement in statements for action in statement["Action"])
    assert actions == sorted([
        "logs:CreateLogStream", "logs:PutLogEvents", "kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards", "dynamodb:BatchWriteItem",
        "dynamodb:BatchGetItem", "s3:PutObject", "sqs:SendMessage", "sns:Publish", "kms:Decrypt",
        "kms:GenerateDataKey"])
    assert all(statement["Resource"] != "*" and "*" not in statement["Resource"] for statement in statements)


def test_ingest_rule_keeps_device_timestamp_and_has_error_action() -> None:
    cfg = build_config({}, "dev", {})
    group = build_ingest(cfg.ingest, stream=build_stream(cfg.stream), storage=build_storage(cfg.storage),
                         endpoint=build_endpoint(cfg, keys=build_keys()))
    payload = by_id(group)["SensorDataRule"]["Properties"]["TopicRulePayload"]
    assert payload["Sql"] == RULE_SQL
    assert "timestamp() AS receivedAt" in RULE_SQL and "topic(2) AS topicDeviceId" in RULE_SQL
    assert payload["Actions"][0]["Kinesis"]["PartitionKey"] == "${topic(2)}"
    assert payload["ErrorAction"]["S3"]["Key"].startswith("rule-errors/")
    policy = json.dumps(by_id(group)["SensorDevicePolicy"])
    assert "sensor/*/data" not in policy and "sensor/${!iot:Connection.Thing.ThingName}/data" in policy
    assert set(outputs(group)) == {"IoTEndpoint", "IoTThingName", "IoTTopicPattern", "SensorDevicePolicyName"}


def test_monitoring_alarms_notify_the_encrypted_topic() -> None:
    cfg = build_config({}, "dev", {"alarms.anomalies": 25})
    keys, stream, storage = build_keys(), build_stream(cfg.stream), build_storage(cfg.storage)
    processor = build_processor(cfg, keys=keys, stream=stream, storage=storage)
    group = build_monitoring(cfg, keys=keys, stream=stream, processor=processor,
                             ingest=build_ingest(cfg.ingest, stream=stream, storage=storage,
                                                 endpoint=build_endpoint(cfg, keys=keys)))
    resources = by_id(group)
    alarms = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms) == 10
    assert {"LambdaErrorAlarm", "AnomalyAlarm", "KinesisIteratorAgeAlarm"} <= set(alarms)
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())
    assert alarms["AnomalyAlarm"]["Threshold"] == 25
    assert alarms["AnomalyAlarm"]["AlarmName"] == {"Fn::Sub": "IoT-High-Anomalies-${EnvironmentSuffix}"}
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["PipelineKey", "Arn"]}
    assert resources["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    dashboard, variables = resources["PipelineDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert '"SensorType","pressure"' in dashboard and "RecordsQuarantined" in dashboard
    # The dashboard watches the processor group it is given, through its handles.
    assert '"FunctionName","${ProcessorFunctionName}"' in dashboard
    assert variables["ProcessorFunctionName"] == processor.function_name.to_dict()
    assert variables["DeadLetterQueueName"] == processor.queue_name.to_dict()


@pytest.mark.parametrize("runtime", ["python3.12", "python3.14"])
def test_every_python_runtime_inlines_the_same_handler(runtime: str) -> None:
    function = by_id(processor_group({"processor.runtime": runtime, "processor.packaging": "inline"}))[
        "DataProcessorFunction"]["Properties"]
    assert function["Runtime"] == runtime
    assert function["Code"]["ZipFile"] == HANDLER.read_text(encoding="utf-8")
