"""``iotpipe logs`` and ``iotpipe metrics``: the processor's log lines and custom metrics, presented."""

from __future__ import annotations

from collections.abc import Sequence

import click

from iotpipe import query as query_lib
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import (
    LINE_FORMATS,
    echo_json,
    echo_json_line,
    output_choices,
    output_option,
    write_table,
)
from iotpipe.errors import ConfigError

SPARK_CHARS = "▁▂▃▄▅▆▇█"
MAX_METRIC_ROWS = 60


def rows_period(since_ms: int, until_ms: int, max_rows: int = MAX_METRIC_ROWS) -> int:
    """The shortest period (a multiple of 60 s) whose aligned periods over the window are at most ``max_rows``.

    Periods start on multiples of the period and the last one contains "now", so an hour at 60 s is 61 rows
    unless "now" falls on a minute; the help promises at most 60.
    """
    period = query_lib.choose_period((until_ms - since_ms) / 1000, max_rows)
    for _ in range(10_000):
        first = since_ms // (period * 1000)
        last = until_ms // (period * 1000)
        if last - first + 1 <= max_rows:
            return period
        period += 60
    return period


@click.command()
@click.option("--since", default="10m", show_default=True, help="How far back: 30s, 10m, 1h or ISO 8601.")
@click.option("--filter", "text", help="Only lines containing TEXT (or a CloudWatch Logs filter pattern); "
                                      "'quarantined': only the records the processor quarantined.")
@click.option("--follow", is_flag=True, help="Keep polling for new lines (Ctrl-C to stop).")
@click.option("--max-wait", type=float, default=600.0, show_default=True, help="Stop --follow after this many s.")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many lines (not --follow).")
@output_choices(LINE_FORMATS, "text: one summarised line per event; json: one JSON array of the events; jsonl: "
                              "one JSON object per event, as it comes (with --follow).")
@pipeline_target
def logs(
    since: str,
    text: str | None,
    follow: bool,
    max_wait: float,
    limit: int,
    output: str,
    target: Target,
) -> None:
    """The processor's log lines, JSON summarised (time, level, message, key=value).

    \b
    Examples:
      iotpipe logs --env dev --since 30m
      iotpipe logs --env dev --filter quarantined
      iotpipe logs --env dev --follow --max-wait 300
    """
    if not 0 < max_wait <= 86400:
        raise ConfigError(f"--max-wait {max_wait} is out of range; use more than 0 and at most 86400 s")
    if follow and output == "json":
        raise click.UsageError("--follow streams events: use --output jsonl (one JSON object per line) or text; "
                               "--output json is one document, printed at the end")
    cfg, factory = target.config, target.factory
    lines = query_lib.processor_logs(
        factory, cfg, since=since, text=text, follow=follow, max_wait_s=max_wait, limit=limit
    )
    shown = 0
    collected: list[dict[str, object]] = []
    try:
        for line in lines:
            shown += 1
            if output == "json":
                collected.append(line.as_dict())
            elif output == "jsonl":
                echo_json_line(line.as_dict())
            else:
                click.echo(log_summary(line))
    except KeyboardInterrupt:
        progress("stopped")
    if output == "json":
        echo_json(collected)
    if not shown:
        progress(f"no log lines since {since}" + (f" matching {text!r}" if text else "")
                 + (" (--follow waited up to --max-wait)" if follow else "")
                 + "; the processor logs once it has run (iotpipe simulate sends readings)")


@click.command()
@click.option("--since", default="1h", show_default=True, help="How far back: 30m, 1h, 24h, 7d or ISO 8601.")
@click.option("--period", type=int, help="Seconds per row (multiple of 60; default: at most 60 rows).")
@output_option
@pipeline_target
def metrics(
    since: str,
    period: int | None,
    output: str,
    target: Target,
) -> None:
    """The processor's custom metrics (IoT/Manufacturing) per period, with a sparkline each.

    \b
    Examples:
      iotpipe metrics --env dev
      iotpipe metrics --env prod --since 24h --period 3600 --output json
    """
    cfg, factory = target.config, target.factory
    now = query_lib.now_ms()
    if period is None:
        period = rows_period(query_lib.parse_since(since, now), now)
    report = query_lib.metrics(factory, cfg, since=since, period_s=period, now=now)
    if output == "json":
        echo_json(report.as_dict())
        return
    headers = ("PERIOD START (UTC)", *(s.name for s in report.series))
    rows = [
        (query_lib.iso_ms(start)[:16].replace("T", " "), *(f"{s.values[i]:g}" for s in report.series))
        for i, start in enumerate(report.starts)
    ]
    write_table(headers, rows)
    click.echo("")
    write_table(None, [(series.name, "total", f"{series.total:g}", sparkline(series.values))
                       for series in report.series])


def log_summary(line: query_lib.LogLine) -> str:
    """One line: time, level, message, then the other fields as key=value."""
    extra = " ".join(f"{key}={value}" for key, value in line.fields)
    parts = [query_lib.iso_ms(line.timestamp), line.level.ljust(5) if line.level else "-    ", line.message, extra]
    return " ".join(part for part in parts if part).rstrip()


def sparkline(values: Sequence[float]) -> str:
    """Values -> ``▁▂▃▄▅▆▇█`` (all equal -> lowest bar; empty -> empty)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK_CHARS[0] * len(values)
    scale = (len(SPARK_CHARS) - 1) / (hi - lo)
    return "".join(SPARK_CHARS[round((value - lo) * scale)] for value in values)
