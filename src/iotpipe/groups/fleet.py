"""Fleet group: provisioning by claim (``fleet.provisioning_by_claim``) and the Device Defender audit
(``fleet.device_defender_audit``); nothing is made when both are off.

Provisioning by claim: devices flashed with a shared claim certificate connect under the claim policy (only the
fleet provisioning topics), call CreateKeysAndCertificate and RegisterThing with the provisioning template below;
its pre-provisioning hook (:mod:`iotpipe.provisioning_hook`) allows a serial only when the operator put it on the
allow-list table (``iotpipe fleet allow``) and the claim certificate is registered and unexpired; the template then
creates the thing named from the serial, attaches the device policy to the new certificate and activates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import awacs.dynamodb as awacs_ddb
import awacs.iot as awsiot
import awacs.sns as awacs_sns
from awacs.aws import Allow, Statement
from troposphere import AccountId, AWSObject, GetAtt, Output, Ref, Sub, Tags, iam
from troposphere import awslambda as tplambda
from troposphere import dynamodb as ddb
from troposphere import iot as tpiot
from troposphere import logs as tplogs

from iotpipe import devices, naming, policies
from iotpipe.config import PipelineConfig
from iotpipe.groups.keys import KeyGroup
from iotpipe.groups.monitoring import MonitoringGroup
from iotpipe.naming import DEFAULT_NAMES, Names

HOOK_SOURCE = Path(__file__).resolve().parents[1] / "provisioning_hook.py"
SERIAL_PARAMETER = "SerialNumber"
CERTIFICATE_PARAMETER = "AWS::IoT::Certificate::Id"
# The check AWS names for certificates that expire within 30 days.
EXPIRY_CHECK = "DEVICE_CERTIFICATE_EXPIRING_CHECK"
# AWS IoT's fleet provisioning topics (Device provisioning MQTT API); the claim policy allows these only.
CREATE_TOPICS = "$aws/certificates/create/*"


def provision_topics(template_name: str) -> str:
    """The RegisterThing topics of one template: ``$aws/provisioning-templates/<name>/provision/*``."""
    return f"$aws/provisioning-templates/{template_name}/provision/*"


@dataclass(frozen=True)
class FleetGroup:
    """What the fleet group made (nothing when provisioning by claim and the audit are off)."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]


def build_fleet(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, keys: KeyGroup,
                monitoring: MonitoringGroup) -> FleetGroup:
    """The provisioning template, hook, allow-list, claim policy and roles; the audit configuration and schedule."""
    resources: list[AWSObject] = []
    outputs: list[Output] = []
    if cfg.fleet.provisioning_by_claim:
        made, made_outputs = _provisioning(cfg, names, keys)
        resources += made
        outputs += made_outputs
    if cfg.fleet.device_defender_audit:
        resources += _audit(cfg, names, keys, monitoring)
    return FleetGroup(tuple(resources), tuple(outputs))


def template_body(names: Names = DEFAULT_NAMES) -> str:
    """The provisioning template's body (a ``Fn::Sub`` pattern over ``${EnvironmentSuffix}``): the thing is named
    from the serial, the device policy is attached to the new certificate, which is activated."""
    policy_name = names.device_policy_name().data["Fn::Sub"]
    body = {
        "Parameters": {SERIAL_PARAMETER: {"Type": "String"}, CERTIFICATE_PARAMETER: {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Ref": SERIAL_PARAMETER},
                # environment and managedBy as `device register` sets them: `device list`, `rotate`, `audit` and
                # `revoke` then treat a device provisioned by claim as one of the env's.
                "AttributePayload": {"serial": {"Ref": SERIAL_PARAMETER}, "provisionedBy": "claim",
                                     "environment": f"${{{naming.ENV_PARAM}}}", "managedBy": devices.MANAGED_BY}}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateId": {"Ref": CERTIFICATE_PARAMETER}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name}},
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def hook_code() -> str:
    """The pre-provisioning hook's source, as inlined (docstring dropped: the 4 KB ZipFile limit)."""
    text = HOOK_SOURCE.read_text(encoding="utf-8")
    return text[text.index('"""', 3) + 3:].lstrip("\n")


def _iot_arn(kind: str, name: str) -> Sub:
    return Sub("arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:" + f"{kind}/{name}")


def _provisioning(cfg: PipelineConfig, names: Names, keys: KeyGroup) -> tuple[list[AWSObject], list[Output]]:
    template_name = names.provisioning_template_name()
    template_arn = _iot_arn("provisioningtemplate", template_name)
    table = ddb.Table(
        names.id(naming.FLEET_TABLE), DeletionPolicy="Delete", UpdateReplacePolicy="Delete",
        TableName=names.fleet_table_name(), BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[ddb.AttributeDefinition(AttributeName="id", AttributeType="S")],
        KeySchema=[ddb.KeySchema(AttributeName="id", KeyType="HASH")],
        PointInTimeRecoverySpecification=ddb.PointInTimeRecoverySpecification(PointInTimeRecoveryEnabled=True),
        SSESpecification=ddb.SSESpecification(SSEEnabled=True, SSEType="KMS"),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
        Metadata={"checkov": {"skip": [{"id": "CKV_AWS_119", "comment": "AWS-managed key, as the readings table."}]}},
    )
    log_group = tplogs.LogGroup(
        names.id(naming.FLEET_HOOK_LOG_GROUP), DeletionPolicy="Delete", UpdateReplacePolicy="Delete",
        LogGroupName=Sub("/aws/lambda/${Name}", Name=names.fleet_hook_name()),
        RetentionInDays=cfg.processor.log_retention_days, KmsKeyId=cfg.processor.log_kms_key_arn or keys.key_arn)
    hook_role = iam.Role(
        names.id(naming.FLEET_HOOK_ROLE),
        AssumeRolePolicyDocument=policies.assume_role_by("lambda.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="PreProvisioningHookPolicy", PolicyDocument=policies.document(
            Statement(Sid="ReadAllowList", Effect=Allow, Action=[awacs_ddb.BatchGetItem],
                      Resource=[GetAtt(table, "Arn")]),
            policies.log_writer(Sub("${Group}:*", Group=GetAtt(log_group, "Arn")), sid="WriteHookLogs")))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )
    hook = tplambda.Function(
        names.id(naming.FLEET_HOOK), FunctionName=names.fleet_hook_name(),
        Description="Fleet provisioning: allows listed serials with a registered, unexpired claim certificate",
        Runtime="python3.13", Architectures=["arm64"], Handler="index.handler", MemorySize=128,
        # AWS IoT waits 5 s for a pre-provisioning hook.
        Timeout=4, Role=GetAtt(hook_role, "Arn"), Code=tplambda.Code(ZipFile=hook_code()),
        Environment=tplambda.Environment(Variables={"ALLOW_TABLE": Ref(table)}),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)), DependsOn=[log_group.title],
        Metadata={"checkov": {"skip": [
            {"id": "CKV_AWS_115", "comment": "Called once per device provisioning."},
            {"id": "CKV_AWS_116", "comment": "AWS IoT calls it synchronously; a failure refuses the device."},
            {"id": "CKV_AWS_117", "comment": "Reads one DynamoDB table; a VPC adds NAT cost only."},
            {"id": "CKV_AWS_173", "comment": "A table name, no secret."},
        ]}},
    )
    permission = tplambda.Permission(
        names.id(naming.FLEET_HOOK_PERMISSION), FunctionName=GetAtt(hook, "Arn"), Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com", SourceArn=template_arn, SourceAccount=AccountId)
    role = _provisioning_role(names)
    template = tpiot.ProvisioningTemplate(
        names.id(naming.FLEET_TEMPLATE), TemplateName=Sub(template_name),
        Description="iotpipe provisioning by claim: a thing per serial with the device policy",
        Enabled=True, ProvisioningRoleArn=GetAtt(role, "Arn"), TemplateBody=Sub(template_body(names)),
        PreProvisioningHook=tpiot.ProvisioningHook(TargetArn=GetAtt(hook, "Arn"), PayloadVersion="2020-04-01"),
        DependsOn=[permission.title],
    )
    claim_policy = tpiot.Policy(
        names.id(naming.FLEET_CLAIM_POLICY), PolicyName=names.claim_policy_name(),
        PolicyDocument=policies.document(*claim_statements(names)))
    outputs = [
        Output(names.output(naming.OUT_FLEET_TEMPLATE), Description="Fleet provisioning template of claim devices",
               # The name, not Ref: moto's CloudFormation has no provisioning templates (iotpipe local emulates it).
               Value=Sub(template_name)),
        Output(names.output(naming.OUT_FLEET_TABLE), Description="Allow-list table of provisioning by claim",
               Value=Ref(table)),
        Output(names.output(naming.OUT_FLEET_CLAIM_POLICY), Description="IoT policy of claim certificates",
               Value=Ref(claim_policy)),
        Output(names.output(naming.OUT_FLEET_HOOK), Description="Pre-provisioning hook function", Value=Ref(hook)),
    ]
    return [table, log_group, hook_role, hook, permission, role, template, claim_policy], outputs


def claim_statements(names: Names = DEFAULT_NAMES) -> tuple[Statement, ...]:
    """The claim policy: the fleet provisioning topics only (publish and receive on topics, subscribe on topic
    filters). A claim device has no thing yet, so Connect cannot pin the client id to a thing name."""
    topics = (CREATE_TOPICS, provision_topics(names.provisioning_template_name()))
    return (
        Statement(Sid="ConnectToClaim", Effect=Allow, Action=[awsiot.Connect], Resource=[_iot_arn("client", "*")]),
        Statement(Sid="ProvisioningRequests", Effect=Allow, Action=[awsiot.Publish, awsiot.Receive],
                  Resource=[_iot_arn("topic", topic) for topic in topics]),
        Statement(Sid="ProvisioningReplies", Effect=Allow, Action=[awsiot.Subscribe],
                  Resource=[_iot_arn("topicfilter", topic) for topic in topics]),
    )


def _provisioning_role(names: Names) -> iam.Role:
    # What the template's three resources need, as AWS's AWSIoTThingsRegistration lists them, scoped to this
    # stack's device policy and to things and certificates (their names come from the device).
    thing_arn = _iot_arn("thing", "*")
    cert_arn = _iot_arn("cert", "*")
    policy_arn = Sub("arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:policy/${Name}",
                     Name=names.device_policy_name())
    statements = [
        Statement(Sid="CreateThings", Effect=Allow,
                  Action=[awsiot.CreateThing, awsiot.DescribeThing, awsiot.UpdateThing, awsiot.ListThingPrincipals,
                          awsiot.AttachThingPrincipal],
                  Resource=[thing_arn]),
        Statement(Sid="ActivateCertificates", Effect=Allow,
                  Action=[awsiot.DescribeCertificate, awsiot.UpdateCertificate, awsiot.AttachThingPrincipal,
                          awsiot.ListAttachedPolicies, awsiot.ListPrincipalThings],
                  Resource=[cert_arn]),
        Statement(Sid="AttachDevicePolicy", Effect=Allow, Action=[awsiot.GetPolicy, awsiot.AttachPolicy],
                  Resource=[policy_arn, cert_arn]),
    ]
    return iam.Role(
        names.id(naming.FLEET_ROLE),
        AssumeRolePolicyDocument=policies.assume_role_by("iot.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="FleetProvisioningPolicy", PolicyDocument=policies.document(*statements))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )


def _audit(cfg: PipelineConfig, names: Names, keys: KeyGroup, monitoring: MonitoringGroup) -> list[AWSObject]:
    # The audit reads the account's certificates (list calls take no resource ARN) and notifies the alarm topic,
    # which is encrypted with the pipeline key.
    role = iam.Role(
        names.id(naming.AUDIT_ROLE),
        AssumeRolePolicyDocument=policies.assume_role_by("iot.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="DeviceDefenderAuditPolicy", PolicyDocument=policies.document(
            Statement(Sid="ListCertificates", Effect=Allow, Action=[awsiot.ListCertificates], Resource=["*"]),
            Statement(Sid="ReadCertificates", Effect=Allow, Action=[awsiot.DescribeCertificate],
                      Resource=[_iot_arn("cert", "*")]),
            Statement(Sid="NotifyAlarmTopic", Effect=Allow, Action=[awacs_sns.Publish],
                      Resource=[monitoring.alarm_topic]),
            policies.key_user(keys.key_arn, policies.KMS_GENERATE_DATA_KEY, policies.KMS_DECRYPT,
                              sid="EncryptNotifications")))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
        Metadata={"iotpipe": {"wildcard-resources": {"ListCertificates": (
            "iot:ListCertificates has no resource type in the Service Authorization Reference: IAM authorizes it "
            "against \"*\" only")}}},
    )
    configuration = tpiot.AccountAuditConfiguration(
        names.id(naming.AUDIT_CONFIGURATION), AccountId=AccountId, RoleArn=GetAtt(role, "Arn"),
        AuditCheckConfigurations=tpiot.AuditCheckConfigurations(
            DeviceCertificateExpiringCheck=tpiot.DeviceCertExpirationAuditCheckConfiguration(Enabled=True)),
        AuditNotificationTargetConfigurations=tpiot.AuditNotificationTargetConfigurations(
            Sns=tpiot.AuditNotificationTarget(Enabled=True, RoleArn=GetAtt(role, "Arn"),
                                              TargetArn=monitoring.alarm_topic)),
    )
    schedule = tpiot.ScheduledAudit(
        names.id(naming.AUDIT_SCHEDULE), Frequency=cfg.fleet.audit_frequency,
        **({"DayOfWeek": "MON"} if cfg.fleet.audit_frequency in ("WEEKLY", "BIWEEKLY") else {}),
        **({"DayOfMonth": "1"} if cfg.fleet.audit_frequency == "MONTHLY" else {}),
        TargetCheckNames=[EXPIRY_CHECK], DependsOn=[configuration.title],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)))
    return [role, configuration, schedule]
