"""Rollout progress: CodeDeploy's deployments of the processor's alias, read with botocore's Stubber (moto's
CodeDeploy has no deployments of Lambda aliases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from deploy_helpers import SMALL_TEMPLATE, modified_template, moto_client
from moto import mock_aws

from iotpipe.deploy.execute import execute_plan
from iotpipe.deploy.plan import DeployPlan, DeployRequest, plan_deploy
from iotpipe.deploy.rollout import (
    RolloutGroup,
    RolloutState,
    execute_watching_rollout,
    fired_alarms,
    rollout_group,
    rollout_state,
    watch_rollouts,
)
from iotpipe.errors import AwsError
from iotpipe.local.emulator import moto_compat

GROUP = RolloutGroup("prod-ProcessorDeployApplication-AbC", "prod-ProcessorDeployGroup-XyZ")
ALARMS = ("IoT-Rollout-Errors-prod", "IoT-Rollout-Iterator-Age-prod", "IoT-Records-Quarantined-prod")
SINCE = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
STOPPED_MESSAGE = ("One or more alarms have been activated according to the Amazon CloudWatch metrics you selected, "
                   "and the affected deployments have been stopped. Activated alarms: <IoT-Rollout-Errors-prod>")


def codedeploy() -> Any:
    return boto3.client("codedeploy", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def expect_state(stub: Stubber, deployment_id: str, status: str, weight: float | None,
                 error: dict[str, str] | None = None, rollback: str = "") -> None:
    info: dict[str, Any] = {"deploymentId": deployment_id, "status": status,
                            "deploymentConfigName": "CodeDeployDefault.LambdaCanary10Percent5Minutes"}
    if error:
        info["errorInformation"] = error
    if rollback:
        info["rollbackInfo"] = {"rollbackDeploymentId": rollback}
    stub.add_response("get_deployment", {"deploymentInfo": info}, {"deploymentId": deployment_id})
    if weight is None:
        stub.add_response("list_deployment_targets", {"targetIds": []}, {"deploymentId": deployment_id})
        return
    target = "iot-data-processor-prod:live"
    stub.add_response("list_deployment_targets", {"targetIds": [target]}, {"deploymentId": deployment_id})
    stub.add_response("get_deployment_target", {"deploymentTarget": {"lambdaTarget": {"lambdaFunctionInfo": {
        "functionName": "iot-data-processor-prod", "functionAlias": "live", "currentVersion": "4",
        "targetVersion": "5", "targetVersionWeight": weight}}}},
        {"deploymentId": deployment_id, "targetId": target})


def test_a_shift_in_progress_reports_the_weight_on_the_new_version() -> None:
    client = codedeploy()
    with Stubber(client) as stub:
        expect_state(stub, "d-1", "InProgress", 0.1)
        state = rollout_state(client, "d-1", ALARMS)
    assert state == RolloutState("d-1", "InProgress", "CodeDeployDefault.LambdaCanary10Percent5Minutes", "4", "5",
                                 0.1)
    assert not state.done and state.as_dict()["targetWeight"] == 0.1


def test_a_rollback_names_the_alarm_that_fired() -> None:
    client = codedeploy()
    with Stubber(client) as stub:
        expect_state(stub, "d-2", "Stopped", 0.1, {"code": "ALARM_ACTIVE", "message": STOPPED_MESSAGE}, "d-3")
        state = rollout_state(client, "d-2", ALARMS)
    assert state.done and state.error_code == "ALARM_ACTIVE"
    assert state.fired_alarms == ("IoT-Rollout-Errors-prod",)
    assert state.rolled_back_by == "d-3"


def test_fired_alarms_falls_back_to_the_names_codedeploy_lists() -> None:
    assert fired_alarms("... Activated alarms: <a-prod,b-prod>") == ("a-prod", "b-prod")
    assert fired_alarms("the deployment failed because a hook failed") == ()


def test_watch_reports_each_change_until_the_stack_operation_ends() -> None:
    client = codedeploy()
    seen: list[RolloutState] = []
    stops = iter([False, False, True])
    with Stubber(client) as stub:
        stub.add_response("get_deployment_group", {"deploymentGroupInfo": {
            "alarmConfiguration": {"enabled": True, "alarms": [{"name": name} for name in ALARMS]}}},
            {"applicationName": GROUP.application, "deploymentGroupName": GROUP.group})
        listing = {"applicationName": GROUP.application, "deploymentGroupName": GROUP.group,
                   "createTimeRange": {"start": SINCE}}
        stub.add_response("list_deployments", {"deployments": []}, listing)
        stub.add_response("list_deployments", {"deployments": ["d-1"]}, listing)
        expect_state(stub, "d-1", "InProgress", 0.1)
        stub.add_response("list_deployments", {"deployments": ["d-1"]}, listing)
        expect_state(stub, "d-1", "Succeeded", 1.0)
        watch = watch_rollouts(client, GROUP, SINCE, seen.append, stop=lambda: next(stops), sleep=lambda _: None)
        stub.assert_no_pending_responses()
    assert [(s.status, s.target_weight) for s in seen] == [("InProgress", 0.1), ("Succeeded", 1.0)]
    assert watch.states == (seen[-1],)


def test_watch_is_bounded_by_max_polls() -> None:
    client = codedeploy()
    polls: list[float] = []
    with Stubber(client) as stub:
        stub.add_response("get_deployment_group", {"deploymentGroupInfo": {}}, {
            "applicationName": GROUP.application, "deploymentGroupName": GROUP.group})
        for _ in range(3):
            stub.add_response("list_deployments", {"deployments": []}, {
                "applicationName": ANY, "deploymentGroupName": ANY, "createTimeRange": ANY})
        watch = watch_rollouts(client, GROUP, SINCE, lambda _: None, stop=lambda: False, max_polls=3,
                               sleep=polls.append)
    assert watch.states == () and len(polls) == 3


def test_an_aws_error_names_codedeploy_and_the_operation() -> None:
    client = codedeploy()
    with Stubber(client) as stub:
        stub.add_client_error("get_deployment", "DeploymentDoesNotExistException", "no such deployment")
        with pytest.raises(AwsError, match="get-deployment") as caught:
            rollout_state(client, "d-9")
    assert caught.value.code == "DeploymentDoesNotExistException"


def test_the_group_is_found_among_the_stack_resources_or_absent() -> None:
    resources = [{"LogicalResourceId": "ProcessorDeployApplication", "PhysicalResourceId": GROUP.application},
                 {"LogicalResourceId": "ProcessorDeployGroup", "PhysicalResourceId": GROUP.group},
                 {"LogicalResourceId": "DataProcessorFunction", "PhysicalResourceId": "iot-data-processor-prod"}]
    assert rollout_group(resources) == GROUP
    assert rollout_group(resources[2:]) is None


# ---------------------------------------------------------------- beside a stack update (moto's CloudFormation)

# moto's CloudFormation has no CodeDeploy resources: queues stand in under the deployment group's logical ids,
# which is all the lookup reads (logical and physical ids).


class FakeCodeDeploy:
    """A CodeDeploy client whose one deployment was stopped by the error alarm; records every call. Used where
    the number of polls depends on thread timing (a Stubber needs the exact sequence)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if self.fail:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, name)

    def get_deployment_group(self, **_: Any) -> dict[str, Any]:
        self._record("GetDeploymentGroup")
        return {"deploymentGroupInfo": {"alarmConfiguration": {"alarms": [{"name": n} for n in ALARMS]}}}

    def get_paginator(self, _: str) -> Any:
        outer = self

        class Pages:
            def paginate(self, **__: Any) -> list[dict[str, Any]]:
                outer._record("ListDeployments")
                return [{"deployments": ["d-2"]}]
        return Pages()

    def get_deployment(self, **_: Any) -> dict[str, Any]:
        self._record("GetDeployment")
        return {"deploymentInfo": {"deploymentId": "d-2", "status": "Stopped", "errorInformation": {
            "code": "ALARM_ACTIVE", "message": STOPPED_MESSAGE}, "rollbackInfo": {"rollbackDeploymentId": "d-3"}}}

    def list_deployment_targets(self, **_: Any) -> dict[str, Any]:
        self._record("ListDeploymentTargets")
        return {"targetIds": []}


