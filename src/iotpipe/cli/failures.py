"""``iotpipe failures list|show|redrive`` (failed batches, read back and redriven) and ``iotpipe replay``."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from iotpipe import failures as failures_lib
from iotpipe import replay as replay_lib
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import echo_json, output_option, write_table
from iotpipe.local.functions.result import InvokeResult


def _duration(seconds: float) -> str:
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f}h"
    return f"{sign}{seconds / 60:.0f}m"


def _row(v: failures_lib.FailureView) -> tuple[str, ...]:
    b = v.batch
    left = f"{_duration(v.retention_left_s)} ({v.left_fraction:.0%})" + (" !!" if v.urgent else "")
    return (b.kind, b.message_id, b.shard_id, f"{b.start_sequence}..{b.end_sequence}", str(b.batch_size), b.condition,
            _duration(v.age_s), left)


def _as_dict(v: failures_lib.FailureView) -> dict[str, object]:
    b = v.batch
    return {"kind": b.kind, "messageId": b.message_id, "shardId": b.shard_id, "startSequenceNumber": b.start_sequence,
            "endSequenceNumber": b.end_sequence, "batchSize": b.batch_size, "condition": b.condition,
            "functionError": b.function_error, "ageSeconds": round(v.age_s), "retentionLeftSeconds":
            round(v.retention_left_s), "retentionLeftFraction": round(v.left_fraction, 3), "urgent": v.urgent}


def _warn_urgent(views: tuple[failures_lib.FailureView, ...], env: str) -> None:
    urgent = [v for v in views if v.urgent]
    if urgent:
        progress(f"WARNING: {len(urgent)} failed batch(es) have under {failures_lib.WARN_FRACTION:.0%} of the "
                 "stream's retention left (marked !!); after it only the raw archive has their records: "
                 f"iotpipe failures redrive --env {env}")


@click.group()
def failures() -> None:
    """Failed batches on the processor's dead-letter queue: list, show, redrive.

    \b
    Examples:
      iotpipe failures list --env prod
      iotpipe failures show <message id> --env prod
      iotpipe failures redrive --env prod --dry-run
    """


@failures.command("list")
@output_option
@pipeline_target
def list_(output: str, target: Target) -> None:
    """Failed batches with shard, sequence range, age and the stream retention left, oldest first."""
    listing = failures_lib.list_failures(target.factory, target.config, now=time.time())
    for bad in listing.unreadable:
        progress(f"message {bad.message_id} is not a Kinesis on-failure record: {bad.problem}")
    if output == "json":
        echo_json([_as_dict(v) for v in listing.failures])
    elif not listing.failures:
        progress("the dead-letter queue holds no failed batches")
    else:
        write_table(("KIND", "MESSAGE", "SHARD", "SEQUENCES", "RECORDS", "CONDITION", "AGE", "RETENTION LEFT"),
                    [_row(v) for v in listing.failures])
    _warn_urgent(listing.failures, target.config.env)


@failures.command("show")
@click.argument("message_id")
@output_option
@pipeline_target
def show(message_id: str, output: str, target: Target) -> None:
    """One failed batch and its records, read back from the stream or the raw archive."""
    chosen, records, source = failures_lib.show(target.factory, target.config, message_id, now=time.time())
    shown = [{"sequenceNumber": r.sequence_number, "partitionKey": r.partition_key, "arrivedAt": r.arrived_at_ms,
              "data": r.data.decode("utf-8", "replace")} for r in records or ()]
    if output == "json":
        echo_json({**_as_dict(chosen), "source": source if records is not None else "", "records": shown})
    else:
        write_table(("KIND", "MESSAGE", "SHARD", "SEQUENCES", "RECORDS", "CONDITION", "AGE", "RETENTION LEFT"),
                    [_row(chosen)])
        if records is None:
            progress("neither the stream nor the raw archive holds all of its records")
        else:
            progress(f"{len(records)} record(s) from the {source}")
            write_table(("SEQUENCE", "PARTITION KEY", "ARRIVED", "DATA"),
                        [(r["sequenceNumber"], r["partitionKey"], r["arrivedAt"], str(r["data"])[:120])
                         for r in shown])
    _warn_urgent((chosen,), target.config.env)


@contextlib.contextmanager
def _processor(target: Target, function_name: str) -> Iterator[failures_lib.Invoker]:
    """The deployed processor: Lambda's Invoke on AWS; on ``iotpipe local`` (whose moto Lambda cannot run code)
    the same runner ``iotpipe local`` uses, with the function's emulated configuration and iotpipe's processor of
    its runtime (Python, or the Node twin)."""
    from iotpipe.local.state import running_state

    state = running_state()
    if state is None or state.env != target.config.env:
        yield failures_lib.lambda_invoker(target.factory.client("lambda"), function_name)
        return
    from iotpipe.local.functions.runner import FunctionRunner

    spec = failures_lib.local_function_spec(target.factory.client("lambda"), function_name)
    with tempfile.TemporaryDirectory(prefix="iotpipe-redrive-") as workdir:
        runner = FunctionRunner(spec, aws_endpoint=state.aws_endpoint, region=state.region, workdir=Path(workdir),
                                on_output=lambda _: None,
                                credentials=(state.aws_access_key_id, state.aws_secret_access_key))
        try:
            yield runner
        finally:
            runner.close()


@failures.command("redrive")
@click.option("--dry-run", is_flag=True, help="Read the records back and say what would run; change nothing.")
@output_option
@pipeline_target
def redrive(dry_run: bool, output: str, target: Target) -> None:
    """Run each failed batch's records through the deployed processor; delete a message once all are stored.

    Records come from the stream (AT_SEQUENCE_NUMBER) while it retains them, else from the raw archive. Running it
    twice stores nothing twice (the processor's keys make a re-write land on the same item).
    """
    names = failures_lib.resources(target.factory, target.config)
    with contextlib.ExitStack() as stack:
        invoke = stack.enter_context(_processor(target, names.function_name)) if not dry_run else _no_invoke
        bar: list[Any] = []

        def start(total: int) -> None:
            progressbar: Any = click.progressbar(length=total, label="records", file=sys.stderr)
            bar.append(stack.enter_context(progressbar))

        def advance(count: int) -> None:
            bar[0].update(count)

        report = failures_lib.redrive(target.factory, target.config, invoke, now=time.time(), dry_run=dry_run,
                                      on_start=start, on_records=advance)
    rows = [(o.message_id, o.shard_id, o.source, o.records,
             "deleted" if o.deleted else ("would redrive" if dry_run and not o.problem else "kept"), o.problem)
            for o in report.outcomes]
    if output == "json":
        echo_json([dict(zip(("messageId", "shardId", "source", "records", "result", "problem"), row, strict=True))
                   for row in rows])
    elif rows:
        write_table(("MESSAGE", "SHARD", "SOURCE", "RECORDS", "RESULT", "PROBLEM"), rows)
    else:
        progress("the dead-letter queue holds no failed batches")
    if report.failed:
        raise failures_lib.RedriveFailed(f"{len(report.failed)} message(s) stay in the dead-letter queue (see "
                                         "PROBLEM); fix the cause and run iotpipe failures redrive again")


def _no_invoke(_: dict[str, Any]) -> InvokeResult:
    raise AssertionError("a dry run invokes nothing")


@click.command()
@click.option("--from", "start", required=True, help="Start of the window (arrival time): 2h, 1d or ISO 8601.")
@click.option("--to", "end", default="0s", show_default=True, help="End of the window (excluded): 0s is now.")
@click.option("--device", "devices", multiple=True, help="Only this device (repeatable); default every device.")
@click.option("--rate", type=float, default=replay_lib.DEFAULT_RATE, show_default=True,
              help="At most this many records per second, so the live stream keeps its share.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
              help="Checkpoint file (default: ./.iotpipe-replay-<env>.json); a rerun resumes from it.")
@click.option("--dry-run", is_flag=True, help="Read the window and count; invoke nothing.")
@output_option
@pipeline_target
def replay(start: str, end: str, devices: tuple[str, ...], rate: float, checkpoint_path: str | None, dry_run: bool,
           output: str, target: Target) -> None:
    """Reprocess archived records of a window through the deployed processor, in order per device.

    \b
    Examples:
      iotpipe replay --env prod --from 2026-03-01T00:00:00Z --to 2026-03-01T01:00:00Z
      iotpipe replay --env prod --from 7d --device press-07 --dry-run
    """
    from iotpipe.query.timespec import now_ms, parse_since

    now = now_ms()
    window = replay_lib.Window(parse_since(start, now), parse_since(end, now), tuple(devices))
    checkpoint = Path(checkpoint_path or f".iotpipe-replay-{target.config.env}.json")
    function_name = failures_lib.resources(target.factory, target.config).function_name
    with contextlib.ExitStack() as stack:
        invoke = stack.enter_context(_processor(target, function_name)) if not dry_run else _no_invoke
        bar: list[Any] = []

        def begin(total: int) -> None:
            progressbar: Any = click.progressbar(length=total, label="records", file=sys.stderr)
            bar.append(stack.enter_context(progressbar))

        def advance(count: int) -> None:
            bar[0].update(count)

        summary = replay_lib.replay(target.factory, target.config, invoke, window, checkpoint=checkpoint,
                                    dry_run=dry_run, max_records_per_s=rate, on_start=begin, on_records=advance)
    fields = {"records": summary.records, "replayed": summary.replayed, "readings": summary.readings,
              "quarantined": summary.quarantined, "anomaliesBefore": summary.anomalies_before,
              "anomaliesAfter": summary.anomalies_after, "resumed": summary.resumed, "dryRun": summary.dry_run}
    if output == "json":
        echo_json(fields)
    else:
        write_table(("RECORDS", "REPLAYED", "READINGS", "QUARANTINED", "ANOMALIES BEFORE", "ANOMALIES AFTER"),
                    [(summary.records, summary.replayed, summary.readings, summary.quarantined,
                      summary.anomalies_before, summary.anomalies_after)])
