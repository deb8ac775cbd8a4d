"""Deploy execution: the calls that change a stack, and the display-only executor used by diff and --no-execute.

Every wait is bounded by the request's timeout, streams stack events as they arrive through ``progress`` and
never returns while the stack is still ``*_IN_PROGRESS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from iotpipe.deploy.client import Change, DeployClient, StackEvent
from iotpipe.deploy.plan import CREATE_STATES, DeployPlan, DestroyPlan, change_set_kwargs
from iotpipe.deploy.waiters import wait_change_set, wait_for_stack
from iotpipe.errors import DeployError

Progress = Callable[[str], None]
SUCCESS_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "IMPORT_COMPLETE"})


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class DeployResult:
    """What a deploy (or a dry run of it) did."""

    stack_name: str
    action: str
    executed: bool
    status: str
    changes: tuple[Change, ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()
    termination_protection: bool | None = None
    notes: tuple[str, ...] = ()
    # The processor's CodeDeploy shifts this deploy started (``RolloutState.as_dict``), in the order they started.
    rollouts: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data."""
        return {"stackName": self.stack_name, "action": self.action, "executed": self.executed,
                "status": self.status, "changes": [c.as_dict() for c in self.changes],
                "outputs": dict(self.outputs), "terminationProtection": self.termination_protection,
                "notes": list(self.notes), "rollouts": [dict(r) for r in self.rollouts]}


def failure_message(stack_name: str, operation: str, status: str, events: tuple[StackEvent, ...]) -> str:
    """The failing resources and their reasons, oldest first (the first one is usually the cause)."""
    failed = [e for e in events if e.failed]
    lines = [f"{operation} of stack {stack_name} failed: it ended in {status}."]
    if failed:
        lines.append("Failed resources:")
        lines.extend(f"  {e.logical_id} ({e.resource_type}) {e.status}: {e.reason or 'no reason given'}"
                     for e in failed)
    else:
        lines.append("CloudFormation gave no resource failure; see `iotpipe status` for the last events.")
    return "\n".join(lines)


def _apply_termination_protection(client: DeployClient, plan: DeployPlan, progress: Progress) -> bool | None:
    change = plan.termination_protection_change
    if change is None:
        return None
    client.set_termination_protection(plan.request.stack_name, change)
    progress(f"termination protection {'enabled' if change else 'disabled'} on {plan.request.stack_name} "
             "(termination_protection in iotpipe.toml)")
    return change


def discard_plan(client: DeployClient, plan: DeployPlan, progress: Progress = _quiet) -> DeployResult:
    """The display-only executor (diff, --no-execute, a declined prompt): delete the change set, change nothing."""
    if plan.change_set_id:
        client.delete_change_set(plan.change_set_id)
    if plan.created_review_stack and plan.stack_id:
        stack = client.find_stack(plan.stack_id)
        if stack is not None and stack.status in CREATE_STATES:
            client.delete_stack(plan.stack_id)  # the empty stack a CREATE change set leaves behind
    notes: tuple[str, ...] = ()
    if plan.action == "recreate":
        notes = (f"stack {plan.request.stack_name} is in ROLLBACK_COMPLETE (a failed first create); deploy "
                 "would delete it and create it again",)
    progress("change set deleted; nothing was executed" if plan.change_set_id else "nothing was executed")
    status = plan.stack.status if plan.stack is not None else ""
    return DeployResult(stack_name=plan.request.stack_name, action=plan.action, executed=False, status=status,
                        changes=plan.changes, outputs=plan.stack.outputs if plan.stack else (), notes=notes)


def execute_plan(client: DeployClient, plan: DeployPlan, progress: Progress = _quiet) -> DeployResult:
    """Run the plan: execute its change set (recreating a ROLLBACK_COMPLETE stack first) and wait for the result."""
    request = plan.request
    notes: list[str] = []
    if plan.action == "none":
        if plan.change_set_id:
            client.delete_change_set(plan.change_set_id)
        protection = _apply_termination_protection(client, plan, progress)
        stack = client.find_stack(request.stack_name)
        return DeployResult(stack_name=request.stack_name, action="none", executed=False,
                            status=stack.status if stack else "", changes=(),
                            outputs=stack.outputs if stack else (), termination_protection=protection,
                            notes=("no changes: the stack already matches the template and parameters",))
    if plan.action == "recreate":
        plan = _recreate(client, plan, progress)
        notes.append(f"stack {request.stack_name} was in ROLLBACK_COMPLETE (a failed first create); "
                     "it was deleted and created again")
    assert plan.change_set_id is not None and plan.stack_id is not None
    operation = "create" if plan.action in ("create", "recreate") else "update"
    last_event = client.latest_event_id(plan.stack_id)
    progress(f"executing change set ({operation} of {request.stack_name}, timeout {request.timeout_minutes:g} min)")
    client.execute_change_set(plan.change_set_id,
                              disable_rollback=operation == "update" and request.on_failure == "do-nothing")
    status, events = wait_for_stack(client, plan.stack_id, operation, request.timeout_s, progress, last_event)
    if status not in SUCCESS_STATES or status == "DELETE_COMPLETE":
        raise DeployError(failure_message(request.stack_name, operation, status, events))
    protection = _apply_termination_protection(client, plan, progress)
    stack = client.find_stack(plan.stack_id)
    return DeployResult(stack_name=request.stack_name, action=plan.action, executed=True, status=status,
                        changes=plan.changes, outputs=stack.outputs if stack else (),
                        termination_protection=protection, notes=tuple(notes))