def with_group(template: str) -> str:
    queues = "\n".join(f"  {logical_id}:\n    Type: AWS::SQS::Queue"
                       for logical_id in ("ProcessorDeployApplication", "ProcessorDeployGroup"))
    return template.replace("Outputs:", queues + "\nOutputs:", 1)


def deploy(client: Any, template: str) -> DeployPlan:
    request = DeployRequest(stack_name="iotpipe-prod", template_body=template, env="prod")
    return plan_deploy(client, request)


@pytest.fixture
def aws() -> Iterator[None]:
    moto_compat.apply(moto_compat.LIBRARY_KINDS)
    with mock_aws():
        yield


@pytest.mark.usefixtures("aws")
def test_an_update_reports_the_rollback_and_its_alarm_while_the_stack_updates() -> None:
    client = moto_client()
    execute_plan(client, deploy(client, with_group(SMALL_TEMPLATE)))
    fake, seen, notes = FakeCodeDeploy(), [], []
    result, watch = execute_watching_rollout(client, fake, deploy(client, with_group(modified_template())),
                                             notes.append, seen.append, poll_s=60)
    assert result.status == "UPDATE_COMPLETE"
    assert [s.fired_alarms for s in seen] == [("IoT-Rollout-Errors-prod",)]
    assert watch.states == tuple(seen) and seen[0].rolled_back_by == "d-3"
    # `iotpipe deploy --output json` prints the result: the shift, its fired alarm and the rollback are in it.
    rollouts = result.as_dict()["rollouts"]
    assert rollouts == [s.as_dict() for s in seen]
    assert (rollouts[0]["firedAlarms"], rollouts[0]["rollbackDeploymentId"]) == (["IoT-Rollout-Errors-prod"], "d-3")


