"""``iotpipe deploy | diff | outputs | status | destroy``: the stack lifecycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from iotpipe import contract
from iotpipe import devices as devices_lib
from iotpipe.aws import STACK_TIMEOUTS
from iotpipe.cli.common import Target, blueprint_option, pipeline_target, progress
from iotpipe.cli.output import confirm, echo_json, format_table, output_option, require_consent
from iotpipe.config import PipelineConfig, config_warnings, validate_tag
from iotpipe.deploy.client import Change, DeployClient, Stack, StackEvent
from iotpipe.deploy.execute import DeployResult, DestroyResult, discard_plan, execute_destroy, execute_plan
from iotpipe.deploy.plan import (
    CREATE_STATES,
    ON_FAILURE_CHOICES,
    DeployPlan,
    DeployRequest,
    merge_pairs,
    parse_assignments,
    plan_deploy,
    plan_destroy,
    prepare_template,
)
from iotpipe.deploy.rollout import RolloutState, execute_watching_rollout
from iotpipe.deploy.status import describe_stack, stack_status
from iotpipe.doctor import deploy_blockers
from iotpipe.errors import DeployError, IotpipeError
from iotpipe.package import artefacts

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


def _request(cfg: PipelineConfig, template: str, params: Sequence[str], tags: Sequence[str], on_failure: str,
             timeout: float) -> DeployRequest:
    return DeployRequest(
        stack_name=cfg.resolved_stack_name, template_body=template, env=cfg.env,
        parameters=merge_pairs(cfg.parameters, parse_assignments(params, "--param")),
        tags=_tags(cfg, tags),
        termination_protection=cfg.termination_protection, on_failure=on_failure, timeout_minutes=timeout,
        reserved_concurrency=cfg.processor.reserved_concurrency, artefacts=artefacts(cfg.processor))


def _tags(cfg: PipelineConfig, tags: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Config tags overridden by --tag, each valid for CloudFormation (keys 1-128, values 1-256, no aws:)."""
    merged = merge_pairs(cfg.tags, parse_assignments(tags, "--tag"))
    return tuple(validate_tag(key, value, "--tag") for key, value in merged)


def _plan(cfg: PipelineConfig, client: DeployClient, params: Sequence[str], tags: Sequence[str],
          on_failure: str, timeout: float, factory: Any = None, *, checkov: bool = False,
          read_only: str = "", blueprint: Any = None) -> DeployPlan:
    for warning in config_warnings(cfg):
        progress(f"warning: {warning}")
    _tags(cfg, tags)  # bad input is refused before anything is rendered, uploaded or created
    parameters = merge_pairs(cfg.parameters, parse_assignments(params, "--param"))
    # The lint gate of `iotpipe lint`, for the region the stack goes to, before any AWS call.
    template, findings = prepare_template(cfg, parameters, region=client.region, checkov=checkov,
                                          blueprint=blueprint)
    if factory is not None:
        _refuse_blockers(factory, cfg, client)
    if findings:
        progress(f"lint: {len(findings)} non-blocking finding(s); `iotpipe lint --env {cfg.env}` lists them")
    return plan_deploy(client, _request(cfg, template, params, tags, on_failure, timeout), progress,
                       read_only=read_only)


def _refuse_blockers(factory: Any, cfg: PipelineConfig, client: DeployClient) -> None:
    """The doctor's rows that would fail the deploy on AWS (names taken in the account), before any write."""
    blockers = deploy_blockers(factory, cfg, client.account_id(), client.region)
    if blockers:
        raise DeployError("; ".join(f"{check.name}: {check.detail} ({check.action})" for check in blockers)
                          + f"; `iotpipe doctor --env {cfg.env}` checks everything")


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
    plan = _plan(cfg, client, params, tags, on_failure, timeout, factory=target.factory, checkov=with_checkov,
                 blueprint=blueprint)
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
    cfg = target.config
    run_hotswap(target.factory, lambda: _request(cfg, render_template(cfg, blueprint), params, tags, "rollback",
                                                 timeout), cfg.processor.runtime, output, watch)


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
    plan = _plan(cfg, client, params, tags, "rollback", timeout, read_only="iotpipe diff", blueprint=blueprint)
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
    cfg, client = target.config, DeployClient.from_factory(target.factory)
    stack = describe_stack(client, cfg.resolved_stack_name, cfg.env)
    plan = _status_plan(cfg, client, stack, timeout) if check else None
    report = stack_status(client, stack, plan, last)
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


