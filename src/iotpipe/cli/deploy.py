"""``iotpipe deploy | diff | outputs | status | destroy``: the stack lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from iotpipe.aws import STACK_TIMEOUTS
from iotpipe.cli.common import Target, blueprint_option, pipeline_target, progress
from iotpipe.cli.output import confirm, echo_json, format_table, output_option, require_consent
from iotpipe.deploy.client import Change, DeployClient, StackEvent
from iotpipe.deploy.destroy import device_guard, release_devices
from iotpipe.deploy.execute import DeployResult, DestroyResult, discard_plan, execute_destroy, execute_plan
from iotpipe.deploy.plan import ON_FAILURE_CHOICES, DeployPlan, parse_assignments, plan_destroy
from iotpipe.deploy.planner import DeployOptions, deploy_request, plan_config
from iotpipe.deploy.rollout import RolloutState, execute_watching_rollout
from iotpipe.deploy.status import describe_stack, pipeline_status
from iotpipe.errors import DeployError

DEFAULT_TIMEOUT_MINUTES = 30.0


def _timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--timeout", "timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT_MINUTES,
                        show_default=True, help="Bound of every wait, in minutes.")(func)


def change_table(changes: Sequence[Change]) -> str:
    """The change set as a table: Action, LogicalId, Type, Replacement."""
    rows = [(c.action, c.logical_id, c.resource_type, c.replacement or "-") for c in changes]
    return format_table(("Action", "LogicalId", "Type", "Replacement"), rows)


def outputs_table(outputs: Sequence[tuple[str, str]]) -> str:
    """Stack outputs as a two-column table."""
    if not outputs:
        return "(the stack has no outputs)"
    return format_table(("OutputKey", "OutputValue"), sorted(outputs))


def events_table(events: Sequence[StackEvent]) -> str:
    """Stack events, oldest first."""
    rows = [(e.timestamp.strftime("%Y-%m-%d %H:%M:%S") if e.timestamp else "", e.status, e.logical_id,
             e.resource_type, e.reason) for e in events]
    return format_table(("Time", "Status", "LogicalId", "Type", "Reason"), rows)


def _options(params: Sequence[str], tags: Sequence[str], **more: Any) -> DeployOptions:
    """--tag and --param as deploy options (tags parsed first: a bad one is the first error)."""
    parsed_tags = parse_assignments(tags, "--tag")
    return DeployOptions(parameters=parse_assignments(params, "--param"), tags=parsed_tags, **more)


def _show_plan(plan: DeployPlan, output: str) -> None:
    """The change table: on stdout as the result, or on stderr when stdout carries JSON."""
    to_stderr = output == "json"
    if plan.action == "recreate":
        progress(f"stack {plan.request.stack_name} is in ROLLBACK_COMPLETE (a failed first create): "
                 "it will be deleted and created again")
    if not plan.has_changes:
        click.echo(f"No changes: stack {plan.request.stack_name} already matches the template and parameters.",
                   err=to_stderr)
        return
    click.echo(f"Changes to stack {plan.request.stack_name} ({plan.action}):", err=to_stderr)
    click.echo(change_table(plan.changes), err=to_stderr)


def _show_result(result: DeployResult, output: str) -> None:
    if output == "json":
        echo_json(result.as_dict())
        return
    for note in result.notes:
        progress(note)
    if result.executed:
        click.echo(f"Stack {result.stack_name}: {result.status}")
    click.echo(outputs_table(result.outputs))


@click.command()
@pipeline_target(timeouts=STACK_TIMEOUTS)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--no-execute", is_flag=True, help="Create the change set, show it, delete it; change nothing.")
@click.option("--param", "params", multiple=True, metavar="K=V",
              help="Template parameter; overrides [env.<name>.parameters] key by key. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="K=V",
              help="Stack tag; overrides [env.<name>.tags] key by key. Repeatable.")
@click.option("--on-failure", type=click.Choice(ON_FAILURE_CHOICES), default="rollback", show_default=True,
              help="What CloudFormation does when a create fails (an update: rollback or do-nothing).")
@click.option("--checkov/--no-checkov", "with_checkov", default=True, show_default=True,
              help="Gate on checkov's CloudFormation checks too, as `iotpipe lint` does (when checkov is installed).")
@click.option("--hotswap", is_flag=True,
              help="Dev only: when only the processor's code changed, update the function's code directly (no "
                   "change set); refused on a production env. The next full deploy reconciles the drift.")
@click.option("--watch", is_flag=True, help="Hotswap now and after each save of the processor's source.")
@_timeout_option
@output_option
@blueprint_option
def deploy(target: Target, yes: bool, no_execute: bool, params: tuple[str, ...], tags: tuple[str, ...], on_failure: str,
           with_checkov: bool, hotswap: bool, watch: bool, timeout: float, output: str, blueprint: Any) -> None:
    """Render, lint and deploy the pipeline stack through a change set.

    The template must pass `iotpipe lint`'s gate for the target region first (cfn-lint with iotpipe's own rules,
    and checkov when installed): any error or warning refuses the deploy before any AWS write.

    The stack is named iotpipe-<env> unless stack_name is set in the env section.
    No changes is a success (exit 0, outputs printed). A stack left in ROLLBACK_COMPLETE by a failed
    first create is deleted and created again; a stack in progress is waited for (up to --timeout).

    \b
    Examples:
      iotpipe deploy --env dev
      iotpipe deploy --env prod --yes --tag Owner=plant-7 --param AlarmEmail=ops@example.com
      iotpipe deploy --env dev --no-execute --output json
      iotpipe deploy --env dev --endpoint-url http://127.0.0.1:5000 --yes
      iotpipe deploy --env dev --blueprint examples/firehose_copy.py:customise
      iotpipe deploy --env dev --hotswap --watch
    """
    if hotswap or watch:
        _hotswap(target, params, tags, timeout, output, blueprint, watch, no_execute)
        return
    if not no_execute:
        require_consent(yes, "deploy")
    cfg, client = target.config, DeployClient.from_factory(target.factory)
    options = _options(params, tags, on_failure=on_failure, timeout_minutes=timeout, checkov=with_checkov,
                       blueprint=blueprint)
    plan = plan_config(cfg, client, options, progress, factory=target.factory).plan
    _show_plan(plan, output)
    if no_execute:
        result = discard_plan(client, plan, progress)
        progress("--no-execute: nothing was executed")
        _show_result(result, output)
        return
    if plan.has_changes and not confirm("Execute these changes?", yes=yes, what="deploy"):
        discard_plan(client, plan, progress)
        raise DeployError("deploy cancelled at the prompt; nothing was executed (the change set was deleted)")
    if cfg.processor.rollout == "all-at-once":
        _show_result(execute_plan(client, plan, progress), output)
        return
    result, _ = execute_watching_rollout(client, target.factory.client("codedeploy"), plan, progress,
                                         lambda state: progress(rollout_line(state)))
    _show_result(result, output)


def rollout_line(state: RolloutState) -> str:
    """One progress line for a CodeDeploy shift of the processor's alias."""
    head = f"rollout {state.deployment_id}: {state.status}"
    if state.status in ("Stopped", "Failed"):
        why = (f"alarm {', '.join(state.fired_alarms)} fired" if state.fired_alarms
               else state.error_message or "no reason given")
        back = f"; the alias went back to version {state.current_version}" if state.current_version else ""
        rollback = f" (rollback {state.rolled_back_by})" if state.rolled_back_by else ""
        return f"{head} ({state.error_code or 'error'}): {why}{back}{rollback}"
    if state.status == "Succeeded":
        return f"{head}, version {state.target_version or '?'} takes every batch"
    if state.target_weight is not None:
        return (f"{head}, {state.target_weight:.0%} of batches on version {state.target_version} "
                f"(the rest on {state.current_version})")
    return head


