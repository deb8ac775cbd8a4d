"""Execution: change sets run, waits are bounded and stream events, failures name resources, destroy empties buckets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from deploy_helpers import (
    REGION,
    SMALL_TEMPLATE,
    FakeClock,
    ProtectableCloudFormation,
    modified_template,
    moto_client,
)
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends

from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.execute import discard_plan, execute_destroy, execute_plan
from iotpipe.deploy.plan import DeployPlan, DeployRequest, TemplateSource, plan_deploy, plan_destroy
from iotpipe.deploy.waiters import wait_for_stack
from iotpipe.errors import DeployError
from iotpipe.local.emulator import moto_compat

STACK = "iotpipe-dev"
STACK_ID = f"arn:aws:cloudformation:{REGION}:123456789012:stack/{STACK}/1111"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def aws() -> Iterator[None]:
    moto_compat.apply(moto_compat.LIBRARY_KINDS)
    with mock_aws():
        yield


def request(template: str = SMALL_TEMPLATE, **kwargs: Any) -> DeployRequest:
    return DeployRequest(stack_name=STACK, template_body=template, **kwargs)


def deploy(client: DeployClient, template: str = SMALL_TEMPLATE, **kwargs: Any) -> Any:
    return execute_plan(client, plan_deploy(client, request(template, **kwargs)))


@pytest.mark.usefixtures("aws")
def test_first_deploy_creates_the_stack_and_returns_its_outputs() -> None:
    messages: list[str] = []
    client = moto_client()
    result = execute_plan(client, plan_deploy(client, request()), messages.append)
    assert result.executed and result.action == "create" and result.status == "CREATE_COMPLETE"
    assert dict(result.outputs)["RawDataBucketName"] == "iot-raw-data-dev"
    assert any("CREATE_COMPLETE" in m and "[" in m and "s]" in m for m in messages), messages


@pytest.mark.usefixtures("aws")
def test_second_identical_deploy_is_a_success_with_outputs_and_no_change_set_left() -> None:
    client = moto_client()
    deploy(client)
    result = deploy(client)
    assert result.action == "none" and not result.executed
    assert dict(result.outputs)["RawDataBucketName"] == "iot-raw-data-dev"
    cfn = boto3.client("cloudformation", region_name=REGION)
    left = [cs for cs in cfn.list_change_sets(StackName=STACK).get("Summaries", [])
            if cs.get("ExecutionStatus") != "EXECUTE_COMPLETE"]  # moto keeps executed ones; AWS does not
    assert left == []


@pytest.mark.usefixtures("aws")
def test_update_runs_the_change_set() -> None:
    client = moto_client()
    deploy(client)
    result = deploy(client, modified_template())
    assert result.executed and result.status == "UPDATE_COMPLETE"
    assert [c.logical_id for c in result.changes] == ["DataProcessorDeadLetterQueue"]


@pytest.mark.usefixtures("aws")
def test_rollback_complete_stack_is_deleted_and_created_again_saying_so() -> None:
    client = moto_client()
    deploy(client)
    old = client.find_stack(STACK)
    assert old is not None
    cloudformation_backends["123456789012"][REGION].stacks[old.stack_id].status = "ROLLBACK_COMPLETE"
    messages: list[str] = []
    result = execute_plan(client, plan_deploy(client, request()), messages.append)
    new = client.find_stack(STACK)
    assert new is not None and new.stack_id != old.stack_id and new.status == "CREATE_COMPLETE"
    assert result.action == "recreate" and any("ROLLBACK_COMPLETE" in n for n in result.notes)
    assert any("deleting it and creating it again" in m for m in messages)


@pytest.mark.usefixtures("aws")
def test_discarded_plan_changes_nothing() -> None:
    client = moto_client()
    deploy(client)
    plan = plan_deploy(client, request(modified_template()))
    result = discard_plan(client, plan)
    assert not result.executed and [c.action for c in result.changes] == ["Modify"]
    assert deploy(client).action == "none"  # the deployed template is still the old one


@pytest.mark.usefixtures("aws")
def test_termination_protection_is_applied_on_create_and_lifted_on_update() -> None:
    cfn = ProtectableCloudFormation(boto3.client("cloudformation", region_name=REGION))
    client = moto_client(cloudformation=cfn)
    first = deploy(client, termination_protection=True)
    assert first.termination_protection is True and cfn.protection_calls == [(STACK, True)]
    stack = client.find_stack(STACK)
    assert stack is not None and stack.termination_protection
    # no template change, only the setting: still applied, and the deploy is a no-change success
    again = deploy(client, termination_protection=False)
    assert again.action == "none" and again.termination_protection is False
    assert cfn.protection_calls == [(STACK, True), (STACK, False)]


# --- error paths moto cannot produce: botocore Stubber --------------------------------------------


def _event(event_id: str, logical_id: str, resource_type: str, status: str, reason: str = "",
           seconds: int = 0) -> dict[str, Any]:
    event = {"StackId": STACK_ID, "EventId": event_id, "StackName": STACK, "LogicalResourceId": logical_id,
             "ResourceType": resource_type, "ResourceStatus": status,
             "Timestamp": T0.replace(second=seconds)}
    if reason:
        event["ResourceStatusReason"] = reason
    return event


def _stack(status: str) -> dict[str, Any]:
    return {"Stacks": [{"StackName": STACK, "StackId": STACK_ID, "StackStatus": status, "CreationTime": T0}]}


def _update_plan() -> DeployPlan:
    return DeployPlan(request=request(), action="update", stack=None, changes=(), source=TemplateSource(body="x"),
                      change_set_id="arn:cs/1", stack_id=STACK_ID)


def test_failed_update_names_the_failing_resources_and_reasons() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    old = _event("old-1", "Old", "AWS::SQS::Queue", "UPDATE_FAILED", "an old failure", seconds=1)
    failed_reason = "Resource handler returned message: \"Bucket policy is malformed\""
    fresh = [
        _event("e5", STACK, "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_COMPLETE", seconds=9),
        _event("e4", "DataProcessorFunction", "AWS::Lambda::Function", "UPDATE_FAILED",
               "Resource update cancelled", seconds=8),
        _event("e3", "RawDataBucket", "AWS::S3::Bucket", "UPDATE_FAILED", failed_reason, seconds=7),
        _event("e2", STACK, "AWS::CloudFormation::Stack", "UPDATE_IN_PROGRESS", "User Initiated", seconds=6),
        old,
    ]
    with Stubber(cfn) as stub:
        stub.add_response("describe_stack_events", {"StackEvents": [old]}, {"StackName": STACK_ID})
        stub.add_response("execute_change_set", {}, {"ChangeSetName": "arn:cs/1"})
        stub.add_response("describe_stack_events", {"StackEvents": fresh}, {"StackName": STACK_ID})
        stub.add_response("describe_stacks", _stack("UPDATE_ROLLBACK_COMPLETE"), {"StackName": STACK_ID})
        client = DeployClient(cloudformation=cfn, region=REGION, clock=FakeClock().clock())
        streamed: list[str] = []
        with pytest.raises(DeployError) as excinfo:
            execute_plan(client, _update_plan(), streamed.append)
        stub.assert_no_pending_responses()
    message = str(excinfo.value)
    assert "update of stack iotpipe-dev failed: it ended in UPDATE_ROLLBACK_COMPLETE" in message
    assert f"RawDataBucket (AWS::S3::Bucket) UPDATE_FAILED: {failed_reason}" in message
    assert "an old failure" not in message and "cancelled" not in message
    assert [line.split()[2] for line in streamed if line.startswith("  [")] == [
        "UPDATE_IN_PROGRESS", "UPDATE_FAILED", "UPDATE_FAILED", "UPDATE_ROLLBACK_COMPLETE"]


def test_wait_is_bounded_by_the_timeout_and_polls_a_bounded_number_of_times() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    clock = FakeClock()
    with Stubber(cfn) as stub:
        for _ in range(20):
            stub.add_response("describe_stack_events", {"StackEvents": []})
            stub.add_response("describe_stacks", _stack("UPDATE_IN_PROGRESS"))
        client = DeployClient(cloudformation=cfn, region=REGION, clock=clock.clock())
        with pytest.raises(DeployError, match=r"still in progress after 1 min.*iotpipe status"):
            wait_for_stack(client, STACK_ID, "update", timeout_s=60, poll_s=5)
    assert 60 <= clock.t <= 61 and len(clock.sleeps) == 12


def test_on_failure_do_nothing_disables_rollback_of_an_update() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    plan = DeployPlan(request=request(on_failure="do-nothing"), action="update", stack=None, changes=(),
                      source=TemplateSource(body="x"), change_set_id="arn:cs/1", stack_id=STACK_ID)
    with Stubber(cfn) as stub:
        stub.add_response("describe_stack_events", {"StackEvents": []}, {"StackName": STACK_ID})
        stub.add_response("execute_change_set", {}, {"ChangeSetName": "arn:cs/1", "DisableRollback": True})
        stub.add_response("describe_stack_events", {"StackEvents": []}, {"StackName": STACK_ID})
        stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE"), {"StackName": STACK_ID})
        stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE"), {"StackName": STACK_ID})
        result = execute_plan(DeployClient(cloudformation=cfn, region=REGION, clock=FakeClock().clock()), plan)
        stub.assert_no_pending_responses()
    assert result.status == "UPDATE_COMPLETE"


# --- destroy ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_destroy_empties_every_version_and_delete_marker_in_batches_then_deletes() -> None:
    client = moto_client()
    client.page_size = 2  # forces several list pages and delete batches
    deploy(client)
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_bucket_versioning(Bucket="iot-raw-data-dev", VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):
        s3.put_object(Bucket="iot-raw-data-dev", Key=f"raw/{i}.json.gz", Body=b"a")
        s3.put_object(Bucket="iot-raw-data-dev", Key=f"raw/{i}.json.gz", Body=b"b")
    s3.delete_object(Bucket="iot-raw-data-dev", Key="raw/0.json.gz")
    deletes: list[int] = []
    client.s3.meta.events.register("before-call.s3.DeleteObjects",
                                   lambda params, **_: deletes.append(len(params["body"])))
    plan = plan_destroy(client, STACK, 600)
    assert plan.buckets == ("iot-raw-data-dev",)
    result = execute_destroy(client, plan, 600)
    assert result.deleted and dict(result.objects_deleted) == {"iot-raw-data-dev": 7}
    assert len(deletes) == 4
    assert client.find_stack(STACK) is None
    versions = s3.list_object_versions(Bucket="iot-raw-data-dev") if client.bucket_exists("iot-raw-data-dev") \
        else {}
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")


@pytest.mark.usefixtures("aws")
def test_destroy_refuses_under_termination_protection_and_says_how_to_lift_it() -> None:
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=STACK, TemplateBody=SMALL_TEMPLATE, EnableTerminationProtection=True)
    with pytest.raises(DeployError) as excinfo:
        plan_destroy(moto_client(), STACK, 600)
    message = str(excinfo.value)
    assert "termination protection" in message
    assert f"update-termination-protection --no-enable-termination-protection --stack-name {STACK}" in message
    assert "termination_protection = false" in message


@pytest.mark.usefixtures("aws")
def test_destroy_of_a_missing_stack_has_nothing_to_do() -> None:
    client = moto_client()
    plan = plan_destroy(client, STACK, 600)
    assert plan.stack is None and not execute_destroy(client, plan, 600).deleted


@pytest.mark.usefixtures("aws")
def test_destroy_leaves_a_retained_bucket_alone() -> None:
    client = moto_client()
    deploy(client, SMALL_TEMPLATE.replace("    Type: AWS::S3::Bucket\n",
                                          "    Type: AWS::S3::Bucket\n    DeletionPolicy: Retain\n"))
    boto3.client("s3", region_name=REGION).put_object(Bucket="iot-raw-data-dev", Key="keep", Body=b"x")
    plan = plan_destroy(client, STACK, 600)
    assert plan.buckets == () and plan.retained_buckets == ("iot-raw-data-dev",)
