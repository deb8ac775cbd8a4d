"""Read back what the pipeline found: readings, anomalies (sparse index), processor logs and metrics.

One module per concern: :mod:`~iotpipe.query.timespec` (``--since``, times), :mod:`~iotpipe.query.outputs` (the
stack's resource names), :mod:`~iotpipe.query.dynamodb` (readings and anomalies), :mod:`~iotpipe.query.logs`
and :mod:`~iotpipe.query.metric_data`. Presenting them (tables, sparklines, log summaries) is the CLI's.
Resource names come from the stack's outputs (see the data contract in docs/contract.md).
"""

from iotpipe.query.dynamodb import (
    DEFAULT_ANOMALY_INDEX,
    MAX_ITEMS,
    READING_FIELDS,
    Reading,
    anomalies,
    query_anomalies,
    query_readings,
    readings,
    to_reading,
    to_readings,
)
from iotpipe.query.logs import (
    LogLine,
    fetch_logs,
    filter_pattern,
    follow_logs,
    log_group,
    processor_logs,
    summarise_log,
)
from iotpipe.query.metric_data import (
    METRIC_NAMES,
    METRIC_NAMESPACE,
    MetricSeries,
    MetricsReport,
    choose_period,
    fetch_metrics,
    metrics,
)
from iotpipe.query.outputs import ClientSource, stack_names
from iotpipe.query.timespec import MAX_SINCE_DAYS, days_between, iso_ms, now_ms, parse_since, sort_key_from

__all__ = [
    "DEFAULT_ANOMALY_INDEX", "MAX_ITEMS", "MAX_SINCE_DAYS", "METRIC_NAMES", "METRIC_NAMESPACE", "READING_FIELDS",
    "ClientSource", "LogLine", "MetricSeries", "MetricsReport", "Reading", "anomalies", "choose_period",
    "days_between", "fetch_logs", "fetch_metrics", "filter_pattern", "follow_logs", "iso_ms", "log_group", "metrics",
    "now_ms", "parse_since", "processor_logs", "query_anomalies", "query_readings", "readings", "sort_key_from",
    "stack_names", "summarise_log", "to_reading", "to_readings",
]
