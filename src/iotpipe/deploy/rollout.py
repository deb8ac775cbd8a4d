"""Safe rollout progress: the CodeDeploy deployments that shift the processor's alias during a stack update.

CloudFormation starts a deployment of the stack's deployment group when the alias's version changes
(``CodeDeployLambdaAliasUpdate``) and waits for it; the stack events only say the alias is being updated. This
module reads the deployment itself: its status, the weight already on the new version, and, when it stopped,
which of the group's alarms fired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from iotpipe import contract
from iotpipe.aws import aws_call, call_aws
from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.execute import DeployResult, execute_plan
from iotpipe.deploy.plan import DeployPlan
from iotpipe.errors import IotpipeError

TERMINAL = frozenset({"Succeeded", "Failed", "Stopped"})
# CodeDeploy's message when alarms stop a deployment ends with the alarms' names: "... Activated alarms: <a,b>".
_ACTIVATED = "Activated alarms:"


@dataclass(frozen=True)
class RolloutGroup:
    """The stack's CodeDeploy application and deployment group (physical names CloudFormation gave them)."""

    application: str
    group: str


@dataclass(frozen=True)
class RolloutState:
    """One deployment of the processor's alias as CodeDeploy reports it."""

    deployment_id: str
    status: str
    config: str = ""
    current_version: str = ""
    target_version: str = ""
    # Fraction of invocations on the new version (0..1); None before CodeDeploy reports a target.
    target_weight: float | None = None
    error_code: str = ""
    error_message: str = ""
    fired_alarms: tuple[str, ...] = ()
    rolled_back_by: str = ""  # the rollback deployment's id, when CodeDeploy started one

    @property
    def done(self) -> bool:
        """True once the deployment succeeded, failed or stopped."""
        return self.status in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-friendly data."""
        return {"deploymentId": self.deployment_id, "status": self.status, "deploymentConfig": self.config,
                "currentVersion": self.current_version, "targetVersion": self.target_version,
                "targetWeight": self.target_weight, "errorCode": self.error_code,
                "errorMessage": self.error_message, "firedAlarms": list(self.fired_alarms),
                "rollbackDeploymentId": self.rolled_back_by}


@dataclass(frozen=True)
class RolloutWatch:
    """What :func:`watch_rollouts` saw: each deployment's last state, in the order they started."""

    states: tuple[RolloutState, ...] = field(default_factory=tuple)


def rollout_group(resources: Sequence[Mapping[str, Any]], prefix: str = "") -> RolloutGroup | None:
    """The deployment group among the stack's resources (``DeployClient.stack_resources``); None when the stack
    has none (``processor.rollout = "all-at-once"``)."""
    by_id = {r.get("LogicalResourceId"): r.get("PhysicalResourceId", "") for r in resources}
    application = by_id.get(prefix + contract.ROLLOUT_APPLICATION)
    group = by_id.get(prefix + contract.ROLLOUT_DEPLOYMENT_GROUP)
    return RolloutGroup(application, group) if application and group else None


def deployments_since(codedeploy: Any, group: RolloutGroup, since: datetime) -> list[str]:
    """Ids of the group's deployments created at or after ``since`` (oldest first)."""
    paginator = codedeploy.get_paginator("list_deployments")
    ids: list[str] = []
    with aws_call("codedeploy", "list-deployments"):
        for page in paginator.paginate(applicationName=group.application, deploymentGroupName=group.group,
                                       createTimeRange={"start": since}):
            ids.extend(page.get("deployments", []))
    # ListDeployments returns the newest first.
    return list(reversed(ids))


def rollout_state(codedeploy: Any, deployment_id: str, alarm_names: Sequence[str] = ()) -> RolloutState:
    """The deployment's status, the weight on its new version and, when alarms stopped it, which ones."""
    info = call_aws("codedeploy", "get-deployment", codedeploy.get_deployment,
                    deploymentId=deployment_id)["deploymentInfo"]
    error = info.get("errorInformation") or {}
    message = error.get("message", "")
    lambda_info = _lambda_target(codedeploy, deployment_id)
    weight = lambda_info.get("targetVersionWeight")
    return RolloutState(
        deployment_id=deployment_id, status=info.get("status", ""), config=info.get("deploymentConfigName", ""),
        current_version=str(lambda_info.get("currentVersion", "")),
        target_version=str(lambda_info.get("targetVersion", "")),
        target_weight=float(weight) if weight is not None else None,
        error_code=error.get("code", ""), error_message=message,
        fired_alarms=fired_alarms(message, alarm_names),
        rolled_back_by=(info.get("rollbackInfo") or {}).get("rollbackDeploymentId", ""))


