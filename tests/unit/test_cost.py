"""The cost model (src/iotpipe/cost.py) against a hand-worked month, its JSON shape, and bad input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from click.testing import CliRunner

from iotpipe import cost
from iotpipe.cli import main
from iotpipe.config import PipelineConfig, build_config
from iotpipe.errors import ConfigError

# Round numbers for the hand-worked example, so each step below can be checked on paper.
HAND_ASSUMPTIONS = cost.DEFAULT_ASSUMPTIONS.with_values(
    "hand-worked example", single_payload_bytes=78, device_id_bytes=10, rule_added_bytes=72,
    reading_item_bytes=300, anomaly_rate=0.01, archive_line_overhead_bytes=100, compression_ratio=5,
    archive_object_overhead_bytes=0, lambda_ms_per_invocation=100, lambda_ms_per_item=1,
    log_bytes_per_invocation=1000, athena_queries_per_month=30)
GB = 1024 ** 3


def usd(estimate: cost.Estimate) -> dict[str, float]:
    return {f"{i.service}.{i.item}": i.usd for i in estimate.line_items}


def test_a_hand_worked_month_of_todays_layout() -> None:
    # The built-in defaults: provisioned stream of 1 shard, 24 h retention, arm64 at 256 MB, batches of 100
    # with a 5 s window, one item per reading, TTL 90 days; MQTT topics (no Basic Ingest).
    cfg = build_config({}, "dev", {})
    workload = cost.Workload(devices=10, sensors=2, rate_hz=1.0, readings_per_message=1)
    est = cost.estimate(workload, cfg, assumptions=HAND_ASSUMPTIONS, alarms=8)
    lines = usd(est)

    # A month is 730 h = 2,628,000 s; 10 devices x 2 sensors x 1 Hz = 20 readings/s -> 52,560,000 readings,
    # one per message -> 52,560,000 messages of 78 payload bytes + 22 topic bytes (sensor/<10 bytes>/data)
    # = 100 bytes: 1 IoT unit (5 KB) each.
    assert est.readings_per_month == 52_560_000
    # IoT: 10 devices connected 43,800 minutes each = 438,000 minutes x $0.08/M = $0.03504;
    # 52.56 M messages x $1.00/M; rules triggered and actions x $0.15/M each.
    assert lines["iot.connection_minutes"] == pytest.approx(0.03504)
    assert lines["iot.messages"] == pytest.approx(52.56)
    assert lines["iot.rules_triggered"] == pytest.approx(7.884)
    assert lines["iot.actions"] == pytest.approx(7.884)
    # Kinesis provisioned: 1 shard x 730 h x $0.015 = $10.95; records of 78 + 72 bytes = 1 PUT payload unit
    # (25 KB) each: 52.56 M x $0.014/M = $0.73584. Retention is 24 h: no extended retention line.
    assert lines["kinesis.shard_hours"] == pytest.approx(10.95)
    assert lines["kinesis.put_payload_units"] == pytest.approx(0.73584)
    assert "kinesis.extended_retention_shard_hours" not in lines
    # Lambda: one shard gets 20 records/s; in the 5 s window that is 100 = batch_size -> 100 records per
    # invocation, 525,600 invocations x $0.20/M = $0.10512. Each lasts 100 ms + 1 ms x 100 items = 200 ms:
    # 105,120 s x 0.25 GB = 26,280 GB-s x $0.0000133334 (arm64) = $0.350401752.
    assert est.shape.records_per_invocation == 100
    assert est.shape.invocations == pytest.approx(525_600)
    assert lines["lambda.requests"] == pytest.approx(0.10512)
    assert lines["lambda.gb_seconds_arm64"] == pytest.approx(0.350401752)
    # DynamoDB: 52.56 M items of 300 bytes = 1 write unit each, plus 1% anomalies (525,600) written to the
    # sparse index once more: 53,085,600 units x $0.625/M = $33.1785.
    assert lines["dynamodb.write_request_units"] == pytest.approx(33.1785)
    # Storage: 53,085,600 items x (300 + 100 index overhead) bytes = 21,234,240,000 B = 19.775927 GB, held
    # 90 days of a 30.416667-day month = 58.515072 GB-months x $0.25 = $14.628768.
    assert lines["dynamodb.storage_gb_months"] == pytest.approx(14.628768)
    # Point-in-time recovery (the template enables it) is billed on the table's size: 58.515072 GB-months
    # x $0.20 = $11.703014.
    assert lines["dynamodb.pitr_gb_months"] == pytest.approx(11.703014)
    # S3: one archive object per invocation: 525,600 PUTs x $0.005/1000 = $2.628. Raw lines of 150 + 100 bytes,
    # gzip 5:1 -> 2,628,000,000 B = 2.447516 GB, kept 365 days (storage.archive_retention_days) = 12 months
    # = 29.370189 GB-months x $0.023 = $0.675514.
    assert lines["s3.put_requests"] == pytest.approx(2.628)
    assert lines["s3.storage_gb_months"] == pytest.approx(0.675514, rel=1e-5)
    # KMS: the pipeline key, $1 a month. Athena: 30 queries, each over a day of archive (2,628,000,000 B /
    # 30.416667 days = 86,400,000 B, over the 10 MB minimum): 2,592,000,000 B = 0.0023574 TB x $5 = $0.011787;
    # each GETs the day's 17,280 objects: 518,400 x $0.0004/1000 = $0.20736, and lists 24 hours: 720 LISTs
    # x $0.005/1000 = $0.0036.
    assert lines["kms.key_months"] == pytest.approx(1.00)
    assert lines["athena.data_scanned_tb"] == pytest.approx(0.011787, rel=1e-4)
    assert lines["s3.get_requests"] == pytest.approx(0.20736)
    assert lines["s3.list_requests"] == pytest.approx(0.0036)
    # CloudWatch: 525,600 invocations x 1,000 log bytes = 0.489503 GB x $0.50 = $0.244752; 6 metrics by
    # Environment + 2 per sensor type x 2 = 10 metrics x $0.30 = $3.00; 8 alarms x $0.10 = $0.80.
    assert lines["cloudwatch.log_ingestion_gb"] == pytest.approx(0.244752, rel=1e-5)
    assert lines["cloudwatch.custom_metrics"] == pytest.approx(3.00)
    assert lines["cloudwatch.alarms"] == pytest.approx(0.80)
    # The detector's state (every seed sensor type has one): one batch stream holds all 10 devices, each read
    # (1 read unit: under 4 KB) and written (1 write unit: under 1 KB) once a batch: 5,256,000 of each,
    # x $0.125/M = $0.657 and x $0.625/M = $3.285.
    assert lines["dynamodb.read_request_units"] == pytest.approx(0.657)
    assert lines["dynamodb.state_write_request_units"] == pytest.approx(3.285)
    # SNS: 10 devices x 2 sensors = 20 series, one anomaly episode each a month (the default assumption), each one
    # publish (20 x $0.50/M = $0.00001) and one e-mail (20 x $2.00/100,000 = $0.0004).
    assert lines["sns.publishes"] == pytest.approx(0.00001)
    assert lines["sns.email_deliveries"] == pytest.approx(0.0004)
    # Total $148.585697 + $0.657 + $3.285 + $0.00041 = $152.528107 a month; / 52.56 M readings = $2.901981 per
    # million.
    assert est.monthly_total_usd == pytest.approx(152.528107, rel=1e-6)
    assert est.per_million_readings_usd == pytest.approx(2.901981, rel=1e-6)


def test_notifications_are_priced_per_episode_and_not_when_no_type_notifies() -> None:
    workload = cost.Workload(devices=100, sensors=3, rate_hz=1.0)
    units = dict((u.key, u.units) for u in cost.billable_units(workload, build_config({}, "dev", {}))[0])
    assert units["sns.publishes"] == units["sns.email_deliveries"] == pytest.approx(300)
    many = cost.DEFAULT_ASSUMPTIONS.with_values("test", episodes_per_series_month=4)
    units = dict((u.key, u.units) for u in cost.billable_units(workload, build_config({}, "dev", {}), many)[0])
    assert units["sns.publishes"] == pytest.approx(1200)
    quiet = build_config({"defaults": {"thresholds": {name: {"episode_quiet": 0} for name in
                                                      ("temperature", "pressure", "vibration")}}}, "dev", {})
    assert not [u for u in cost.billable_units(workload, quiet)[0] if u.key.startswith("sns.")]


def test_basic_ingest_removes_the_messaging_charge_but_not_the_rule() -> None:
    base = build_config({}, "dev", {})
    workload = cost.Workload(devices=10, sensors=2, rate_hz=1.0)
    plain = usd(cost.estimate(workload, base, assumptions=HAND_ASSUMPTIONS))
    basic = usd(cost.estimate(workload, build_config({}, "dev", {"ingest.basic_ingest": True}),
                              assumptions=HAND_ASSUMPTIONS))
    assert plain["iot.messages"] == pytest.approx(52.56)
    assert basic["iot.messages"] == 0
    assert basic["iot.rules_triggered"] == plain["iot.rules_triggered"]


def test_the_device_defender_audit_is_priced_per_device_only_when_opted_in() -> None:
    workload = cost.Workload(devices=1000, sensors=2, rate_hz=1.0)
    off = usd(cost.estimate(workload, build_config({}, "dev", {}), assumptions=HAND_ASSUMPTIONS))
    on = usd(cost.estimate(workload, build_config({}, "dev", {"fleet.device_defender_audit": True}),
                           assumptions=HAND_ASSUMPTIONS))
    assert "iot.device_defender_audit_devices" not in off
    assert on["iot.device_defender_audit_devices"] == pytest.approx(1000 * 1.10 / 1000)  # $1.10 per 1,000 devices
    assert {key: value for key, value in on.items() if key != "iot.device_defender_audit_devices"} == off


def test_several_readings_per_message_divide_the_per_message_charges() -> None:
    cfg = build_config({}, "dev", {})
    one = usd(cost.estimate(cost.Workload(10, 2, 1.0, 1), cfg, assumptions=HAND_ASSUMPTIONS))
    # 20 readings: 38 + 20 x 31 = 658 payload bytes + 22 topic bytes, still one 5 KB unit: a twentieth of the
    # messages.
    twenty = usd(cost.estimate(cost.Workload(10, 2, 1.0, 20), cfg, assumptions=HAND_ASSUMPTIONS))
    assert twenty["iot.messages"] == pytest.approx(one["iot.messages"] / 20)
    assert twenty["iot.rules_triggered"] == pytest.approx(one["iot.rules_triggered"] / 20)


def test_a_payload_over_128_kb_is_refused() -> None:
    big = HAND_ASSUMPTIONS.with_values("test", bytes_per_reading_in_message=200)
    with pytest.raises(ConfigError, match="over AWS IoT Core's 128 KB message limit; use at most 655"):
        cost.validate_workload(cost.Workload(1, 3, 1.0, 999), big)


def test_a_message_over_5_kb_is_metered_as_several() -> None:
    cfg = build_config({}, "dev", {})
    # 38 + 300 readings x 31 = 9,338 payload bytes + 22 topic bytes: two 5 KB units per message.
    est = cost.estimate(cost.Workload(10, 2, 1.0, 300), cfg, assumptions=HAND_ASSUMPTIONS)
    messages = est.shape.messages
    assert {i.item: i.units for i in est.line_items if i.service == "iot"}["rules_triggered"] == 2 * messages


def test_on_demand_stream_is_priced_per_gb_and_stream_hour() -> None:
    cfg = build_config({}, "dev", {"stream.mode": "ON_DEMAND", "stream.retention_hours": 48})
    est = cost.estimate(cost.Workload(10, 2, 1.0), cfg, assumptions=HAND_ASSUMPTIONS)
    lines = {i.item: i for i in est.line_items if i.service == "kinesis"}
    assert set(lines) == {"on_demand_stream_hours", "on_demand_data_in_gb", "on_demand_data_out_gb",
                          "on_demand_extended_retention_gb_months"}
    assert lines["on_demand_stream_hours"].usd == pytest.approx(730 * 0.04)
    # 52.56 M records of 78 + 72 bytes, each rounded up to 1 KB: 52.56 M KB = 50.125 GB x $0.08.
    assert lines["on_demand_data_in_gb"].units == pytest.approx(52_560_000 * 1024 / GB)
    assert lines["on_demand_data_in_gb"].usd == pytest.approx(52_560_000 * 1024 / GB * 0.08)


def test_a_provisioned_stream_too_small_for_the_traffic_is_priced_with_the_shards_it_needs() -> None:
    cfg = build_config({}, "dev", {})  # 1 shard: 1,000 records/s
    est = cost.estimate(cost.Workload(devices=1000, sensors=3, rate_hz=1.0), cfg)  # 3,000 messages/s
    assert est.shape.shards == 3
    assert {i.item: i.units for i in est.line_items}["shard_hours"] == 3 * 730
    assert est.warnings and "set stream.shard_count = 3" in est.warnings[0]


def test_x86_is_priced_as_x86() -> None:
    cfg = build_config({}, "dev", {"processor.architecture": "x86_64"})
    items = {i.item for i in cost.estimate(cost.Workload(10, 2, 1.0), cfg).line_items}
    assert "gb_seconds_x86_64" in items and "gb_seconds_arm64" not in items


def test_packed_layout_writes_an_item_per_device_sensor_and_window_piece() -> None:
    cfg = build_config({}, "dev", {"storage.layout": "packed", "storage.pack_window_seconds": 60})
    est = cost.estimate(cost.Workload(10, 2, 1.0), cfg, assumptions=HAND_ASSUMPTIONS)
    # Batches of 100 records span 5 s of the one shard; each device-sensor series is cut into 1 + 5/60 pieces
    # per batch: 20 series x 2,628,000 s x (1/5 + 1/60) = 11,388,000 packed items, plus 525,600 anomaly items.
    assert est.shape.items == pytest.approx(11_388_000 + 525_600)
    # Each packed item holds 52.56 M / 11.388 M = 4.615 readings: 190 + 4.615 x 12 = 245.4 bytes -> 1 unit;
    # anomaly items (300 bytes) go to the table and the index: 2 units each.
    wru = {i.item: i.units for i in est.line_items}["write_request_units"]
    assert wru == pytest.approx(11_388_000 + 2 * 525_600)


def test_price_overrides_from_config_are_applied_and_reported() -> None:
    cfg = build_config({"env": {"dev": {"prices": {"dynamodb": {"write_request_units": 1e-6}}}}}, "dev", {})
    est = cost.estimate(cost.Workload(10, 2, 1.0), cfg, assumptions=HAND_ASSUMPTIONS)
    line = next(i for i in est.line_items if i.item == "write_request_units")
    assert line.unit_price_usd == 1e-6
    assert cost.to_json(est)["prices"]["overridden"] == ["dynamodb.write_request_units"]


@pytest.mark.parametrize(("prices", "message"), [
    ({"dynamodb": {"writes": 1.0}}, "env.dev.prices.dynamodb.writes: no such price"),
    ({"dynamodb": {"write_request_units": -1}}, "is not a price"),
    ({"dynamodb": {"write_request_units": "cheap"}}, "is not a price"),
])
def test_bad_price_overrides_are_config_errors(prices: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg = build_config({"env": {"dev": {"prices": prices}}}, "dev", {})
        cost.estimate(cost.Workload(1, 1, 1.0), cfg)


def test_price_table_is_dated_and_sourced() -> None:
    table = cost.load_price_table("us-east-1")
    assert table.as_of and table.region == "us-east-1"
    assert {service for service, _ in table.sources} == {p.service for p in table.prices}
    assert all(url.startswith("https://aws.amazon.com/") for _, url in table.sources)
    with pytest.raises(ConfigError, match="no price table for region"):
        cost.load_price_table("xx-nowhere-1")


@pytest.fixture
def no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("no_config")
def test_cli_json_has_totals_and_line_items() -> None:
    result = CliRunner().invoke(main, ["cost", "--devices", "1000", "--sensors", "3", "--rate", "1",
                                       "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"monthly_total_usd", "per_million_readings_usd", "line_items", "assumptions", "prices"} <= set(doc)
    assert doc["readings_per_month"] == 1000 * 3 * 2_628_000
    assert doc["monthly_total_usd"] == pytest.approx(sum(i["usd"] for i in doc["line_items"]), rel=1e-3)
    for item in doc["line_items"]:
        assert set(item) >= {"service", "item", "units", "unit_price_usd", "usd"}
        assert item["usd"] == pytest.approx(item["units"] * item["unit_price_usd"], rel=1e-3, abs=1e-4)
    assert all(a["source"] for a in doc["assumptions"])
    assert doc["prices"]["as_of"] and doc["prices"]["sources"]


@pytest.mark.usefixtures("no_config")
def test_cli_table_shows_sources_date_and_assumptions() -> None:
    result = CliRunner().invoke(main, ["cost", "--devices", "10"])
    assert result.exit_code == 0, result.output
    assert "per million readings" in result.stdout and "monthly total" in result.stdout
    assert "as of" in result.stdout and "https://aws.amazon.com/dynamodb/pricing" in result.stdout
    assert "compression_ratio" in result.stdout and "anomaly_rate" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--devices", "0"], "--devices 0 is out of range"),
    (["--devices", "5", "--rate", "-1"], "--rate -1.0 is out of range"),
    (["--devices", "5", "--sensors", "0"], "--sensors 0 is out of range"),
    (["--devices", "5", "--readings-per-message", "1001"], "more than 1,000 readings"),
    (["--devices", "5", "--readings-per-message", "0"], "--readings-per-message 0 is out of range"),
    # issue 25: were an OverflowError and a ZeroDivisionError traceback
    (["--devices", "5", "--rate", "1e308"], "--rate 1e+308 is out of range"),
    (["--devices", "99999999999999999999999"], "--devices 99999999999999999999999 is out of range; use 1 to"),
    (["--devices", "5", "--sensors", "100001"], "--sensors 100001 is out of range"),
])
@pytest.mark.usefixtures("no_config")
def test_cli_bad_input_exits_2_with_a_clear_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["cost", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "monthly total" not in result.output and "line_items" not in result.output


def test_repository_prod_env_meets_twenty_cents_per_million() -> None:
    from pathlib import Path

    from iotpipe.config import load_config

    repo_config = Path(__file__).resolve().parents[2] / "iotpipe.toml"
    cfg: PipelineConfig = load_config(repo_config, "prod")
    est = cost.estimate(cost.Workload(1000, 3, 1.0, cfg.ingest.readings_per_message), cfg)
    assert cfg.ingest.basic_ingest
    assert est.per_million_readings_usd <= 0.20
    dev = load_config(repo_config, "dev")
    assert cost.estimate(cost.Workload(1000, 3, 1.0, dev.ingest.readings_per_message), dev) \
        .per_million_readings_usd > 2.0


def test_archive_storage_follows_the_configured_retention() -> None:
    workload = cost.Workload(devices=10, sensors=2, rate_hz=1.0)
    year = usd(cost.estimate(workload, build_config({}, "dev", {}), assumptions=HAND_ASSUMPTIONS))
    quarter = usd(cost.estimate(workload, build_config({"defaults": {"storage": {"archive_retention_days": 73}}},
                                                       "dev", {}), assumptions=HAND_ASSUMPTIONS))
    # The archive held 73 days is a fifth of the one held 365 days; nothing else changes.
    assert quarter["s3.storage_gb_months"] == pytest.approx(year["s3.storage_gb_months"] / 5)
    assert quarter["s3.put_requests"] == year["s3.put_requests"]


def test_athena_is_priced_only_with_analytics_and_a_query_scans_at_least_10_mb() -> None:
    workload = cost.Workload(devices=1, sensors=1, rate_hz=0.01)
    on = usd(cost.estimate(workload, build_config({}, "dev", {}), assumptions=HAND_ASSUMPTIONS))
    # A tiny archive: each of the 30 queries is billed the 10 MB minimum.
    assert on["athena.data_scanned_tb"] == pytest.approx(30 * 10 * 1024 ** 2 / 1024 ** 4 * 5)
    off = usd(cost.estimate(workload, build_config({"defaults": {"analytics": {"enabled": False}}}, "dev", {}),
                            assumptions=HAND_ASSUMPTIONS))
    assert not {"athena.data_scanned_tb", "s3.get_requests", "s3.list_requests"} & set(off)
    assert off["kms.key_months"] == on["kms.key_months"] == pytest.approx(1.0)


def test_cli_counts_each_metric_of_a_metric_math_alarm() -> None:
    from iotpipe.cli.cost import count_alarms
    from iotpipe.composition import compose

    cfg = build_config({}, "dev", {})
    alarms = [r for r in compose(cfg).template.resources.values() if r.resource_type == "AWS::CloudWatch::Alarm"]
    # The rule-failure alarm sums three metrics (three ActionType spellings): CloudWatch bills it as three.
    assert count_alarms(cfg) == len(alarms) + 2


@pytest.mark.parametrize("workload", [
    cost.Workload(devices=cost.MAX_DEVICES, sensors=cost.MAX_SENSORS, rate_hz=cost.MAX_RATE_HZ),
    cost.Workload(devices=cost.MAX_DEVICES, sensors=1, rate_hz=1e-9, readings_per_message=1),
    cost.Workload(devices=1, sensors=1, rate_hz=1e-9),
])
def test_every_workload_within_the_bounds_is_priced(workload: cost.Workload) -> None:
    est = cost.estimate(cost.validate_workload(workload), build_config({}, "dev", {}))
    assert math.isfinite(est.monthly_total_usd) and est.monthly_total_usd > 0


def test_the_detector_state_is_read_and_written_once_per_device_per_batch() -> None:
    cfg = build_config({}, "prod", {})
    est = cost.estimate(cost.Workload(devices=1000, sensors=3, rate_hz=1.0), cfg)
    lines = {i.item: i for i in est.line_items}
    streams = cost.batch_streams(est.workload, cfg, est.shape.shards)
    visits = est.shape.invocations * min(1000 / streams, est.shape.records_per_invocation)
    assert cost.detector_state_bytes(3) <= 1024  # one write unit, one read unit
    assert lines["read_request_units"].units == pytest.approx(visits)
    # and while an anomaly episode is open (an hour after its newest anomaly; one episode a series a month: 3,000
    # episodes) the item holds its timestamp too, and a write costs one more unit
    assert cost.detector_state_bytes(3, episodes=True) > 1024
    writes = visits + 3000 * 3600 * visits / 1000 / cost.MONTH_SECONDS
    assert lines["state_write_request_units"].units == pytest.approx(writes)
    assert lines["state_write_request_units"].usd == pytest.approx(writes * 0.625e-6)
    assert cost.detector_state_bytes(4) > 1024  # a fourth series costs a second write unit
    off = build_config({"defaults": {"thresholds": {name: {"detector": "off"} for name in cfg.thresholds}}},
                       "prod", {})
    items = {i.item for i in cost.estimate(cost.Workload(devices=1000, sensors=3, rate_hz=1.0), off).line_items}
    assert not items & {"read_request_units", "state_write_request_units"}


def _documented_totals(text: str) -> dict[str, tuple[str, str]]:
    """The ``a month`` and ``per million readings`` rows of a page's dev/prod comparison table: row -> (dev, prod)."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip().strip("*").strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in ("a month", "per million readings"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/cost.md"])
def test_the_documented_dev_and_prod_totals_are_what_iotpipe_cost_says(page: str) -> None:
    from pathlib import Path

    from iotpipe.cli.cost import count_alarms
    from iotpipe.config import load_config

    repo = Path(__file__).resolve().parents[2]
    wanted = []
    for env in ("dev", "prod"):  # as `iotpipe cost --env ENV --devices 1000 --sensors 3 --rate 1` computes it
        cfg = load_config(repo / "iotpipe.toml", env)
        est = cost.estimate(cost.Workload(1000, 3, 1.0, cfg.ingest.readings_per_message), cfg,
                            alarms=count_alarms(cfg))
        wanted.append((f"{est.monthly_total_usd:,.0f} USD", f"{est.per_million_readings_usd:.4f} USD"))
    documented = _documented_totals((repo / page).read_text(encoding="utf-8"))
    assert documented == {"a month": (wanted[0][0], wanted[1][0]),
                          "per million readings": (wanted[0][1], wanted[1][1])}
