"""Processor group: the Lambda function, its role, log group, dead-letter queue and Kinesis event source mapping."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from troposphere import AWSObject, GetAtt, Output, Ref, Sub, Tags, iam
from troposphere import awslambda as tplambda
from troposphere import logs as tplogs
from troposphere import sqs as tpsqs
from troposphere.policies import CodeDeployLambdaAliasUpdate, UpdatePolicy

from iotpipe import naming, policies
from iotpipe.config import PipelineConfig
from iotpipe.groups.keys import KeyGroup
from iotpipe.groups.storage import StorageGroup
from iotpipe.groups.stream import StreamGroup
from iotpipe.naming import DEFAULT_NAMES, Names
from iotpipe.package import processor_code

RAW_PREFIXES = naming.ARCHIVE_PREFIXES


@dataclass(frozen=True)
class ProcessorGroup:
    """What the processor group made, and the handles the monitoring group needs."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    function_name: Ref
    queue_name: GetAtt
    function_arn: GetAtt
    # processor.rollout other than all-at-once: the version this template publishes and the alias the mapping
    # invokes (the rollout group shifts the alias to the version); None otherwise.
    version: GetAtt | None = None
    alias: Ref | None = None


def build_processor(cfg: PipelineConfig, names: Names = DEFAULT_NAMES, *, keys: KeyGroup, stream: StreamGroup,
                    storage: StorageGroup) -> ProcessorGroup:
    """The processor wired to the stream, writing to the storage group's bucket and table."""
    log_group = _log_group(cfg, names, keys)
    queue = _dead_letter_queue(cfg, names)
    role = _role(cfg, names, keys=keys, stream=stream, storage=storage, log_group=log_group, queue=queue)
    function = _function(cfg, names, role=role, storage=storage, log_group=log_group, queue=queue)
    published = _published(names, function) if cfg.processor.rollout != "all-at-once" else ()
    target = Ref(published[1]) if published else GetAtt(function, "Arn")
    mapping = _mapping(cfg, names, stream=stream, target=target, queue=queue, storage=storage)
    outputs = (
        Output(names.output(naming.OUT_FUNCTION_NAME), Description="Lambda function name for data processing",
               Value=Ref(function), Export=names.export(naming.OUT_FUNCTION_NAME)),
        Output(names.output(naming.OUT_FUNCTION_ARN), Description="Lambda function ARN for data processing",
               Value=GetAtt(function, "Arn"), Export=names.export(naming.OUT_FUNCTION_ARN)),
        Output(names.output(naming.OUT_LOG_GROUP_NAME), Description="Log group of the processor",
               Value=Ref(log_group)),
        Output(names.output(naming.OUT_DLQ_URL), Description="Records of batches that exhausted their retries",
               Value=Ref(queue)),
    )
    return ProcessorGroup((role, function, log_group, queue, *published, mapping), outputs, Ref(function),
                          GetAtt(queue, "QueueName"), GetAtt(function, "Arn"),
                          GetAtt(published[0], "Version") if published else None,
                          Ref(published[1]) if published else None)


def _published(names: Names, function: tplambda.Function) -> tuple[tplambda.Version, tplambda.Alias]:
    """A version named by a hash of the function's properties, and the alias CodeDeploy shifts to it.

    As SAM's AutoPublishAlias: "the logical ID of the Version resource changes when the function's code or
    configuration changes" is how CloudFormation publishes a new version; a version snapshots configuration too,
    so the hash covers every property (SAM first hashed the code only, and an environment change then kept the
    alias on the old configuration).
    """
    # Properties only: a reworded checkov comment in Metadata is no new version and no rollout.
    properties = function.to_dict()["Properties"]
    digest = hashlib.sha256(json.dumps(properties, sort_keys=True).encode()).hexdigest()[:10]
    version = tplambda.Version(
        names.id(naming.PROCESSOR_VERSION) + digest,
        # Retained, as SAM does: CodeDeploy's rollback shifts the alias back to the previous version, which must
        # still exist; deleting the function deletes its versions.
        DeletionPolicy="Retain", UpdateReplacePolicy="Retain",
        FunctionName=Ref(function),
    )
    alias = tplambda.Alias(
        names.id(naming.PROCESSOR_ALIAS),
        FunctionName=Ref(function),
        FunctionVersion=GetAtt(version, "Version"),
        Name=naming.PROCESSOR_ALIAS_NAME,
        # "To perform an AWS CodeDeploy deployment when the version changes on an AWS::Lambda::Alias resource,
        # use the CodeDeployLambdaAliasUpdate update policy" (CloudFormation UpdatePolicy attribute).
        UpdatePolicy=UpdatePolicy(CodeDeployLambdaAliasUpdate=CodeDeployLambdaAliasUpdate(
            ApplicationName=Ref(names.id(naming.ROLLOUT_APPLICATION)),
            # These Refs are dependencies too (cfn-lint W3005): the deployment group, and through it the new
            # version's alarms, are updated before the shift starts.
            DeploymentGroupName=Ref(names.id(naming.ROLLOUT_DEPLOYMENT_GROUP)),
            # The rollout group's hook checks the new version against the vectors before any traffic shifts.
            BeforeAllowTrafficHook=Ref(names.id(naming.ROLLOUT_HOOK)))),
    )
    return version, alias


