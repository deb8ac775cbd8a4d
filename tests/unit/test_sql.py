"""iotpipe.sql without an archive: windows, partition predicates, query wrapping, cost, and the Athena flow with
botocore's Stubber (success with pagination, failure, Ctrl-C, cancelled, the bytes-scanned cutoff)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from iotpipe.config import build_config
from iotpipe.errors import ConfigError
from iotpipe.sql import (
    RELATION_COLUMNS,
    AthenaProgress,
    LocalArchive,
    SqlError,
    SqlUsageError,
    Window,
    archive_key_hour,
    athena_cost,
    athena_relations,
    duckdb_connection,
    partition_predicate,
    resolve_query,
    run_athena,
    window_from,
    with_relations,
)

CFG = build_config({}, "dev", {})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


WINDOW = Window(ms("2026-03-01T22:30:00"), ms("2026-03-02T01:10:00"))


# --- windows and keys -----------------------------------------------------------------------------------


def test_window_from_since_and_from_to() -> None:
    now = ms("2026-03-02T00:00:00")
    assert window_from("2h", None, None, now) == Window(now - 7_200_000, now)
    assert window_from(None, "2026-03-01T00:00:00+01:00", "2026-03-01T12:00:00Z", now) == Window(
        ms("2026-02-28T23:00:00"), ms("2026-03-01T12:00:00"))
    assert window_from(None, None, None, now) == Window(now - 86_400_000, now)


@pytest.mark.parametrize("since,start,end,message", [
    ("1h", "2026-03-01", None, "--since and --from both given"),
    (None, "2026-03-02", "2026-03-01", "the window is empty"),
    (None, "last tuesday", None, "start='last tuesday' is not an ISO 8601 time"),
    ("forever", None, None, "since='forever' is not valid"),
])
def test_bad_windows_are_config_errors(since: str | None, start: str | None, end: str | None,
                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        window_from(since, start, end, ms("2026-03-03T00:00:00"))


def test_partition_predicate_names_only_the_window_hours() -> None:
    assert partition_predicate(WINDOW) == (
        "((year = 2026 AND month = 3 AND day = 1 AND hour BETWEEN 22 AND 23) OR "
        "(year = 2026 AND month = 3 AND day = 2 AND hour BETWEEN 0 AND 1))")
    long = Window(ms("2026-01-15T00:00:00"), ms("2026-04-02T00:00:00"))
    assert partition_predicate(long) == ("((year = 2026 AND month = 1) OR (year = 2026 AND month = 2) OR "
                                         "(year = 2026 AND month = 3) OR (year = 2026 AND month = 4))")


def test_archive_keys_are_parsed_and_others_ignored() -> None:
    assert archive_key_hour("raw/year=2026/month=03/day=01/hour=22/shardId-000000000001/1-9.jsonl.gz") == (
        "raw", datetime(2026, 3, 1, 22), "shardId-000000000001")
    assert archive_key_hour("raw/year=2026/month=02/day=30/hour=22/s/1-9.jsonl.gz") is None
    assert archive_key_hour("raw/README.txt") is None


# --- queries --------------------------------------------------------------------------------------------


def test_named_and_read_queries_resolve_and_others_are_refused() -> None:
    assert resolve_query("hourly-stats").startswith("SELECT device_id, sensor_type, date_trunc('hour'")
    assert resolve_query("  -- why\n with x AS (SELECT 1) SELECT * FROM x; ") == \
        "-- why\n with x AS (SELECT 1) SELECT * FROM x"
    for bad in ("DELETE FROM readings", "CREATE TABLE t AS SELECT 1", "", "hourly_stats"):
        with pytest.raises(SqlError, match="not a query"):
            resolve_query(bad)


def test_exactly_one_statement_is_accepted_and_quoted_semicolons_split_nothing() -> None:
    assert resolve_query("SELECT ';' AS x, \"a;b\" FROM t /* ; */ -- ;\n;") == \
        "SELECT ';' AS x, \"a;b\" FROM t /* ; */ -- ;"
    for bad in ("SELECT 1; COPY (SELECT 42) TO 'out.csv'", "SELECT 1;SELECT 2", "VALUES (1); DROP TABLE t"):
        with pytest.raises(SqlUsageError, match="2 statements given") as raised:
            resolve_query(bad)
        assert raised.value.exit_code == 2


def test_relations_are_merged_into_the_users_own_with() -> None:
    ctes = [("a", "SELECT 1 AS x")]
    assert with_relations(ctes, "SELECT * FROM a;") == "WITH a AS (SELECT 1 AS x)\nSELECT * FROM a"
    assert with_relations(ctes, "with b AS (SELECT x FROM a) SELECT * FROM b") == \
        "WITH a AS (SELECT 1 AS x),\nb AS (SELECT x FROM a) SELECT * FROM b"


def test_athena_relations_read_the_glue_tables_of_the_window() -> None:
    ctes = dict(athena_relations("iotpipe_dev", WINDOW, CFG.thresholds, 90))
    assert {"readings", "raw_records", "quarantined", "thresholds(sensor_type, min_value, max_value, unit)",
            "query_window(window_start, window_end)"} <= set(ctes)
    assert '"iotpipe_dev".raw_archive WHERE ((year = 2026 AND month = 3 AND day = 1' in ctes["archive_lines"]
    assert '"iotpipe_dev".quarantine_archive WHERE ((year = 2026' in ctes["quarantine_lines"]
    assert "TIMESTAMP '2026-03-01 22:30:00.000', TIMESTAMP '2026-03-02 01:10:00.000'" in ctes[
        "query_window(window_start, window_end)"]


def test_duckdb_relations_have_the_documented_columns() -> None:
    connection = duckdb_connection(LocalArchive((), (), 0, 0), WINDOW, CFG.thresholds, 90)
    for relation, columns in RELATION_COLUMNS.items():
        described = connection.execute(f"DESCRIBE {relation}").fetchall()
        assert [row[0] for row in described] == [name for name, _ in columns], relation
    assert connection.execute("SELECT * FROM thresholds ORDER BY 1").fetchall() == [
        ("pressure", 30.0, 150.0, "psi"), ("temperature", 10.0, 80.0, "celsius"), ("vibration", None, 5.0, "mm/s")]


def test_athena_cost_is_5_dollars_per_tb_with_a_10_mb_minimum() -> None:
    assert athena_cost(0) == pytest.approx(10e6 / 1e12 * 5)
    assert athena_cost(10**12) == pytest.approx(5.0)
    assert athena_cost(123_000_000) == pytest.approx(0.000615)


# --- Athena flow (Stubber) ------------------------------------------------------------------------------


def athena() -> tuple[Any, Stubber]:
    client = boto3.client("athena", region_name="us-east-1")
    return client, Stubber(client)


def execution(state: str, scanned: int = 0, reason: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if reason:
        status["StateChangeReason"] = reason
    return {"QueryExecution": {"QueryExecutionId": "q-1", "Status": status,
                               "Statistics": {"DataScannedInBytes": scanned}}}


def start(stub: Stubber) -> None:
    stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"},
                      {"QueryString": ANY, "WorkGroup": "iotpipe-dev",
                       "QueryExecutionContext": {"Database": "iotpipe_dev"}})


def run(client: Any, sql: str = "SELECT device_id, count(*) AS n FROM readings GROUP BY 1", **kwargs: Any) -> Any:
    return run_athena(client, sql, workgroup="iotpipe-dev", database="iotpipe_dev", window=WINDOW,
                      thresholds=CFG.thresholds, ttl_days=90, poll_seconds=0, **kwargs)


def page(rows: list[list[str | None]], token: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"ResultSet": {
        "Rows": [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in rows],
        "ResultSetMetadata": {"ColumnInfo": [
            {"Name": "device_id", "Type": "varchar"}, {"Name": "n", "Type": "bigint"},
            {"Name": "last", "Type": "timestamp"}]}}}
    if token:
        result["NextToken"] = token
    return result


def test_success_polls_pages_and_converts_types() -> None:
    client, stub = athena()
    start(stub)
    for step in (execution("QUEUED"), execution("RUNNING", 5_000_000), execution("SUCCEEDED", 12_345_678)):
        stub.add_response("get_query_execution", step, {"QueryExecutionId": "q-1"})
    stub.add_response("get_query_results", page([["device_id", "n", "last"], ["press-01", "3",
                                                                              "2026-03-01 23:00:00.000"]], "t2"),
                      {"QueryExecutionId": "q-1"})
    stub.add_response("get_query_results", page([["press-02", "5", None]]),
                      {"QueryExecutionId": "q-1", "NextToken": "t2"})
    seen: list[AthenaProgress] = []
    with stub:
        result = run(client, on_progress=seen.append)
    stub.assert_no_pending_responses()
    assert result.columns == ("device_id", "n", "last")
    assert result.rows == (("press-01", 3, datetime(2026, 3, 1, 23)), ("press-02", 5, None))
    assert [(s.state, s.bytes_scanned) for s in seen] == [("QUEUED", 0), ("RUNNING", 5_000_000),
                                                          ("SUCCEEDED", 12_345_678)]
    assert result.bytes_scanned == 12_345_678 and result.query_id == "q-1"
    assert result.cost_usd == pytest.approx(12_345_678 / 1e12 * 5)


def test_the_query_string_carries_the_relations_and_the_users_query() -> None:
    client, stub = athena()
    sent: list[str] = []
    client.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                lambda params, **_: sent.append(params["QueryString"]))
    start(stub)
    stub.add_response("get_query_execution", execution("SUCCEEDED"), {"QueryExecutionId": "q-1"})
    stub.add_response("get_query_results", page([["device_id", "n", "last"]]), {"QueryExecutionId": "q-1"})
    with stub:
        assert run(client).rows == ()
    assert sent[0].startswith("WITH query_window(window_start, window_end) AS (")
    assert sent[0].endswith("\nSELECT device_id, count(*) AS n FROM readings GROUP BY 1")


def test_failure_is_one_line_with_athenas_reason() -> None:
    client, stub = athena()
    start(stub)
    stub.add_response("get_query_execution", execution("FAILED", 0, "COLUMN_NOT_FOUND: line 1:8: Column 'x'\n"
                                                                    "cannot be resolved"),
                      {"QueryExecutionId": "q-1"})
    with stub, pytest.raises(SqlError) as raised:
        run(client)
    assert str(raised.value) == "query q-1 failed: COLUMN_NOT_FOUND: line 1:8: Column 'x' cannot be resolved"
    assert raised.value.exit_code == 2  # the query's own fault: a usage error


def test_a_failure_that_is_not_the_querys_fault_exits_1() -> None:
    client, stub = athena()
    start(stub)
    stub.add_response("get_query_execution", execution("FAILED", 0, "HIVE_CANNOT_OPEN_SPLIT: Error opening Hive "
                                                                    "split s3://b/raw/x.jsonl.gz"),
                      {"QueryExecutionId": "q-1"})
    with stub, pytest.raises(SqlError) as raised:
        run(client)
    assert raised.value.exit_code == 1


def test_ctrl_c_stops_the_query() -> None:
    client, stub = athena()
    start(stub)
    stub.add_response("get_query_execution", execution("RUNNING"), {"QueryExecutionId": "q-1"})
    stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-1"})

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    with stub, pytest.raises(SqlError, match=r"query q-1 cancelled \(Ctrl-C\)"):
        run(client, sleep=interrupted)
    stub.assert_no_pending_responses()


def test_a_query_cancelled_elsewhere_reports_athenas_reason() -> None:
    client, stub = athena()
    start(stub)
    stub.add_response("get_query_execution", execution("CANCELLED", 0, "Query cancelled by user"),
                      {"QueryExecutionId": "q-1"})
    with stub, pytest.raises(SqlError, match=r"^query q-1 cancelled: Query cancelled by user$"):
        run(client)


def test_bytes_scanned_cutoff_says_how_to_narrow_or_raise_it() -> None:
    client, stub = athena()
    start(stub)
    stub.add_response("get_query_execution",
                      execution("CANCELLED", 10_485_760, "Query cancelled! : Bytes scanned limit was exceeded"),
                      {"QueryExecutionId": "q-1"})
    with stub, pytest.raises(SqlError) as raised:
        run(client)
    message = str(raised.value)
    assert "Bytes scanned limit was exceeded (scanned 10.5 MB)" in message
    assert "analytics.bytes_scanned_cutoff_mb" in message and "--since" in message


def test_a_query_that_never_ends_is_stopped_after_the_poll_bound() -> None:
    client, stub = athena()
    start(stub)
    for _ in range(3):
        stub.add_response("get_query_execution", execution("RUNNING"), {"QueryExecutionId": "q-1"})
    stub.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-1"})
    with stub, pytest.raises(SqlError, match="still running after 3 polls"):
        run(client, max_polls=3)