def _recreate(client: DeployClient, plan: DeployPlan, progress: Progress) -> DeployPlan:
    """Delete the ROLLBACK_COMPLETE stack, wait, and make the CREATE change set it could not have before."""
    request = plan.request
    assert plan.stack is not None
    progress(f"stack {request.stack_name} is in ROLLBACK_COMPLETE (a failed first create, nothing to keep): "
             "deleting it and creating it again")
    last_event = client.latest_event_id(plan.stack.stack_id)
    client.delete_stack(plan.stack.stack_id)
    status, events = wait_for_stack(client, plan.stack.stack_id, "delete", request.timeout_s, progress, last_event)
    if status != "DELETE_COMPLETE":
        raise DeployError(failure_message(request.stack_name, "delete", status, events))
    created = client.create_change_set(**change_set_kwargs(request, plan.source, "CREATE"))
    if created is None:
        raise DeployError(f"CloudFormation refused a CREATE change set for {request.stack_name} as unchanged; "
                          "run the command again")
    change_set_id, stack_id = created
    described = wait_change_set(client, change_set_id, request.timeout_s, progress)
    if described.status != "CREATE_COMPLETE":
        raise DeployError(f"CloudFormation could not create the change set for {request.stack_name} "
                          f"({described.status}): {described.status_reason or 'no reason given'}")
    return replace(plan, change_set_id=change_set_id, stack_id=stack_id, stack=None,
                   changes=described.changes or plan.changes, created_review_stack=True)


# --- destroy ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DestroyResult:
    """What destroy did."""

    stack_name: str
    deleted: bool
    objects_deleted: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-friendly data."""
        return {"stackName": self.stack_name, "deleted": self.deleted,
                "objectsDeleted": dict(self.objects_deleted)}


def empty_bucket(client: DeployClient, bucket: str, progress: Progress = _quiet,
                 max_rounds: int = 100_000) -> int:
    """Delete every object version and delete marker (listed a page at a time, deleted in batches)."""
    if not client.bucket_exists(bucket):
        return 0
    total = 0
    for _ in range(max_rounds):
        page = client.first_versions(bucket)
        if not page:
            return total
        total += client.delete_versions(bucket, page)
        progress(f"  emptied {total} object versions and delete markers from {bucket}")
    raise DeployError(f"bucket {bucket} still has objects after {max_rounds} rounds of deletes; is something "
                      "still writing to it? Stop the writers and run destroy again")


def execute_destroy(client: DeployClient, plan: DestroyPlan, timeout_s: float,
                    progress: Progress = _quiet) -> DestroyResult:
    """Empty the stack's buckets, delete the stack and wait (bounded) until it is gone."""
    if plan.stack is None:
        return DestroyResult(stack_name=plan.stack_name, deleted=False)
    counts = tuple((bucket, empty_bucket(client, bucket, progress)) for bucket in plan.buckets)
    last_event = client.latest_event_id(plan.stack.stack_id)
    progress(f"deleting stack {plan.stack_name} (timeout {timeout_s / 60:g} min)")
    client.delete_stack(plan.stack.stack_id)
    status, events = wait_for_stack(client, plan.stack.stack_id, "delete", timeout_s, progress, last_event)
    if status != "DELETE_COMPLETE":
        raise DeployError(failure_message(plan.stack_name, "delete", status, events))
    return DestroyResult(stack_name=plan.stack_name, deleted=True, objects_deleted=counts)


__all__ = ["DeployResult", "DestroyResult", "discard_plan", "empty_bucket", "execute_destroy", "execute_plan",
           "failure_message"]
