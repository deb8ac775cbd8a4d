"""Storage group: the raw-data archive bucket (and its access-log bucket) and the readings table."""

from __future__ import annotations

from dataclasses import dataclass

import awacs.s3 as s3
from awacs.aws import Allow, ArnEquals, Condition, Principal, Statement, StringEquals
from troposphere import AccountId, AWSObject, GetAtt, Output, Ref, Tags
from troposphere import dynamodb as ddb
from troposphere import s3 as tps3

from iotpipe import naming
from iotpipe.config import StorageConfig
from iotpipe.naming import DEFAULT_NAMES, Names
from iotpipe.policies import deny_insecure_transport, document, under

AWS_MANAGED_DYNAMODB_KEY = "alias/aws/dynamodb"


@dataclass(frozen=True)
class StorageGroup:
    """What the storage group made, and the handles later groups need."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]
    bucket_arn: GetAtt
    bucket_name: Ref
    table_arn: GetAtt
    table_name: Ref
    # The table's customer-managed KMS key ARN ("" for the AWS-managed key): writers need a grant on it.
    table_key_arn: str = ""


def build_storage(cfg: StorageConfig, names: Names = DEFAULT_NAMES) -> StorageGroup:
    """The raw bucket (versioned, logged, TLS-only), its access-log bucket and the readings table."""
    log_bucket = _access_log_bucket(cfg, names)
    bucket = _raw_bucket(cfg, names, log_bucket)
    table = _table(cfg, names)
    resources = (
        bucket,
        _tls_only_policy(names.id(naming.RAW_BUCKET_POLICY), bucket),
        log_bucket,
        _access_log_bucket_policy(names, log_bucket, bucket),
        table,
    )
    outputs = (
        Output(names.output(naming.OUT_TABLE_NAME), Description="DynamoDB table name for sensor data",
               Value=Ref(table), Export=names.export(naming.OUT_TABLE_NAME)),
        Output(names.output(naming.OUT_BUCKET_NAME), Description="S3 bucket name for raw sensor data",
               Value=Ref(bucket), Export=names.export(naming.OUT_BUCKET_NAME)),
        Output(names.output(naming.OUT_ANOMALY_INDEX), Description="Sparse index of anomalous readings, by UTC day",
               Value=naming.ANOMALY_INDEX),
    )
    return StorageGroup(resources, outputs, GetAtt(bucket, "Arn"), Ref(bucket), GetAtt(table, "Arn"), Ref(table),
                        cfg.table_kms_key_arn)


def _sse(algorithm: str) -> tps3.BucketEncryption:
    return tps3.BucketEncryption(ServerSideEncryptionConfiguration=[
        tps3.ServerSideEncryptionRule(
            ServerSideEncryptionByDefault=tps3.ServerSideEncryptionByDefault(SSEAlgorithm=algorithm),
            BucketKeyEnabled=algorithm == "aws:kms",
        )])


def _private() -> tps3.PublicAccessBlockConfiguration:
    return tps3.PublicAccessBlockConfiguration(BlockPublicAcls=True, BlockPublicPolicy=True,
                                               IgnorePublicAcls=True, RestrictPublicBuckets=True)


def _raw_bucket(cfg: StorageConfig, names: Names, log_bucket: tps3.Bucket) -> tps3.Bucket:
    return tps3.Bucket(
        names.id(naming.RAW_BUCKET),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        BucketName=names.raw_bucket_name(),
        # Seed used AES256; aws:kms with a bucket key is stronger at no extra request cost.
        BucketEncryption=_sse("aws:kms"),
        VersioningConfiguration=tps3.VersioningConfiguration(Status="Enabled"),
        LoggingConfiguration=tps3.LoggingConfiguration(DestinationBucketName=Ref(log_bucket),
                                                       LogFilePrefix="raw-data-bucket/"),
        OwnershipControls=tps3.OwnershipControls(Rules=[
            tps3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]),
        LifecycleConfiguration=archive_lifecycle(cfg),
        PublicAccessBlockConfiguration=_private(),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Raw-Data-Archive"),
    )


# "Objects smaller than 128 KB will not transition to any storage class by default" (S3 lifecycle,
# TransitionDefaultMinimumObjectSize). Archive objects (a gzip per batch) are mostly a few KB, and a small object
# would cost more elsewhere anyway (Standard-IA bills at least 128 KB, Glacier adds 40 KB per object): they stay in
# Standard until ExpireArchive deletes them; the size filter states that, and large batches still move.
MIN_TRANSITION_BYTES = 128 * 1024


def archive_lifecycle(cfg: StorageConfig) -> tps3.LifecycleConfiguration:
    """The raw bucket's lifecycle: objects of 128 KB and more move to Standard-IA then Glacier; every object
    expires ``archive_retention_days`` after it was written; overwritten versions and stale uploads go too."""
    return tps3.LifecycleConfiguration(Rules=[
        tps3.LifecycleRule(
            Id="TransitionToIA",
            Status="Enabled",
            ObjectSizeGreaterThan=str(MIN_TRANSITION_BYTES - 1),
            Transitions=[
                tps3.LifecycleRuleTransition(TransitionInDays=cfg.ia_transition_days, StorageClass="STANDARD_IA"),
                tps3.LifecycleRuleTransition(TransitionInDays=cfg.glacier_transition_days, StorageClass="GLACIER"),
            ],
            # Versioning keeps overwritten batches; expire them so retries do not pile up cost.
            NoncurrentVersionExpiration=tps3.NoncurrentVersionExpiration(NoncurrentDays=cfg.noncurrent_expiry_days),
        ),
        tps3.LifecycleRule(
            Id="ExpireArchive",
            Status="Enabled",
            ExpirationInDays=cfg.archive_retention_days,
            NoncurrentVersionExpiration=tps3.NoncurrentVersionExpiration(NoncurrentDays=cfg.noncurrent_expiry_days),
            # S3 refuses this on a rule with an object size filter.
            AbortIncompleteMultipartUpload=tps3.AbortIncompleteMultipartUpload(DaysAfterInitiation=7),
        ),
    ])


def _access_log_bucket(cfg: StorageConfig, names: Names) -> tps3.Bucket:
    # No BucketName: a generated name is globally unique and a 63-character limit cannot bite.
    return tps3.Bucket(
        names.id(naming.ACCESS_LOG_BUCKET),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        # Server access logs can only be delivered to SSE-S3 (AES256) buckets.
        BucketEncryption=_sse("AES256"),
        VersioningConfiguration=tps3.VersioningConfiguration(Status="Enabled"),
        OwnershipControls=tps3.OwnershipControls(Rules=[
            tps3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]),
        LifecycleConfiguration=tps3.LifecycleConfiguration(Rules=[
            tps3.LifecycleRule(
                Id="ExpireAccessLogs",
                Status="Enabled",
                ExpirationInDays=cfg.access_log_expiry_days,
                NoncurrentVersionExpiration=tps3.NoncurrentVersionExpiration(NoncurrentDays=1),
            )]),
        PublicAccessBlockConfiguration=_private(),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Raw-Data-Access-Logs"),
        Metadata={"checkov": {"skip": [{
            "id": "CKV_AWS_18",
            "comment": "This is the access-log bucket itself; logging it into itself would loop.",
        }]}},
    )


def _tls_only_policy(logical_id: str, bucket: tps3.Bucket, *extra: Statement) -> tps3.BucketPolicy:
    return tps3.BucketPolicy(
        logical_id,
        Bucket=Ref(bucket),
        PolicyDocument=document(deny_insecure_transport(GetAtt(bucket, "Arn")), *extra),
    )


def _access_log_bucket_policy(names: Names, log_bucket: tps3.Bucket,
                              source_bucket: tps3.Bucket) -> tps3.BucketPolicy:
    delivery = Statement(
        Sid="AllowServerAccessLogDelivery",
        Effect=Allow,
        Principal=Principal("Service", ["logging.s3.amazonaws.com"]),
        Action=[s3.PutObject],
        Resource=[under(GetAtt(log_bucket, "Arn"), "/raw-data-bucket/*")],
        Condition=Condition([ArnEquals("aws:SourceArn", GetAtt(source_bucket, "Arn")),
                             StringEquals("aws:SourceAccount", AccountId)]),
    )
    return _tls_only_policy(names.id(naming.ACCESS_LOG_BUCKET_POLICY), log_bucket, delivery)


def _table(cfg: StorageConfig, names: Names) -> ddb.Table:
    # Seed used DynamoDB's AWS-owned key; a KMS key (AWS-managed, or the configured one) is auditable.
    # KMSMasterKeyId only for a configured key: SSEType KMS without it is alias/aws/dynamodb already, and
    # naming the default makes drift detection report a difference that is not one.
    sse = ddb.SSESpecification(SSEEnabled=True, SSEType="KMS",
                               **({"KMSMasterKeyId": cfg.table_kms_key_arn} if cfg.table_kms_key_arn else {}))
    return ddb.Table(
        names.id(naming.TABLE),
        DeletionPolicy="Delete",
        # Retain on replacement: moving from the seed's key schema keeps the seed's data.
        UpdateReplacePolicy="Retain",
        TableName=names.table_name(),
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            ddb.AttributeDefinition(AttributeName=name, AttributeType="S")
            for name in ("deviceId", "sk", "anomalyDay", "anomalySk")
        ],
        # Seed keyed on deviceId + timestamp, so two sensors of one device in one ms overwrote each other.
        KeySchema=[ddb.KeySchema(AttributeName="deviceId", KeyType="HASH"),
                   ddb.KeySchema(AttributeName="sk", KeyType="RANGE")],
        GlobalSecondaryIndexes=[ddb.GlobalSecondaryIndex(
            IndexName=naming.ANOMALY_INDEX,
            KeySchema=[ddb.KeySchema(AttributeName="anomalyDay", KeyType="HASH"),
                       ddb.KeySchema(AttributeName="anomalySk", KeyType="RANGE")],
            Projection=ddb.Projection(ProjectionType="ALL"),
        )],
        PointInTimeRecoverySpecification=ddb.PointInTimeRecoverySpecification(PointInTimeRecoveryEnabled=True),
        SSESpecification=sse,
        TimeToLiveSpecification=ddb.TimeToLiveSpecification(AttributeName="ttl", Enabled=True),
        Tags=Tags(Environment=Ref(naming.ENV_PARAM), Purpose="IoT-Processed-Data"),
        **({} if cfg.table_kms_key_arn else {"Metadata": {"checkov": {"skip": [{
            "id": "CKV_AWS_119",
            "comment": "Encrypted with the AWS-managed key alias/aws/dynamodb (SSEType KMS); naming it would make "
                       "drift detection report a false difference. Set storage.table_kms_key_arn for your own key.",
        }]}}}),
    )
