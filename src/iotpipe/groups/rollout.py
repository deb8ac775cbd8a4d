"""Rollout group: the CodeDeploy application, deployment group, service role and alarms that shift the
processor's alias to a new version gradually and roll back by themselves (``processor.rollout``).

Nothing is made under ``all-at-once``. Otherwise the processor group publishes a version per change and points
the event source mapping at its alias, whose ``CodeDeployLambdaAliasUpdate`` update policy names this group's
application and deployment group, and its ``BeforeAllowTrafficHook`` this group's pre-traffic hook
(:mod:`iotpipe.pretraffic`).
"""

from __future__ import annotations

from dataclasses import dataclass

import awacs.awslambda as awacs_lambda
import awacs.cloudwatch as awacs_cw
import awacs.codedeploy as awacs_cd
import awacs.s3 as awacs_s3
from awacs.aws import Allow, Condition, Statement, StringLike
from troposphere import AWSObject, GetAtt, Output, Ref, Sub, Tags, iam
from troposphere import awslambda as tplambda
from troposphere import cloudwatch as cw
from troposphere import codedeploy as cd

from iotpipe import naming, package, policies, pretraffic
from iotpipe.config import ROLLOUTS, PipelineConfig
from iotpipe.groups.monitoring import MonitoringGroup
from iotpipe.groups.processor import ProcessorGroup
from iotpipe.naming import DEFAULT_NAMES, Names


@dataclass(frozen=True)
class RolloutGroup:
    """What the rollout group made (nothing under all-at-once)."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]


def build_rollout(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, processor: ProcessorGroup,
                  monitoring: MonitoringGroup) -> RolloutGroup:
    """CodeDeploy's application and deployment group for the processor's alias, with the alarms that stop it."""
    if processor.version is None or processor.alias is None:
        return RolloutGroup((), ())
    sample = pretraffic.hook_sample(pretraffic.shipped_vectors())
    alarms = (*_alarms(cfg, names, processor, monitoring.alarm_topic),
              _quarantine_alarm(cfg, names, len(sample["records"]), monitoring.alarm_topic))
    rollback_alarms = [Ref(alarm) for alarm in alarms]
    hook = _hook(cfg, names, processor)
    role = _role(names, processor, alarms, hook)
    application = cd.Application(names.id(naming.ROLLOUT_APPLICATION), ComputePlatform="Lambda",
                                 Tags=Tags(Environment=Ref(naming.ENV_PARAM)))
    group = cd.DeploymentGroup(
        names.id(naming.ROLLOUT_DEPLOYMENT_GROUP),
        ApplicationName=Ref(application),
        ServiceRoleArn=GetAtt(role, "Arn"),
        DeploymentConfigName=ROLLOUTS[cfg.processor.rollout],
        # Lambda deployments are blue/green with traffic control (CodeDeploy API, DeploymentStyle).
        DeploymentStyle=cd.DeploymentStyle(DeploymentType="BLUE_GREEN", DeploymentOption="WITH_TRAFFIC_CONTROL"),
        AutoRollbackConfiguration=cd.AutoRollbackConfiguration(
            Enabled=True, Events=["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]),
        AlarmConfiguration=cd.AlarmConfiguration(Enabled=True,
                                                 Alarms=[cd.Alarm(Name=name) for name in rollback_alarms]),
    )
    return RolloutGroup((*alarms, role, application, group, *_hook_resources(names, processor, hook)), ())


def alias_arn(processor: ProcessorGroup) -> Sub:
    """The alias's ARN spelled from the function's (a Ref to the alias would make the role depend on it)."""
    return Sub("${Function}:" + naming.PROCESSOR_ALIAS_NAME, Function=processor.function_arn)


def _alarms(cfg: PipelineConfig, names: Names, processor: ProcessorGroup, topic: Ref) -> tuple[cw.Alarm, ...]:
    # Lambda publishes alias invocations under FunctionName, Resource (function:alias) and ExecutedVersion:
    # the new version's own errors and lag, not the old version's.
    dimensions = [
        cw.MetricDimension(Name="FunctionName", Value=processor.function_name),
        cw.MetricDimension(Name="Resource", Value=Sub("${Function}:" + naming.PROCESSOR_ALIAS_NAME,
                                                      Function=processor.function_name)),
        cw.MetricDimension(Name="ExecutedVersion", Value=processor.version),
    ]
    limits = cfg.alarms

    def alarm(logical_id: str, name: str, description: str, metric: str, statistic: str,
              threshold: float) -> cw.Alarm:
        return cw.Alarm(
            names.id(logical_id), AlarmName=names.alarm_name(name), AlarmDescription=description,
            Namespace="AWS/Lambda", MetricName=metric, Statistic=statistic, Dimensions=dimensions,
            # One minute: a canary step is a few minutes long, and CodeDeploy polls the alarms during it.
            Period=60, EvaluationPeriods=1, Threshold=threshold, ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching", AlarmActions=[topic], OKActions=[topic])

    return (
        alarm(naming.ROLLOUT_ERROR_ALARM, "IoT-Rollout-Errors",
              "The processor version being rolled out failed invocations; CodeDeploy rolls the alias back",
              "Errors", "Sum", 0),
        alarm(naming.ROLLOUT_ITERATOR_AGE_ALARM, "IoT-Rollout-Iterator-Age",
              "The processor version being rolled out falls behind the stream; CodeDeploy rolls the alias back",
              "IteratorAge", "Maximum", limits.iterator_age_ms),
    )


def _quarantine_alarm(cfg: PipelineConfig, names: Names, hook_records: int, topic: Ref) -> cw.Alarm:
    # Quarantines roll back too: the processor's RecordsQuarantined metric carries no version dimension, so it
    # counts both versions' records (a rise during a shift is the new version's). As the pipeline's quarantine
    # alarm, plus the records the pre-traffic hook has quarantined on purpose (that alarm fires at each release).
    return cw.Alarm(
        names.id(naming.ROLLOUT_QUARANTINE_ALARM), AlarmName=names.alarm_name("IoT-Rollout-Quarantined"),
        AlarmDescription="Quarantines beyond the pre-traffic hook's; CodeDeploy rolls the alias back",
        Namespace=naming.METRIC_NAMESPACE, MetricName=naming.METRIC_QUARANTINED, Statistic="Sum",
        Dimensions=[cw.MetricDimension(Name="Environment", Value=names.metric_environment())],
        Period=cfg.alarms.period_seconds, EvaluationPeriods=1, Threshold=cfg.alarms.quarantined_records + hook_records,
        ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching", AlarmActions=[topic],
        OKActions=[topic])


def _hook(cfg: PipelineConfig, names: Names, processor: ProcessorGroup) -> tplambda.Function:
    # stdlib + boto3, packaged as the processor is; NEW_VERSION is the Version's Ref (its ARN), as SAM passes it.
    version = Ref(_version_id(processor))
    return tplambda.Function(
        names.id(naming.ROLLOUT_HOOK),
        Description="Checks a new processor version against the shared vectors and recent traffic",
        Runtime="python3.13", Architectures=["arm64"], Handler="index.handler", MemorySize=128,
        Role=GetAtt(names.id(naming.ROLLOUT_HOOK_ROLE), "Arn"),
        Timeout=120,
        Code=package.hook_code(cfg.processor),
        Environment=tplambda.Environment(Variables={"NEW_VERSION": version,
                                                    "ARCHIVE_BUCKET": Ref(names.id(naming.RAW_BUCKET))}),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
        Metadata={"checkov": {"skip": [
            {"id": "CKV_AWS_115", "comment": "Runs once per rollout."},
            {"id": "CKV_AWS_116", "comment": "It reports its own result to CodeDeploy."},
            {"id": "CKV_AWS_117", "comment": "Calls three AWS APIs; a VPC adds NAT cost only."},
            {"id": "CKV_AWS_173", "comment": "A version ARN, no secret."},
        ]}},
    )


def _hook_resources(names: Names, processor: ProcessorGroup, hook: tplambda.Function) -> tuple[AWSObject, ...]:
    # Invoke only the version being rolled out; report only on this stack's application's (one) deployment
    # group: naming the group would close a loop (group -> its role -> this hook -> this role -> group).
    group_arn = Sub("arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:"
                    "${Application}/*", Application=Ref(names.id(naming.ROLLOUT_APPLICATION)))
    bucket_arn = GetAtt(names.id(naming.RAW_BUCKET), "Arn")
    statements = [
        Statement(Sid="InvokeNewVersion", Effect=Allow, Action=[awacs_lambda.InvokeFunction],
                  Resource=[Ref(_version_id(processor))]),
        Statement(Sid="ReportHookStatus", Effect=Allow, Action=[awacs_cd.PutLifecycleEventHookExecutionStatus],
                  Resource=[group_arn]),
        # Recent traffic: list the raw archive's hour partitions and look for a raw object's quarantine; read raw.
        Statement(Sid="ListRawArchive", Effect=Allow, Action=[awacs_s3.ListBucket], Resource=[bucket_arn],
                  Condition=Condition(StringLike("s3:prefix", [p + "*" for p in naming.ARCHIVE_PREFIXES]))),
        Statement(Sid="ReadRecentArchive", Effect=Allow, Action=[awacs_s3.GetObject],
                  Resource=[Sub("${Bucket}/" + naming.ARCHIVE_PREFIXES[0] + "*", Bucket=bucket_arn)]),
    ]
    role = iam.Role(
        names.id(naming.ROLLOUT_HOOK_ROLE),
        AssumeRolePolicyDocument=policies.assume_role_by("lambda.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="PreTrafficHookPolicy", PolicyDocument=policies.document(*statements))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )
    return role, hook


def _version_id(processor: ProcessorGroup) -> str:
    """The logical id of the processor's Version (``processor.version`` is its GetAtt Version)."""
    assert processor.version is not None
    return str(processor.version.data["Fn::GetAtt"][0])


