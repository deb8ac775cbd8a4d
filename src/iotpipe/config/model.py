"""The configuration model: frozen dataclasses per section, the pipeline's config, its cross-field rules and
warnings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from iotpipe.config.fields import FieldError, ReadOnlyMap, _opt, _type_problem, _validate_fields
from iotpipe.config.names import (
    EMAIL_PATTERN,
    KMS_KEY_PATTERN,
    PARAMETER_NAME_PATTERN,
    REGION_PATTERN,
    STACK_NAME_PATTERN,
    _price_problem,
    check_env_name,
    validate_tag,
)
from iotpipe.contract import (
    BASIC_INGEST_PREFIX,
    MAX_PACK_WINDOW_SECONDS,
    SENSOR_TYPE_PATTERN,
    STORAGE_LAYOUTS,
    device_topic,
)

# Kinesis on-demand: "a newly created data stream in on-demand mode" gets "4 MB/s of write and 8 MB/s of read
# throughput" (Kinesis developer guide, on-demand mode), i.e. 4 shards of 1 MB/s, and it adds shards as traffic
# grows; Lambda polls each shard with parallelization_factor concurrent batches.
ON_DEMAND_INITIAL_SHARDS = 4


PYTHON_RUNTIMES = ("python3.12", "python3.13", "python3.14")
NODE_RUNTIMES = ("nodejs22.x", "nodejs24.x")
# Lambda allows 4 KB of environment variables in all; the other variables take well under 600 bytes.
MAX_THRESHOLDS_JSON_BYTES = 3500
# processor.rollout -> CodeDeploy's predefined Lambda deployment configuration (CodeDeploy user guide,
# "Deployment configurations on an AWS Lambda compute platform"); all-at-once publishes no version or alias.
ROLLOUTS = {
    "all-at-once": "",
    "canary10-5m": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
    "canary10-10m": "CodeDeployDefault.LambdaCanary10Percent10Minutes",
    "canary10-15m": "CodeDeployDefault.LambdaCanary10Percent15Minutes",
    "canary10-30m": "CodeDeployDefault.LambdaCanary10Percent30Minutes",
    "linear10-1m": "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
    "linear10-2m": "CodeDeployDefault.LambdaLinear10PercentEvery2Minutes",
    "linear10-3m": "CodeDeployDefault.LambdaLinear10PercentEvery3Minutes",
    "linear10-10m": "CodeDeployDefault.LambdaLinear10PercentEvery10Minutes",
}
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)


@dataclass(frozen=True)
class Threshold:
    """Allowed range of one sensor type; a reading outside [min, max] is an anomaly."""

    SECTION: ClassVar[str] = "threshold"

    min: float | None = _opt(None)
    max: float | None = _opt(None)
    unit: str = _opt("", pattern=re.compile(r"^[\w/%.° -]{0,32}$"))
    # The adaptive detector of docs/contract.md section 12: the processors and `iotpipe detect` apply it.
    detector: str = _opt("onset", choices=("off", "onset", "sustained"),
                         doc="the adaptive detector's preset: onset (one alarm at an event's start), sustained "
                             "(every reading while a deviation lasts) or off; the processors and `iotpipe detect` "
                             "apply it")
    sensitivity: float = _opt(0.5, lo=0.01, hi=1.0, doc="a detector score at or above it is an anomaly")
    probation: int = _opt(0, lo=0, hi=1_000_000, doc="readings a series learns before it scores; 0: the preset's")
    episode_quiet: int = _opt(3600, lo=0, hi=604_800,
                              doc="seconds without an anomaly of a series (reading time) after which its next "
                                  "anomaly starts a new episode: the processor sends one notification to the alarm "
                                  "topic per episode, not one per reading; 0: no notifications for this type")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)
        if self.min is None and self.max is None:
            raise FieldError("", "set min, max or both", self.SECTION)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldError("", f"min {self.min} is greater than max {self.max}", self.SECTION)


@dataclass(frozen=True)
class StreamConfig:
    """The Kinesis stream."""

    SECTION: ClassVar[str] = "stream"

    mode: str = _opt("PROVISIONED", choices=("PROVISIONED", "ON_DEMAND"))
    shard_count: int = _opt(1, lo=1, hi=500)
    retention_hours: int = _opt(24, lo=24, hi=8760)
    kms_key_arn: str = _opt("", pattern=KMS_KEY_PATTERN,
                            doc="a KMS key ARN; empty: the AWS-managed key alias/aws/kinesis")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


@dataclass(frozen=True)
class StorageConfig:
    """The raw-data bucket and the readings table."""

    SECTION: ClassVar[str] = "storage"

    ttl_days: int = _opt(90, lo=1, hi=3650)
    ia_transition_days: int = _opt(30, lo=30, hi=3650)
    glacier_transition_days: int = _opt(90, lo=31, hi=3650)
    noncurrent_expiry_days: int = _opt(30, lo=1, hi=3650)
    # S3 moves no object under 128 KB to another class by default, and archive objects are a few KB: without an
    # expiry the archive would grow in S3 Standard forever.
    archive_retention_days: int = _opt(365, lo=1, hi=36500,
                                       doc="raw archive, quarantine and rule-error objects are deleted this many "
                                           "days after they were written")
    access_log_expiry_days: int = _opt(365, lo=1, hi=3650)
    table_kms_key_arn: str = _opt("", pattern=KMS_KEY_PATTERN,
                                  doc="a KMS key ARN; empty: the AWS-managed key alias/aws/dynamodb")
    layout: str = _opt("item-per-reading", choices=STORAGE_LAYOUTS,
                       doc="item-per-reading: one DynamoDB item per reading; packed: one item per device, sensor "
                           "and window holds many readings (anomalies stay items of their own)")
    pack_window_seconds: int = _opt(60, lo=1, hi=MAX_PACK_WINDOW_SECONDS,
                                    doc="packed layout: the time window one packed item covers (aligned to "
                                        "the epoch)")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


@dataclass(frozen=True)
class ProcessorConfig:
    """The Lambda processor and its Kinesis event source mapping."""

    SECTION: ClassVar[str] = "processor"

    runtime: str = _opt("python3.13", choices=PYTHON_RUNTIMES + NODE_RUNTIMES)
    architecture: str = _opt("arm64", choices=("arm64", "x86_64"))
    memory_mb: int = _opt(256, lo=128, hi=10240)
    timeout_seconds: int = _opt(60, lo=3, hi=900)
    batch_size: int = _opt(100, lo=1, hi=10000)
    batching_window_seconds: int = _opt(5, lo=0, hi=300)
    max_retry_attempts: int = _opt(3, lo=0, hi=10000)
    max_record_age_seconds: int = _opt(3600, lo=60, hi=604800)
    parallelization_factor: int = _opt(1, lo=1, hi=10)
    # 0 reserves nothing. The default 10 caps what a burst can cost; deploy checks GetAccountSettings first
    # ("You can reserve up to the Unreserved account concurrency value minus 100", Lambda guide), so an
    # account still at the new-account limit of 10 is told which quota to raise, or to set 0, before any write.
    reserved_concurrency: int = _opt(10, lo=0, hi=1000,
                                     doc="0 reserves none (a new account with a concurrency limit of 10 cannot "
                                         "reserve any)")
    # The mapping's StartingPosition is create-only (CloudFormation resource schema): a stack deployed from the
    # seed (LATEST) keeps LATEST, or the update would replace the mapping, and Lambda refuses a second mapping
    # for the same stream and function. TRIM_HORIZON for new stacks (nothing sent before it is enabled is lost).
    starting_position: str = _opt("TRIM_HORIZON", choices=("TRIM_HORIZON", "LATEST"))
    log_retention_days: int = _opt(7, choices=LOG_RETENTION_DAYS)
    log_kms_key_arn: str = _opt("", pattern=KMS_KEY_PATTERN, doc="a KMS key ARN; empty: the pipeline's own key")
    dlq_retention_days: int = _opt(14, lo=1, hi=14)
    on_failure: str = _opt("sqs", choices=("sqs", "s3"),
                           doc="where the event source mapping records a batch it gives up on: sqs, the dead-letter "
                               "queue (batch info only); s3, the raw bucket under aws/lambda/ (the whole "
                               "invocation record, its records included)")
    unknown_sensor: str = _opt("quarantine", choices=("quarantine", "store"),
                               doc="what the processor does with a sensor type that has no threshold")
    # zip by default: the inline source (about 40 KB) puts the template over CloudFormation's 51,200-byte
    # TemplateBody limit, so every diff and status would have to upload the template to S3 first.
    packaging: str = _opt("zip", choices=("zip", "inline"),
                          doc="zip: the processor is a zip in the artefacts bucket "
                              "(iotpipe-artefacts-{account}-{region}, key processor/{sha256}.zip, uploaded by deploy "
                              "once per code version) and the template stays under the 51,200-byte TemplateBody "
                              "limit, so diff and status write nothing to S3; inline: the source is the template's "
                              "Code.ZipFile (one self-contained file, but over the limit: deploy, diff and status "
                              "need the template uploaded, and diff and status refuse to)")

    rollout: str = _opt("all-at-once", choices=tuple(ROLLOUTS),
                        doc="all-at-once: an update replaces the code for every shard at once; canaryP-Nm / "
                            "linearP-Nm: each code or configuration change publishes a version and CodeDeploy "
                            "shifts the mapping's alias to it (P% of batches for N minutes, or P% more every N "
                            "minutes), rolling back by itself when a rollout alarm fires (docs/deploying.md)")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


@dataclass(frozen=True)
class AlarmConfig:
    """CloudWatch alarm thresholds and where alarms notify."""

    SECTION: ClassVar[str] = "alarms"

    period_seconds: int = _opt(300, choices=(60, 300, 900, 3600))
    lambda_errors: int = _opt(5, lo=0, hi=1_000_000)
    anomalies: int = _opt(10, lo=0, hi=1_000_000)
    iterator_age_ms: int = _opt(60000, lo=1000, hi=604_800_000)
    quarantined_records: int = _opt(0, lo=0, hi=1_000_000)
    throttles: int = _opt(0, lo=0, hi=1_000_000)
    email: str = _opt("", pattern=EMAIL_PATTERN, doc="default of the AlarmEmail parameter; empty: none")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


@dataclass(frozen=True)
class AnalyticsConfig:
    """SQL over the raw archive: the Glue tables, the Athena workgroup and its results bucket."""

    SECTION: ClassVar[str] = "analytics"

    enabled: bool = _opt(True, doc="false: no Glue database, Athena workgroup or results bucket")
    # Athena's minimum per-query cutoff is 10 MB; 10 GB caps one query at about 5 cents.
    bytes_scanned_cutoff_mb: int = _opt(10240, lo=10, hi=10_000_000)
    results_expiry_days: int = _opt(7, lo=1, hi=3650)
    # Partition projection: every (year, month, day, hour) of these years is a partition Athena may list; a
    # narrow range keeps a query without a time filter from planning hundreds of thousands of empty ones.
    first_year: int = _opt(2024, lo=2000, hi=2200, doc="first year of archive partitions a query can see")
    last_year: int = _opt(2035, lo=2000, hi=2200,
                          doc="last year of archive partitions a query can see (raise it as years pass)")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


@dataclass(frozen=True)
class IngestConfig:
    """How devices reach the topic rule."""

    # "You can use Basic Ingest to securely send device data to the AWS services supported by AWS IoT rule
    # actions, without incurring messaging costs" (AWS IoT developer guide, Basic Ingest).
    basic_ingest: bool = _opt(False, doc=f"true: devices publish to {BASIC_INGEST_PREFIX}<rule>/"
                                         f"{device_topic('<id>')} (no messaging charge); the device policy allows "
                                         "only that topic")
    readings_per_message: int = _opt(1, lo=1, hi=10000,
                                     doc="readings the devices put in one message; `iotpipe cost` prices "
                                         "with it (--readings-per-message overrides)")


@dataclass(frozen=True)
class FleetConfig:
    """Fleets: provisioning by claim and the Device Defender audit (both opt-in, docs/fleets.md)."""

    SECTION: ClassVar[str] = "fleet"
    provisioning_by_claim: bool = _opt(False, doc="true: a fleet provisioning template, its pre-provisioning hook "
                                                  "and allow-list table, and the claim policy (iotpipe fleet claim)")
    device_defender_audit: bool = _opt(False, doc="true: Device Defender's certificate-expiry audit check, scheduled, "
                                                  "notifying the alarm topic (priced in iotpipe cost)")
    audit_frequency: str = _opt("WEEKLY", choices=("DAILY", "WEEKLY", "BIWEEKLY", "MONTHLY"),
                                doc="how often the scheduled audit runs")

    def __post_init__(self) -> None:
        _validate_fields(self, self.SECTION)


SEED_THRESHOLDS: Mapping[str, Threshold] = {
    "temperature": Threshold(min=10.0, max=80.0, unit="celsius"),
    "pressure": Threshold(min=30.0, max=150.0, unit="psi"),
    "vibration": Threshold(min=None, max=5.0, unit="mm/s"),
}


def _pairs(raw: Any, name: str) -> tuple[tuple[Any, Any], ...]:
    """``raw`` as (key, value) pairs, or FieldError naming ``name``."""
    if not isinstance(raw, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in raw):
        raise FieldError(name, f"expected a tuple of (key, value) pairs, got {raw!r}")
    return raw


def _threshold_map(raw: Any) -> ReadOnlyMap:
    """Thresholds as a read-only map, every sensor type name and value checked."""
    if not isinstance(raw, Mapping | tuple | list):
        raise FieldError("thresholds", f"expected a mapping of sensor type to Threshold, got {type(raw).__name__}")
    pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise FieldError("thresholds", f"expected (sensor type, Threshold) pairs, got {pair!r}")
        name, threshold = pair
        if not isinstance(name, str) or not SENSOR_TYPE_PATTERN.fullmatch(name):
            raise FieldError(f"thresholds.{name}", "sensor type names start with a letter and use letters, "
                                                   "digits and underscores (at most 64)")
        if not isinstance(threshold, Threshold):
            raise FieldError(f"thresholds.{name}", f"expected a Threshold, got {type(threshold).__name__}")
    return raw if isinstance(raw, ReadOnlyMap) else ReadOnlyMap(pairs)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything needed to render, deploy and operate one environment of the pipeline."""

    env: str = "dev"
    stack_name: str = ""
    region: str = ""
    termination_protection: bool = False
    # A read-only mapping, sensor type -> Threshold (a dict or pairs given are converted).
    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: ReadOnlyMap(SEED_THRESHOLDS))
    stream: StreamConfig = field(default_factory=StreamConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    alarms: AlarmConfig = field(default_factory=AlarmConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    tags: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    # ``[prices.<service>] <item> = <usd per unit>``: overrides of the packaged price table (iotpipe cost).
    price_overrides: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        check_env_name(self.env)
        for name, expected in (("stack_name", str), ("region", str), ("termination_protection", bool)):
            problem = _type_problem(getattr(self, name), expected)
            if problem:
                raise FieldError(name, problem)
        for name, kind in _SECTION_TYPES.items():
            if not isinstance(getattr(self, name), kind):
                raise FieldError(name, f"expected a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "thresholds", _threshold_map(self.thresholds))
        for key, value in _pairs(self.tags, "tags"):
            validate_tag(key, value, "tags")
        for key, value in _pairs(self.price_overrides, "price_overrides"):
            service, _, item = str(key).partition(".")
            problem = _price_problem(service, item, value)
            if problem:
                raise FieldError(f"price_overrides.{key}", problem)
        for key, value in _pairs(self.parameters, "parameters"):
            if not PARAMETER_NAME_PATTERN.fullmatch(key) or not isinstance(value, str):
                raise FieldError(f"parameters.{key}", "give a template parameter name (letters and digits) and a "
                                                      "string value")
        _check_cross_field(self)

    @property
    def threshold_map(self) -> dict[str, Threshold]:
        """Thresholds keyed by sensor type (a mutable copy)."""
        return dict(self.thresholds)

    @property
    def thresholds_json(self) -> str:
        """The thresholds as the processor's THRESHOLDS variable: compact JSON, sensor type -> min/max/unit and
        the detector (docs/contract.md 11; sensitivity, probation and episodeQuiet only when not the processor's
        defaults)."""
        return json.dumps({name: _threshold_entry(t) for name, t in self.thresholds.items()}, sort_keys=True,
                          separators=(",", ":"))

    @property
    def resolved_stack_name(self) -> str:
        """The CloudFormation stack name: ``stack_name`` if set, else ``iotpipe-<env>``."""
        return self.stack_name or f"iotpipe-{self.env}"


_SECTION_TYPES: dict[str, type] = {
    "stream": StreamConfig,
    "storage": StorageConfig,
    "processor": ProcessorConfig,
    "alarms": AlarmConfig,
    "analytics": AnalyticsConfig,
    "ingest": IngestConfig,
    "fleet": FleetConfig,
}


def _threshold_entry(threshold: Threshold) -> dict[str, Any]:
    """One sensor type's THRESHOLDS entry; the detector's keys left out when they are the contract's defaults."""
    entry: dict[str, Any] = {"min": threshold.min, "max": threshold.max, "unit": threshold.unit}
    if threshold.detector != "off":
        entry["detector"] = threshold.detector
        if threshold.sensitivity != 0.5:
            entry["sensitivity"] = threshold.sensitivity
        if threshold.probation:
            entry["probation"] = threshold.probation
        if threshold.episode_quiet != 3600:
            entry["episodeQuiet"] = threshold.episode_quiet
    return entry


def _check_cross_field(config: PipelineConfig) -> None:
    processor, stream, storage = config.processor, config.stream, config.storage
    thresholds_size = len(config.thresholds_json.encode("utf-8"))
    if thresholds_size > MAX_THRESHOLDS_JSON_BYTES:
        raise FieldError(
            "thresholds", f"{len(config.thresholds)} sensor types take {thresholds_size} bytes of the "
            f"processor's environment, over the {MAX_THRESHOLDS_JSON_BYTES} that fit in Lambda's 4 KB limit; "
            "drop unused sensor types or shorten units")
    if processor.max_record_age_seconds >= stream.retention_hours * 3600:
        raise FieldError(
            "processor.max_record_age_seconds", f"{processor.max_record_age_seconds} must be below the "
            f"stream retention ({stream.retention_hours} h = {stream.retention_hours * 3600} s)")
    if storage.glacier_transition_days < storage.ia_transition_days + 30:
        raise FieldError(
            "storage.glacier_transition_days", f"{storage.glacier_transition_days} must be at least 30 "
            f"days after ia_transition_days ({storage.ia_transition_days}), as S3 requires")
    if config.analytics.last_year < config.analytics.first_year:
        raise FieldError(
            "analytics.last_year", f"{config.analytics.last_year} is before first_year ({config.analytics.first_year})")
    if processor.batching_window_seconds and processor.batching_window_seconds > processor.timeout_seconds:
        raise FieldError(
            "processor.batching_window_seconds", f"{processor.batching_window_seconds} is longer than "
            f"timeout_seconds ({processor.timeout_seconds})")
    concurrency_needed = needed_concurrency(config)
    if processor.reserved_concurrency and processor.reserved_concurrency < concurrency_needed:
        shards = (f"{stream.shard_count} shard(s)" if stream.mode == "PROVISIONED"
                  else f"an on-demand stream's initial {ON_DEMAND_INITIAL_SHARDS} shards")
        raise FieldError(
            "processor.reserved_concurrency", f"{processor.reserved_concurrency} is below {shards} x "
            f"parallelization_factor ({concurrency_needed}); the stream would be throttled. Raise it, or set 0 "
            "to reserve none")
    if config.stack_name and not STACK_NAME_PATTERN.fullmatch(config.stack_name):
        raise FieldError("stack_name", f"{config.stack_name!r} is not a CloudFormation stack name; use a "
                                       "letter followed by up to 127 letters, digits or hyphens")
    if config.region and not REGION_PATTERN.fullmatch(config.region):
        raise FieldError("region", f"{config.region!r} is not an AWS region name (e.g. us-east-1, eu-central-1)")


def needed_concurrency(config: PipelineConfig) -> int:
    """Concurrent batches the event source mapping runs at first: shards x parallelization_factor.

    An on-demand stream starts with :data:`ON_DEMAND_INITIAL_SHARDS` shards and grows with traffic.
    """
    shards = config.stream.shard_count if config.stream.mode == "PROVISIONED" else ON_DEMAND_INITIAL_SHARDS
    return shards * config.processor.parallelization_factor


def config_warnings(config: PipelineConfig) -> tuple[str, ...]:
    """Things that are valid but may surprise on AWS (the CLI prints them on stderr)."""
    warnings = []
    if config.stream.mode == "ON_DEMAND":
        reserved = config.processor.reserved_concurrency
        cap = (f"; processor.reserved_concurrency {reserved} then caps the processor and the stream lags"
               if reserved else "")
        warnings.append(
            f"stream.mode ON_DEMAND starts with {ON_DEMAND_INITIAL_SHARDS} shards and adds shards as traffic grows: "
            f"the processor runs shards x parallelization_factor batches at once{cap}")
    return tuple(warnings)
