"""Config loading: good files, every kind of bad value, and precedence CLI > env section > defaults."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from iotpipe.config import (
    SEED_THRESHOLDS,
    AlarmConfig,
    PipelineConfig,
    ProcessorConfig,
    StreamConfig,
    Threshold,
    build_config,
    load_config,
)
from iotpipe.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "iotpipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_defaults_reproduce_the_seed() -> None:
    cfg = build_config({}, "dev", {})
    assert cfg.threshold_map == dict(SEED_THRESHOLDS)
    assert cfg.stream.shard_count == 1 and cfg.stream.retention_hours == 24 and cfg.stream.mode == "PROVISIONED"
    assert (cfg.processor.batch_size, cfg.processor.batching_window_seconds) == (100, 5)
    assert (cfg.processor.memory_mb, cfg.processor.timeout_seconds, cfg.processor.max_retry_attempts) == (256, 60, 3)
    assert cfg.storage.ttl_days == 90 and cfg.processor.log_retention_days == 7
    assert (cfg.storage.ia_transition_days, cfg.storage.glacier_transition_days) == (30, 90)
    assert (cfg.alarms.lambda_errors, cfg.alarms.anomalies, cfg.alarms.iterator_age_ms) == (5, 10, 60000)
    assert cfg.resolved_stack_name == "iotpipe-dev"


def test_repository_config_file_loads_for_every_env() -> None:
    root = Path(__file__).resolve().parents[2] / "iotpipe.toml"
    dev = load_config(root, "dev")
    prod = load_config(root, "prod")
    assert dev.processor.runtime == "python3.13"
    assert prod.stream.mode == "ON_DEMAND" and prod.termination_protection is True
    assert dict(prod.tags) == {"CostCenter": "plant-ops", "Project": "iotpipe"}
    # issue 15: prod runs the economy layout, dev keeps one item per reading
    assert (prod.storage.layout, prod.storage.pack_window_seconds) == ("packed", 60)
    assert (dev.storage.layout, dev.storage.pack_window_seconds) == ("item-per-reading", 60)


def test_precedence_cli_over_env_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
[defaults.processor]
memory_mb = 512
batch_size = 200
timeout_seconds = 90

[env.qa.processor]
memory_mb = 1024
batch_size = 300
""")
    cfg = load_config(path, "qa", {"processor.batch_size": 400})
    assert cfg.processor.batch_size == 400  # CLI
    assert cfg.processor.memory_mb == 1024  # env section
    assert cfg.processor.timeout_seconds == 90  # defaults
    assert cfg.processor.max_retry_attempts == 3  # built-in
    other = load_config(path, "dev")
    assert (other.processor.memory_mb, other.processor.batch_size) == (512, 200)


def test_a_new_sensor_type_needs_no_code_and_env_can_override_one_bound(tmp_path: Path) -> None:
    path = write(tmp_path, """
[defaults.thresholds.humidity]
min = 20
max = 70
unit = "%"

[env.dev.thresholds.temperature]
max = 95
""")
    thresholds = load_config(path, "dev").threshold_map
    assert thresholds["humidity"] == Threshold(min=20.0, max=70.0, unit="%")
    assert thresholds["temperature"] == Threshold(min=10.0, max=95.0, unit="celsius")
    assert thresholds["pressure"] == SEED_THRESHOLDS["pressure"]


