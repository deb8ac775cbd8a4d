"""Blueprint: an extra resource group wired to the stream through its handle.

    iotpipe lint --blueprint examples/firehose_copy.py:customise

A Kinesis Data Firehose delivery stream reads the pipeline's Kinesis stream (the stream group's
``stream_arn`` handle, no logical id spelled here) and delivers every record, gzip-compressed, to a bucket of
its own (encrypted with KMS, versioned, TLS-only, public access blocked). Its role holds only what Firehose
needs, each statement scoped to one ARN with the helpers of ``iotpipe.policies``.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import AWSObject, GetAtt, Output, Ref, Tags, iam
from troposphere import firehose as tpfirehose
from troposphere import s3 as tps3

from iotpipe import Composition, Groups, Names, PipelineConfig, policies

PREFIX = "copies/"


@dataclass(frozen=True)
class FirehoseGroup:
    """What the extra group made: compose adds its resources and outputs."""

    resources: tuple[AWSObject, ...]
    outputs: tuple[Output, ...]


def build_firehose_copy(cfg: PipelineConfig, names: Names, groups: Groups) -> FirehoseGroup:
    """A delivery stream from the pipeline's stream to an encrypted bucket of its own."""
    bucket = tps3.Bucket(
        names.id("FirehoseCopyBucket"),
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
        BucketEncryption=tps3.BucketEncryption(ServerSideEncryptionConfiguration=[tps3.ServerSideEncryptionRule(
            ServerSideEncryptionByDefault=tps3.ServerSideEncryptionByDefault(SSEAlgorithm="aws:kms"),
            BucketKeyEnabled=True)]),
        VersioningConfiguration=tps3.VersioningConfiguration(Status="Enabled"),
        OwnershipControls=tps3.OwnershipControls(Rules=[
            tps3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]),
        LifecycleConfiguration=tps3.LifecycleConfiguration(Rules=[tps3.LifecycleRule(
            Id="ExpireCopies", Status="Enabled", ExpirationInDays=cfg.storage.ttl_days,
            NoncurrentVersionExpiration=tps3.NoncurrentVersionExpiration(NoncurrentDays=1))]),
        PublicAccessBlockConfiguration=tps3.PublicAccessBlockConfiguration(
            BlockPublicAcls=True, BlockPublicPolicy=True, IgnorePublicAcls=True, RestrictPublicBuckets=True),
        Tags=Tags(Purpose="IoT-Firehose-Copy"),
        Metadata={"checkov": {"skip": [{"id": "CKV_AWS_18", "comment": "A copy of the raw archive, whose own "
                                                                       "bucket has access logging."}]}},
    )
    bucket_policy = tps3.BucketPolicy(
        names.id("FirehoseCopyBucketPolicy"), Bucket=Ref(bucket),
        PolicyDocument=policies.document(policies.deny_insecure_transport(GetAtt(bucket, "Arn"))))
    role = iam.Role(
        names.id("FirehoseCopyRole"),
        AssumeRolePolicyDocument=policies.assume_role_by("firehose.amazonaws.com"),
        Policies=[iam.Policy(PolicyName="FirehoseCopyPolicy", PolicyDocument=policies.document(
            policies.stream_reader(groups.stream.stream_arn),
            policies.object_writer(GetAtt(bucket, "Arn"), PREFIX, sid="DeliverCopies"),
            policies.bucket_locator(GetAtt(bucket, "Arn")),
        ))],
    )
    delivery = tpfirehose.DeliveryStream(
        names.id("FirehoseCopy"),
        DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration=tpfirehose.KinesisStreamSourceConfiguration(
            KinesisStreamARN=groups.stream.stream_arn, RoleARN=GetAtt(role, "Arn")),
        ExtendedS3DestinationConfiguration=tpfirehose.ExtendedS3DestinationConfiguration(
            BucketARN=GetAtt(bucket, "Arn"), RoleARN=GetAtt(role, "Arn"), Prefix=PREFIX,
            ErrorOutputPrefix="copy-errors/", CompressionFormat="GZIP",
            BufferingHints=tpfirehose.BufferingHints(IntervalInSeconds=300, SizeInMBs=5)),
    )
    outputs = (Output(names.output("FirehoseCopyBucketName"), Description="Bucket of the Firehose copy",
                      Value=Ref(bucket)),)
    return FirehoseGroup((bucket, bucket_policy, role, delivery), outputs)


def customise(composition: Composition) -> Composition:
    """The default pipeline plus the Firehose copy."""
    return composition.recompose(extra=[build_firehose_copy])
