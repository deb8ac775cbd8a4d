"""Shared pieces of the deploy unit tests: a small template, a fake clock and moto-backed clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3

from iotpipe.deploy.client import Clock, DeployClient

REGION = "us-east-1"

SMALL_TEMPLATE = """\
Parameters:
  EnvironmentSuffix:
    Type: String
    Default: dev
  AlarmEmail:
    Type: String
    Default: ''
Resources:
  RawDataBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub 'iot-raw-data-${EnvironmentSuffix}'
  DataProcessorDeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
Outputs:
  RawDataBucketName:
    Value: !Ref RawDataBucket
  DeadLetterQueueUrl:
    Value: !Ref DataProcessorDeadLetterQueue
"""


def modified_template() -> str:
    """SMALL_TEMPLATE with one property of the queue changed."""
    return SMALL_TEMPLATE.replace("MessageRetentionPeriod: 1209600", "MessageRetentionPeriod: 345600")


def large_template() -> str:
    """SMALL_TEMPLATE padded past CloudFormation's 51,200-byte TemplateBody limit with a long description."""
    return "Description: " + "x" * 52_000 + "\n" + SMALL_TEMPLATE


@dataclass
class FakeClock:
    """A clock whose sleep advances time instead of waiting, recording each sleep."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.001)

    def clock(self) -> Clock:
        return Clock(now=self.now, sleep=self.sleep)


def moto_client(clock: FakeClock | None = None, **overrides: Any) -> DeployClient:
    """A DeployClient on boto3 clients (inside ``mock_aws`` these talk to moto in-process)."""
    clients = {service: boto3.client(service, region_name=REGION) for service in ("cloudformation", "s3", "sts")}
    clients.update(overrides)
    return DeployClient(cloudformation=clients["cloudformation"], s3=clients["s3"], sts=clients["sts"],
                        region=REGION, clock=(clock or FakeClock()).clock())


class ProtectableCloudFormation:
    """A moto CloudFormation client plus update_termination_protection, which moto 5.2 does not implement."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.protection_calls: list[tuple[str, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def update_termination_protection(self, StackName: str, EnableTerminationProtection: bool) -> dict[str, Any]:
        from moto.cloudformation.models import cloudformation_backends

        self.protection_calls.append((StackName, EnableTerminationProtection))
        for stack in cloudformation_backends["123456789012"][REGION].stacks.values():
            if StackName in (stack.name, stack.stack_id):
                stack.enable_termination_protection = EnableTerminationProtection
        return {}


# Resource types with properties cfn-lint accepts, to find one that a region does not offer. Which regions lack
# which types changes with cfn-lint's bundled region data (1.58 added the Glue schema registry to
# ap-southeast-5), so the gap is looked up in the installed cfn-lint rather than written down.
_REGION_GAP_CANDIDATES = (
    ("AWS::Glue::UsageProfile", {"Name": "usage"}),
    ("AWS::Glue::Registry", {"Name": "registry"}),
)
_REGION_GAP_REGIONS = ("ap-southeast-5", "ap-southeast-7", "mx-central-1", "ap-east-2", "ca-west-1", "il-central-1")


def region_gap() -> tuple[str, dict[str, Any], str]:
    """(resource type, its properties, a region) where the installed cfn-lint offers the type in us-east-1 and
    not in that region."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    offered = set(PROVIDER_SCHEMA_MANAGER.get_resource_types(REGION))
    for region in _REGION_GAP_REGIONS:
        missing = set(offered) - set(PROVIDER_SCHEMA_MANAGER.get_resource_types(region))
        for type_name, properties in _REGION_GAP_CANDIDATES:
            if type_name in missing:
                return type_name, properties, region
    raise AssertionError("no candidate resource type is missing from any candidate region in this cfn-lint; "
                         "add a candidate to tests/unit/deploy_helpers.py")
