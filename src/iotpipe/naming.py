"""The contract in one place: logical ids, physical names, output keys and exports, the metric namespace, the
anomaly index and the topic pattern. The groups, ``query``, ``devices`` and the CLI import these; nothing else
spells them (``tests/unit/test_contract.py`` fails when a contract literal appears outside this module).

Ids and names equal the seed's so a stack deployed from the seed template can update. :class:`Names` adds a
prefix for a second pipeline in the same template; its defaults reproduce the ids and names below exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from troposphere import Export, Ref, Sub

from iotpipe.errors import ConfigError

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


def device_topic(device_id: str, root: str = TOPIC_ROOT) -> str:
    """The data topic of a device: ``sensor/<deviceId>/data``."""
    return f"{root}/{device_id}/data"


def command_topic(device_id: str, root: str = TOPIC_ROOT) -> str:
    """The command topic a device subscribes to: ``sensor/<deviceId>/commands``."""
    return f"{root}/{device_id}/commands"


@dataclass(frozen=True)
class Names:
    """Logical ids, physical names, output keys and exports of one pipeline in a template.

    The defaults are the seed's ids and today's names. ``prefix`` (e.g. ``"LineB"``) lets a second pipeline
    share a template: it prefixes every logical id, output key and export, and its lowercase form goes into
    every physical name. ``topic_root`` is the first level of the devices' topics.
    """

    prefix: str = ""
    topic_root: str = TOPIC_ROOT

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ConfigError(f"names.prefix: {self.prefix!r} is not valid; use an uppercase letter and up to 7 "
                              "letters or digits (it goes into logical ids and, lowercased, bucket names), or "
                              "'' for the seed's ids")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", self.topic_root):
            raise ConfigError(f"names.topic_root: {self.topic_root!r} is not a topic level; use 1-32 lowercase "
                              "letters, digits, '_' or '-', starting with a letter")

    def id(self, base: str) -> str:
        """The logical id (or output key) ``base`` of this pipeline."""
        return self.prefix + base

    def output(self, key: str) -> str:
        """The output key ``key`` of this pipeline."""
        return self.prefix + key

    def export(self, key: str) -> Export:
        """The export of output ``key``: the seed's ``<stack name>-<suffix>``, the suffix prefixed."""
        return Export(Sub("${AWS::StackName}-" + self.prefix + EXPORTS[key]))

    def env(self, separator: str = "-") -> str:
        """``${EnvironmentSuffix}``, preceded by the lowercase prefix and ``separator`` when there is one."""
        return f"{self.prefix.lower()}{separator}{ENV_REF}" if self.prefix else ENV_REF

    def metric_environment(self) -> Ref | Sub:
        """The ``Environment`` dimension of the pipeline's metrics (the processor's ENVIRONMENT variable)."""
        return Sub(self.env()) if self.prefix else Ref(ENV_PARAM)

    def topic_filter(self) -> str:
        """The topic rule's filter: ``sensor/+/data``."""
        return device_topic("+", self.topic_root)

    def topic_pattern(self) -> str:
        """The data topic pattern devices publish to, as the IoTTopicPattern output gives it."""
        return device_topic("{deviceId}", self.topic_root)

    def basic_ingest_topic_pattern(self) -> str:
        """The Basic Ingest topic devices publish to: ``$aws/rules/<rule name>/sensor/{deviceId}/data``."""
        return f"{BASIC_INGEST_PREFIX}{self.rule_name_pattern()}/{self.topic_pattern()}"

    def raw_bucket_name(self) -> Sub:
        """Globally unique: the seed's ``iot-raw-data-<env>`` collided across accounts and regions."""
        return Sub("iot-raw-data-${AWS::AccountId}-${AWS::Region}-" + self.env())

    def table_name(self) -> Sub:
        """New name because the key schema changed (a custom-named table cannot be replaced in place)."""
        return Sub("SensorReadings-" + self.env())

    def stream_name(self) -> Sub:
        """Kinesis stream name (seed's)."""
        return Sub("sensor-data-stream-" + self.env())

    def processor_role_name(self) -> Sub:
        """Region-unique: IAM role names are unique per account, so the seed's ``IoTDataProcessorRole-<env>``
        collided when one env was deployed in two regions of an account."""
        return Sub("IoTDataProcessorRole-" + self.env() + "-${AWS::Region}")

    def rule_role_name(self) -> Sub:
        """Region-unique for the same reason as :meth:`processor_role_name` (seed: ``IoTRuleRole-<env>``)."""
        return Sub("IoTRuleRole-" + self.env() + "-${AWS::Region}")

    def function_name_pattern(self) -> str:
        """Lambda function name pattern (seed's), shared by the function, its log group and the dashboard."""
        return "iot-data-processor-" + self.env()

    def processor_log_group_name(self) -> Sub:
        """The processor's log group, where Lambda writes for the function name."""
        return Sub("/aws/lambda/" + self.function_name_pattern())

    def dead_letter_queue_name(self) -> Sub:
        """The processor's dead-letter queue."""
        return Sub("iot-data-processor-dlq-" + self.env())

    def endpoint_log_group_name(self) -> Sub:
        """Log group of the IoT endpoint lookup function."""
        return Sub("/aws/lambda/iot-endpoint-lookup-" + self.env())

    def rule_name_pattern(self) -> str:
        """IoT rule names allow letters, digits and underscores only."""
        return "SensorDataRule_" + self.env("_")

    def device_policy_name(self) -> Sub:
        """The IoT policy attached to device certificates."""
        return Sub("SensorDevicePolicy-" + self.env())

    def provisioning_template_name(self) -> str:
        """The fleet provisioning template (``Fn::Sub`` pattern); devices publish under
        ``$aws/provisioning-templates/<name>/provision/``."""
        return "iotpipe-claim-" + self.env()

    def claim_policy_name(self) -> Sub:
        """The IoT policy attached to claim certificates."""
        return Sub("iotpipe-claim-" + self.env())

    def fleet_table_name(self) -> Sub:
        """The allow-list table of provisioning by claim (serials and claim certificates)."""
        return Sub("iotpipe-fleet-" + self.env())

    def fleet_hook_name(self) -> Sub:
        """The pre-provisioning hook function."""
        return Sub("iotpipe-claim-hook-" + self.env())

    def thing_name(self) -> Sub:
        """The seed's sample thing."""
        return Sub("manufacturing-device-" + self.env())

    def alarm_topic_name(self) -> Sub:
        """The SNS topic every alarm notifies."""
        return Sub("iot-pipeline-alarms-" + self.env())

    def alarm_name(self, base: str) -> Sub:
        """An alarm's name: the seed's ``<name>-<env>``."""
        return Sub(base + "-" + self.env())

    def dashboard_name(self) -> Sub:
        """Region-unique: PutDashboard, "All dashboards in your account are global"."""
        return Sub("iot-pipeline-" + self.env() + "-${AWS::Region}")

    def key_alias_name(self) -> Sub:
        """The pipeline key's alias."""
        return Sub("alias/iotpipe-" + self.env())

    def analytics_database_name(self) -> Sub:
        """Glue database of the archive tables; Glue and Athena want lowercase letters, digits and underscores."""
        return Sub("iotpipe_" + self.env("_"))

    def analytics_workgroup_name(self) -> Sub:
        """Athena workgroup of ``iotpipe sql`` (workgroup names are unique per account and region)."""
        return Sub("iotpipe-" + self.env())


