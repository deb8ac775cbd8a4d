"""Every wait of deploy: one stack poller (bounded, optionally streaming events), the change-set waiter, the
function-code waiter of a hotswap and the file watcher of ``--watch``.

A stack wait polls rather than using boto3's stack waiters because it streams each stack event as it arrives;
the change-set wait has nothing to stream and uses boto3's ``change_set_create_complete`` waiter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import WaiterError

from iotpipe.aws import call_aws
from iotpipe.deploy.client import ChangeSet, DeployClient, Stack, StackEvent
from iotpipe.errors import AwsError, DeployError

Progress = Callable[[str], None]
POLL_SECONDS = 5.0
SETTLE_POLL_SECONDS = 10.0
# A CREATE change set leaves the stack in REVIEW_IN_PROGRESS until it runs: nothing is running there.
CREATE_STATES = frozenset({"REVIEW_IN_PROGRESS"})


def _quiet(_: str) -> None:
    return None


def format_event(event: StackEvent, elapsed_s: float) -> str:
    """One progress line for a stack event, with the elapsed time."""
    reason = f"  {event.reason}" if event.reason else ""
    return f"  [{elapsed_s:5.0f}s] {event.status:<28} {event.logical_id} ({event.resource_type}){reason}"


def poll_stack(client: DeployClient, stack_ref: str, timeout_s: float, *, done: Callable[[Stack | None], bool],
               timeout_message: str, progress: Progress = _quiet, poll_s: float = POLL_SECONDS,
               stream_after: str | None = None, stream: bool = False,
               waiting: Callable[[Stack | None, float], str] | None = None,
               ) -> tuple[Stack | None, tuple[StackEvent, ...]]:
    """Describe ``stack_ref`` until ``done(stack)``; (the stack, the events streamed). The one stack poller.

    With ``stream``, events newer than ``stream_after`` are passed to ``progress`` as they arrive; ``waiting``
    makes a progress line for each poll that waits. At most ``timeout_s`` of the client's clock is spent, then a
    DeployError with ``timeout_message``.
    """
    start = client.clock.now()
    seen: list[StackEvent] = []
    last_event = stream_after
    max_polls = int(timeout_s / max(poll_s, 0.001)) + 2
    for _ in range(max_polls):
        if stream:
            try:
                fresh = client.events_since(stack_ref, last_event)
            except AwsError:
                fresh = []  # a deleted stack may no longer list events; its status below is what counts
            for event in fresh:
                progress(format_event(event, client.clock.now() - start))
                last_event = event.event_id
            seen.extend(fresh)
        stack = client.find_stack(stack_ref)
        if done(stack):
            return stack, tuple(seen)
        elapsed = client.clock.now() - start
        if elapsed >= timeout_s:
            break
        if waiting is not None:
            progress(waiting(stack, elapsed))
        client.clock.sleep(min(poll_s, max(timeout_s - elapsed, 0.0)))
    raise DeployError(timeout_message)


def wait_for_stack(client: DeployClient, stack_id: str, operation: str, timeout_s: float,
                   progress: Progress = _quiet, last_event: str | None = None,
                   poll_s: float = POLL_SECONDS) -> tuple[str, tuple[StackEvent, ...]]:
    """Poll until the stack leaves ``*_IN_PROGRESS``; (final status, events seen). Bounded by ``timeout_s``.

    The stack is looked up by id so a deleted stack reads DELETE_COMPLETE rather than "does not exist".
    """
    stack, events = poll_stack(
        client, stack_id, timeout_s, progress=progress, poll_s=poll_s, stream=True, stream_after=last_event,
        done=lambda s: s is None or not s.status.endswith("_IN_PROGRESS"),
        timeout_message=f"{operation} of {stack_id} is still in progress after {timeout_s / 60:.0f} min "
                        "(--timeout); it goes on in AWS. Watch it with `iotpipe status`, or raise --timeout next time")
    return (stack.status if stack is not None else "DELETE_COMPLETE"), events


def wait_until_settled(client: DeployClient, stack_name: str, timeout_s: float,
                       progress: Progress = _quiet, poll_s: float = SETTLE_POLL_SECONDS) -> Stack | None:
    """Describe the stack until it is in no ``*_IN_PROGRESS`` state (review aside), bounded by ``timeout_s``."""
    stack, _ = poll_stack(
        client, stack_name, timeout_s, progress=progress, poll_s=poll_s,
        done=lambda s: s is None or not s.status.endswith("_IN_PROGRESS") or s.status in CREATE_STATES,
        waiting=lambda s, elapsed: (f"  [{elapsed:5.0f}s] stack {stack_name} is {s.status if s else 'gone'}; "
                                    "waiting for it to finish (another deploy or delete is running)"),
        timeout_message=f"stack {stack_name} is still in progress after {timeout_s / 60:.0f} min (--timeout); "
                        "not racing it. Watch it with `iotpipe status`, then run the command again")
    return stack


def wait_change_set(client: DeployClient, change_set_id: str, timeout_s: float, progress: Progress = _quiet,
                    delay_s: int = 5) -> ChangeSet:
    """Wait (boto3 waiter, bounded by ``timeout_s``) until the change set is ready or failed; describe it."""
    waiter = client.cloudformation.get_waiter("change_set_create_complete")
    start = client.clock.now()
    chunk_attempts = max(1, 30 // max(delay_s, 1))
    while True:
        try:
            waiter.wait(ChangeSetName=change_set_id, WaiterConfig={"Delay": delay_s, "MaxAttempts": chunk_attempts})
            break
        except WaiterError as exc:
            status = (exc.last_response or {}).get("Status", "")
            if status in ("FAILED", "CREATE_COMPLETE") or "Error" in (exc.last_response or {}):
                break
            elapsed = client.clock.now() - start
            if elapsed >= timeout_s:
                raise DeployError(f"change set {change_set_id} was still {status or 'pending'} after "
                                  f"{elapsed:.0f}s (--timeout); look at it in the CloudFormation console "
                                  "and run the command again") from None
            progress(f"  [{elapsed:5.0f}s] change set {status or 'pending'}")
    return client.describe_change_set(change_set_id)


__all__ = [
    "CREATE_STATES",
    "POLL_SECONDS",
    "format_event",
    "poll_stack",
    "snapshot",
    "wait_change_set",
    "wait_for_stack",
    "wait_function_updated",
    "wait_until_settled",
    "watch_files",
]


def wait_function_updated(lambda_client: Any, function_name: str, timeout_s: float) -> None:
    """Wait (boto3's ``function_updated_v2`` waiter, a poll a second) until a code update of ``function_name``
    is in place; AwsError when it fails or outlasts ``timeout_s``."""
    waiter = lambda_client.get_waiter("function_updated_v2")
    call_aws("lambda", "get-function (function_updated_v2 waiter)", waiter.wait,
             FunctionName=function_name, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(timeout_s))})


def snapshot(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """Each file's (path, mtime in ns, size); a missing file counts as (path, -1, -1) (an editor mid-save)."""
    result = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            result.append((str(path), -1, -1))
            continue
        result.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


def watch_files(paths: Sequence[Path], on_change: Callable[[], None], *, interval_s: float = 0.5,
                max_changes: int | None = None, max_polls: int | None = None,
                sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll ``paths`` every ``interval_s`` and call ``on_change`` after each save; the number of changes seen.

    Runs until ``max_changes`` changes or ``max_polls`` polls (None: until interrupted). Polling mtimes needs no
    dependency and works the same on every platform and file system.
    """
    last = snapshot(paths)
    changes = polls = 0
    while (max_changes is None or changes < max_changes) and (max_polls is None or polls < max_polls):
        sleep(interval_s)
        polls += 1
        current = snapshot(paths)
        if current == last or any(mtime < 0 for _, mtime, _ in current):
            continue
        last = current
        changes += 1
        on_change()
    return changes
