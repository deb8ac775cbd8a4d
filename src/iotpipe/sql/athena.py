"""The Athena engine: the relations as common table expressions over the Glue tables (partition predicates
for the window), and a query's run, polls, cost and rows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

# The processor's rules a reading must pass (docs/contract.md section 3), mirrored where the quarantine cannot say
# which reading of a record it refused: the samples form holds one sensor type in several samples.
from iotpipe.contract import (
    MAX_READINGS_PER_BODY,
    SENSOR_TYPE_PATTERN,
    UNIT_MAX_CHARS,
    VALUE_MAX_MAGNITUDE,
    VALUE_MIN_MAGNITUDE,
)
from iotpipe.sql.queries import (
    QueryResult,
    SqlError,
    SqlUsageError,
    with_relations,
)
from iotpipe.sql.relations import (
    Thresholds,
    _common_ctes,
    _literal,
    _reading_time,
    _repeat_rank,
    _unit_case,
)
from iotpipe.sql.window import (
    Window,
    window_hours,
)

# Above this many days the Athena partition predicate names months rather than days and hours.
MAX_DAY_PREDICATES = 62


def partition_predicate(window: Window) -> str:
    """Predicates on the projected partition columns that cover ``window`` (per day and hour, or per month for
    long windows), so Athena reads only those partitions."""
    hours = window_hours(window)
    days: dict[date, list[int]] = {}
    for hour in hours:
        days.setdefault(hour.date(), []).append(hour.hour)
    if len(days) <= MAX_DAY_PREDICATES:
        parts = [f"(year = {d.year} AND month = {d.month} AND day = {d.day} AND hour BETWEEN {min(h)} AND {max(h)})"
                 for d, h in days.items()]
    else:
        months = sorted({(d.year, d.month) for d in days})
        parts = [f"(year = {y} AND month = {m})" for y, m in months]
    return "(" + " OR ".join(parts) + ")"


def athena_relations(database: str, window: Window, thresholds: Thresholds,
                     ttl_days: int) -> list[tuple[str, str]]:
    """The relations as (name, query) common table expressions over the Glue tables of ``database``."""
    from iotpipe import contract

    db = '"' + database.replace('"', '""') + '"'
    epoch = "TIMESTAMP '1970-01-01 00:00:00.000'"
    shard = "regexp_extract(\"$path\", 'hour=[0-9]{2}/([^/]+)/', 1)"
    sensor_json = "json_extract(body, '$.sensorType')"
    where = f"{partition_predicate(window)}"
    in_window = "arrived_at >= (SELECT window_start FROM query_window) " \
                "AND arrived_at < (SELECT window_end FROM query_window)"
    return [
        *_common_ctes(window, thresholds),
        ("archive_lines",
         f"SELECT {shard} AS shard_id, sequencenumber AS sequence_number, partitionkey AS partition_key, "
         f"date_add('millisecond', arrivedat, {epoch}) AS arrived_at, data, database64 AS data_base64 "
         f"FROM {db}.{contract.RAW_ARCHIVE_TABLE_NAME} WHERE {where}"),
        ("raw_records",
         "SELECT shard_id, sequence_number, partition_key, arrived_at, data, data_base64 FROM ("
         "SELECT *, row_number() OVER (PARTITION BY shard_id, sequence_number ORDER BY arrived_at) AS line_rank "
         f"FROM archive_lines WHERE {in_window}) WHERE line_rank = 1"),
        ("quarantine_lines",
         "SELECT * FROM ("
         f"SELECT {shard} AS shard_id, sequencenumber AS sequence_number, partitionkey AS partition_key, reason, "
         "sensortype AS sensor_type, transform(rejected, r -> r.sensortype) AS rejected_sensor_types, "
         "transform(filter(rejected, r -> r.reason = 'unknown sensorType'), r -> r.sensortype) "
         "AS unknown_sensor_types, data, database64 AS data_base64, "
         "date_add('hour', hour, date_add('day', day - 1, date_add('month', month - 1, "
         f"date_add('year', year - 1970, {epoch})))) AS archive_hour, "
         "row_number() OVER (PARTITION BY " + shard + ", sequencenumber) AS line_rank "
         f"FROM {db}.{contract.QUARANTINE_ARCHIVE_TABLE_NAME} WHERE {where}) WHERE line_rank = 1"),
        ("quarantined",
         "SELECT shard_id, sequence_number, partition_key, reason, sensor_type, rejected_sensor_types, data, "
         "data_base64, archive_hour FROM quarantine_lines"),
        # As on DuckDB (duckdb_relations): a record refused whole, or the refused readings of a type.
        ("quarantine_keys",
         "SELECT shard_id, sequence_number, CAST(NULL AS VARCHAR) AS sensor_type, true AS every_sample "
         "FROM quarantine_lines WHERE rejected_sensor_types IS NULL "
         "UNION ALL SELECT q.shard_id, q.sequence_number, s.sensor_type, false FROM quarantine_lines q "
         "CROSS JOIN UNNEST(q.rejected_sensor_types) AS s(sensor_type) WHERE s.sensor_type IS NOT NULL "
         "UNION ALL SELECT q.shard_id, q.sequence_number, s.sensor_type, true FROM quarantine_lines q "
         "CROSS JOIN UNNEST(q.unknown_sensor_types) AS s(sensor_type) WHERE s.sensor_type IS NOT NULL"),
        ("payloads",
         "SELECT shard_id, sequence_number, arrived_at, try(json_parse(data)) AS j FROM raw_records "
         "WHERE data IS NOT NULL"),
        # The bodies of a payload: the payload itself (sample_index 0), or each sample of the samples form
        # (sample_index from 1; the payload's own reading fields are then ignored).
        ("bodies",
         "SELECT p.*, p.j AS body, 0 AS sample_index FROM payloads p "
         "WHERE p.j IS NOT NULL AND json_extract(p.j, '$.samples') IS NULL "
         "UNION ALL SELECT p.*, s.body, s.sample_index FROM payloads p "
         "CROSS JOIN UNNEST(try(CAST(json_extract(p.j, '$.samples') AS ARRAY(JSON)))) WITH ORDINALITY "
         "AS s(body, sample_index) WHERE p.j IS NOT NULL"),
        # A single body: one reading when its sensorType is a string and its unit absent, null or short; a multi
        # body: one row per key of its readings map, at most 100 (UNNEST of the keys, element_at for the value:
        # plain Trino that sqlglot also transpiles to DuckDB, which UNNEST of a map is not).
        ("reading_entries",
         "SELECT b.*, json_extract_scalar(body, '$.sensorType') AS sensor_type, "
         "json_extract(body, '$.value') AS value_json, "
         "NULLIF(json_extract_scalar(body, '$.unit'), '') AS unit_given FROM bodies b "
         "WHERE json_extract(body, '$.readings') IS NULL "
         f"AND {_is_json_string(sensor_json)} AND {_trino_unit_ok()} "
         "UNION ALL SELECT m.shard_id, m.sequence_number, m.arrived_at, m.j, m.body, m.sample_index, "
         "e.sensor_type, element_at(m.readings, e.sensor_type), CAST(NULL AS VARCHAR) FROM ("
         "SELECT b.*, try(CAST(json_extract(b.body, '$.readings') AS MAP(VARCHAR, JSON))) AS readings FROM bodies b"
         f") m CROSS JOIN UNNEST(map_keys(m.readings)) AS e(sensor_type) "
         f"WHERE cardinality(map_keys(m.readings)) <= {MAX_READINGS_PER_BODY}"),
        ("typed_readings",
         "SELECT json_extract_scalar(j, '$.deviceId') AS device_id, sensor_type, "
         "try(CAST(value_json AS DOUBLE)) AS value, "
         f"COALESCE(unit_given, {_unit_case('sensor_type', thresholds)}) AS unit, "
         "CASE WHEN try_cast(json_extract_scalar(body, '$.timestamp') AS DOUBLE) IS NOT NULL "
         "THEN try(date_add('millisecond', CAST(try_cast(json_extract_scalar(body, '$.timestamp') AS DOUBLE) "
         f"AS BIGINT), {epoch})) "
         "ELSE try(CAST(from_iso8601_timestamp(json_extract_scalar(body, '$.timestamp')) AT TIME ZONE 'UTC' "
         "AS timestamp(3))) END AS device_time, "
         "COALESCE(try(date_add('millisecond', CAST(try_cast(json_extract_scalar(j, '$.receivedAt') AS DOUBLE) "
         f"AS BIGINT), {epoch})), arrived_at) AS received_at, arrived_at, shard_id, sequence_number, sample_index "
         "FROM reading_entries "
         f"WHERE regexp_like(sensor_type, {_literal(SENSOR_TYPE_PATTERN.pattern)}) "
         "AND regexp_like(json_format(value_json), '^-?[0-9]')"),
        ("readings",
         "SELECT device_id, sensor_type, value, unit, reading_time, device_time, received_at, arrived_at, shard_id, "
         "sequence_number FROM ("
         f"SELECT device_id, t.sensor_type, value, unit, {_reading_time(ttl_days)} AS reading_time, device_time, "
         f"received_at, arrived_at, t.shard_id, t.sequence_number, {_repeat_rank(ttl_days, 't.')} AS repeat_rank "
         "FROM typed_readings t "
         "LEFT JOIN quarantine_keys w ON w.sensor_type IS NULL AND w.shard_id = t.shard_id "
         "AND w.sequence_number = t.sequence_number "
         "LEFT JOIN quarantine_keys p ON p.sensor_type = t.sensor_type AND p.shard_id = t.shard_id "
         "AND p.sequence_number = t.sequence_number AND (t.sample_index = 0 OR p.every_sample) "
         "WHERE w.shard_id IS NULL AND p.shard_id IS NULL AND device_id IS NOT NULL AND t.sensor_type IS NOT NULL "
         f"AND (value = 0 OR (abs(value) >= {VALUE_MIN_MAGNITUDE!r} AND abs(value) < {VALUE_MAX_MAGNITUDE!r}))"
         ") WHERE repeat_rank = 1"),
    ]


def _is_json_string(value: str) -> str:
    """Trino: the JSON value ``value`` is a string (json_format quotes strings only)."""
    return f"json_format({value}) LIKE '\"%'"


def _trino_unit_ok() -> str:
    """Trino: a single body's unit is absent, null, or a string of at most 32 characters."""
    unit = "json_extract(body, '$.unit')"
    return (f"(COALESCE(json_format({unit}), 'null') = 'null' OR ({_is_json_string(unit)} "
            f"AND length(json_extract_scalar(body, '$.unit')) <= {UNIT_MAX_CHARS}))")


