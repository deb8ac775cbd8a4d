"""The processor's custom metrics per period from CloudWatch (get_metric_data)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iotpipe import contract
from iotpipe.aws import aws_call
from iotpipe.config import PipelineConfig
from iotpipe.errors import ConfigError, ParameterError
from iotpipe.query.outputs import ClientSource, stack_names
from iotpipe.query.timespec import iso_ms, now_ms, parse_since

METRIC_NAMESPACE = contract.METRIC_NAMESPACE
METRIC_NAMES = contract.METRIC_NAMES


@dataclass(frozen=True)
class MetricSeries:
    """One metric's sums per period, oldest first (0 where nothing was emitted)."""

    name: str
    values: tuple[float, ...]

    @property
    def total(self) -> float:
        """Sum over all periods."""
        return sum(self.values)

    def as_dict(self) -> dict[str, Any]:
        """JSON object: the metric's name, its sums per period (oldest first) and their total."""
        return {"name": self.name, "values": list(self.values), "total": self.total}


@dataclass(frozen=True)
class MetricsReport:
    """The custom metrics over a window: period start times and one series per metric."""

    environment: str
    period_s: int
    starts: tuple[int, ...]
    series: tuple[MetricSeries, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON object: one row per period (its ISO 8601 start and each metric's sum) and each metric's total."""
        return {
            "environment": self.environment,
            "periodSeconds": self.period_s,
            "periods": [
                {"start": iso_ms(start), **{s.name: s.values[i] for s in self.series}}
                for i, start in enumerate(self.starts)
            ],
            "totals": {s.name: s.total for s in self.series},
        }


def choose_period(span_s: float, max_points: int = 60) -> int:
    """A CloudWatch period (multiple of 60 s) giving at most ``max_points`` points over ``span_s``."""
    minutes = max(1, math.ceil(span_s / max_points / 60))
    return minutes * 60


def fetch_metrics(
    cloudwatch: Any, environment: str, *, since_ms: int, until_ms: int, period_s: int | None = None
) -> MetricsReport:
    """Sum of each custom metric per period (dimension Environment) via get_metric_data."""
    period = period_s or choose_period((until_ms - since_ms) / 1000)
    if period % 60 or period <= 0:
        raise ParameterError("period_s", period, "is not valid; use a positive multiple of 60 seconds")
    start = since_ms // (period * 1000) * period * 1000
    # whole periods, the last one containing until_ms: EndTime is exclusive and must not cut off "now"
    end = -(-until_ms // (period * 1000)) * period * 1000
    end = end if end > until_ms else end + period * 1000
    starts = tuple(range(start, end, period * 1000))
    if len(starts) > 1440:
        raise ConfigError(f"{len(starts)} periods of {period} s are too many; use a longer --period")
    queries = [
        {
            "Id": f"m{index}",
            "Label": name,
            "ReturnData": True,
            "MetricStat": {
                "Metric": {
                    "Namespace": METRIC_NAMESPACE,
                    "MetricName": name,
                    "Dimensions": [{"Name": "Environment", "Value": environment}],
                },
                "Period": period,
                "Stat": "Sum",
            },
        }
        for index, name in enumerate(METRIC_NAMES)
    ]
    sums: dict[str, dict[int, float]] = {name: {} for name in METRIC_NAMES}
    with aws_call("cloudwatch", "get-metric-data"):
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(start / 1000, tz=UTC),
            EndTime=datetime.fromtimestamp(end / 1000, tz=UTC),
            ScanBy="TimestampAscending",
            PaginationConfig={"MaxItems": 100_000},
        )
        for page in pages:
            for result in page.get("MetricDataResults", []):
                name = METRIC_NAMES[int(result["Id"][1:])]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    bucket = int(stamp.timestamp() * 1000) // (period * 1000) * period * 1000
                    sums[name][bucket] = sums[name].get(bucket, 0.0) + float(value)
    series = tuple(
        MetricSeries(name, tuple(sums[name].get(moment, 0.0) for moment in starts)) for name in METRIC_NAMES
    )
    return MetricsReport(environment=environment, period_s=period, starts=starts, series=series)


def metrics(
    clients: ClientSource,
    cfg: PipelineConfig,
    *,
    since: str = "1h",
    period_s: int | None = None,
    now: int | None = None,
) -> MetricsReport:
    """``iotpipe metrics``: the custom metrics of the stack's environment per period."""
    current = now if now is not None else now_ms()
    since_ms = parse_since(since, current)
    outputs = stack_names(clients, cfg)
    environment = outputs.get(contract.OUT_ENV) or cfg.env
    return fetch_metrics(
        clients.client("cloudwatch"), environment, since_ms=since_ms, until_ms=current, period_s=period_s
    )
