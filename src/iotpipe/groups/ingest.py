"""Ingest group: the IoT topic rule into Kinesis, its role, the device policy and a sample thing.

The rule's error action keeps messages it failed to deliver under ``rule-errors/`` in the raw bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import awacs.iot as awsiot
from awacs.aws import Allow, Bool, Condition, Statement
from troposphere import AWSObject, GetAtt, Output, Ref, Sub, Tags, iam
from troposphere import iot as tpiot

from iotpipe import naming, policies
from iotpipe.config import IngestConfig
from iotpipe.groups.endpoint import EndpointGroup
from iotpipe.groups.storage import StorageGroup
from iotpipe.groups.stream import StreamGroup
from iotpipe.naming import DEFAULT_NAMES, Names

THING = "${iot:Connection.Thing.ThingName}"
RULE_ERROR_PREFIX = "rule-errors/"


def rule_sql(topic_filter: str) -> str:
    """The rule's SQL (docs/contract.md): keeps the device's timestamp, adds the arrival time and the topic's
    device id."""
    return f"SELECT *, timestamp() AS receivedAt, topic(2) AS topicDeviceId FROM '{topic_filter}'"


RULE_SQL = rule_sql(naming.TOPIC_FILTER)


@dataclass(frozen=True)
class IngestGroup:
    """What the ingest group made, and the rule name the alarms watch."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    rule_name: Sub


def build_ingest(cfg: IngestConfig, names: Names = DEFAULT_NAMES, *, stream: StreamGroup, storage: StorageGroup,
                 endpoint: EndpointGroup) -> IngestGroup:
    """Rule and role into the stream, the per-thing device policy and the seed's sample thing.

    With ``cfg.basic_ingest`` devices publish to the rule's Basic Ingest topic (no messaging charge) instead of
    ``sensor/<thing>/data``, and the policy allows that topic only.
    """
    role = _rule_role(names, stream, storage)
    rule = _topic_rule(names, stream, storage, role)
    policy = _device_policy(names, cfg.basic_ingest)
    thing = _thing(names)
    outputs = (
        # Seed gave ${AWS::AccountId}.iot.${AWS::Region}.amazonaws.com, which is no endpoint; this is the one
        # DescribeEndpoint (iot:Data-ATS) returns.
        Output(names.output(naming.OUT_IOT_ENDPOINT), Description="IoT endpoint for device connections (iot:Data-ATS)",
               Value=endpoint.address, Export=names.export(naming.OUT_IOT_ENDPOINT)),
        Output(names.output(naming.OUT_THING_NAME), Description="IoT Thing name for manufacturing device",
               Value=Ref(thing), Export=names.export(naming.OUT_THING_NAME)),
        Output(names.output(naming.OUT_TOPIC_PATTERN), Description="MQTT topic pattern for publishing sensor data",
               Value=_publish_topic_pattern(names, cfg.basic_ingest), Export=names.export(naming.OUT_TOPIC_PATTERN)),
        Output(names.output(naming.OUT_DEVICE_POLICY), Description="IoT policy to attach to device certificates",
               Value=Ref(policy)),
    )
    return IngestGroup((role, rule, policy, thing), outputs, Sub(names.rule_name_pattern()))


def _publish_topic_pattern(names: Names, basic_ingest: bool) -> str | Sub:
    if not basic_ingest:
        return names.topic_pattern()
    # {deviceId} is no Fn::Sub variable; only ${EnvironmentSuffix} is substituted.
    return Sub(names.basic_ingest_topic_pattern())


