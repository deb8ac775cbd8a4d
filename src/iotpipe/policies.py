"""Tiny awacs statement helpers, each scoped to the ARNs it is given (never ``Resource: "*"``)."""

from __future__ import annotations

from typing import Any

import awacs.dynamodb as dynamodb
import awacs.kinesis as kinesis
import awacs.kms as kms
import awacs.logs as logs
import awacs.s3 as s3
import awacs.sqs as sqs
import awacs.sts as sts
from awacs.aws import Action, Allow, Bool, Condition, Deny, PolicyDocument, Principal, Statement
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


KMS_DECRYPT = kms.Decrypt
KMS_GENERATE_DATA_KEY = kms.GenerateDataKey
