"""``iotpipe cost``: the env's monthly cost and cost per million readings, by service and line item."""

from __future__ import annotations

import click

from iotpipe import cost as cost_lib
from iotpipe.cli.common import config_options, load_pipeline_config, progress
from iotpipe.cli.output import echo_json, format_table, output_option
from iotpipe.composition import compose
from iotpipe.config import PipelineConfig

ALARM_TYPE = "AWS::CloudWatch::Alarm"


def count_alarms(cfg: PipelineConfig) -> int:
    """Alarm metrics in the env's rendered template: CloudWatch bills an alarm per metric it watches."""
    return sum(max(1, sum(1 for query in resource.properties.get("Metrics", []) if "MetricStat" in query.properties))
               for resource in compose(cfg).template.resources.values() if resource.resource_type == ALARM_TYPE)


def _usd(value: float) -> str:
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.4f}"


def _units(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def format_estimate(est: cost_lib.Estimate) -> str:
    """The estimate as text: settings, line items, totals, assumptions and the price table's date and sources."""
    w = est.workload
    lines = [f"iotpipe cost, env {est.env}: {w.devices:,} devices x {w.sensors} sensors x {w.rate_hz:g} Hz, "
             f"{w.readings_per_message} reading(s) per message = {est.readings_per_month:,.0f} readings a month"]
    lines += [f"  {name:<10} {value}" for name, value in est.settings]
    lines.append("")
    header = ("service", "item", "units / month", "unit price USD", "USD / month", "note")
    rows = [(i.service, i.item, _units(i.units), f"{i.unit_price_usd:.10g}", _usd(i.usd), i.note)
            for i in est.line_items]
    lines.append(format_table(header, rows, align=("<", "<", ">", ">", ">", "<")))
    lines.append("")
    for service, usd in est.by_service().items():
        lines.append(f"  {service:<12} {_usd(usd):>12} USD")
    lines.append(f"monthly total            {_usd(est.monthly_total_usd):>12} USD")
    lines.append(f"per million readings     {est.per_million_readings_usd:>12.4f} USD")
    lines.append("")
    lines.append("assumptions:")
    lines += [f"  {a.name} = {a.value:g} {a.unit} ({a.source})" for a in est.assumptions.items]
    overridden = [f"{p.service}.{p.item}" for p in est.prices.prices if p.overridden]
    lines.append(f"prices: {est.prices.region} list prices as of {est.prices.as_of}"
                 + (f"; overridden by the config: {', '.join(overridden)}" if overridden else ""))
    lines += [f"  {service}: {url}" for service, url in est.prices.sources]
    return "\n".join(lines)


@click.command("cost")
@click.option("--devices", type=int, required=True, help="Devices sending readings.")
@click.option("--sensors", type=int, default=3, show_default=True, help="Sensors per device.")
@click.option("--rate", type=float, default=1.0, show_default=True, help="Readings per second per sensor (Hz).")
@click.option("--readings-per-message", type=int,
              help="Readings in one MQTT message (default: the env's ingest.readings_per_message).")
@click.option("--price-region", help="Price table to use (default: the env's region, else us-east-1).")
@config_options
@output_option
def cost(devices: int, sensors: int, rate: float, readings_per_message: int | None, price_region: str | None,
         config_path: str | None, env: str, output: str) -> None:
    """Monthly cost and cost per million readings of ENV's pipeline, by service and line item.

    Priced from the env's rendered configuration (Basic Ingest, stream mode and shards, batch size and window,
    memory and architecture, TTL, storage layout) and the dated price table in the package; the
    assumptions it cannot read from the configuration are printed with where each came from.

    \b
    Examples:
      iotpipe cost --env prod --devices 1000 --sensors 3 --rate 1
      iotpipe cost --env dev --devices 1000 --sensors 3 --rate 1 --readings-per-message 1
      iotpipe cost --env prod --devices 50 --output json
    """
    cfg = load_pipeline_config(config_path, env)
    workload = cost_lib.validate_workload(cost_lib.Workload(
        devices=devices, sensors=sensors, rate_hz=rate,
        readings_per_message=(readings_per_message if readings_per_message is not None
                              else cfg.ingest.readings_per_message)))
    region = price_region or cfg.region or cost_lib.DEFAULT_REGION
    if not price_region and region not in cost_lib.regions():
        progress(f"warning: no price table for {region}; using {cost_lib.DEFAULT_REGION}'s (override what differs "
                 f"in [env.{env}.prices])")
        region = cost_lib.DEFAULT_REGION
    est = cost_lib.estimate(workload, cfg, prices=cost_lib.load_price_table(region), alarms=count_alarms(cfg))
    for warning in est.warnings:
        progress(f"warning: {warning}")
    if output == "json":
        echo_json(cost_lib.to_json(est))
    else:
        click.echo(format_estimate(est))
