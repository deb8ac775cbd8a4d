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


def refresh_outputs_after_change_set(monkeypatch: Any) -> None:
    """moto 5.2 neither recomputes the outputs of a stack made through a change set (it keeps those of the empty
    review template) nor registers its exports; do both after each execution, as CloudFormation does."""
    from moto.cloudformation.models import CloudFormationBackend

    original = CloudFormationBackend.execute_change_set

    def execute(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        original(self, change_set_name, stack_name)
        change_set = self.change_sets.get(change_set_name) or next(
            cs for cs in self.change_sets.values() if cs.change_set_name == change_set_name)
        stack = self.stacks[change_set.stack_id]
        stack.template_dict = change_set.template_dict
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            self.exports[export.name] = export

    monkeypatch.setattr(CloudFormationBackend, "execute_change_set", execute)


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
