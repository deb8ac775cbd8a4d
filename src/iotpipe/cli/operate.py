"""Operating commands: device register/list/revoke, simulate, readings, anomalies, logs, metrics."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import click

from iotpipe import devices as devices_lib
from iotpipe import query as query_lib
from iotpipe import simulate as simulate_lib
from iotpipe.cli.app import main
from iotpipe.cli.common import (
    Target,
    config_options,
    echo_json,
    is_interactive,
    load_pipeline_config,
    output_option,
    pipeline_target,
    progress,
    running_local,
)
from iotpipe.errors import ConfigError


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _parse_attributes(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--attribute {pair!r} is not KEY=VALUE")
        result[key] = value
    return result


# --- device ---------------------------------------------------------------------------------------------


@main.group()
def device() -> None:
    """Register, list and revoke devices (AWS IoT things with certificates).

    \b
    Examples:
      iotpipe device register press-07 --env dev --location line-2 --equipment-type press
      iotpipe device list --env dev
      iotpipe device revoke press-07 --env dev --yes
    """


@device.command("register")
@click.argument("device_id")
@click.option(
    "--out-dir",
    default="certs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the certificate, private key (0600) and connection file are written.",
)
@click.option("--location", help="Thing attribute 'location' (letters, digits, _.,@/:#- ; no spaces).")
@click.option("--equipment-type", help="Thing attribute 'equipmentType'.")
@click.option("--attribute", "attributes", multiple=True, metavar="KEY=VALUE", help="More thing attributes.")
@pipeline_target
@output_option
def register(
    device_id: str,
    out_dir: str,
    location: str | None,
    equipment_type: str | None,
    attributes: tuple[str, ...],
    target: Target,
    output: str,
) -> None:
    """Create a device: thing, keys, certificate; attach the stack's device policy and write the files.

    DEVICE_ID becomes the thing name, the MQTT client id and the topic sensor/DEVICE_ID/data
    (1-128 letters, digits, '_' or '-'); with ingest.basic_ingest the connection file's topic is
    $aws/rules/SensorDataRule_<env>/sensor/DEVICE_ID/data. Existing files are never overwritten.

    \b
    Examples:
      iotpipe device register press-07 --env dev
      iotpipe device register oven-3 --env prod --out-dir certs/prod --location plant-1 --equipment-type oven
    """
    devices_lib.validate_thing_name(device_id)
    extra = {**_parse_attributes(attributes), "location": location, "equipmentType": equipment_type}
    cfg, factory = target.config, target.factory
    policy = devices_lib.device_policy_name(factory.client("cloudformation"), cfg)
    result = devices_lib.register_device(
        factory.client("iot"),
        thing_name=device_id,
        policy_name=policy,
        out_dir=out_dir,
        environment=cfg.env,
        attributes={k: v for k, v in extra.items() if v is not None},
        basic_ingest_rule=devices_lib.basic_ingest_rule(cfg),
    )
    if output == "json":
        echo_json(
            {
                "thingName": result.thing_name,
                "thingArn": result.thing_arn,
                "certificateId": result.certificate_id,
                "certificateArn": result.certificate_arn,
                "policyName": result.policy_name,
                "endpoint": result.endpoint,
                "port": result.port,
                "topic": result.topic,
                "files": [str(p) for p in result.files.all()],
            }
        )
        return
    click.echo(
        f"registered {result.thing_name} (certificate {result.certificate_id[:12]}…, policy {result.policy_name})"
    )
    click.echo(f"endpoint    {result.endpoint}:{result.port}")
    click.echo(f"topic       {result.topic}")
    for path in result.files.all():
        click.echo(f"wrote       {path}")


@device.command("list")
@click.option("--all", "all_envs", is_flag=True, help="Every thing in the account, not just this environment's.")
@pipeline_target
@output_option
def list_(
    all_envs: bool,
    target: Target,
    output: str,
) -> None:
    """List the devices registered for an environment.

    \b
    Examples:
      iotpipe device list --env dev
      iotpipe device list --all --output json
    """
    cfg, factory = target.config, target.factory
    found = devices_lib.list_devices(factory.client("iot"), None if all_envs else cfg.env)
    if output == "json":
        echo_json(
            [
                {
                    "thingName": d.thing_name,
                    "thingArn": d.thing_arn,
                    "attributes": dict(d.attributes),
                    "certificateIds": list(d.certificate_ids),
                }
                for d in found
            ]
        )
        return
    if not found:
        progress(f"no devices registered for environment {cfg.env}")
        return
    rows = [
        (
            d.thing_name,
            len(d.certificate_ids),
            " ".join(f"{k}={v}" for k, v in d.attributes if k not in ("managedBy",)),
        )
        for d in found
    ]
    click.echo(_table(("DEVICE", "CERTS", "ATTRIBUTES"), rows))


@device.command("revoke")
@click.argument("device_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pipeline_target
@output_option
def revoke(
    device_id: str,
    yes: bool,
    target: Target,
    output: str,
) -> None:
    """Detach, deactivate and delete the device's certificates, then delete the thing.

    Only a thing iotpipe registered for this env (attributes managedBy=iotpipe, environment=<env>) is revoked;
    any other is refused with the reason.

    \b
    Examples:
      iotpipe device revoke press-07 --env dev
      iotpipe device revoke press-07 --env dev --yes
    """
    devices_lib.validate_thing_name(device_id)
    if not yes:
        if not is_interactive():
            raise ConfigError(f"revoking {device_id} deletes its certificates; pass --yes to confirm")
        click.confirm(f"Revoke {device_id} and delete its certificates?", abort=True, err=True)
    result = devices_lib.revoke_device(target.factory.client("iot"), device_id, target.config.env)
    if output == "json":
        echo_json(
            {
                "thingName": result.thing_name,
                "deletedCertificates": list(result.deleted_certificates),
                "detachedOnlyCertificates": list(result.detached_only_certificates),
                "detachedPolicies": list(result.detached_policies),
            }
        )
        return
    click.echo(
        f"revoked {result.thing_name}: deleted {len(result.deleted_certificates)} certificate(s)"
        + (f", detached {len(result.detached_only_certificates)} shared" if result.detached_only_certificates else "")
    )


# --- simulate -------------------------------------------------------------------------------------------


@main.command()
@click.option("--devices", "device_count", type=int, help="Simulated devices (default 1; with --cert-dir: all).")
@click.option("--device-prefix", default="sim", show_default=True, help="Ids are <prefix>-001 ... (not --cert-dir).")
@click.option(
    "--rate",
    type=float,
    default=1.0,
    show_default=True,
    help="Samples per second per device (Hz); each sample is one message per sensor, or one with --format multi.",
)
@click.option("--duration", type=float, help="Seconds to run (default 60 unless --count).")
@click.option("--count", type=int, help="Total messages to send, then stop.")
@click.option(
    "--anomaly-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Probability (0-1) that a reading is an injected out-of-range value.",
)
@click.option("--sensor", "sensors", multiple=True, help="Sensor types to simulate (default: all configured).")
@click.option("--broker", help="Plain MQTT broker, mqtt://host:port (no TLS).")
@click.option("--cert-dir", type=click.Path(file_okay=False), help="Devices registered with 'device register' (TLS).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(simulate_lib.FORMATS),
    default="single",
    show_default=True,
    help="single: one reading per message; multi: all sensors in one message.",
)
@click.option(
    "--batch",
    type=int,
    default=1,
    show_default=True,
    help="Samples (timestamps) per message: N > 1 sends the samples form, one message per N samples.",
)
@click.option("--seed", type=int, help="Random seed: same seed, same values.")
@click.option("--dry-run", is_flag=True, help="Print the payloads as JSON lines instead of sending.")
@click.option(
    "--ack-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for outstanding PUBACKs at the end.",
)
@config_options
def simulate(
    device_count: int | None,
    device_prefix: str,
    rate: float,
    duration: float | None,
    count: int | None,
    anomaly_rate: float,
    sensors: tuple[str, ...],
    broker: str | None,
    cert_dir: str | None,
    fmt: str,
    batch: int,
    seed: int | None,
    dry_run: bool,
    ack_timeout: float,
    config_path: str | None,
    env: str,
) -> None:
    """Send realistic sensor telemetry over MQTT (QoS 1, one client per device).

    Values follow the configured thresholds and units; --anomaly-rate injects out-of-range values.
    Progress goes to stderr, the summary (sent, failed, anomalies injected) to stdout.

    \b
    Examples:
      iotpipe simulate --env dev --cert-dir certs --rate 1 --duration 300 --anomaly-rate 0.05
      iotpipe simulate --broker mqtt://127.0.0.1:1883 --devices 5 --rate 2 --count 100 --seed 7
      iotpipe simulate --dry-run --devices 2 --count 6 --format multi --seed 1
      iotpipe simulate --env prod --cert-dir certs --format multi --batch 60 --duration 600
    """
    if broker and cert_dir:
        raise ConfigError("give --broker or --cert-dir, not both")
    cfg = load_pipeline_config(config_path, env)
    local = running_local(cfg.env) if not (broker or cert_dir or dry_run) else None
    broker = local.mqtt if local is not None else broker
    if not (broker or cert_dir or dry_run):
        raise ConfigError("where to send? give --cert-dir (AWS IoT, TLS), --broker mqtt://host:port, or --dry-run "
                          "(or start `iotpipe local up --env <env>`)")
    credentials = simulate_lib.load_cert_dir(cert_dir) if cert_dir else []
    if credentials:
        ids = [item.device_id for item in credentials][: device_count or None]
        if device_count and device_count > len(ids):
            raise ConfigError(f"--devices {device_count} but {cert_dir} has only {len(ids)} registered devices")
    else:
        ids = simulate_lib.simulated_device_ids(device_count or 1, device_prefix)
    plan = simulate_lib.build_plan(
        ids,
        cfg.threshold_map,
        sensors=sensors,
        rate_hz=rate,
        count=count,
        duration_s=duration,
        anomaly_rate=anomaly_rate,
        fmt=fmt,
        seed=seed,
        batch=batch,
    )
    if dry_run:
        for message in simulate_lib.messages(plan, query_lib.now_ms()):
            click.echo(message.body())
        return
    target = simulate_lib.parse_broker_url(broker) if broker else None
    where = broker or f"AWS IoT ({len(ids)} device(s) from {cert_dir})"
    batching = f", {batch} samples per message" if batch > 1 else ""
    rule = devices_lib.basic_ingest_rule(cfg)
    topic = devices_lib.topic_for("<device>", rule)
    progress(f"simulating {len(ids)} device(s) -> {where} on {topic}, {plan.fmt} format, {rate:g} Hz{batching}")
    summary = simulate_lib.run_simulation(
        plan,
        broker=target,
        credentials=credentials,
        ack_timeout_s=ack_timeout,
        basic_ingest_rule=rule,
        on_progress=lambda sent, failed: progress(f"  {sent} sent, {failed} failed"),
    )
    click.echo(
        f"sent {summary.sent}, failed {summary.failed}, readings {summary.readings}, anomalies injected "
        f"{summary.anomalies_injected} ({summary.devices} device(s), {summary.elapsed_s:g} s)"
    )
    if summary.failed:
        raise simulate_lib.PublishError(f"{summary.failed} message(s) were not acknowledged by the broker")


# --- readings and anomalies -----------------------------------------------------------------------------


def _csv_row(reading: query_lib.Reading) -> dict[str, Any]:
    """A CSV row: booleans as true/false (as JSON writes them), not Python's True/False."""
    return {key: (str(value).lower() if isinstance(value, bool) else value)
            for key, value in reading.as_dict().items()}


