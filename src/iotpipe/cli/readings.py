"""``iotpipe readings`` and ``iotpipe anomalies``: stored readings from the pipeline's table."""

from __future__ import annotations

from collections.abc import Sequence

import click

from iotpipe import query as query_lib
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import CSV_FORMATS, output_choices, write_records, write_table


def _reading_output(found: Sequence[query_lib.Reading], output: str, with_device: bool,
                    what: str = "readings") -> None:
    if output != "table":
        write_records([reading.as_dict() for reading in found], query_lib.READING_FIELDS, output)
        return
    if not found:
        progress(f"no {what} found")
        return
    headers = (("DEVICE",) if with_device else ()) + ("TIME", "SENSOR", "VALUE", "UNIT", "STATUS", "REASON")
    rows = [
        ((r.device_id,) if with_device else ()) + (r.time, r.sensor_type, f"{r.value:g}", r.unit, r.status, r.reason)
        for r in found
    ]
    if any(r.rule for r in found):  # why each anomaly is one: the rule, the detector's score and expected band
        headers += ("RULE", "SCORE", "EXPECTED")
        rows = [(*row, r.rule, "" if r.score is None else f"{r.score:.3f}", r.band)
                for row, r in zip(rows, found, strict=True)]
    write_table(headers, rows)


_LIMIT = click.option("--limit", type=int, default=100, show_default=True, help="At most this many items.")


@click.command()
@click.argument("device_id")
@click.option("--since", default="1h", show_default=True, help="How far back: 30s, 10m, 1h, 7d or ISO 8601.")
@click.option("--sensor", help="Only this sensor type.")
@click.option("--anomalies-only", is_flag=True, help="Only anomalous readings.")
@_LIMIT
@output_choices(CSV_FORMATS)
@pipeline_target
def readings(
    device_id: str,
    since: str,
    sensor: str | None,
    anomalies_only: bool,
    limit: int,
    output: str,
    target: Target,
) -> None:
    """A device's stored readings, newest first.

    \b
    Examples:
      iotpipe readings press-07 --env dev --since 1h
      iotpipe readings press-07 --sensor temperature --anomalies-only --output csv > anomalies.csv
    """
    cfg, factory = target.config, target.factory
    found = query_lib.readings(
        factory, cfg, device_id, since=since, sensor=sensor, anomalies_only=anomalies_only, limit=limit
    )
    _reading_output(found, output, with_device=False)


@click.command()
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d or ISO 8601.")
@click.option("--sensor", help="Only this sensor type.")
@click.option("--device", "device_id", help="Only this device.")
@_LIMIT
@output_choices(CSV_FORMATS)
@pipeline_target
def anomalies(
    since: str,
    sensor: str | None,
    device_id: str | None,
    limit: int,
    output: str,
    target: Target,
) -> None:
    """Anomalies of every device, newest first (from the AnomaliesByDay index).

    \b
    Examples:
      iotpipe anomalies --env dev
      iotpipe anomalies --env prod --since 7d --sensor vibration --output json
    """
    cfg, factory = target.config, target.factory
    found = query_lib.anomalies(factory, cfg, since=since, sensor=sensor, device_id=device_id, limit=limit)
    _reading_output(found, output, with_device=True, what="anomalies")
