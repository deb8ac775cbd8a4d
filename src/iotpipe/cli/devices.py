"""``iotpipe device register|list|revoke``: AWS IoT things with certificates."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import click

from iotpipe import contract, fleet
from iotpipe import devices as devices_lib
from iotpipe.aws import stack_outputs
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import confirm, echo_json, output_option, write_table
from iotpipe.errors import ConfigError, IotpipeError, ParameterError
from iotpipe.local.state import LocalClientFactory, running_state


def _parse_attributes(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--attribute {pair!r} is not KEY=VALUE")
        result[key] = value
    return result


@click.group()
def device() -> None:
    """Register, list and revoke devices (AWS IoT things with certificates).

    \b
    Examples:
      iotpipe device register press-07 --env dev --location line-2 --equipment-type press
      iotpipe device list --env dev
      iotpipe device revoke press-07 --env dev --yes
      iotpipe device register --from devices.csv --env dev
      iotpipe device rotate press-07 --env dev --grace 24h --yes
      iotpipe device audit --env dev --expiring-within 30d --silent-for 7d
    """


@device.command("register")
@click.argument("device_id", required=False)
@click.option("--from", "from_csv", type=click.Path(dir_okay=False),
              help="Register every device of a CSV (header: id and attribute columns); resumable.")
@click.option("--per-second", type=click.FloatRange(min=0), default=fleet.DEFAULT_REGISTRATIONS_PER_SECOND,
              show_default=True, help="With --from: registrations started per second (AWS IoT's API rate limits; "
              "0 for no pacing, e.g. on iotpipe local).")
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
    device_id: str | None,
    from_csv: str | None,
    per_second: float,
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
      iotpipe device register --from devices.csv --env prod --out-dir certs/prod
    """
    if (device_id is None) == (from_csv is None):
        raise click.UsageError("give either DEVICE_ID or --from devices.csv")
    cfg, factory = target.config, target.factory
    local = running_state()
    # Registered in `iotpipe local`'s emulator: the device connects to its broker, not to an AWS IoT endpoint.
    broker_url = local.mqtt if isinstance(factory, LocalClientFactory) and local is not None else None
    if from_csv is not None:
        _register_from(from_csv, per_second, out_dir, target, output, broker_url)
        return
    assert device_id is not None
    devices_lib.validate_thing_name(device_id)
    extra = {**_parse_attributes(attributes), "location": location, "equipmentType": equipment_type}
    policy = devices_lib.device_policy_name(factory.client("cloudformation"), cfg)
    result = devices_lib.register_device(
        factory.client("iot"),
        thing_name=device_id,
        policy_name=policy,
        out_dir=out_dir,
        environment=cfg.env,
        attributes={k: v for k, v in extra.items() if v is not None},
        basic_ingest_rule=devices_lib.basic_ingest_rule(cfg),
        broker_url=broker_url,
    )
    if output == "json":
        echo_json(result.as_dict())
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
        echo_json([d.as_dict() for d in found])
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
    write_table(("DEVICE", "CERTS", "ATTRIBUTES"), rows)


@device.command("revoke")
@click.argument("device_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--out-dir", default="certs", show_default=True, type=click.Path(file_okay=False),
              help="Where 'device register' wrote the device's files; they are removed once it is revoked.")