@dataclass(frozen=True)
class AthenaProgress:
    """One poll of a running query."""

    query_id: str
    state: str
    bytes_scanned: int


_ATHENA_TYPES: dict[str, Callable[[str], Any]] = {
    "tinyint": int, "smallint": int, "integer": int, "bigint": int, "double": float, "float": float,
    "real": float, "boolean": lambda v: v == "true",
    "timestamp": lambda v: datetime.fromisoformat(v), "date": lambda v: date.fromisoformat(v),
}


def _athena_value(value: str | None, kind: str) -> Any:
    if value is None:
        return None
    convert = _ATHENA_TYPES.get(kind.split("(")[0].lower())
    try:
        return convert(value) if convert else value
    except ValueError:
        return value


def run_athena(athena: Any, sql: str, *, workgroup: str, database: str, window: Window,
               thresholds: Thresholds, ttl_days: int,
               on_progress: Callable[[AthenaProgress], None] = lambda _: None,
               sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 1.0,
               max_polls: int = 86_400) -> QueryResult:
    """Run ``sql`` over the relations in ``workgroup``: start, poll (``on_progress`` each time), page through the
    results. Ctrl-C (KeyboardInterrupt) while it runs stops the query; a failed or cancelled query is SqlError."""
    started = time.monotonic()
    text = with_relations(athena_relations(database, window, thresholds, ttl_days), sql)
    query_id = athena.start_query_execution(QueryString=text, WorkGroup=workgroup,
                                            QueryExecutionContext={"Database": database})["QueryExecutionId"]
    execution: dict[str, Any] = {}
    try:
        for _ in range(max_polls):
            execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            state = execution["Status"]["State"]
            scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
            on_progress(AthenaProgress(query_id, state, scanned))
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            sleep(poll_seconds)
        else:
            athena.stop_query_execution(QueryExecutionId=query_id)
            raise SqlError(f"query {query_id} still running after {max_polls} polls; stopped it")
    except KeyboardInterrupt:
        athena.stop_query_execution(QueryExecutionId=query_id)
        raise SqlError(f"query {query_id} cancelled (Ctrl-C); Athena stopped it") from None
    state = execution["Status"]["State"]
    scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
    if state != "SUCCEEDED":
        reason = execution["Status"].get("StateChangeReason", "")
        error = SqlUsageError if state == "FAILED" and _ATHENA_QUERY_FAULT.search(reason) else SqlError
        raise error(athena_failure(query_id, state, reason, scanned))
    columns, rows = _athena_rows(athena, query_id)
    return QueryResult("athena", columns, rows, scanned, time.monotonic() - started, query_id=query_id)