@pytest.mark.usefixtures("aws")
def test_a_stack_without_a_deployment_group_never_calls_codedeploy() -> None:
    client = moto_client()
    execute_plan(client, deploy(client, SMALL_TEMPLATE))
    fake = FakeCodeDeploy()
    result, watch = execute_watching_rollout(client, fake, deploy(client, modified_template()), lambda _: None,
                                             lambda _: None)
    assert result.status == "UPDATE_COMPLETE" and watch.states == () and fake.calls == []
    assert result.as_dict()["rollouts"] == []


@pytest.mark.usefixtures("aws")
def test_codedeploy_refusing_reads_is_a_note_not_a_failed_deploy() -> None:
    client = moto_client()
    execute_plan(client, deploy(client, with_group(SMALL_TEMPLATE)))
    notes: list[str] = []
    result, watch = execute_watching_rollout(client, FakeCodeDeploy(fail=True),
                                             deploy(client, with_group(modified_template())), notes.append,
                                             lambda _: None, poll_s=60)
    assert result.status == "UPDATE_COMPLETE" and watch.states == ()
    assert any("could not follow the rollout" in note and "AccessDenied" in note for note in notes)


def test_deploy_prints_the_shift_and_on_rollback_the_alarm() -> None:
    from iotpipe.cli.deploy import rollout_line

    shifting = RolloutState("d-1", "InProgress", current_version="4", target_version="5", target_weight=0.1)
    assert rollout_line(shifting) == "rollout d-1: InProgress, 10% of batches on version 5 (the rest on 4)"
    assert rollout_line(RolloutState("d-1", "Succeeded", target_version="5")) == (
        "rollout d-1: Succeeded, version 5 takes every batch")
    stopped = RolloutState("d-2", "Stopped", current_version="4", target_version="5", error_code="ALARM_ACTIVE",
                           error_message=STOPPED_MESSAGE, fired_alarms=("IoT-Rollout-Errors-prod",),
                           rolled_back_by="d-3")
    assert rollout_line(stopped) == ("rollout d-2: Stopped (ALARM_ACTIVE): alarm IoT-Rollout-Errors-prod fired; "
                                     "the alias went back to version 4 (rollback d-3)")