@pipeline_target
@output_option
def revoke(
    device_id: str,
    yes: bool,
    out_dir: str,
    target: Target,
    output: str,
) -> None:
    """Detach, deactivate and delete the device's certificates, then delete the thing.

    Only a thing iotpipe registered for this env (attributes managedBy=iotpipe, environment=<env>) is revoked;
    any other is refused with the reason. The device's certificate, key and connection file in --out-dir are
    removed, so the id can be registered again.

    \b
    Examples:
      iotpipe device revoke press-07 --env dev
      iotpipe device revoke press-07 --env dev --yes
    """
    devices_lib.validate_thing_name(device_id)
    if not confirm(f"Revoke {device_id} and delete its certificates?", yes=yes,
                   what=f"revoking {device_id} (it deletes its certificates)"):
        raise IotpipeError(f"revoke cancelled at the prompt; {device_id} and its certificates are left as they are")
    result = devices_lib.revoke_device(target.factory.client("iot"), device_id, target.config.env, out_dir=out_dir)
    if output == "json":
        echo_json(result.as_dict())
        return
    click.echo(
        f"revoked {result.thing_name}: deleted {len(result.deleted_certificates)} certificate(s)"
        + (f", detached {len(result.detached_only_certificates)} shared" if result.detached_only_certificates else "")
    )
    for path in result.removed_files:
        click.echo(f"removed     {path}")


def _duration(flag: str, text: str) -> timedelta:
    try:
        return fleet.parse_duration(flag.lstrip("-"), text)
    except ParameterError as exc:
        raise exc.for_option(flag) from None


def _register_from(path: str, per_second: float, out_dir: str, target: Target, output: str,
                   broker_url: str | None) -> None:
    rows = fleet.read_devices_csv(path)
    cfg, factory = target.config, target.factory
    policy = devices_lib.device_policy_name(factory.client("cloudformation"), cfg)
    with click.progressbar(length=len(rows), label=f"registering {len(rows)} devices", file=sys.stderr) as bar:
        summary = fleet.register_many(
            factory.client("iot"), rows, policy_name=policy, out_dir=out_dir, environment=cfg.env,
            basic_ingest_rule=devices_lib.basic_ingest_rule(cfg), broker_url=broker_url, per_second=per_second,
            on_done=lambda _outcome: bar.update(1))
    if output == "json":
        echo_json(summary.as_dict())
    else:
        for outcome in summary.outcomes:
            if outcome.status == "failed":
                click.echo(f"failed      {outcome.thing_name}: {outcome.detail}")
        click.echo(f"registered {summary.count('registered')}, skipped {summary.count('skipped')} (registered "
                   f"before), failed {summary.count('failed')} in {summary.seconds:.1f} s; files in {out_dir}")
    if summary.count("failed"):
        raise IotpipeError(f"{summary.count('failed')} device(s) failed; fix the cause and run the same command "
                           "again: the devices registered already are skipped")


@device.command("rotate")
@click.argument("device_id", required=False)
@click.option("--all-expiring-within", "expiring_within", metavar="DURATION",
              help="Rotate every device of the env with a certificate expiring within DURATION (e.g. 30d).")
@click.option("--grace", default="24h", show_default=True, metavar="DURATION",
              help="How long the old certificate stays active beside the new one.")
@click.option("--confirm", "confirmed", is_flag=True,
              help="The device has connected with the new certificate: deactivate the old one now.")
@click.option("--csr", "csr_file", type=click.Path(dir_okay=False, exists=True),
              help="A certificate signing request the device made (its private key never leaves it).")