def fired_alarms(message: str, alarm_names: Sequence[str] = ()) -> tuple[str, ...]:
    """The alarms a stopped deployment's error message names: the group's alarms found in it, else the names
    after "Activated alarms:"."""
    named = tuple(name for name in alarm_names if name and name in message)
    if named or _ACTIVATED not in message:
        return named
    listed = message.split(_ACTIVATED, 1)[1].strip().strip("<>.").split(",")
    return tuple(name.strip().strip("<>") for name in listed if name.strip().strip("<>"))


def group_alarms(codedeploy: Any, group: RolloutGroup) -> tuple[str, ...]:
    """Names of the alarms that stop the group's deployments."""
    info = call_aws("codedeploy", "get-deployment-group", codedeploy.get_deployment_group,
                    applicationName=group.application, deploymentGroupName=group.group)["deploymentGroupInfo"]
    alarms = (info.get("alarmConfiguration") or {}).get("alarms", [])
    return tuple(alarm["name"] for alarm in alarms if alarm.get("name"))


def watch_rollouts(codedeploy: Any, group: RolloutGroup, since: datetime, on_change: Callable[[RolloutState], None],
                   *, stop: Callable[[], bool], poll_s: float = 15.0, max_polls: int = 2000,
                   sleep: Callable[[float], object] = time.sleep) -> RolloutWatch:
    """Poll the group's deployments created since ``since`` until ``stop()`` says the stack operation ended
    (then once more) or ``max_polls`` polls; ``on_change`` gets each state that differs from the last one seen.

    ``stop`` is checked between polls, so the caller's stack wait bounds this loop as well as ``max_polls``.
    """
    alarms = group_alarms(codedeploy, group)
    last: dict[str, RolloutState] = {}
    for _ in range(max_polls):
        finishing = stop()
        for deployment_id in deployments_since(codedeploy, group, since):
            previous = last.get(deployment_id)
            if previous is not None and previous.done:
                continue
            state = rollout_state(codedeploy, deployment_id, alarms)
            if state != previous:
                last[deployment_id] = state
                on_change(state)
        if finishing:
            break
        sleep(poll_s)
    return RolloutWatch(tuple(last.values()))


def execute_watching_rollout(client: DeployClient, codedeploy: Any, plan: DeployPlan,
                             progress: Callable[[str], None], on_change: Callable[[RolloutState], None], *,
                             poll_s: float = 15.0, prefix: str = "") -> tuple[DeployResult, RolloutWatch]:
    """:func:`~iotpipe.deploy.execute.execute_plan`, following the deployment group's shifts while it runs.

    Only an update of a stack that already has the deployment group can start a shift (creating the alias starts
    none). The watch runs beside the stack wait and stops with it; a failure to read CodeDeploy (a missing
    permission, say) is reported through ``progress`` and never fails the deploy. ``execute_plan``'s own error
    (a rolled-back update) is raised after the watch reported its last state, so the fired alarm is shown first.
    """
    group = None
    if plan.action == "update" and plan.stack is not None:
        group = rollout_group(client.stack_resources(plan.stack.stack_id), prefix)
    if group is None:
        return execute_plan(client, plan, progress), RolloutWatch()
    done = threading.Event()
    watched: list[RolloutWatch] = []

    def watch() -> None:
        try:
            watched.append(watch_rollouts(codedeploy, group, since, on_change, stop=done.is_set, poll_s=poll_s,
                                          sleep=done.wait))
        except IotpipeError as exc:
            progress(f"could not follow the rollout in CodeDeploy ({exc}); the stack events still tell the outcome")

    since = datetime.now(UTC)
    thread = threading.Thread(target=watch, name="rollout-watch", daemon=True)
    thread.start()
    try:
        result = execute_plan(client, plan, progress)
    finally:
        done.set()
        # Bounded: one last poll of a few calls after the stack operation ended.
        thread.join(timeout=120)
    seen = watched[0] if watched else RolloutWatch()
    return replace(result, rollouts=tuple(state.as_dict() for state in seen.states)), seen


def _lambda_target(codedeploy: Any, deployment_id: str) -> Mapping[str, Any]:
    """``lambdaFunctionInfo`` of the deployment's one Lambda target ({} before CodeDeploy lists it)."""
    ids = call_aws("codedeploy", "list-deployment-targets", codedeploy.list_deployment_targets,
                   deploymentId=deployment_id).get("targetIds", [])
    if not ids:
        return {}
    target = call_aws("codedeploy", "get-deployment-target", codedeploy.get_deployment_target,
                      deploymentId=deployment_id, targetId=ids[0])["deploymentTarget"]
    return (target.get("lambdaTarget") or {}).get("lambdaFunctionInfo") or {}


__all__ = ["RolloutGroup", "RolloutState", "RolloutWatch", "deployments_since", "execute_watching_rollout",
           "fired_alarms", "group_alarms", "rollout_group", "rollout_state", "watch_rollouts"]