def _hotswap(target: Target, params: Sequence[str], tags: Sequence[str], timeout: float, output: str,
             blueprint: Any, watch: bool, no_execute: bool) -> None:
    """--hotswap/--watch: render and swap. Not linted (only the code may differ from the deployed template, which
    passed the gate) and not confirmed (as `cdk deploy --hotswap`: dev only, production envs are refused)."""
    from iotpipe.cli.hotswap import run_hotswap
    from iotpipe.render import render_template

    if no_execute:
        raise click.UsageError("--hotswap/--watch update code at once; use `iotpipe diff` to see changes instead")
    cfg, options = target.config, _options(params, tags, timeout_minutes=timeout)
    run_hotswap(target.factory, lambda: deploy_request(cfg, render_template(cfg, blueprint), options),
                cfg.processor.runtime, output, watch)


@click.command()
@pipeline_target(timeouts=STACK_TIMEOUTS)
@click.option("--param", "params", multiple=True, metavar="K=V", help="Template parameter override. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Stack tag override. Repeatable.")
@_timeout_option
@output_option
@blueprint_option
def diff(target: Target, params: tuple[str, ...], tags: tuple[str, ...], timeout: float, output: str,
         blueprint: Any) -> None:
    """Show what deploy would change (Action, LogicalId, Type, Replacement) without changing anything.

    The change set is created, described and deleted again; nothing is written to S3 (the processor's zip is
    named by its hash, so a code change shows without uploading it).

    \b
    Examples:
      iotpipe diff --env dev
      iotpipe diff --env prod --output json
      iotpipe diff --env dev --blueprint mypkg.blueprints:customise
    """
    cfg, client = target.config, DeployClient.from_factory(target.factory)
    options = _options(params, tags, timeout_minutes=timeout, read_only="iotpipe diff", blueprint=blueprint)
    plan = plan_config(cfg, client, options, progress).plan
    result = discard_plan(client, plan, progress)
    if output == "json":
        echo_json(result.as_dict())
        return
    _show_plan(plan, output)


