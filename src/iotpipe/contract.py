"""The contract in one place, with stdlib imports only: topics, metric names, logical ids, output keys and exports,
the reading rules (patterns and numeric limits) and the anomaly index. The groups, ``query``, ``devices``, the CLI
and the local emulator, broker and rule engine import these; nothing else spells them
(``tests/unit/test_contract.py`` fails when a contract literal appears outside this module, and checks that both
processors carry the same reading rules). ``iotpipe.naming`` adds the troposphere helpers (:class:`Names`,
``Fn::Sub`` names, exports) on top.

Ids and names equal the seed's so a stack deployed from the seed template can update.
"""

from __future__ import annotations

import re

ENV_PARAM = "EnvironmentSuffix"
ALARM_EMAIL_PARAM = "AlarmEmail"
ENV_REF = "${" + ENV_PARAM + "}"
METRIC_NAMESPACE = "IoT/Manufacturing"
METRIC_READINGS = "SensorReadingsProcessed"
METRIC_ANOMALIES = "AnomaliesDetected"
METRIC_QUARANTINED = "RecordsQuarantined"
METRIC_NAMES = (METRIC_READINGS, METRIC_ANOMALIES, METRIC_QUARANTINED)
TOPIC_ROOT = "sensor"
TOPIC_FILTER = TOPIC_ROOT + "/+/data"
TOPIC_PATTERN = TOPIC_ROOT + "/{deviceId}/data"
# Basic Ingest: "Messages have topic names that start with $aws/rules/rule_name in their first three levels"
# (AWS IoT developer guide, Basic Ingest); the rule still sees sensor/<deviceId>/data.
BASIC_INGEST_PREFIX = "$aws/rules/"
ANOMALY_INDEX = "AnomaliesByDay"
# Key prefixes of the processor's raw archive and quarantine objects in the raw bucket.
ARCHIVE_PREFIXES = ("raw/", "quarantine/")
# Where Lambda's S3 on-failure destination writes (processor.on_failure = "s3"): the object key is
# aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID> (Lambda guide).
FAILURE_PREFIX = "aws/lambda/"

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
PROCESSOR_VERSION = "DataProcessorVersion"  # + a hash of the function's properties (one version per change)
PROCESSOR_ALIAS = "DataProcessorAlias"
FLEET_TEMPLATE = "FleetProvisioningTemplate"
FLEET_ROLE = "FleetProvisioningRole"
FLEET_HOOK = "FleetPreProvisioningHook"
FLEET_HOOK_ROLE = "FleetPreProvisioningHookRole"
FLEET_HOOK_PERMISSION = "FleetPreProvisioningHookPermission"
FLEET_HOOK_LOG_GROUP = "FleetPreProvisioningHookLogGroup"
FLEET_TABLE = "FleetAllowListTable"
FLEET_CLAIM_POLICY = "FleetClaimPolicy"
AUDIT_CONFIGURATION = "DeviceDefenderAuditConfiguration"
AUDIT_ROLE = "DeviceDefenderAuditRole"
AUDIT_SCHEDULE = "DeviceDefenderScheduledAudit"
ROLLOUT_APPLICATION = "ProcessorDeployApplication"
ROLLOUT_DEPLOYMENT_GROUP = "ProcessorDeployGroup"
ROLLOUT_ROLE = "ProcessorDeployRole"
ROLLOUT_HOOK = "ProcessorPreTrafficHook"
ROLLOUT_HOOK_ROLE = "ProcessorPreTrafficHookRole"
QUARANTINE_ALARM = "QuarantineAlarm"
ROLLOUT_ERROR_ALARM = "RolloutErrorAlarm"
ROLLOUT_ITERATOR_AGE_ALARM = "RolloutIteratorAgeAlarm"
ROLLOUT_QUARANTINE_ALARM = "RolloutQuarantineAlarm"
# The alias the event source mapping invokes when processor.rollout is not all-at-once.
PROCESSOR_ALIAS_NAME = "live"
# Glue table names (Athena lowercases identifiers; the SQL relations of `iotpipe sql` read these).
RAW_ARCHIVE_TABLE_NAME = "raw_archive"
QUARANTINE_ARCHIVE_TABLE_NAME = "quarantine_archive"