def test_missing_default_file_means_builtin_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, "dev") == PipelineConfig(env="dev")


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ("[defaults.processor]\nmemroy_mb = 512\n", "dev", "defaults.processor.memroy_mb: unknown key"),
        ("[defaults]\nshards = 2\n", "dev", "defaults.shards: unknown key"),
        ("[bogus]\nx = 1\n", "dev", "bogus: unknown key"),
        ("[env.dev.processor]\nmemory_mb = \"big\"\n", "dev", "env.dev.processor.memory_mb: expected int, got str"),
        ("[env.dev.processor]\nbatch_size = 10001\n", "dev", "env.dev.processor.batch_size: 10001 is out of range"),
        ("[env.dev.stream]\nretention_hours = 12\n", "dev", "env.dev.stream.retention_hours: 12 is out of range"),
        ("[env.dev.stream]\nmode = \"FAST\"\n", "dev", "env.dev.stream.mode: 'FAST' is not allowed"),
        ("[env.dev.processor]\nlog_retention_days = 8\n", "dev", "env.dev.processor.log_retention_days: 8 is not"),
        ("[env.dev.processor]\nruntime = \"nodejs16.x\"\n", "dev", "env.dev.processor.runtime: 'nodejs16.x'"),
        ("[env.dev.thresholds.temperature]\nmin = 90\nmax = 80\n", "dev",
         "env.dev.thresholds.temperature: min 90.0 is greater than max 80.0"),
        ("[env.dev.thresholds.flow]\nunit = \"l/min\"\n", "dev", "env.dev.thresholds.flow: set min, max or both"),
        ("[env.dev.thresholds.temperature]\nmax = true\n", "dev", "env.dev.thresholds.temperature.max: expected float"),
        ("[env.dev.thresholds.temperature]\nmax = inf\n", "dev", "is not a finite number"),
        ("[env.dev]\ntermination_protection = \"yes\"\n", "dev", "env.dev.termination_protection: expected bool"),
        ("[env.dev.tags]\nOwner = [1]\n", "dev", "env.dev.tags.Owner: expected a string"),
        ("[env.dev.stream]\nkms_key_arn = \"alias/mine\"\n", "dev",
         "env.dev.stream.kms_key_arn: 'alias/mine' is not valid"),
        ("[env.dev.alarms]\nemail = \"not-an-address\"\n", "dev", "env.dev.alarms.email"),
        ("[env.dev.processor]\nmax_record_age_seconds = 90000\n", "dev",
         "env.dev.processor.max_record_age_seconds: 90000 must be below the stream retention"),
        ("[env.dev.stream]\nshard_count = 20\n", "dev", "env.dev.processor.reserved_concurrency: 10 is below"),
        ("[env.dev.storage]\nglacier_transition_days = 45\n", "dev", "env.dev.storage.glacier_transition_days: 45"),
        ("[env.dev]\nstream = 3\n", "dev", "env.dev.stream: expected a table"),
        ("[env.dev.storage]\nlayout = \"columnar\"\n", "dev", "choose one of item-per-reading, packed"),
        ("[env.dev.storage]\npack_window_seconds = 0\n", "dev",
         "env.dev.storage.pack_window_seconds: 0 is out of range; allowed 1 to 3600"),
        ("[env.dev.storage]\npack_window_seconds = 7200\n", "dev", "allowed 1 to 3600"),
        ("[defaults]\n", "Dev", "env: 'Dev' is not a valid environment name"),
        ("not toml = = 1", "dev", "is not valid TOML"),
        # issue 12: refused before any AWS call
        ("[env.dev]\nstack_name = \"bad name!\"\n", "dev", "'bad name!' is not a CloudFormation stack name"),
        ("[env.dev]\nstack_name = \"1stack\"\n", "dev", "is not a CloudFormation stack name"),
        ("[env.dev]\nregion = \"US-EAST-1\"\n", "dev", "is not an AWS region name"),
        ("[env.dev.tags]\n\"aws:team\" = \"x\"\n", "dev", "the aws: prefix is reserved"),
        ("[env.dev.tags]\nTeam = \"\"\n", "dev", "the value is empty"),
        ("[env.dev.tags]\nTeam = \"" + "x" * 257 + "\"\n", "dev", "at most 256"),
        ("[env.dev.thresholds.temperature]\nmax = 1" + "0" * 400 + "\n", "dev", "401-digit number is out of range"),
        ("[env.dev.processor]\nbatch_size = 1" + "0" * 5000 + "\n", "dev", "has a value Python cannot read"),
        ("[env.dev.processor]\nstarting_position = \"AT_TIMESTAMP\"\n", "dev", "choose one of TRIM_HORIZON, LATEST"),
        # an on-demand stream starts with 4 shards (Kinesis guide: 4 MB/s write), not 1
        ("[env.dev.stream]\nmode = \"ON_DEMAND\"\n[env.dev.processor]\nreserved_concurrency = 3\n", "dev",
         "an on-demand stream's initial 4 shards"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(tmp_path: Path, text: str, env: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env)
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2


def test_unknown_override_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"override\.processor\.speed: unknown key"):
        build_config({}, "dev", {"processor.speed": 3})