def processor_environment(cfg: PipelineConfig, storage: StorageGroup,
                          names: Names = DEFAULT_NAMES) -> dict[str, object]:
    """The processor's environment variables (the data contract's names), naming the storage group's table
    and bucket through its handles."""
    return {
        "DYNAMODB_TABLE": storage.table_name,
        "S3_BUCKET": storage.bucket_name,
        "ENVIRONMENT": names.metric_environment(),
        "METRIC_NAMESPACE": naming.METRIC_NAMESPACE,
        # One JSON map replaces the seed's five fixed variables: a new sensor type needs no code change.
        "THRESHOLDS": cfg.thresholds_json,
        "UNKNOWN_SENSOR": cfg.processor.unknown_sensor,
        "TTL_DAYS": str(cfg.storage.ttl_days),
        "STORAGE_LAYOUT": cfg.storage.layout,
        "PACK_WINDOW_SECONDS": str(cfg.storage.pack_window_seconds),
        # The monitoring group's topic (by logical id: it is built after this group); one notification per
        # anomaly episode (docs/contract.md 12).
        "ALARM_TOPIC_ARN": Ref(names.id(naming.ALARM_TOPIC)),
    }


def _log_group(cfg: PipelineConfig, names: Names, keys: KeyGroup) -> tplogs.LogGroup:
    return tplogs.LogGroup(
        names.id(naming.PROCESSOR_LOG_GROUP),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        LogGroupName=names.processor_log_group_name(),
        RetentionInDays=cfg.processor.log_retention_days,
        KmsKeyId=cfg.processor.log_kms_key_arn or keys.key_arn,
    )


def _dead_letter_queue(cfg: PipelineConfig, names: Names) -> tpsqs.Queue:
    return tpsqs.Queue(
        names.id(naming.PROCESSOR_DLQ),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        QueueName=names.dead_letter_queue_name(),
        MessageRetentionPeriod=cfg.processor.dlq_retention_days * 86400,
        KmsMasterKeyId="alias/aws/sqs",
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Processor-Dead-Letters"),
    )


