"""Tiny awacs statement helpers, each scoped to the ARNs it is given (never ``Resource: "*"``)."""

from __future__ import annotations

from typing import Any

import awacs.athena as athena
import awacs.cloudformation as cloudformation
import awacs.dynamodb as dynamodb
import awacs.glue as glue
import awacs.kinesis as kinesis
import awacs.kms as kms
import awacs.logs as logs
import awacs.s3 as s3
import awacs.sns as sns
import awacs.sqs as sqs
import awacs.sts as sts
from awacs.aws import Action, Allow, Bool, Condition, Deny, PolicyDocument, Principal, Statement, StringLike
from troposphere import GetAtt, Sub

Arn = Any  # a string or a troposphere intrinsic (GetAtt, Sub) resolving to an ARN


def under(arn: GetAtt, suffix: str) -> Sub:
    """``Fn::Sub`` of a resource's ARN attribute followed by ``suffix`` (e.g. a bucket ARN + ``/raw/*``)."""
    logical_id, attribute = arn.data["Fn::GetAtt"]
    return Sub("${" + f"{logical_id}.{attribute}" + "}" + suffix)


def document(*statements: Statement) -> PolicyDocument:
    """A policy document of ``statements``."""
    return PolicyDocument(Version="2012-10-17", Statement=list(statements))


def assume_role_by(service: str) -> PolicyDocument:
    """Trust policy letting ``service`` (e.g. ``lambda.amazonaws.com``) assume the role."""
    return document(Statement(Effect=Allow, Principal=Principal("Service", [service]),
                              Action=[sts.AssumeRole]))


def stream_reader(stream_arn: Arn) -> Statement:
    """What a Lambda Kinesis event source mapping needs to poll one stream (documented ESM actions)."""
    return Statement(
        Sid="ReadSensorStream",
        Effect=Allow,
        Action=[kinesis.DescribeStream, kinesis.DescribeStreamSummary, kinesis.GetRecords,
                kinesis.GetShardIterator, kinesis.ListShards],
        Resource=[stream_arn],
    )


def stream_writer(stream_arn: Arn) -> Statement:
    """The IoT rule's Kinesis action: one PutRecord per message."""
    return Statement(Sid="WriteSensorStream", Effect=Allow, Action=[kinesis.PutRecord], Resource=[stream_arn])


def table_writer(table_arn: Arn) -> Statement:
    """Batched item writes to one table (the processor writes with BatchWriteItem only)."""
    return Statement(Sid="WriteReadings", Effect=Allow, Action=[dynamodb.BatchWriteItem], Resource=[table_arn])


def state_reader(table_arn: Arn) -> Statement:
    """Batched item reads of one table: the processor reads its detector's state items (docs/contract.md 12)."""
    return Statement(Sid="ReadDetectorState", Effect=Allow, Action=[dynamodb.BatchGetItem], Resource=[table_arn])


def topic_publisher(topic_arn: Arn) -> Statement:
    """Publish to one SNS topic (the processor's anomaly episode notifications)."""
    return Statement(Sid="NotifyAnomalies", Effect=Allow, Action=[sns.Publish], Resource=[topic_arn])


def object_writer(bucket_arn: Arn, *prefixes: str, sid: str = "ArchiveRawRecords") -> Statement:
    """PutObject under the given key prefixes of one bucket (no ACL calls)."""
    return Statement(
        Sid=sid,
        Effect=Allow,
        Action=[s3.PutObject],
        Resource=[under(bucket_arn, f"/{prefix}*") for prefix in prefixes],
    )


def queue_sender(queue_arn: Arn) -> Statement:
    """What the event source mapping needs to send failed-batch records to its on-failure queue."""
    return Statement(Sid="SendToDeadLetterQueue", Effect=Allow, Action=[sqs.SendMessage], Resource=[queue_arn])


def log_writer(log_group_arn: Arn, *, sid: str = "WriteOwnLogs") -> Statement:
    """Create streams and put events in one log group (``log_group_arn`` ends in ``:*``)."""
    return Statement(Sid=sid, Effect=Allow, Action=[logs.CreateLogStream, logs.PutLogEvents],
                     Resource=[log_group_arn])


def key_user(key_arn: Arn, *actions: Action, sid: str) -> Statement:
    """Use of one customer-managed KMS key for the given actions."""
    return Statement(Sid=sid, Effect=Allow, Action=list(actions), Resource=[key_arn])


