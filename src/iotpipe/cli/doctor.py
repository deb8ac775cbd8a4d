"""``iotpipe doctor``: the environment's health and what would block a deploy, one row per check."""

from __future__ import annotations

import sys

import click

from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import echo_json, output_option, write_table
from iotpipe.doctor import run_doctor
from iotpipe.local.state import LocalClientFactory

_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@pipeline_target
@click.option("--drift/--no-drift", "drift_check", default=True, show_default=True,
              help="Run CloudFormation drift detection on a deployed stack (takes up to a minute).")
@output_option
def doctor(target: Target, drift_check: bool, output: str) -> None:
    """Check credentials, account limits and names, and a deployed stack's health; exit 1 on any failure.

    Rows: credentials and region; account concurrency against processor.reserved_concurrency; names the stack
    creates that already exist in the account (roles, dashboard, bucket, table); exports of the stack imported
    elsewhere; certificates holding the device policy; and for a deployed stack: the event source mapping, the
    topic rule and its failures, iterator age, processor errors and throttles in the last hour, the dead-letter
    queue depth, drift. Against a running `iotpipe local` (--env local) the topic rule row reads the rule that
    iotpipe local's engine runs.

    \b
    Examples:
      iotpipe doctor --env dev
      iotpipe doctor --env prod --no-drift --output json
    """
    cfg, factory = target.config, target.factory
    region = factory.region or factory.session().region_name or ""
    progress(f"checking env {cfg.env} (stack {cfg.resolved_stack_name}) in {region or 'no region'}")
    report = run_doctor(factory, cfg, region, drift_check=drift_check, local=isinstance(factory, LocalClientFactory))
    if output == "json":
        echo_json(report.as_dict())
    else:
        rows: list[tuple[str, str, str]] = []
        for check in report.checks:
            rows.append((_MARK[check.status], check.name, check.detail))
            if check.action and check.status != "pass":
                rows.append(("", "", f"-> {check.action}"))
        write_table(None, rows)
    if report.failed:
        failed = sum(check.status == "fail" for check in report.checks)
        progress(f"{failed} check(s) failed")
        sys.exit(1)