def _role(cfg: PipelineConfig, names: Names, *, keys: KeyGroup, stream: StreamGroup, storage: StorageGroup,
          log_group: tplogs.LogGroup, queue: tpsqs.Queue) -> iam.Role:
    statements = [
        policies.log_writer(GetAtt(log_group, "Arn")),
        policies.stream_reader(stream.stream_arn),
        policies.table_writer(storage.table_arn),
        policies.state_reader(storage.table_arn),
        policies.object_writer(storage.bucket_arn, *RAW_PREFIXES),
        policies.queue_sender(GetAtt(queue, "Arn")),
        # Anomaly episodes to the alarm topic, encrypted with the pipeline's key (a publisher needs
        # kms:GenerateDataKey and kms:Decrypt on it, SNS developer guide, "Encryption at rest").
        policies.topic_publisher(Ref(names.id(naming.ALARM_TOPIC))),
        policies.key_user(keys.key_arn, policies.KMS_DECRYPT, policies.KMS_GENERATE_DATA_KEY, sid="EncryptAlarms"),
    ]
    if cfg.processor.on_failure == "s3":  # "s3:PutObject and s3:ListBucket" (Lambda guide, S3 destinations)
        statements += [policies.object_writer(storage.bucket_arn, naming.FAILURE_PREFIX, sid="WriteFailedBatches"),
                       policies.bucket_lister(storage.bucket_arn, naming.FAILURE_PREFIX, sid="ListFailedBatches")]
    if stream.customer_key_arn:
        statements.append(policies.key_user(stream.customer_key_arn, policies.KMS_DECRYPT,
                                            sid="DecryptStreamRecords"))
    if storage.table_key_arn:
        # A customer key's policy delegates to IAM; DynamoDB uses it on the caller's behalf.
        statements.append(policies.key_user(storage.table_key_arn, policies.KMS_DECRYPT,
                                            policies.KMS_GENERATE_DATA_KEY, sid="EncryptReadings"))
    # Seed attached AWSLambdaBasicExecutionRole (logs on "*") and granted PutMetricData/PutObjectAcl it
    # does not need; every statement here is scoped to one resource.
    return iam.Role(
        names.id(naming.PROCESSOR_ROLE),
        RoleName=names.processor_role_name(),
        AssumeRolePolicyDocument=policies.assume_role_by("lambda.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="DataProcessorPolicy", PolicyDocument=policies.document(*statements))],
        Tags=Tags(Environment=Ref(naming.ENV_PARAM)),
    )


def _function(cfg: PipelineConfig, names: Names, *, role: iam.Role, storage: StorageGroup,
              log_group: tplogs.LogGroup, queue: tpsqs.Queue) -> tplambda.Function:
    processor = cfg.processor
    return tplambda.Function(
        names.id(naming.PROCESSOR_FUNCTION),
        DeletionPolicy="Delete",
        FunctionName=Sub(names.function_name_pattern()),
        # Seed ran nodejs20.x on x86_64; the runtime is now configurable and arm64 is cheaper per ms.
        Runtime=processor.runtime,
        Architectures=[processor.architecture],
        Handler="index.handler",
        Role=GetAtt(role, "Arn"),
        Timeout=processor.timeout_seconds,
        MemorySize=processor.memory_mb,
        **_reserved_concurrency(processor.reserved_concurrency),
        Environment=tplambda.Environment(Variables=processor_environment(cfg, storage, names)),
        Code=processor_code(processor),
        # Bind the function to its declared log group, so Lambda never creates one with no retention.
        LoggingConfig=tplambda.LoggingConfig(LogGroup=Ref(log_group)),
        DeadLetterConfig=tplambda.DeadLetterConfig(TargetArn=GetAtt(queue, "Arn")),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Data-Processing"),
        Metadata={"checkov": {"skip": [
            {"id": "CKV_AWS_117", "comment": "Talks only to AWS APIs over TLS; a VPC would add NAT cost only."},
            {"id": "CKV_AWS_173", "comment": "Environment holds names and thresholds, no secrets."},
            *([] if processor.reserved_concurrency else [{
                "id": "CKV_AWS_115",
                "comment": "processor.reserved_concurrency = 0: the account cannot reserve concurrency yet "
                           "(it must keep 100 unreserved)."}]),
        ]}},
    )


def _reserved_concurrency(reserved: int) -> dict[str, int]:
    # 0 means none: "You can reserve up to the Unreserved account concurrency value minus 100" (Lambda guide),
    # so a new account with a limit of 10 fails the deploy with any reservation.
    return {"ReservedConcurrentExecutions": reserved} if reserved else {}


def _mapping(cfg: PipelineConfig, names: Names, *, stream: StreamGroup, target: GetAtt | Ref,
             queue: tpsqs.Queue, storage: StorageGroup) -> tplambda.EventSourceMapping:
    processor = cfg.processor
    return tplambda.EventSourceMapping(
        names.id(naming.EVENT_SOURCE_MAPPING),
        EventSourceArn=stream.stream_arn,
        # The function, or under a rollout its alias: each batch then goes to the one version the alias's
        # weights pick for that invocation (docs/deploying.md, "Safe rollout").
        FunctionName=target,
        # Seed used LATEST: readings published before the mapping was enabled were lost. StartingPosition is
        # create-only, so a stack migrated from the seed keeps LATEST (processor.starting_position).
        StartingPosition=processor.starting_position,
        BatchSize=processor.batch_size,
        MaximumBatchingWindowInSeconds=processor.batching_window_seconds,
        MaximumRetryAttempts=processor.max_retry_attempts,
        MaximumRecordAgeInSeconds=processor.max_record_age_seconds,
        BisectBatchOnFunctionError=True,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig=tplambda.DestinationConfig(
            OnFailure=tplambda.OnFailure(Destination=storage.bucket_arn if processor.on_failure == "s3"
                                         else GetAtt(queue, "Arn"))),
        ParallelizationFactor=processor.parallelization_factor,
        Enabled=True,
    )
