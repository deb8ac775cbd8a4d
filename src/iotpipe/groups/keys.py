"""Keys group: the pipeline's customer-managed KMS key for the alarm topic, the log group and the table."""

from __future__ import annotations

from dataclasses import dataclass

import awacs.kms as kms
from awacs.aws import Allow, ArnLike, Condition, Principal, Statement, StringEquals
from troposphere import AccountId, AWSObject, GetAtt, Output, Ref, Sub, Tags
from troposphere import kms as tpkms

from iotpipe import naming, policies
from iotpipe.naming import DEFAULT_NAMES, Names


@dataclass(frozen=True)
class KeyGroup:
    """The pipeline key and its ARN for the groups that encrypt with it."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    key_arn: GetAtt


def build_keys(names: Names = DEFAULT_NAMES) -> KeyGroup:
    """One rotating customer-managed key (about $1 a month) that CloudWatch Logs and alarms may use.

    CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed aws/sns key, and log groups
    can only be KMS-encrypted with a customer key whose policy lets CloudWatch Logs in.
    """
    key = tpkms.Key(
        names.id(naming.PIPELINE_KEY),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        Description=Sub("iotpipe pipeline key (${EnvironmentSuffix}): alarm topic and processor logs"),
        EnableKeyRotation=True,
        PendingWindowInDays=7,
        KeyPolicy=_key_policy(),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )
    alias = tpkms.Alias(names.id(naming.PIPELINE_KEY_ALIAS), AliasName=names.key_alias_name(), TargetKeyId=Ref(key))
    outputs = (Output(names.output(naming.OUT_KEY_ARN), Description="KMS key of the alarm topic and the processor logs",
                      Value=GetAtt(key, "Arn")),)
    return KeyGroup((key, alias), outputs, GetAtt(key, "Arn"))


# CloudWatch Logs KMS guide: the key policy actions for the logs service principal.
LOGS_KEY_ACTIONS = ("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*")


def _key_policy() -> object:
    # A key policy's Resource is always "*": it means this key.
    root = Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")
    log_groups = Sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*")
    logs_service = Sub("logs.${AWS::Region}.amazonaws.com")
    logs_actions = [kms.Action(action.split(":", 1)[1]) for action in LOGS_KEY_ACTIONS]
    return policies.document(
        Statement(Sid="AccountAdministers", Effect=Allow, Principal=Principal("AWS", [root]),
                  Action=[kms.Action("*")], Resource=["*"]),
        # The topic policy pins alarms to this account; without the same pins here, another account's alarm
        # could have CloudWatch use this key on its behalf (confused deputy).
        Statement(Sid="CloudWatchAlarmsPublish", Effect=Allow,
                  Principal=Principal("Service", ["cloudwatch.amazonaws.com"]),
                  Action=[kms.Decrypt, kms.GenerateDataKey], Resource=["*"],
                  Condition=Condition([
                      StringEquals("aws:SourceAccount", AccountId),
                      ArnLike("aws:SourceArn",
                              Sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*")),
                  ])),
        # CloudWatch Logs KMS guide: the documented actions, limited by the encryption context to this
        # account's log groups in this region.
        Statement(Sid="CloudWatchLogsEncrypt", Effect=Allow,
                  Principal=Principal("Service", [logs_service]),
                  Action=logs_actions,
                  Resource=["*"],
                  Condition=Condition(ArnLike("kms:EncryptionContext:aws:logs:arn", log_groups))),
        # The current guide also has principals that call CloudWatch Logs (CreateLogGroup with a key, as
        # CloudFormation does for the deploying principal) use the key through logs only (kms:ViaService);
        # the deploying principal's IAM policy must allow the same (docs/deploying.md).
        Statement(Sid="AccountPrincipalsThroughLogs", Effect=Allow, Principal=Principal("AWS", [root]),
                  Action=logs_actions, Resource=["*"],
                  Condition=Condition([
                      StringEquals("kms:ViaService", logs_service),
                      ArnLike("kms:EncryptionContext:aws:logs:arn", log_groups),
                  ])),
    )
