"""E9104: streams, buckets, tables, queues, topics and log groups say how they are encrypted at rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch

from iotpipe.lintrules._template import SOURCE_URL, is_no_value, properties, resources


def _present(props: Mapping[str, Any], name: str) -> bool:
    value = props.get(name)
    return value is not None and value != "" and not is_no_value(value)


def _truthy(props: Mapping[str, Any], name: str) -> bool:
    value = props.get(name)
    return value is True or str(value).lower() == "true" or (isinstance(value, Mapping) and not is_no_value(value))


def _stream(props: Mapping[str, Any]) -> bool:
    encryption = props.get("StreamEncryption")
    return isinstance(encryption, Mapping) and encryption.get("EncryptionType") != "NONE" and \
        _present(encryption, "EncryptionType") and _present(encryption, "KeyId")


def _bucket(props: Mapping[str, Any]) -> bool:
    encryption = props.get("BucketEncryption")
    rules = encryption.get("ServerSideEncryptionConfiguration") if isinstance(encryption, Mapping) else None
    return isinstance(rules, list) and len(rules) > 0


def _table(props: Mapping[str, Any]) -> bool:
    sse = props.get("SSESpecification")
    return isinstance(sse, Mapping) and _truthy(sse, "SSEEnabled")


def _queue(props: Mapping[str, Any]) -> bool:
    return _present(props, "KmsMasterKeyId") or _truthy(props, "SqsManagedSseEnabled")


# Resource type -> (is it encrypted?, what to set).
CHECKS: Mapping[str, tuple[Callable[[Mapping[str, Any]], bool], str]] = {
    "AWS::Kinesis::Stream": (_stream, "StreamEncryption (EncryptionType KMS, KeyId alias/aws/kinesis or a key ARN)"),
    "AWS::S3::Bucket": (_bucket, "BucketEncryption (SSE-S3 AES256, or aws:kms with a key)"),
    "AWS::DynamoDB::Table": (_table, "SSESpecification with SSEEnabled true (SSEType KMS)"),
    "AWS::SQS::Queue": (_queue, "KmsMasterKeyId (alias/aws/sqs or a key) or SqsManagedSseEnabled true"),
    "AWS::SNS::Topic": (lambda props: _present(props, "KmsMasterKeyId"), "KmsMasterKeyId (a key CloudWatch and "
                                                                         "the publishers may use)"),
    "AWS::Logs::LogGroup": (lambda props: _present(props, "KmsKeyId"), "KmsKeyId (the pipeline key's Arn)"),
}


class EncryptionAtRest(CloudFormationLintRule):
    """Data at rest is encrypted, and the template says so (not left to a service default)."""

    id = "E9104"
    shortdesc = "Data stores are encrypted at rest"
    description = (
        "Kinesis streams, S3 buckets, DynamoDB tables, SQS queues, SNS topics and CloudWatch log groups state "
        "their encryption at rest in the template: StreamEncryption, BucketEncryption, SSESpecification, "
        "KmsMasterKeyId or SqsManagedSseEnabled, KmsMasterKeyId, KmsKeyId."
    )
    source_url = SOURCE_URL
    tags: ClassVar[list[str]] = ["iotpipe", "encryption", "kms"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        """A match per data store without its encryption setting."""
        matches = []
        for logical_id, resource_type, resource in resources(cfn.template):
            check = CHECKS.get(resource_type)
            if check is None or check[0](properties(resource)):
                continue
            matches.append(RuleMatch(["Resources", logical_id], f"{logical_id}: {resource_type} without "
                                     f"encryption at rest; set {check[1]}"))
        return matches
