"""The Kinesis event source mapping as the runner applies it: :class:`MappingSpec`, read from an
``AWS::Lambda::EventSourceMapping``'s properties (ConfigError naming a property that cannot run locally)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe.errors import ConfigError

STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
GET_RECORDS_LIMIT = 10000


@dataclass(frozen=True)
class MappingSpec:
    """One ``AWS::Lambda::EventSourceMapping`` on a Kinesis stream, as the runner applies it."""

    function_name: str
    function_arn: str
    stream_arn: str
    batch_size: int = 100
    batching_window_s: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    # "The default value is -1, which sets the maximum number of retries to infinite. When MaximumRetryAttempts is
    # infinite, Lambda retries failed records until the record expires in the event source."
    max_retry_attempts: int = -1
    max_record_age_s: int = -1  # -1: no age limit (Lambda's default); else 60..604800
    on_failure_destination: str | None = None  # SQS queue ARN, or SNS topic ARN
    enabled: bool = True
    starting_position_timestamp: float | None = None  # epoch seconds, AT_TIMESTAMP only; boto3 sends whole seconds
    parallelization_factor: int = 1  # as declared; the runner always uses 1
    invoke_identity_arn: str = ""  # the function's execution role, shown in each record as invokeIdentityArn

    @property
    def region(self) -> str:
        """The stream's region (the ``awsRegion`` of every record)."""
        return self.stream_arn.split(":")[3]


def mapping_from_properties(properties: Mapping[str, Any], *, function_arn: str,
                            invoke_identity_arn: str = "") -> MappingSpec:
    """The :class:`MappingSpec` of an ``AWS::Lambda::EventSourceMapping``'s ``Properties`` whose intrinsics are
    already resolved to strings; ConfigError naming the property when a value cannot run locally."""
    where = "AWS::Lambda::EventSourceMapping"
    stream_arn = _required_str(properties, "EventSourceArn", where)
    parts = stream_arn.split(":")
    if len(parts) != 6 or parts[2] != "kinesis" or not parts[5].startswith("stream/") or "/consumer/" in parts[5]:
        raise ConfigError(f"{where} EventSourceArn {stream_arn!r} is not a Kinesis stream ARN "
                          "(arn:<partition>:kinesis:<region>:<account>:stream/<name>); iotpipe local reads streams "
                          "only, not enhanced fan-out consumers")
    for unsupported in ("FilterCriteria", "TumblingWindowInSeconds"):
        if properties.get(unsupported):
            raise ConfigError(f"{where} {unsupported} is not supported by iotpipe local (records would reach the "
                              "function unfiltered or without windows); remove it to run locally")
    position = properties.get("StartingPosition", "TRIM_HORIZON")
    if position not in STARTING_POSITIONS:
        raise ConfigError(f"{where} StartingPosition {position!r} is not one of {', '.join(STARTING_POSITIONS)}")
    timestamp: float | None = None
    if position == "AT_TIMESTAMP":
        if properties.get("StartingPositionTimestamp") is None:
            raise ConfigError(f"{where} StartingPosition AT_TIMESTAMP needs StartingPositionTimestamp "
                              "(epoch seconds)")
        timestamp = _number(properties, "StartingPositionTimestamp", where, lo=0, hi=None, default=0)
    response_types = properties.get("FunctionResponseTypes") or []
    if not isinstance(response_types, list | tuple) or any(t != "ReportBatchItemFailures" for t in response_types):
        raise ConfigError(f"{where} FunctionResponseTypes {response_types!r}: only ReportBatchItemFailures exists")
    return MappingSpec(
        function_name=_required_str(properties, "FunctionName", where),
        function_arn=function_arn,
        stream_arn=stream_arn,
        batch_size=int(_number(properties, "BatchSize", where, lo=1, hi=GET_RECORDS_LIMIT, default=100)),
        batching_window_s=float(_number(properties, "MaximumBatchingWindowInSeconds", where, lo=0, hi=300,
                                        default=0)),
        starting_position=position,
        starting_position_timestamp=timestamp,
        report_batch_item_failures="ReportBatchItemFailures" in response_types,
        bisect_on_error=_boolean(properties, "BisectBatchOnFunctionError", where, default=False),
        max_retry_attempts=_limit(properties, "MaximumRetryAttempts", where, lo=0, hi=10000),
        max_record_age_s=_limit(properties, "MaximumRecordAgeInSeconds", where, lo=60, hi=604800),
        on_failure_destination=_destination(properties, where),
        enabled=_boolean(properties, "Enabled", where, default=True),
        parallelization_factor=int(_number(properties, "ParallelizationFactor", where, lo=1, hi=10, default=1)),
        invoke_identity_arn=invoke_identity_arn,
    )


def _required_str(properties: Mapping[str, Any], key: str, where: str) -> str:
    value = properties.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} {key} must be a resolved string, got {value!r}; resolve intrinsics first")
    return value


def _number(properties: Mapping[str, Any], key: str, where: str, *, lo: float, hi: float | None,
            default: float) -> float:
    value = properties.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (number >= lo and (hi is None or number <= hi)):
        bound = f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
        raise ConfigError(f"{where} {key} {value!r} is out of range; use {bound}")
    return number


def _limit(properties: Mapping[str, Any], key: str, where: str, *, lo: int, hi: int) -> int:
    """A retry or age limit: -1 (Lambda's default) means infinite."""
    value = properties.get(key, -1)
    if value in (-1, "-1"):
        return -1
    number = _number(properties, key, where, lo=lo, hi=hi, default=-1)
    if number != int(number):
        raise ConfigError(f"{where} {key} {value!r} must be -1 (infinite) or a whole number {lo}..{hi}")
    return int(number)


def _boolean(properties: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = properties.get(key, default)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"{where} {key} {value!r} must be true or false")


def _destination(properties: Mapping[str, Any], where: str) -> str | None:
    config = properties.get("DestinationConfig") or {}
    arn = (config.get("OnFailure") or {}).get("Destination") if isinstance(config, Mapping) else None
    if arn in (None, ""):
        return None
    service = arn.split(":")[2] if isinstance(arn, str) and arn.count(":") >= 5 else None
    if service not in ("sqs", "sns", "s3"):
        raise ConfigError(f"{where} DestinationConfig.OnFailure.Destination {arn!r}: iotpipe local sends to an "
                          "SQS queue, SNS topic or S3 bucket ARN only; use one of those")
    return str(arn)