DEFAULT_NAMES = Names()
RULE_NAME_PATTERN = DEFAULT_NAMES.rule_name_pattern()


def sub(pattern: str) -> Sub:
    """``Fn::Sub`` of a name pattern that may use ``${EnvironmentSuffix}`` and pseudo parameters."""
    return Sub(pattern)


def rule_name(env: str) -> str:
    """The default pipeline's topic rule name in ``env`` (the EnvironmentSuffix is the env)."""
    return RULE_NAME_PATTERN.replace(ENV_REF, env)


def basic_ingest_topic_pattern(rule: str) -> str:
    """The Basic Ingest topic devices publish to for ``rule``: ``$aws/rules/<rule>/sensor/{deviceId}/data``."""
    return f"{BASIC_INGEST_PREFIX}{rule}/{TOPIC_PATTERN}"


def raw_bucket_name() -> Sub:
    """The default pipeline's raw bucket name (:meth:`Names.raw_bucket_name`)."""
    return DEFAULT_NAMES.raw_bucket_name()


def table_name() -> Sub:
    """The default pipeline's table name (:meth:`Names.table_name`)."""
    return DEFAULT_NAMES.table_name()


def processor_role_name() -> Sub:
    """The default pipeline's processor role name (:meth:`Names.processor_role_name`)."""
    return DEFAULT_NAMES.processor_role_name()


def rule_role_name() -> Sub:
    """The default pipeline's rule role name (:meth:`Names.rule_role_name`)."""
    return DEFAULT_NAMES.rule_role_name()


def dashboard_name() -> Sub:
    """The default pipeline's dashboard name (:meth:`Names.dashboard_name`)."""
    return DEFAULT_NAMES.dashboard_name()


def stream_name() -> Sub:
    """The default pipeline's stream name (:meth:`Names.stream_name`)."""
    return DEFAULT_NAMES.stream_name()


def function_name_pattern() -> str:
    """The default pipeline's function name pattern (:meth:`Names.function_name_pattern`)."""
    return DEFAULT_NAMES.function_name_pattern()


def analytics_database_name() -> Sub:
    """The default pipeline's Glue database name (:meth:`Names.analytics_database_name`)."""
    return DEFAULT_NAMES.analytics_database_name()


def analytics_workgroup_name() -> Sub:
    """The default pipeline's Athena workgroup name (:meth:`Names.analytics_workgroup_name`)."""
    return DEFAULT_NAMES.analytics_workgroup_name()


def export(suffix: str) -> Export:
    """The seed's export naming: ``<stack name>-<suffix>``."""
    return Export(Sub("${AWS::StackName}-" + suffix))


# AWS IoT's metric documentation ("Rule action metrics", metrics_dimensions) says "the ActionType dimension
# contains the type of action that was invoked" and defines it as "the action type specified by the rule",
# linking to the rule actions page, whose name in the API for Kinesis is `kinesis`; it lists no metric values.
# The rule-failure alarm and doctor therefore watch that name and the two other spellings in use (the
# CloudFormation property, `Kinesis`, and the error action message's `failedAction` form, `KinesisAction`).
KINESIS_ACTION_TYPES = ("kinesis", "Kinesis", "KinesisAction")
