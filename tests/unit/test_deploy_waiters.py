"""The one stack poller: bounded, streams events when asked, and is the only place deploy sleeps."""

from __future__ import annotations

import ast
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from deploy_helpers import REGION, FakeClock

import iotpipe.deploy
from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.waiters import wait_until_settled
from iotpipe.errors import DeployError

STACK = "iotpipe-dev"


def _stack(status: str) -> dict[str, object]:
    return {"Stacks": [{"StackName": STACK, "StackId": f"arn:stack/{STACK}/1", "StackStatus": status,
                        "CreationTime": "2026-01-01T00:00:00Z"}]}


def test_waiting_for_another_operation_is_bounded_and_says_why_it_waits() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    clock = FakeClock()
    messages: list[str] = []
    with Stubber(cfn) as stub:
        for _ in range(10):
            stub.add_response("describe_stacks", _stack("UPDATE_IN_PROGRESS"))
        client = DeployClient(cloudformation=cfn, region=REGION, clock=clock.clock())
        with pytest.raises(DeployError, match=r"still in progress after 1 min.*not racing it"):
            wait_until_settled(client, STACK, 60, messages.append, poll_s=10)
    assert 60 <= clock.t <= 61 and len(clock.sleeps) == 6
    assert messages[0] == ("  [    0s] stack iotpipe-dev is UPDATE_IN_PROGRESS; waiting for it to finish "
                           "(another deploy or delete is running)")


def test_a_review_stack_is_settled_without_polling() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    clock = FakeClock()
    with Stubber(cfn) as stub:
        stub.add_response("describe_stacks", _stack("REVIEW_IN_PROGRESS"))
        stack = wait_until_settled(DeployClient(cloudformation=cfn, region=REGION, clock=clock.clock()), STACK, 60)
    assert stack is not None and stack.status == "REVIEW_IN_PROGRESS" and clock.sleeps == []


def test_the_deploy_package_polls_in_one_place() -> None:
    """Every sleep and every boto3 waiter of deploy/ is in waiters.py: one poller, not one per caller."""
    package = Path(iotpipe.deploy.__file__).parent
    polling = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "sleep", "get_waiter"):
                polling.add(module.name)
    assert polling == {"waiters.py"}


def test_destroy_is_planned_in_plan_and_executed_in_execute() -> None:
    from iotpipe.deploy import execute, plan, status

    assert hasattr(plan, "plan_destroy") and not hasattr(execute, "plan_destroy")
    assert hasattr(status, "stack_status") and not hasattr(execute, "stack_status")