def test_named_config_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", "dev")


@pytest.mark.parametrize(("text", "env"), [
    ("[defaults.thresholds.\"temperature\\n\"]\nmax = 80\n", "dev"),
    ("[defaults.tags]\n\"Owner\\n\" = \"ops\"\n", "dev"),
    ("[env.dev.alarms]\nemail = \"ops@example.com\\n\"\n", "dev"),
    ("", "dev\n"),
])
def test_a_trailing_newline_is_not_a_valid_name(tmp_path: Path, text: str, env: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), env)


def test_thresholds_that_overflow_the_lambda_environment_are_refused() -> None:
    many = {f"sensor_{i:03d}": {"min": 0, "max": 1000, "unit": "units"} for i in range(80)}
    with pytest.raises(ConfigError, match=r"defaults\.thresholds: 83 sensor types take \d+ bytes"):
        build_config({"defaults": {"thresholds": many}}, "dev", {})
    few = dict(list(many.items())[:40])
    assert len(build_config({"defaults": {"thresholds": few}}, "dev", {}).thresholds) == 43


def test_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "iotpipe.toml"
    path.write_bytes(b"[env.dev]\nstack_name = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, "dev")


def test_reserved_concurrency_zero_and_on_demand_warning() -> None:
    from iotpipe.config import config_warnings, needed_concurrency

    none = build_config({}, "dev", {"processor.reserved_concurrency": 0, "stream.shard_count": 50})
    assert none.processor.reserved_concurrency == 0 and needed_concurrency(none) == 50
    on_demand = build_config({}, "dev", {"stream.mode": "ON_DEMAND", "processor.parallelization_factor": 2,
                                         "processor.reserved_concurrency": 8})
    assert needed_concurrency(on_demand) == 8
    [warning] = config_warnings(on_demand)
    assert "starts with 4 shards and adds shards as traffic grows" in warning
    assert config_warnings(build_config({}, "dev", {})) == ()


def test_config_source_and_unknown_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iotpipe.config import config_source, unknown_env_warning

    monkeypatch.chdir(tmp_path)
    assert config_source(None, {}, "dev") == ("config: no iotpipe.toml here (nor --config): built-in defaults "
                                               "for env dev")
    write(tmp_path, "[env.dev]\n")
    document = {"env": {"dev": {}, "prod": {}}}
    assert config_source(None, document, "dev") == "config: iotpipe.toml [env.dev]"
    assert "no [env.prdo] section" in config_source(None, document, "prdo")
    assert unknown_env_warning(document, "prdo") == ("env 'prdo' is not a section of the config file (it has "
                                                     "dev, prod); check --env, or add [env.prdo]")
    assert unknown_env_warning(document, "dev") is None and unknown_env_warning({}, "prdo") is None


def test_ingest_section_and_its_bounds() -> None:
    cfg = build_config({"env": {"prod": {"ingest": {"basic_ingest": True, "readings_per_message": 15}}}}, "prod", {})
    assert (cfg.ingest.basic_ingest, cfg.ingest.readings_per_message) == (True, 15)
    assert build_config({}, "dev", {}).ingest.basic_ingest is False
    with pytest.raises(ConfigError, match="readings_per_message"):
        build_config({"env": {"prod": {"ingest": {"readings_per_message": 0}}}}, "prod", {})
    with pytest.raises(ConfigError, match="basic_ingest"):
        build_config({"env": {"prod": {"ingest": {"basic_ingest": "yes"}}}}, "prod", {})


def test_price_overrides_are_read_per_layer() -> None:
    document = {"defaults": {"prices": {"s3": {"put_requests": 0.000004}}},
                "env": {"prod": {"prices": {"dynamodb": {"write_request_units": 0.0000005}}}}}
    cfg = build_config(document, "prod", {})
    assert cfg.price_overrides == (("dynamodb.write_request_units", 0.0000005), ("s3.put_requests", 0.000004))
    with pytest.raises(ConfigError, match=r"env\.prod\.prices\.dynamodb: expected a table"):
        build_config({"env": {"prod": {"prices": {"dynamodb": 1.0}}}}, "prod", {})


# A config built in Python validates itself with the same rules the TOML loader uses (issue 14).
@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: ProcessorConfig(batch_size=999999), "processor.batch_size: 999999 is out of range; allowed 1 to 10000"),
    (lambda: PipelineConfig(env="QA!!"), "env: 'QA!!' is not a valid environment name"),
    (lambda: Threshold(min=80, max=10), "threshold: min 80.0 is greater than max 10.0"),
    (lambda: Threshold(unit="l/min"), "threshold: set min, max or both"),
    (lambda: StreamConfig(mode="FAST"), "stream.mode: 'FAST' is not allowed"),
    (lambda: AlarmConfig(period_seconds=61), "alarms.period_seconds: 61 is not allowed"),
    (lambda: ProcessorConfig(memory_mb="big"), "processor.memory_mb: expected int, got str"),
    (lambda: PipelineConfig(thresholds={"bad name": Threshold(max=1.0)}), "thresholds.bad name: sensor type"),
    (lambda: PipelineConfig(thresholds={"flow": {"max": 3}}), "thresholds.flow: expected a Threshold, got dict"),
    (lambda: PipelineConfig(processor=ProcessorConfig(max_record_age_seconds=90000)),
     "processor.max_record_age_seconds: 90000 must be below the stream retention"),
    (lambda: PipelineConfig(region="US-EAST-1"), "region: 'US-EAST-1' is not an AWS region name"),
    (lambda: PipelineConfig(stream=3), "stream: expected a StreamConfig, got int"),
])
def test_a_config_built_in_python_validates_itself(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2


def test_thresholds_are_a_read_only_mapping_and_the_config_stays_hashable() -> None:
    cfg = PipelineConfig(thresholds={"flow": Threshold(min=0, max=5, unit="l/min")})
    assert isinstance(cfg.thresholds, Mapping) and dict(cfg.thresholds) == {"flow": Threshold(0.0, 5.0, "l/min")}
    with pytest.raises(TypeError):
        cfg.thresholds["flow"] = Threshold(max=1.0)  # type: ignore[index]
    assert hash(cfg) == hash(PipelineConfig(thresholds=(("flow", Threshold(min=0.0, max=5.0, unit="l/min")),)))
    assert build_config({}, "dev", {}) == PipelineConfig() and hash(build_config({}, "dev", {})) == hash(
        PipelineConfig())
    assert Threshold(min=1, max=2).min == 1.0 and isinstance(Threshold(min=1, max=2).min, float)


def test_the_loader_reports_a_python_side_error_with_its_file_section(tmp_path: Path) -> None:
    # The rule lives on the type; the loader only adds where in the file the value came from.
    with pytest.raises(ConfigError, match=r"^env\.dev\.processor\.batch_size: 999999 is out of range"):
        load_config(write(tmp_path, "[env.dev.processor]\nbatch_size = 999999\n"), "dev")


@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: PipelineConfig(tags=(("aws:team", "x"),)), "the aws: prefix is reserved"),
    (lambda: PipelineConfig(tags={"Team": "x"}), "tags: expected a tuple of (key, value) pairs"),
    (lambda: PipelineConfig(parameters=(("Alarm-Email", "x"),)), "parameters.Alarm-Email: give a template"),
    (lambda: PipelineConfig(price_overrides=(("s3.put_requests", -1.0),)),
     "price_overrides.s3.put_requests: -1.0 is not a price"),
])
def test_tags_parameters_and_prices_built_in_python_are_checked_too(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert fragment in str(caught.value)