def _rule_role(names: Names, stream: StreamGroup, storage: StorageGroup) -> iam.Role:
    statements = [
        policies.stream_writer(stream.stream_arn),
        policies.object_writer(storage.bucket_arn, RULE_ERROR_PREFIX, sid="KeepFailedMessages"),
    ]
    if stream.customer_key_arn:
        statements.append(policies.key_user(stream.customer_key_arn, policies.KMS_GENERATE_DATA_KEY,
                                            sid="EncryptStreamRecords"))
    return iam.Role(
        names.id(naming.RULE_ROLE),
        RoleName=names.rule_role_name(),
        AssumeRolePolicyDocument=policies.assume_role_by("iot.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="KinesisWritePolicy", PolicyDocument=policies.document(*statements))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )


def _topic_rule(names: Names, stream: StreamGroup, storage: StorageGroup, role: iam.Role) -> tpiot.TopicRule:
    return tpiot.TopicRule(
        names.id(naming.TOPIC_RULE),
        RuleName=Sub(names.rule_name_pattern()),
        TopicRulePayload=tpiot.TopicRulePayload(
            Description="Route sensor data from IoT devices to Kinesis stream",
            # Seed overwrote the device's own timestamp with the rule time; keep both.
            Sql=rule_sql(names.topic_filter()),
            AwsIotSqlVersion="2016-03-23",
            RuleDisabled=False,
            Actions=[tpiot.Action(Kinesis=tpiot.KinesisAction(
                StreamName=stream.stream_name,
                # Seed keyed on ${deviceId}: a payload without it failed the action and vanished.
                PartitionKey="${topic(2)}",
                RoleArn=GetAtt(role, "Arn"),
            ))],
            # Seed had no error action, so a failed Kinesis put lost the message silently; keep it instead.
            ErrorAction=tpiot.Action(S3=tpiot.S3Action(
                BucketName=storage.bucket_name,
                Key=RULE_ERROR_PREFIX + "${topic(2)}/${timestamp()}-${newuuid()}.json",
                RoleArn=GetAtt(role, "Arn"),
            )),
        ),
    )


def _iot_arn(kind: str, name: str) -> Sub:
    return Sub("arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:" + f"{kind}/{name}")


def _device_policy(names: Names, basic_ingest: bool = False) -> tpiot.Policy:
    thing = THING.replace("${", "${!")  # literal policy variable inside Fn::Sub
    # Seed let any device publish as any other (sensor/*/data); policy variables pin each to its own topics.
    # Basic Ingest: "verify that your device or application is using a policy that has publish permissions on
    # $aws/rules/rule_name" (Basic Ingest); the same policy variable keeps each device to its own id.
    own_topic = naming.device_topic(thing, names.topic_root)
    if basic_ingest:
        own_topic = f"{naming.BASIC_INGEST_PREFIX}{names.rule_name_pattern()}/{own_topic}"
    statements = [
        Statement(Sid="ConnectAsOwnThing", Effect=Allow, Action=[awsiot.Connect],
                  Resource=[_iot_arn("client", thing)],
                  Condition=Condition(Bool("iot:Connection.Thing.IsAttached", "true"))),
        Statement(Sid="PublishOwnReadings", Effect=Allow, Action=[awsiot.Publish],
                  Resource=[_iot_arn("topic", own_topic)]),
        Statement(Sid="SubscribeOwnCommands", Effect=Allow, Action=[awsiot.Subscribe],
                  Resource=[_iot_arn("topicfilter", naming.command_topic(thing, names.topic_root))]),
        Statement(Sid="ReceiveOwnCommands", Effect=Allow, Action=[awsiot.Receive],
                  Resource=[_iot_arn("topic", naming.command_topic(thing, names.topic_root))]),
    ]
    return tpiot.Policy(names.id(naming.DEVICE_POLICY), PolicyName=names.device_policy_name(),
                        PolicyDocument=policies.document(*statements))


def _thing(names: Names) -> tpiot.Thing:
    return tpiot.Thing(
        names.id(naming.DEVICE_THING),
        ThingName=names.thing_name(),
        AttributePayload=tpiot.AttributePayload(Attributes={
            "deviceType": "sensor",
            "location": "manufacturing-floor",
            "environment": Ref(naming.ENV_PARAM),
        }),
    )
