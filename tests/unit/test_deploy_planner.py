"""One deploy path: every deploy (the CLI's, iotpipe local's, a library caller's) is built by iotpipe.deploy.planner;
the status rule and destroy's device guard are library functions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from deploy_helpers import REGION, moto_client
from moto import mock_aws

import iotpipe.render
from iotpipe import contract
from iotpipe import devices as devices_lib
from iotpipe.config import PipelineConfig, config_warnings
from iotpipe.deploy import plan as plan_module
from iotpipe.deploy.client import Stack
from iotpipe.deploy.destroy import DeviceGuard, device_guard, release_devices
from iotpipe.deploy.planner import DeployOptions, deploy_request, plan_config
from iotpipe.deploy.status import comparable, status_plan
from iotpipe.errors import ConfigError, DeployError
from iotpipe.local.supervisor import LocalPipeline


def test_the_request_carries_the_config_and_the_options() -> None:
    cfg = PipelineConfig(tags=(("Owner", "plant-7"), ("Team", "ops")))
    options = DeployOptions(parameters=(("AlarmEmail", "ops@example.com"),), tags=(("Owner", "plant-9"),),
                            on_failure="delete", timeout_minutes=5.0)
    request = deploy_request(cfg, "body", options)
    assert (request.stack_name, request.template_body, request.env) == (cfg.resolved_stack_name, "body", cfg.env)
    assert request.tags == (("Owner", "plant-9"), ("Team", "ops"))
    assert request.parameters == (("AlarmEmail", "ops@example.com"),)
    assert (request.on_failure, request.timeout_minutes) == ("delete", 5.0)
    assert request.reserved_concurrency == cfg.processor.reserved_concurrency > 0
    assert request.termination_protection == cfg.termination_protection


def test_iotpipe_local_deploys_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # It used to build its own request without the reserved concurrency, so preflight never ran locally.
    seen: list[Any] = []

    class Planned(Exception):
        pass

    def plan_deploy(_client: Any, request: Any, _progress: Any) -> Any:
        seen.append(request)
        raise Planned

    class Factory:
        def client(self, service: str) -> Any:
            return boto3.client(service, region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s")

    monkeypatch.setattr(plan_module, "plan_deploy", plan_deploy)
    cfg = PipelineConfig()
    with pytest.raises(Planned):
        LocalPipeline._deploy(SimpleNamespace(progress=lambda _line: None), cfg, "body", Factory())  # type: ignore[arg-type]
    assert seen == [deploy_request(cfg, "body")]
    assert seen[0].reserved_concurrency == cfg.processor.reserved_concurrency > 0


def test_a_bad_tag_is_refused_before_anything_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    def render(*_args: Any) -> str:
        raise AssertionError("rendered")

    monkeypatch.setattr(iotpipe.render, "render_template", render)
    with pytest.raises(ConfigError, match="--tag"):
        plan_config(PipelineConfig(), SimpleNamespace(region=REGION),  # type: ignore[arg-type]
                    DeployOptions(tags=(("aws:owner", "x"),)))


@mock_aws
def test_plan_config_returns_the_plan_with_its_warnings() -> None:
    cfg = PipelineConfig()
    lines: list[str] = []
    planned = plan_config(cfg, moto_client(), DeployOptions(read_only="a test"), lines.append)
    assert planned.warnings == tuple(config_warnings(cfg))
    assert [f"warning: {warning}" for warning in planned.warnings] == lines[:len(planned.warnings)]
    assert planned.plan.action == "create" and planned.plan.changes
    assert planned.plan.request.reserved_concurrency == cfg.processor.reserved_concurrency
    assert planned.as_dict()["warnings"] == list(planned.warnings)


@pytest.mark.parametrize(("status", "compared"), [
    ("CREATE_COMPLETE", True), ("UPDATE_COMPLETE", True), ("UPDATE_ROLLBACK_COMPLETE", True),
    ("UPDATE_IN_PROGRESS", False), ("REVIEW_IN_PROGRESS", False), ("CREATE_FAILED", False),
    ("UPDATE_ROLLBACK_FAILED", False), ("ROLLBACK_COMPLETE", False),
])
def test_the_status_rule(status: str, compared: bool) -> None:
    assert comparable(Stack(name="s", stack_id="id", status=status)) is compared


def test_a_busy_stack_is_not_compared_and_says_so() -> None:
    lines: list[str] = []
    stack = Stack(name="s", stack_id="id", status="UPDATE_IN_PROGRESS")
    assert status_plan(PipelineConfig(), SimpleNamespace(), stack, progress=lines.append) is None  # type: ignore[arg-type]
    assert lines == ["not comparing with the config while the stack is UPDATE_IN_PROGRESS"]


def _stack_with_policy() -> Stack:
    return Stack(name="s", stack_id="id", status="CREATE_COMPLETE",
                 outputs=((contract.OUT_DEVICE_POLICY, "SensorDevicePolicy-dev"),))


def test_the_device_guard_refuses_while_devices_are_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    target = devices_lib.PolicyTarget(certificate_arn="arn:aws:iot:us-east-1:123456789012:cert/abcdef0123456789",
                                      things=("line-1",))
    monkeypatch.setattr(devices_lib, "policy_targets", lambda _iot, _policy: (target,))
    with pytest.raises(DeployError, match=r"attached to device\(s\) line-1.*--revoke-devices"):
        device_guard(None, SimpleNamespace(), _stack_with_policy(), "dev", revoke_devices=False)  # type: ignore[arg-type]
    guard = device_guard(None, SimpleNamespace(), _stack_with_policy(), "dev", revoke_devices=True)  # type: ignore[arg-type]
    assert guard == DeviceGuard(policy="SensorDevicePolicy-dev", targets=(target,))


def test_a_policy_without_devices_only_loses_its_old_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []
    monkeypatch.setattr(devices_lib, "policy_targets", lambda _iot, _policy: ())
    monkeypatch.setattr(devices_lib, "delete_old_policy_versions", lambda _iot, policy: deleted.append(policy))
    guard = device_guard(None, SimpleNamespace(), _stack_with_policy(), "dev", revoke_devices=False)  # type: ignore[arg-type]
    assert release_devices(None, guard, "dev") is None
    assert deleted == ["SensorDevicePolicy-dev"]