# Output keys (the seed's, then iotpipe's) and the export suffixes of the seed's exports
# (export name: ``<stack name>-<suffix>``).
OUT_TABLE_NAME = "SensorDataTableName"
OUT_BUCKET_NAME = "RawDataBucketName"
OUT_ANOMALY_INDEX = "AnomalyIndexName"
OUT_STREAM_NAME = "KinesisStreamName"
OUT_FUNCTION_NAME = "DataProcessorFunctionName"
OUT_FUNCTION_ARN = "DataProcessorFunctionArn"
OUT_LOG_GROUP_NAME = "DataProcessorLogGroupName"
OUT_DLQ_URL = "DeadLetterQueueUrl"
OUT_IOT_ENDPOINT = "IoTEndpoint"
OUT_THING_NAME = "IoTThingName"
OUT_TOPIC_PATTERN = "IoTTopicPattern"
OUT_DEVICE_POLICY = "SensorDevicePolicyName"
OUT_ALARM_TOPIC = "AlarmTopicArn"
OUT_KEY_ARN = "PipelineKeyArn"
OUT_ANALYTICS_DATABASE = "AnalyticsDatabaseName"
OUT_ANALYTICS_WORKGROUP = "AnalyticsWorkGroupName"
OUT_ANALYTICS_RESULTS = "AnalyticsResultsBucketName"
OUT_ANALYTICS_POLICY = "AnalyticsQueryPolicyArn"
OUT_FLEET_TEMPLATE = "FleetProvisioningTemplateName"
OUT_FLEET_TABLE = "FleetAllowListTableName"
OUT_FLEET_CLAIM_POLICY = "FleetClaimPolicyName"
OUT_FLEET_HOOK = "FleetPreProvisioningHookName"
OUT_ENV = ENV_PARAM
EXPORTS = {
    OUT_TABLE_NAME: "SensorDataTable",
    OUT_BUCKET_NAME: "RawDataBucket",
    OUT_STREAM_NAME: "KinesisStream",
    OUT_FUNCTION_NAME: "DataProcessorFunction",
    OUT_FUNCTION_ARN: "DataProcessorFunctionArn",
    OUT_IOT_ENDPOINT: "IoTEndpoint",
    OUT_THING_NAME: "IoTThingName",
    OUT_TOPIC_PATTERN: "IoTTopicPattern",
    OUT_ANALYTICS_DATABASE: "AnalyticsDatabase",
    OUT_ANALYTICS_WORKGROUP: "AnalyticsWorkGroup",
    OUT_ANALYTICS_POLICY: "AnalyticsQueryPolicy",
    OUT_ENV: "EnvironmentSuffix",
}

# The environment suffix goes into bucket names, which S3 allows in lowercase only.
ENV_SUFFIX_PATTERN = "^[a-z0-9]+$"
# A pipeline prefix becomes part of logical ids (letters and digits) and, lowercased, of physical names,
# including bucket names (at most 63 characters with account, region and suffix) and rule names (no hyphen).
PREFIX_PATTERN = re.compile(r"^([A-Z][A-Za-z0-9]{0,7})?$")

# A topic's first level (Names.topic_root): 1-32 lowercase letters, digits, '_' or '-', starting with a letter.
TOPIC_ROOT_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# The default pipeline's topic rule name; IoT rule names allow letters, digits and underscores only.
RULE_NAME_PATTERN = "SensorDataRule_" + ENV_REF

# The reading rules (docs/contract.md): both processors carry copies of these, and the SQL relations of
# ``iotpipe sql`` and the configuration's sensor types mirror them (tests/unit/test_contract.py keeps them equal).
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")  # an IoT thing name
SENSOR_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
DEVICE_TIMESTAMP_PATTERN = re.compile(r"^[\x20-\x7e]{1,64}$")
UNIT_MAX_CHARS = 32
MAX_READINGS_PER_BODY = 100  # members of one `readings` object (the processors' MAX_READINGS_PER_RECORD)
MAX_READINGS_PER_MESSAGE = 1_000  # readings of all the samples of one message (the samples form)
MAX_JSON_DEPTH = 64
# A value is finite and 0 or of a magnitude in [VALUE_MIN_MAGNITUDE, VALUE_MAX_MAGNITUDE) (DynamoDB's numbers).
VALUE_MIN_MAGNITUDE = 1e-130
VALUE_MAX_MAGNITUDE = 1e126
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything earlier is a clock that was never set
MAX_FUTURE_MS = 86_400_000  # a reading more than a day ahead of its arrival has a wrong clock
MAX_ARRIVAL_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_SENSOR_TYPE_DIMENSIONS = 20  # SensorType dimension values per invocation
# The processor's storage layouts (STORAGE_LAYOUT) and the longest pack window (PACK_WINDOW_SECONDS).
STORAGE_LAYOUTS = ("item-per-reading", "packed")
MAX_PACK_WINDOW_SECONDS = 3_600


def device_topic(device_id: str, root: str = TOPIC_ROOT) -> str:
    """The data topic of a device: ``sensor/<deviceId>/data``."""
    return f"{root}/{device_id}/data"


def command_topic(device_id: str, root: str = TOPIC_ROOT) -> str:
    """The command topic a device subscribes to: ``sensor/<deviceId>/commands``."""
    return f"{root}/{device_id}/commands"


def rule_name(env: str) -> str:
    """The default pipeline's topic rule name in ``env`` (the EnvironmentSuffix is the env)."""
    return RULE_NAME_PATTERN.replace(ENV_REF, env)


def basic_ingest_topic_pattern(rule: str) -> str:
    """The Basic Ingest topic devices publish to for ``rule``: ``$aws/rules/<rule>/sensor/{deviceId}/data``."""
    return f"{BASIC_INGEST_PREFIX}{rule}/{TOPIC_PATTERN}"


# AWS IoT's metric documentation ("Rule action metrics", metrics_dimensions) says "the ActionType dimension
# contains the type of action that was invoked" and defines it as "the action type specified by the rule",
# linking to the rule actions page, whose name in the API for Kinesis is `kinesis`; it lists no metric values.
# The rule-failure alarm and doctor therefore watch that name and the two other spellings in use (the
# CloudFormation property, `Kinesis`, and the error action message's `failedAction` form, `KinesisAction`).
KINESIS_ACTION_TYPES = ("kinesis", "Kinesis", "KinesisAction")