def _reading_output(found: Sequence[query_lib.Reading], output: str, with_device: bool,
                    what: str = "readings") -> None:
    if output == "json":
        echo_json([reading.as_dict() for reading in found])
        return
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=query_lib.READING_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(reading) for reading in found)
        click.echo(buffer.getvalue(), nl=False)
        return
    if not found:
        progress(f"no {what} found")
        return
    headers = (("DEVICE",) if with_device else ()) + ("TIME", "SENSOR", "VALUE", "UNIT", "STATUS", "REASON")
    rows = [
        ((r.device_id,) if with_device else ()) + (r.time, r.sensor_type, f"{r.value:g}", r.unit, r.status, r.reason)
        for r in found
    ]
    click.echo(_table(headers, rows))


_OUTPUT3 = click.option(
    "--output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Result format on stdout.",
)
_LIMIT = click.option("--limit", type=int, default=100, show_default=True, help="At most this many items.")


@main.command()
@click.argument("device_id")
@click.option("--since", default="1h", show_default=True, help="How far back: 30s, 10m, 1h, 7d or ISO 8601.")
@click.option("--sensor", help="Only this sensor type.")
@click.option("--anomalies-only", is_flag=True, help="Only anomalous readings.")
@_LIMIT
@_OUTPUT3
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