# Athena's (Trino's) error names for a query that is wrong in itself: exit 2, like DuckDB's parser and binder.
_ATHENA_QUERY_FAULT = re.compile(r"\b(SYNTAX_ERROR|COLUMN_NOT_FOUND|TABLE_NOT_FOUND|FUNCTION_NOT_FOUND|"
                                 r"TYPE_MISMATCH|AMBIGUOUS_NAME|MISSING_COLUMN_NAME|INVALID_FUNCTION_ARGUMENT)\b|"
                                 r"mismatched input|extraneous input")


def athena_failure(query_id: str, state: str, reason: str, scanned: int) -> str:
    """One line: the query's end state and Athena's reason, with what to do for the bytes-scanned cutoff."""
    reason = " ".join(reason.split()) or "no reason given"
    line = f"query {query_id} {state.lower()}: {reason}"
    if "bytes scanned limit" in reason.lower():
        line += (f" (scanned {scanned / 1e6:.1f} MB); narrow --since/--from/--to, or raise "
                 "analytics.bytes_scanned_cutoff_mb and redeploy")
    return line


def _athena_rows(athena: Any, query_id: str) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    paginator = athena.get_paginator("get_query_results")
    columns: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = []
    first = True
    for page in paginator.paginate(QueryExecutionId=query_id):
        result = page["ResultSet"]
        if not columns:
            info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            columns = tuple(c["Name"] for c in info)
            kinds = tuple(c.get("Type", "varchar") for c in info)
        page_rows = result.get("Rows", [])
        if first and page_rows:
            page_rows = page_rows[1:]  # the first row of a SELECT's first page repeats the column names
        first = False
        for row in page_rows:
            values = [datum.get("VarCharValue") for datum in row.get("Data", [])]
            rows.append(tuple(_athena_value(v, k) for v, k in zip(values, kinds, strict=False)))
    return columns, tuple(rows)
