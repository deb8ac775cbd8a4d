"""``iotpipe detect``: the processor's adaptive detector over a CSV series, one result row per input row."""

from __future__ import annotations

import click

from iotpipe import detect as detect_lib
from iotpipe.cli.common import config_options, load_pipeline_config
from iotpipe.cli.output import echo_json, format_table, output_option


@click.command("detect")
@click.argument("series", type=click.Path(dir_okay=False))
@click.option("--timestamp-column", help="The time column (default: the first column).")
@click.option("--value-column", "value_columns", multiple=True,
              help="A value column; repeat for a device's several sensors (default: every numeric column).")
@click.option("--sensor-type", help="Sensor type of a single value column: its static bounds from the config "
              "apply too (default: the column's name, bounds when the config has that type).")
@click.option("--threshold", type=float, help="Score at or above which a reading is flagged "
              "(default: the sensor type's sensitivity in the config, else 0.5).")
@click.option("--preset", type=click.Choice(["onset", "sustained", "off"]),
              help="onset: one alarm at an event's start; sustained: every reading while a deviation lasts "
                   "(default: the sensor type's detector in the config, else onset).")
@click.option("--probation", type=int, help="Readings a series learns before it scores (default: the config's, "
              "else the preset's).")
@click.option("-o", "--out", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Results CSV to write.")
@config_options
@output_option
def detect(series: str, timestamp_column: str | None, value_columns: tuple[str, ...], sensor_type: str | None,
           threshold: float | None, preset: str | None, probation: int | None, output_path: str,
           config_path: str | None, env: str, output: str) -> None:
    """Score SERIES (a CSV: NAB's comma- or SKAB's semicolon-separated files as they are) with the
    processor's own detector, each reading before it is learned, and write RESULTS: a row per input row,
    ``timestamp,value,anomaly_score,flag`` (with several value columns, ``<column>_value``, ... per column and
    ``device_flag``). ``flag`` is what the processor would store: a score at or above the threshold, or a
    value past the env's static bounds for the sensor type. The sensor type's `detector`, `sensitivity` and
    `probation` in the config's thresholds choose the detector's settings unless the flags give them.

    \b
    Examples:
      iotpipe detect nab/data/realTraffic/speed_7578.csv -o speed.csv
      iotpipe detect skab/valve1/0.csv --value-column Pressure --sensor-type pressure -o pressure.csv
      iotpipe detect skab/valve1/0.csv --preset sustained -o valve.csv
      iotpipe detect skab/valve1/0.csv --timestamp-column datetime --value-column Current \\
          --value-column Voltage -o device.csv
    """
    cfg = load_pipeline_config(config_path, env)
    types = {value_columns[0]: sensor_type} if sensor_type and len(value_columns) == 1 else None
    if sensor_type and len(value_columns) != 1:
        raise click.UsageError("--sensor-type needs exactly one --value-column")
    result = detect_lib.detect_file(series, output_path, timestamp_column=timestamp_column,
                                    value_columns=value_columns, sensor_types=types, bounds=cfg.thresholds,
                                    threshold=threshold, probation=probation, preset=preset)
    if output == "json":
        echo_json(result.as_dict())
        return
    rows = [(s.column, s.sensor_type, s.preset, f"{s.threshold:g}", f"{sum(s.flags):,}", f"{s.state_bytes}")
            for s in result.sensors]
    click.echo(format_table(("column", "sensor type", "preset", "threshold", "flagged", "state bytes"), rows))
    click.echo(f"{len(result.series.timestamps):,} rows"
               + (f", {sum(result.device_flags):,} with a device flag" if len(result.sensors) > 1 else "")
               + f"; results in {output_path}")
