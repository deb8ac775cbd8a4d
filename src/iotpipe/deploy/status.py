"""Deploy status: what a stack is, its last events and whether it matches the current template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iotpipe.deploy.client import Change, DeployClient, Stack, StackEvent
from iotpipe.deploy.execute import discard_plan
from iotpipe.deploy.plan import DeployPlan
from iotpipe.deploy.waiters import CREATE_STATES
from iotpipe.errors import DeployError


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


__all__ = ["StatusReport", "describe_stack", "stack_status"]
