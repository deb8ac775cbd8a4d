"""Logical ids, physical names and output/export names, kept equal to the seed's so its stacks can update."""

from __future__ import annotations

from troposphere import Export, Sub

ENV_PARAM = "EnvironmentSuffix"
ALARM_EMAIL_PARAM = "AlarmEmail"
METRIC_NAMESPACE = "IoT/Manufacturing"
TOPIC_FILTER = "sensor/+/data"
TOPIC_PATTERN = "sensor/{deviceId}/data"
RULE_NAME_PATTERN = "SensorDataRule_${EnvironmentSuffix}"
# Basic Ingest: "Messages have topic names that start with $aws/rules/rule_name in their first three levels"
# (AWS IoT developer guide, Basic Ingest); the rule still sees sensor/<deviceId>/data.
BASIC_INGEST_PREFIX = "$aws/rules/"
ANOMALY_INDEX = "AnomaliesByDay"

# Logical ids of the seed template (kept verbatim).
RAW_BUCKET = "RawDataBucket"
TABLE = "SensorDataTable"
STREAM = "SensorDataStream"
PROCESSOR_ROLE = "DataProcessorRole"
PROCESSOR_FUNCTION = "DataProcessorFunction"
PROCESSOR_LOG_GROUP = "DataProcessorLogGroup"
EVENT_SOURCE_MAPPING = "KinesisEventSourceMapping"
RULE_ROLE = "IoTRuleRole"
TOPIC_RULE = "SensorDataRule"
DEVICE_POLICY = "SensorDevicePolicy"
DEVICE_THING = "ManufacturingDevice"
LAMBDA_ERROR_ALARM = "LambdaErrorAlarm"
ANOMALY_ALARM = "AnomalyAlarm"
ITERATOR_AGE_ALARM = "KinesisIteratorAgeAlarm"

# Logical ids iotpipe adds.
RAW_BUCKET_POLICY = "RawDataBucketPolicy"
ACCESS_LOG_BUCKET = "RawDataAccessLogBucket"
ACCESS_LOG_BUCKET_POLICY = "RawDataAccessLogBucketPolicy"
PROCESSOR_DLQ = "DataProcessorDeadLetterQueue"
ALARM_TOPIC = "AlarmTopic"
PIPELINE_KEY = "PipelineKey"
PIPELINE_KEY_ALIAS = "PipelineKeyAlias"
ALARM_TOPIC_POLICY = "AlarmTopicPolicy"
ALARM_SUBSCRIPTION = "AlarmEmailSubscription"
DASHBOARD = "PipelineDashboard"
HAS_ALARM_EMAIL = "HasAlarmEmail"
HAS_RESERVED_CONCURRENCY = "HasReservedConcurrency"
IOT_ENDPOINT = "IoTDataEndpoint"
IOT_ENDPOINT_ROLE = "IoTEndpointLookupRole"
IOT_ENDPOINT_FUNCTION = "IoTEndpointLookupFunction"
IOT_ENDPOINT_LOG_GROUP = "IoTEndpointLookupLogGroup"
IOT_ENDPOINT_RESOURCE_TYPE = "Custom::IoTEndpoint"
ANALYTICS_DATABASE = "AnalyticsDatabase"
RAW_ARCHIVE_TABLE = "RawArchiveTable"
QUARANTINE_ARCHIVE_TABLE = "QuarantineArchiveTable"
ANALYTICS_WORKGROUP = "AnalyticsWorkGroup"
ANALYTICS_RESULTS_BUCKET = "AnalyticsResultsBucket"
ANALYTICS_RESULTS_BUCKET_POLICY = "AnalyticsResultsBucketPolicy"
ANALYTICS_POLICY = "AnalyticsQueryPolicy"
# Glue table names (Athena lowercases identifiers; the SQL relations of `iotpipe sql` read these).
RAW_ARCHIVE_TABLE_NAME = "raw_archive"
QUARANTINE_ARCHIVE_TABLE_NAME = "quarantine_archive"

# The environment suffix goes into bucket names, which S3 allows in lowercase only.
ENV_SUFFIX_PATTERN = "^[a-z0-9]+$"


def sub(pattern: str) -> Sub:
    """``Fn::Sub`` of a name pattern that may use ``${EnvironmentSuffix}`` and pseudo parameters."""
    return Sub(pattern)


def rule_name(env: str) -> str:
    """The topic rule's physical name in ``env`` (the EnvironmentSuffix is the env)."""
    return RULE_NAME_PATTERN.replace("${EnvironmentSuffix}", env)


def basic_ingest_topic_pattern(rule: str) -> str:
    """The Basic Ingest topic devices publish to for ``rule``: ``$aws/rules/<rule>/sensor/{deviceId}/data``."""
    return f"{BASIC_INGEST_PREFIX}{rule}/{TOPIC_PATTERN}"


def raw_bucket_name() -> Sub:
    """Globally unique: the seed's ``iot-raw-data-<env>`` collided across accounts and regions."""
    return sub("iot-raw-data-${AWS::AccountId}-${AWS::Region}-${EnvironmentSuffix}")


def table_name() -> Sub:
    """New name because the key schema changed (a custom-named table cannot be replaced in place)."""
    return sub("SensorReadings-${EnvironmentSuffix}")


def processor_role_name() -> Sub:
    """Region-unique: IAM role names are unique per account, so the seed's ``IoTDataProcessorRole-<env>``
    collided when one env was deployed in two regions of an account."""
    return sub("IoTDataProcessorRole-${EnvironmentSuffix}-${AWS::Region}")


def rule_role_name() -> Sub:
    """Region-unique for the same reason as :func:`processor_role_name` (seed: ``IoTRuleRole-<env>``)."""
    return sub("IoTRuleRole-${EnvironmentSuffix}-${AWS::Region}")


def dashboard_name() -> Sub:
    """Region-unique: PutDashboard, "All dashboards in your account are global"."""
    return sub("iot-pipeline-${EnvironmentSuffix}-${AWS::Region}")


def stream_name() -> Sub:
    """Kinesis stream name (seed's)."""
    return sub("sensor-data-stream-${EnvironmentSuffix}")


def function_name_pattern() -> str:
    """Lambda function name pattern (seed's), shared by the function and its log group."""
    return "iot-data-processor-${EnvironmentSuffix}"


def analytics_database_name() -> Sub:
    """Glue database of the archive tables; Glue and Athena want lowercase letters, digits and underscores."""
    return sub("iotpipe_${EnvironmentSuffix}")


def analytics_workgroup_name() -> Sub:
    """Athena workgroup of ``iotpipe sql`` (workgroup names are unique per account and region)."""
    return sub("iotpipe-${EnvironmentSuffix}")


def export(suffix: str) -> Export:
    """The seed's export naming: ``<stack name>-<suffix>``."""
    return Export(Sub("${AWS::StackName}-" + suffix))
