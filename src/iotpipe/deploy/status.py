"""Deploy status: what a stack is, its last events and whether it matches the current template."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iotpipe.deploy.client import Change, DeployClient, Stack, StackEvent
from iotpipe.deploy.execute import discard_plan
from iotpipe.deploy.plan import DeployPlan
from iotpipe.deploy.waiters import CREATE_STATES
from iotpipe.errors import DeployError, IotpipeError

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class StatusReport:
    """A stack's status, its last events and whether it matches the current template."""

    stack: Stack
    events: tuple[StackEvent, ...]
    pending_changes: tuple[Change, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {"stack": self.stack.as_dict(), "stackName": self.stack.name, "status": self.stack.status,
                "statusReason": self.stack.status_reason,
                "terminationProtection": self.stack.termination_protection,
                "events": [e.as_dict() for e in self.events],
                "pendingChanges": None if self.pending_changes is None
                else [c.as_dict() for c in self.pending_changes]}


def stack_status(client: DeployClient, stack: Stack, plan: DeployPlan | None, last: int = 10) -> StatusReport:
    """The report for ``stack``; when ``plan`` is given its change set is discarded and its changes reported."""
    events = client.events_since(stack.stack_id, None, limit_pages=1)[-last:]
    pending: tuple[Change, ...] | None = None
    if plan is not None:
        discard_plan(client, plan)
        pending = plan.changes
    return StatusReport(stack=stack, events=tuple(events), pending_changes=pending)


def describe_stack(client: DeployClient, stack_name: str, env: str = "dev") -> Stack:
    """The stack, or DeployError (exit 1) saying it does not exist and how to deploy it."""
    stack = client.find_stack(stack_name)
    if stack is None or stack.status in CREATE_STATES:
        raise DeployError(f"stack {stack_name} does not exist (or has never been deployed); "
                          f"deploy it first: iotpipe deploy --env {env}")
    return stack


def comparable(stack: Stack) -> bool:
    """Whether a change set can compare ``stack`` with the config: not while it is busy or broken."""
    return not (stack.status.endswith("_IN_PROGRESS") or stack.status in CREATE_STATES
                or stack.status.endswith("FAILED") or stack.status == "ROLLBACK_COMPLETE")


def status_plan(cfg: Any, client: DeployClient, stack: Stack, timeout_minutes: float = 30.0,
                progress: Progress = _quiet) -> DeployPlan | None:
    """A plan to compare ``stack`` against (``iotpipe deploy``'s own, writing nothing to S3), or None when the
    stack is busy or broken or the plan fails: the status must still be reported then (``progress`` says why)."""
    from iotpipe.deploy.planner import DeployOptions, plan_config

    if not comparable(stack):
        progress(f"not comparing with the config while the stack is {stack.status}")
        return None
    try:
        options = DeployOptions(timeout_minutes=timeout_minutes, read_only="iotpipe status")
        return plan_config(cfg, client, options, progress).plan
    except IotpipeError as exc:
        progress(f"could not compare with the config: {exc}")
        return None


def pipeline_status(cfg: Any, client: DeployClient, *, last: int = 10, check: bool = True,
                    timeout_minutes: float = 30.0, progress: Progress = _quiet) -> StatusReport:
    """The status of ``cfg``'s stack: its last ``last`` events and, when ``check``, the changes a deploy of the
    current config would make (None when not compared). DeployError when the stack does not exist."""
    stack = describe_stack(client, cfg.resolved_stack_name, cfg.env)
    plan = status_plan(cfg, client, stack, timeout_minutes, progress) if check else None
    return stack_status(client, stack, plan, last)


__all__ = ["StatusReport", "comparable", "describe_stack", "pipeline_status", "stack_status", "status_plan"]