@main.command()
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d or ISO 8601.")
@click.option("--sensor", help="Only this sensor type.")
@click.option("--device", "device_id", help="Only this device.")
@_LIMIT
@_OUTPUT3
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


# --- logs and metrics -----------------------------------------------------------------------------------

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


@main.command()
@click.option("--since", default="10m", show_default=True, help="How far back: 30s, 10m, 1h or ISO 8601.")
@click.option("--filter", "text", help="Only lines containing TEXT (or a CloudWatch Logs filter pattern).")
@click.option("--follow", is_flag=True, help="Keep polling for new lines (Ctrl-C to stop).")
@click.option("--max-wait", type=float, default=600.0, show_default=True, help="Stop --follow after this many s.")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many lines (not --follow).")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one summarised line per event; json: one JSON object per event.",
)
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
    cfg, factory = target.config, target.factory
    lines = query_lib.processor_logs(
        factory, cfg, since=since, text=text, follow=follow, max_wait_s=max_wait, limit=limit
    )
    shown = 0
    try:
        for line in lines:
            shown += 1
            if output == "json":
                click.echo(
                    json.dumps(
                        {
                            "time": query_lib.iso_ms(line.timestamp),
                            "stream": line.stream,
                            "level": line.level,
                            "message": line.message,
                            **dict(line.fields),
                        },
                        sort_keys=True,
                    )
                )
            else:
                click.echo(line.summary())
    except KeyboardInterrupt:
        progress("stopped")
    if not shown:
        progress(f"no log lines since {since}" + (f" matching {text!r}" if text else "")
                 + (" (--follow waited up to --max-wait)" if follow else "")
                 + "; the processor logs once it has run (iotpipe simulate sends readings)")


@main.command()
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
        echo_json(
            {
                "environment": report.environment,
                "periodSeconds": report.period_s,
                "periods": [
                    {"start": query_lib.iso_ms(start), **{s.name: s.values[i] for s in report.series}}
                    for i, start in enumerate(report.starts)
                ],
                "totals": {s.name: s.total for s in report.series},
            }
        )
        return
    headers = ("PERIOD START (UTC)", *(s.name for s in report.series))
    rows = [
        (query_lib.iso_ms(start)[:16].replace("T", " "), *(f"{s.values[i]:g}" for s in report.series))
        for i, start in enumerate(report.starts)
    ]
    click.echo(_table(headers, rows))
    click.echo("")
    width = max(len(s.name) for s in report.series)
    for series in report.series:
        click.echo(f"{series.name.ljust(width)}  total {series.total:<8g} {query_lib.sparkline(series.values)}")
