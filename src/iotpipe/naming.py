"""The template's names: :class:`Names` (logical ids, physical names as ``Fn::Sub``, output keys and exports of
one pipeline in a template) and the default pipeline's names. The constants they are built from are the
contract's (``iotpipe.contract``, stdlib only), re-exported here for the groups.

Ids and names equal the seed's so a stack deployed from the seed template can update. :class:`Names` adds a
prefix for a second pipeline in the same template; its defaults reproduce the ids and names below exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import Export, Ref, Sub

# The contract's constants stay reachable as ``naming.<NAME>`` for the template's groups; code that needs no
# template imports ``iotpipe.contract`` and never loads troposphere.
from iotpipe.contract import *  # noqa: F403
from iotpipe.contract import (
    BASIC_INGEST_PREFIX,
    ENV_PARAM,
    ENV_REF,
    EXPORTS,
    PREFIX_PATTERN,
    TOPIC_ROOT,
    TOPIC_ROOT_PATTERN,
    device_topic,
)
from iotpipe.errors import ConfigError


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
        if not TOPIC_ROOT_PATTERN.fullmatch(self.topic_root):
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


def sub(pattern: str) -> Sub:
    """``Fn::Sub`` of a name pattern that may use ``${EnvironmentSuffix}`` and pseudo parameters."""
    return Sub(pattern)


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