def _status_plan(cfg: PipelineConfig, client: DeployClient, stack: Stack, timeout: float) -> DeployPlan | None:
    """A plan to compare against, unless the stack is busy or broken (status must still report then)."""
    if stack.status.endswith("_IN_PROGRESS") or stack.status in CREATE_STATES or stack.status.endswith("FAILED") \
            or stack.status == "ROLLBACK_COMPLETE":
        progress(f"not comparing with the config while the stack is {stack.status}")
        return None
    try:
        return _plan(cfg, client, (), (), "rollback", timeout, read_only="iotpipe status")
    except IotpipeError as exc:
        progress(f"could not compare with the config: {exc}")
        return None


def _device_policy(client: DeployClient, stack: Stack) -> str | None:
    """The stack's device policy: its SensorDevicePolicyName output, or its AWS::IoT::Policy resource (seed)."""
    name = stack.output_map.get(contract.OUT_DEVICE_POLICY)
    if name:
        return name
    for resource in client.stack_resources(stack.stack_id):
        if resource.get("ResourceType") == "AWS::IoT::Policy" and resource.get("PhysicalResourceId"):
            return str(resource["PhysicalResourceId"])
    return None


def _describe_targets(targets: Sequence[devices_lib.PolicyTarget]) -> str:
    named = sorted({thing for target in targets for thing in target.things})
    bare = [target.certificate_id[:12] for target in targets if not target.things]
    parts = ([f"device(s) {', '.join(named)}"] if named else []) + (
        [f"certificate(s) {', '.join(bare)} without a thing"] if bare else [])
    return " and ".join(parts)


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
    policy = _device_policy(client, plan.stack)
    targets = devices_lib.policy_targets(iot, policy) if policy else ()
    if targets and not revoke_devices:
        raise DeployError(
            f"device policy {policy} is attached to {_describe_targets(targets)}, and AWS IoT refuses to delete a "
            "policy attached to a certificate (the stack would end DELETE_FAILED); nothing was deleted. Revoke "
            f"them (iotpipe device revoke <id> --env {cfg.env}) or run destroy again with --revoke-devices")
    if targets:
        progress(f"destroy will first revoke {_describe_targets(targets)} (policy {policy})")
    if plan.buckets:
        progress(f"destroy will delete every object version in bucket(s) {', '.join(plan.buckets)}, then stack "
                 f"{plan.stack_name} ({plan.stack.status})")
    else:
        progress(f"destroy will delete stack {plan.stack_name} ({plan.stack.status}); it has no buckets to empty")
    for bucket in plan.retained_buckets:
        progress(f"bucket {bucket} is retained by its DeletionPolicy and is left as it is")
    question = f"Destroy stack {plan.stack_name} and its data" + (" and revoke those devices" if targets else "")
    if not confirm(question + "?", yes=yes, what="destroy"):
        raise DeployError("destroy cancelled at the prompt; nothing was deleted")
    if targets and policy:
        released = devices_lib.release_policy(iot, policy, cfg.env)
        progress(f"revoked {len(released.revoked)} device(s) ({', '.join(r.thing_name for r in released.revoked)}); "
                 f"detached policy {policy} from {len(released.detached_certificates)} other certificate(s)")
    elif policy:
        devices_lib.delete_old_policy_versions(iot, policy)
    result = execute_destroy(client, plan, timeout * 60, progress)
    if output == "json":
        echo_json(result.as_dict())
        return
    for bucket, count in result.objects_deleted:
        click.echo(f"Emptied {bucket}: {count} object versions and delete markers deleted")
    click.echo(f"Stack {result.stack_name} deleted")
