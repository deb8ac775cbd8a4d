"""``iotpipe fleet claim create|allow|status``: provisioning by claim, the operator's side."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from iotpipe import claim, fleet
from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.cli.output import echo_json, output_option, write_table
from iotpipe.local.state import LocalClientFactory, running_state


@click.group("fleet")
def fleet_group() -> None:
    """Provisioning by claim: claim certificates, the allow-list of serials, the fleet's status.

    Needs [env.<name>.fleet] provisioning_by_claim = true in iotpipe.toml (deployed).

    \b
    Examples:
      iotpipe fleet claim create --env prod --expires 30d -o claim/batch-12
      iotpipe fleet allow SN-0001 SN-0002 --env prod
      iotpipe fleet allow --from serials.csv --env prod
      iotpipe fleet status --env prod
    """


@fleet_group.group("claim")
def claim_group() -> None:
    """Claim certificates: one per batch of devices, flashed at the factory."""


@claim_group.command("create")
@click.option("--expires", default="30d", show_default=True,
              help="How long the claim certificate may provision devices (e.g. 7d, 30d, 2w).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Where the claim certificate, private key (0600), CA and claim.json are written.")
@pipeline_target
@output_option
def claim_create(expires: str, out_dir: str, target: Target, output: str) -> None:
    """Create a claim certificate with the claim policy and write the files a device is flashed with.

    \b
    Examples:
      iotpipe fleet claim create --env prod -o claim/batch-12
      iotpipe fleet claim create --env local --expires 1d -o claim/local
    """
    factory = target.factory
    names = claim.fleet_names(factory.client("cloudformation"), target.config)
    local = running_state()
    broker_url = local.mqtt if isinstance(factory, LocalClientFactory) and local is not None else None
    bundle = claim.create_claim(factory.client("iot"), factory.client("dynamodb"), names, out_dir=out_dir,
                                expires=fleet.parse_duration("expires", expires), broker_url=broker_url)
    if output == "json":
        echo_json(bundle.as_dict())
        return
    click.echo(f"claim certificate {bundle.certificate_id[:12]}… for template {bundle.template}, "
               f"expires {bundle.expires_at:%Y-%m-%d %H:%M} UTC")
    for path in bundle.files:
        click.echo(f"wrote       {path}")


@fleet_group.command("allow")
@click.argument("serials", nargs=-1)
@click.option("--from", "from_csv", type=click.Path(dir_okay=False),
              help="A CSV of serials (a 'serial' column, or one per line).")
@pipeline_target
@output_option
def allow(serials: tuple[str, ...], from_csv: str | None, target: Target, output: str) -> None:
    """Put serials on the allow-list the pre-provisioning hook checks (idempotent).

    \b
    Examples:
      iotpipe fleet allow SN-0001 SN-0002 --env prod
      iotpipe fleet allow --from serials.csv --env prod
    """
    factory = target.factory
    wanted = claim.serials_from(serials, from_csv)
    names = claim.fleet_names(factory.client("cloudformation"), target.config)
    count = claim.allow_serials(factory.client("dynamodb"), names.table, wanted)
    if output == "json":
        echo_json({"allowed": count, "table": names.table})
        return
    click.echo(f"allowed {count} serial(s) in {names.table}")


@fleet_group.command("status")
@pipeline_target
@output_option
def status(target: Target, output: str) -> None:
    """The provisioning template and hook, the allow-list's size, claim certificates and provisioned devices.

    \b
    Examples:
      iotpipe fleet status --env prod
      iotpipe fleet status --env prod --output json
    """
    factory = target.factory
    names = claim.fleet_names(factory.client("cloudformation"), target.config)
    found = claim.fleet_status(factory.client("iot"), factory.client("dynamodb"), names)
    if output == "json":
        echo_json(found.as_dict())
        return
    click.echo(f"template    {names.template}")
    click.echo(f"hook        {names.hook}")
    click.echo(f"allow-list  {found.allowed_serials} serial(s) in {names.table}")
    click.echo(f"provisioned {len(found.provisioned)} device(s)")
    if not found.claims:
        progress("no claim certificates: iotpipe fleet claim create -o DIR")
        return
    now = datetime.now(UTC)
    write_table(("CLAIM CERTIFICATE", "EXPIRES", "STATE"),
                [(c.certificate_id[:12] + "…", f"{c.expires_at:%Y-%m-%d %H:%M}", "expired" if c.expired(now)
                  else "valid") for c in found.claims])
