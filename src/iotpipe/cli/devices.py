"""``iotpipe device register|list|revoke``: AWS IoT things with certificates."""

from __future__ import annotations

from collections.abc import Sequence

import click

from iotpipe import devices as devices_lib
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import confirm, echo_json, output_option, write_table
from iotpipe.errors import ConfigError, IotpipeError
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
    local = running_state()
    # Registered in `iotpipe local`'s emulator: the device connects to its broker, not to an AWS IoT endpoint.
    broker_url = local.mqtt if isinstance(factory, LocalClientFactory) and local is not None else None
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