@click.command()
@pipeline_target
@output_option
def outputs(target: Target, output: str) -> None:
    """Print the stack outputs (bucket, table, stream and function names, IoT endpoint, ...).

    \b
    Examples:
      iotpipe outputs --env dev
      iotpipe outputs --env dev --output json | jq -r .RawDataBucketName
    """
    cfg = target.config
    stack = describe_stack(DeployClient.from_factory(target.factory), cfg.resolved_stack_name, cfg.env)
    if output == "json":
        echo_json(stack.output_map)
        return
    click.echo(outputs_table(stack.outputs))


@click.command()
@pipeline_target
@click.option("--events", "last", type=click.IntRange(1, 100), default=10, show_default=True,
              help="How many of the last stack events to show.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the stack with the current config through a change set that is then deleted.")
@_timeout_option
@output_option
def status(target: Target, last: int, check: bool, timeout: float, output: str) -> None:
    """Show the stack status, its last events, and whether it matches the current config.

    \b
    Examples:
      iotpipe status --env dev
      iotpipe status --env prod --events 30 --no-check
    """
    cfg = target.config
    report = pipeline_status(cfg, DeployClient.from_factory(target.factory), last=last, check=check,
                             timeout_minutes=timeout, progress=progress)
    stack = report.stack
    if output == "json":
        echo_json(report.as_dict())
        return
    click.echo(f"Stack {stack.name}: {stack.status}" + (f" ({stack.status_reason})" if stack.status_reason else ""))
    click.echo(f"Termination protection: {'on' if stack.termination_protection else 'off'}")
    click.echo(f"Last {len(report.events)} events:")
    click.echo(events_table(report.events))
    if report.pending_changes is None:
        return
    if not report.pending_changes:
        click.echo(f"No changes: the stack matches the config for env {cfg.env}.")
    else:
        click.echo(f"{len(report.pending_changes)} pending change(s); `iotpipe diff --env {cfg.env}` shows them, "
                   f"`iotpipe deploy --env {cfg.env}` applies them.")


@click.command()
@pipeline_target(timeouts=STACK_TIMEOUTS)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--revoke-devices", is_flag=True,
              help="Revoke the env's registered devices (and detach the device policy from any other certificate) "
                   "first; without it, destroy refuses while devices are registered.")
@_timeout_option
@output_option
def destroy(target: Target, yes: bool, revoke_devices: bool, timeout: float, output: str) -> None:
    """Empty the stack's buckets (every object version and delete marker), delete the stack and wait.

    Refuses while termination protection is on, and says how to lift it. Refuses while devices are registered
    (AWS IoT cannot delete a policy attached to a certificate, so the stack would end DELETE_FAILED), naming
    them, unless --revoke-devices.

    \b
    Examples:
      iotpipe destroy --env dev
      iotpipe destroy --env ci --yes
      iotpipe destroy --env dev --revoke-devices --yes
    """
    require_consent(yes, "destroy")
    cfg, client = target.config, DeployClient.from_factory(target.factory)
    plan = plan_destroy(client, cfg.resolved_stack_name, timeout * 60, progress)
    if plan.stack is None:
        progress(f"stack {plan.stack_name} does not exist; nothing to destroy")
        if output == "json":
            echo_json(DestroyResult(stack_name=plan.stack_name, deleted=False).as_dict())
        return
    iot = target.factory.client("iot")
    guard = device_guard(iot, client, plan.stack, cfg.env, revoke_devices=revoke_devices)
    if guard.targets:
        progress(f"destroy will first revoke {guard.describe()} (policy {guard.policy})")
    if plan.buckets:
        progress(f"destroy will delete every object version in bucket(s) {', '.join(plan.buckets)}, then stack "
                 f"{plan.stack_name} ({plan.stack.status})")
    else:
        progress(f"destroy will delete stack {plan.stack_name} ({plan.stack.status}); it has no buckets to empty")
    for bucket in plan.retained_buckets:
        progress(f"bucket {bucket} is retained by its DeletionPolicy and is left as it is")
    question = f"Destroy stack {plan.stack_name} and its data" + (" and revoke those devices" if guard.targets
                                                                   else "")
    if not confirm(question + "?", yes=yes, what="destroy"):
        raise DeployError("destroy cancelled at the prompt; nothing was deleted")
    released = release_devices(iot, guard, cfg.env)
    if released is not None:
        progress(f"revoked {len(released.revoked)} device(s) ({', '.join(r.thing_name for r in released.revoked)}); "
                 f"detached policy {guard.policy} from {len(released.detached_certificates)} other certificate(s)")
    result = execute_destroy(client, plan, timeout * 60, progress)
    if output == "json":
        echo_json(result.as_dict())
        return
    for bucket, count in result.objects_deleted:
        click.echo(f"Emptied {bucket}: {count} object versions and delete markers deleted")
    click.echo(f"Stack {result.stack_name} deleted")
