"""``iotpipe simulate``: realistic sensor telemetry over MQTT from simulated devices."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from iotpipe import devices as devices_lib
from iotpipe import simulate as simulate_lib
from iotpipe.cli.common import config_options, load_pipeline_config, progress, running_local
from iotpipe.cli.output import STREAM_FORMATS, echo_json, echo_json_line, output_choices
from iotpipe.errors import ConfigError
from iotpipe.query import now_ms
from iotpipe.simulate import claim as simulate_claim

# 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
INTERRUPTED_EXIT = 130


@click.command()
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
@click.option("--provision-by-claim", "claim_dir", type=click.Path(file_okay=False),
              help="First provision --serial with the claim certificate in this folder ('fleet claim create'), "
                   "then send as the new thing.")
@click.option("--serial", help="With --provision-by-claim: the device's serial (its thing name once provisioned).")
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
@click.option(
    "--failure",
    type=click.Choice(simulate_lib.FAILURES),
    help="Make the failing devices' sensor fail this way after --healthy-for (inside the static bounds).",
)
@click.option("--failing-devices", type=int, default=1, show_default=True,
              help="With --failure: how many devices fail (the first ones: <prefix>-001 ...).")
@click.option("--failure-sensor", help="With --failure: the sensor type that fails (default: the first simulated).")
@click.option("--healthy-for", "healthy_s", type=float,
              help="With --failure: seconds of healthy signal first (default: 200 samples, past the detector's "
                   "default probation of 150 readings).")
@click.option("--ground-truth", type=click.Path(dir_okay=False, writable=True),
              help="With --failure: write the failed readings to this CSV (deviceId,sensorType,timestamp,failure).")
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
@output_choices(STREAM_FORMATS, "table: a summary line (with --dry-run, the payloads one per line); json: one "
                                "JSON document; jsonl: one JSON object per line (with --dry-run, per message).")
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
    claim_dir: str | None,
    serial: str | None,
    fmt: str,
    batch: int,
    failure: str | None,
    failing_devices: int,
    failure_sensor: str | None,
    healthy_s: float | None,
    ground_truth: str | None,
    seed: int | None,
    dry_run: bool,
    ack_timeout: float,
    config_path: str | None,
    env: str,
    output: str,
) -> None:
    """Send realistic sensor telemetry over MQTT (QoS 1, one client per device).

    Values follow the configured thresholds and units: each sensor holds a steady level with small noise;
    --anomaly-rate injects out-of-range values; --failure makes sensors fail inside the bounds (drift, spike,
    level-shift, variance, flatline) and --ground-truth lists the failed readings.
    Progress goes to stderr, the summary (sent, failed, anomalies injected) to stdout.

    \b
    Examples:
      iotpipe simulate --env dev --cert-dir certs --rate 1 --duration 300 --anomaly-rate 0.05
      iotpipe simulate --broker mqtt://127.0.0.1:1883 --devices 5 --rate 2 --count 100 --seed 7
      iotpipe simulate --dry-run --devices 2 --count 6 --format multi --seed 1
      iotpipe simulate --env prod --cert-dir certs --format multi --batch 60 --duration 600
      iotpipe simulate --env local --devices 3 --rate 10 --duration 60 --failure level-shift --ground-truth t.csv
      iotpipe simulate --env local --provision-by-claim claim/local --serial SN-0001 --count 10
    """
    if bool(claim_dir) != bool(serial):
        raise ConfigError("--provision-by-claim DIR and --serial SERIAL go together")
    if claim_dir and (broker or cert_dir or dry_run):
        raise ConfigError("--provision-by-claim connects with the claim certificate: drop --broker, --cert-dir and "
                          "--dry-run")
    if ground_truth and not failure:
        raise ConfigError("--ground-truth lists the failed readings: give --failure too")
    if broker and cert_dir:
        raise ConfigError("give --broker or --cert-dir, not both")
    cfg = load_pipeline_config(config_path, env)
    local = running_local(cfg.env) if not (broker or dry_run) else None
    broker = local.mqtt if local is not None and not (cert_dir or claim_dir) else broker
    if not (broker or cert_dir or claim_dir or dry_run):
        raise ConfigError("where to send? give --cert-dir (AWS IoT, TLS), --broker mqtt://host:port, or --dry-run "
                          "(or start `iotpipe local up --env <env>`)")
    if claim_dir and serial:
        cert_dir = _provision(claim_dir, serial, local, devices_lib.basic_ingest_rule(cfg))
    credentials = simulate_lib.load_cert_dir(cert_dir) if cert_dir else []
    if credentials and local is not None:  # connection files written for this local broker need its run's login
        credentials = simulate_lib.with_login(credentials, local.mqtt, local.mqtt_username or None,
                                              local.mqtt_password or None)
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
        failure=failure,
        failing_devices=failing_devices,
        failure_sensor=failure_sensor,
        healthy_s=healthy_s,
    )
    if dry_run:
        start = now_ms()
        if ground_truth:
            simulate_lib.write_ground_truth(ground_truth, simulate_lib.ground_truth(plan, start))
        planned = simulate_lib.messages(plan, start)
        if output == "json":
            echo_json([message.as_dict() for message in planned])
            return
        for message in planned:
            if output == "jsonl":
                echo_json_line(message.as_dict())
            else:
                click.echo(message.body())
        return
    target = simulate_lib.parse_broker_url(broker) if broker else None
    if target is not None and local is not None:  # the local broker takes only its run's login
        target = replace(target, username=local.mqtt_username or None, password=local.mqtt_password or None)
    where = broker or f"AWS IoT ({len(ids)} device(s) from {cert_dir})"
    batching = f", {batch} samples per message" if batch > 1 else ""
    rule = devices_lib.basic_ingest_rule(cfg)
    topic = devices_lib.topic_for("<device>", rule)
    progress(f"simulating {len(ids)} device(s) -> {where} on {topic}, {plan.fmt} format, {rate:g} Hz{batching}")
    try:
        summary = simulate_lib.run_simulation(
            plan,
            broker=target,
            credentials=credentials,
            ack_timeout_s=ack_timeout,
            basic_ingest_rule=rule,
            on_progress=lambda sent, failed: progress(f"  {sent} sent, {failed} failed"),
        )
    except KeyboardInterrupt:
        # Ctrl-C while connecting (the send loop itself returns an interrupted summary): nothing was sent.
        progress("stopped by Ctrl-C before sending")
        sys.exit(INTERRUPTED_EXIT)
    if ground_truth:
        simulate_lib.write_ground_truth(ground_truth, simulate_lib.ground_truth(
            plan, summary.start_ms, summary.sent + summary.failed))
    if output == "json":
        echo_json(summary.as_dict())
    elif output == "jsonl":
        echo_json_line(summary.as_dict())
    else:
        click.echo(
            ("interrupted: " if summary.interrupted else "")
            + f"sent {summary.sent}, failed {summary.failed}, readings {summary.readings}, anomalies injected "
            f"{summary.anomalies_injected}"
            + (f", failed readings {summary.failed_readings} ({plan.failure} on "
               f"{', '.join(plan.failing_devices)} {plan.failure_sensor} from {plan.healthy_s:g} s)"
               if plan.failure else "")
            + f" ({summary.devices} device(s), {summary.elapsed_s:g} s)"
        )
    if summary.interrupted:
        progress("stopped by Ctrl-C")
        sys.exit(INTERRUPTED_EXIT)
    if summary.failed:
        raise simulate_lib.PublishError(f"{summary.failed} message(s) were not acknowledged by the broker")


def _provision(claim_dir: str, serial: str, local: Any, rule: str | None) -> str:
    """Provision ``serial`` by claim (as a device does, over MQTT); the folder of its new certificate."""
    claim = simulate_claim.load_claim(claim_dir)
    username = local.mqtt_username or None if local is not None and not claim.credentials.tls else None
    password = local.mqtt_password or None if local is not None and not claim.credentials.tls else None
    progress(f"provisioning {serial} by claim with template {claim.template}")
    provisioned = simulate_claim.provision_by_claim(claim, serial, username=username, password=password,
                                                    basic_ingest_rule=rule)
    progress(f"provisioned thing {provisioned.thing_name} (certificate {provisioned.certificate_id[:12]}…), "
             f"files in {provisioned.cert_dir}")
    return str(provisioned.cert_dir)