@click.option("--out-dir", default="certs", show_default=True, type=click.Path(file_okay=False),
              help="Where the device's files are (as for register); the new ones and the rotation state go there.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pipeline_target
@output_option
def rotate(device_id: str | None, expiring_within: str | None, grace: str, confirmed: bool, csr_file: str | None,
           out_dir: str, yes: bool, target: Target, output: str) -> None:
    """Rotate a device's certificate without taking it offline; run it again to resume or finish.

    The new certificate is attached beside the old one and written as DEVICE_ID.next.cert.pem and
    DEVICE_ID.next.private.key; the old one is deactivated and detached once you say the device uses the new
    one (--confirm) or the grace period has ended, and the new files then replace the old ones. State is kept
    in DEVICE_ID.rotation.json, so an interrupted run resumes and a finished one does nothing.

    \b
    Examples:
      iotpipe device rotate press-07 --env prod --grace 24h --yes
      iotpipe device rotate press-07 --env prod --confirm --yes
      iotpipe device rotate --all-expiring-within 30d --env prod --yes
    """
    if (device_id is None) == (expiring_within is None):
        raise click.UsageError("give either DEVICE_ID or --all-expiring-within DURATION")
    grace_period = _duration("--grace", grace)
    csr = None
    if csr_file is not None:
        with open(csr_file, encoding="utf-8") as handle:
            csr = handle.read()
    cfg, factory = target.config, target.factory
    iot = factory.client("iot")
    now = datetime.now(UTC)
    if device_id is not None:
        names: tuple[str, ...] = (devices_lib.validate_thing_name(device_id),)
    else:
        if csr is not None:
            raise click.UsageError("--csr is for one device; it cannot be used with --all-expiring-within")
        assert expiring_within is not None
        window = _duration("--all-expiring-within", expiring_within)
        names = fleet.expiring_devices(iot, cfg.env, window, now)
        if not names:
            progress(f"no device of {cfg.env} has a certificate expiring within {expiring_within}")
            return
    if not confirm(f"Rotate the certificate of {', '.join(names)}?", yes=yes,
                   what=f"rotating {len(names)} device certificate(s)"):
        raise IotpipeError("rotation cancelled at the prompt; nothing was changed")
    policy = devices_lib.device_policy_name(factory.client("cloudformation"), cfg)
    reports = []
    for name in names:
        report = fleet.rotate_device(iot, name, policy_name=policy, out_dir=out_dir, environment=cfg.env,
                                     grace=grace_period, confirmed=confirmed, csr_pem=csr, now=now)
        reports.append(report)
        if output != "json":
            for step in report.steps:
                click.echo(f"{name}: {step}")
    if output == "json":
        echo_json([report.as_dict() for report in reports])


@device.command("audit")
@click.option("--expiring-within", default="30d", show_default=True, metavar="DURATION",
              help="Report certificates that expire within DURATION.")
@click.option("--silent-for", metavar="DURATION",
              help="Also report devices with no reading stored for DURATION (reads the stack's table).")
@pipeline_target
@output_option
def audit(expiring_within: str, silent_for: str | None, target: Target, output: str) -> None:
    """Check the env's devices: expiring, inactive or revoked certificates still attached, certificates
    shared by several things, things without a certificate, silent devices. Exit 1 on any finding (for CI).

    \b
    Examples:
      iotpipe device audit --env prod
      iotpipe device audit --env prod --expiring-within 60d --silent-for 7d --output json
    """
    window = _duration("--expiring-within", expiring_within)
    silence = _duration("--silent-for", silent_for) if silent_for else None
    cfg, factory = target.config, target.factory
    iot = factory.client("iot")
    names = [d.thing_name for d in devices_lib.list_devices(iot, cfg.env)]
    last_seen = None
    if silence is not None:
        table = stack_outputs(factory.client("cloudformation"), cfg.resolved_stack_name).get(contract.OUT_TABLE_NAME)
        if not table:
            raise IotpipeError(f"stack {cfg.resolved_stack_name} has no output {contract.OUT_TABLE_NAME}; deploy "
                               f"it first: iotpipe deploy --env {cfg.env}")
        last_seen = fleet.last_readings(factory.client("dynamodb"), table, names)
    findings = fleet.audit_findings(fleet.collect_certificates(iot, names), now=datetime.now(UTC),
                                    expiring_within=window, last_seen=last_seen, silent_for=silence)
    if output == "json":
        echo_json([finding.as_dict() for finding in findings])
    elif findings:
        write_table(("FINDING", "SUBJECT", "DETAIL"), [(f.kind, f.subject, f.detail) for f in findings])
    else:
        progress(f"no findings for the {len(names)} device(s) of {cfg.env}")
    if findings:
        raise IotpipeError(f"{len(findings)} finding(s) for the devices of {cfg.env}")