def _role(names: Names, processor: ProcessorGroup, alarms: tuple[cw.Alarm, ...],
          hook: tplambda.Function) -> iam.Role:
    # Scoped statements instead of AWSCodeDeployRoleForLambda (lambda:UpdateAlias and cloudwatch:DescribeAlarms
    # on "*", sns:Publish, s3:GetObject): a Lambda deployment reads and moves this alias, reads these alarms.
    alarm_arns = [GetAtt(alarm, "Arn") for alarm in alarms]
    statements = [
        Statement(Sid="ShiftProcessorAlias", Effect=Allow,
                  Action=[awacs_lambda.GetAlias, awacs_lambda.UpdateAlias,
                          awacs_lambda.GetProvisionedConcurrencyConfig],
                  Resource=[alias_arn(processor)]),
        Statement(Sid="ReadRollbackAlarms", Effect=Allow, Action=[awacs_cw.DescribeAlarms], Resource=alarm_arns),
        # CodeDeploy runs the BeforeAllowTraffic hook with this role.
        Statement(Sid="RunPreTrafficHook", Effect=Allow, Action=[awacs_lambda.InvokeFunction],
                  Resource=[GetAtt(hook, "Arn")]),
    ]
    return iam.Role(
        names.id(naming.ROLLOUT_ROLE),
        AssumeRolePolicyDocument=policies.assume_role_by("codedeploy.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="ProcessorRolloutPolicy", PolicyDocument=policies.document(*statements))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )
