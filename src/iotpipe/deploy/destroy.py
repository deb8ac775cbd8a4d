"""Destroy's device guard: AWS IoT refuses to delete a policy attached to a certificate, so a stack whose device
policy still has devices would end DELETE_FAILED. The guard finds them before anything is deleted, refuses
unless the caller asked to revoke them, and releases the policy (revoke, detach, old versions) when asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iotpipe import contract
from iotpipe import devices as devices_lib
from iotpipe.deploy.client import DeployClient, Stack
from iotpipe.errors import DeployError


@dataclass(frozen=True)
class DeviceGuard:
    """The stack's device policy (None: it has none) and the certificates it is attached to."""

    policy: str | None
    targets: tuple[devices_lib.PolicyTarget, ...] = ()

    def describe(self) -> str:
        """``device(s) a, b and certificate(s) 0123456789ab without a thing``."""
        return describe_targets(self.targets)


def device_policy(client: DeployClient, stack: Stack) -> str | None:
    """The stack's device policy: its SensorDevicePolicyName output, or its AWS::IoT::Policy resource (seed)."""
    name = stack.output_map.get(contract.OUT_DEVICE_POLICY)
    if name:
        return name
    for resource in client.stack_resources(stack.stack_id):
        if resource.get("ResourceType") == "AWS::IoT::Policy" and resource.get("PhysicalResourceId"):
            return str(resource["PhysicalResourceId"])
    return None


def describe_targets(targets: Sequence[devices_lib.PolicyTarget]) -> str:
    """The things (by name) and the bare certificates (by id) a policy is attached to, in words."""
    named = sorted({thing for target in targets for thing in target.things})
    bare = [target.certificate_id[:12] for target in targets if not target.things]
    parts = ([f"device(s) {', '.join(named)}"] if named else []) + (
        [f"certificate(s) {', '.join(bare)} without a thing"] if bare else [])
    return " and ".join(parts)


def device_guard(iot: Any, client: DeployClient, stack: Stack, env: str, *, revoke_devices: bool) -> DeviceGuard:
    """The guard for destroying ``stack``; DeployError naming the devices when its policy is attached and
    ``revoke_devices`` is false (nothing is deleted then)."""
    policy = device_policy(client, stack)
    targets = devices_lib.policy_targets(iot, policy) if policy else ()
    guard = DeviceGuard(policy=policy, targets=tuple(targets))
    if targets and not revoke_devices:
        raise DeployError(
            f"device policy {policy} is attached to {guard.describe()}, and AWS IoT refuses to delete a "
            "policy attached to a certificate (the stack would end DELETE_FAILED); nothing was deleted. Revoke "
            f"them (iotpipe device revoke <id> --env {env}) or run destroy again with --revoke-devices")
    return guard


def release_devices(iot: Any, guard: DeviceGuard, env: str) -> devices_lib.ReleasedPolicy | None:
    """Make the guard's policy deletable: revoke and detach when it has targets, else delete its old versions
    (which DeletePolicy refuses too); what was revoked and detached, None when there was nothing to revoke."""
    if guard.policy is None:
        return None
    if guard.targets:
        return devices_lib.release_policy(iot, guard.policy, env)
    devices_lib.delete_old_policy_versions(iot, guard.policy)
    return None


__all__ = ["DeviceGuard", "describe_targets", "device_guard", "device_policy", "release_devices"]