def deny_insecure_transport(bucket_arn: Arn) -> Statement:
    """Bucket policy statement refusing any request not made over TLS."""
    return Statement(
        Sid="DenyInsecureTransport",
        Effect=Deny,
        Principal=Principal("*"),
        Action=[s3.Action("*")],
        Resource=[bucket_arn, under(bucket_arn, "/*")],
        Condition=Condition(Bool("aws:SecureTransport", "false")),
    )


def object_reader(bucket_arn: Arn, *prefixes: str, sid: str) -> Statement:
    """GetObject under the given key prefixes of one bucket."""
    return Statement(Sid=sid, Effect=Allow, Action=[s3.GetObject],
                     Resource=[under(bucket_arn, f"/{prefix}*") for prefix in prefixes])


def bucket_lister(bucket_arn: Arn, *prefixes: str, sid: str) -> Statement:
    """ListBucket of one bucket, limited to the given key prefixes."""
    return Statement(Sid=sid, Effect=Allow, Action=[s3.ListBucket], Resource=[bucket_arn],
                     Condition=Condition(StringLike("s3:prefix", [f"{prefix}*" for prefix in prefixes])))


def bucket_locator(*bucket_arns: Arn) -> Statement:
    """GetBucketLocation (no prefix: the request has no ``s3:prefix`` a condition could match)."""
    return Statement(Sid="LocateBuckets", Effect=Allow, Action=[s3.GetBucketLocation], Resource=list(bucket_arns))


def query_results_user(bucket_arn: Arn, prefix: str) -> Statement:
    """What Athena does with the caller's credentials in its results location: write, read back, clean up."""
    return Statement(Sid="QueryResults", Effect=Allow,
                     Action=[s3.PutObject, s3.GetObject, s3.AbortMultipartUpload, s3.ListMultipartUploadParts],
                     Resource=[under(bucket_arn, f"/{prefix}*")])


def athena_query_runner(workgroup_arn: Arn) -> Statement:
    """Start, follow, read and stop queries in one Athena workgroup."""
    return Statement(Sid="RunQueriesInWorkGroup", Effect=Allow,
                     Action=[athena.StartQueryExecution, athena.GetQueryExecution, athena.GetQueryResults,
                             athena.StopQueryExecution],
                     Resource=[workgroup_arn])


def glue_database_reader(catalog_arn: Arn, *database_arns: Arn) -> Statement:
    """GetDatabase of the given Glue databases (IAM checks the catalog and the database).

    Athena's query runner also needs ``default``: its IAM guide lists ``glue:GetDatabase`` on the ``default``
    database among the permissions a query needs, whatever database the query names.
    """
    return Statement(Sid="ReadArchiveDatabase", Effect=Allow, Action=[glue.GetDatabase],
                     Resource=[catalog_arn, *database_arns])


def glue_table_reader(catalog_arn: Arn, database_arn: Arn, *table_arns: Arn) -> Statement:
    """GetTable of the given tables, which Athena calls to plan a query (IAM checks catalog, database and table).

    No GetPartitions/GetPartition/BatchGetPartition: the tables use partition projection, and "Partition projection
    allows Athena to avoid calling GetPartitions because the partition projection configuration gives Athena all
    of the necessary information to build the partitions itself" (Athena User Guide, "Partition projection with
    Amazon Athena", https://docs.aws.amazon.com/athena/latest/ug/partition-projection.html, section "Pruning and
    projection for heavily partitioned tables"). The partition actions appear in AWS's examples only for tables
    without projection and for DROP TABLE (https://docs.aws.amazon.com/athena/latest/ug/fine-grained-access-to-glue-resources.html).
    """
    return Statement(Sid="ReadArchiveTables", Effect=Allow, Action=[glue.GetTable],
                     Resource=[catalog_arn, database_arn, *table_arns])


def stack_reader(stack_arn: Arn) -> Statement:
    """DescribeStacks of one stack (``iotpipe sql`` reads the names it needs from the stack's outputs)."""
    return Statement(Sid="ReadStackOutputs", Effect=Allow, Action=[cloudformation.DescribeStacks],
                     Resource=[stack_arn])


KMS_DECRYPT = kms.Decrypt
KMS_GENERATE_DATA_KEY = kms.GenerateDataKey
