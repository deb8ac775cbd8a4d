"""The SQL iotpipe sends to Athena, checked without Athena (there is none here):

1. every QueryString ``run_athena`` sends (the relations of every kind of window and thresholds, around the named
   queries and user queries) parses in the Trino dialect (Athena engine v3 is Trino) with sqlglot;
2. it calls only functions Athena engine v3 documents (its SQL functions are Trino's: "Functions in Amazon
   Athena", https://docs.aws.amazon.com/athena/latest/ug/functions-env3.html, and the Trino function list,
   https://trino.io/docs/current/functions/list.html);
3. transpiled to DuckDB by sqlglot, with the Glue tables emulated in DuckDB over the same archive objects, it gives
   the same rows as iotpipe's own DuckDB relations, on the known archives of the DuckDB tests.

What (3) shows: the Athena text's logic (dedup, expansion of the three payload forms, quarantine exclusion, time rules)
matches the DuckDB relations' logic, row for row. What it cannot show: how Athena's own engine, the OpenX JSON SerDe
and partition projection behave; the functions then run with DuckDB's semantics, not Trino's (docs/sql.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from iotpipe.sql import (
    _QUARANTINE_JSON,
    _RAW_JSON,
    NAMED_QUERIES,
    LocalArchive,
    Window,
    athena_relations,
    fetch_archive,
    require_duckdb,
    run_athena,
    run_duckdb,
    with_relations,
)

sqlglot = pytest.importorskip("sqlglot", reason="sqlglot is in the dev extra: pip install -e '.[dev]'")
from sqlglot import exp  # noqa: E402
from test_sql_duckdb import (  # noqa: E402
    BUCKET,
    CFG,
    HANDLER,
    SHARD0,
    WINDOW,
    archive,
    ms,
    odd_bodies,
    put_known_archive,
    rule,
)
from test_sql_samples import put_arrival_archive, put_mixed_archive, put_vector_archive  # noqa: E402

DATABASE = "iotpipe_dev"
# Functions (and CAST-like forms) Athena engine v3 documents, as Trino names them; the ones iotpipe's text uses are
# among them, and a few neighbours a relation may reasonably use next.
ATHENA_V3_FUNCTIONS = frozenset({
    # conversion and conditional: https://trino.io/docs/current/functions/conversion.html, .../conditional.html
    "CAST", "TRY_CAST", "TRY", "IF", "COALESCE", "NULLIF",
    # JSON: https://trino.io/docs/current/functions/json.html
    "JSON_PARSE", "JSON_EXTRACT", "JSON_EXTRACT_SCALAR", "JSON_FORMAT", "JSON_ARRAY_LENGTH",
    # date and time: https://trino.io/docs/current/functions/datetime.html
    "DATE_ADD", "DATE_DIFF", "DATE_TRUNC", "DATE_FORMAT", "DATE_PARSE", "FROM_ISO8601_TIMESTAMP",
    "FROM_UNIXTIME", "TO_UNIXTIME", "CURRENT_TIMESTAMP",
    # regular expressions and strings: https://trino.io/docs/current/functions/regexp.html, .../string.html
    "REGEXP_EXTRACT", "REGEXP_LIKE", "LOWER", "UPPER", "LENGTH", "SUBSTR", "CONCAT",
    # arrays, maps and lambdas: https://trino.io/docs/current/functions/array.html, .../map.html, .../lambda.html
    "TRANSFORM", "FILTER", "CARDINALITY", "CONTAINS", "ELEMENT_AT", "MAP_KEYS", "MAP_VALUES", "ANY_MATCH",
    "UNNEST",
    # aggregate and window: https://trino.io/docs/current/functions/aggregate.html, .../window.html
    "COUNT", "MIN", "MAX", "AVG", "SUM", "ARBITRARY", "APPROX_PERCENTILE", "ROW_NUMBER", "RANK",
    # math: https://trino.io/docs/current/functions/math.html
    "ROUND", "ABS", "FLOOR", "CEIL",
})
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
USER_QUERIES = (
    "SELECT device_id, max(value) AS hottest FROM readings WHERE sensor_type = 'temperature' GROUP BY 1",
    "WITH daily AS (SELECT CAST(reading_time AS DATE) AS day, count(*) AS n FROM readings GROUP BY 1) "
    "SELECT * FROM daily ORDER BY day",
)
WINDOWS = (
    Window(ms("2026-03-01T22:30:00"), ms("2026-03-02T01:10:00")),  # hours of two days
    Window(ms("2026-01-15T00:00:00"), ms("2026-04-02T00:00:00")),  # beyond 62 days: month predicates
)


def sent_query_strings() -> list[str]:
    """Every QueryString run_athena sends: each named and user query, each kind of window, with and without
    thresholds, recorded from the request itself (botocore Stubber answers)."""
    client = boto3.client("athena", region_name="us-east-1")
    sent: list[str] = []
    client.meta.events.register("provide-client-params.athena.StartQueryExecution",
                                lambda params, **_: sent.append(params["QueryString"]))
    stub = Stubber(client)
    queries = [q.sql for q in NAMED_QUERIES.values()] + list(USER_QUERIES)
    with stub:
        for window in WINDOWS:
            for thresholds in (CFG.thresholds, ()):
                for sql in queries:
                    stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"},
                                      {"QueryString": ANY, "WorkGroup": "iotpipe-dev",
                                       "QueryExecutionContext": {"Database": DATABASE}})
                    stub.add_response("get_query_execution",
                                      {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}},
                                      {"QueryExecutionId": "q-1"})
                    stub.add_response("get_query_results", {"ResultSet": {"Rows": []}}, {"QueryExecutionId": "q-1"})
                    run_athena(client, sql, workgroup="iotpipe-dev", database=DATABASE, window=window,
                               thresholds=thresholds, ttl_days=CFG.storage.ttl_days)
    return sent


SENT = sent_query_strings()


def functions_called(sql: str) -> set[str]:
    """The functions a Trino query calls, as Trino names them (sqlglot's Trino rendering of each call)."""
    names = set()
    for node in sqlglot.parse_one(sql, read="trino").walk():
        if isinstance(node, exp.Anonymous):
            names.add(node.name.upper())
        elif isinstance(node, exp.Func | exp.Bracket):  # element_at(map, key) parses as a safe subscript
            match = _CALL.match(node.sql(dialect="trino"))
            if match:  # CASE, AND, IS NULL, x[1]... render without a call
                names.add(match.group(1).upper())
    return names


def test_every_kind_of_query_string_was_recorded() -> None:
    assert len(SENT) == len(WINDOWS) * 2 * (len(NAMED_QUERIES) + len(USER_QUERIES))
    assert all(text.startswith("WITH query_window(window_start, window_end) AS (") for text in SENT)


@pytest.mark.parametrize("index", range(len(SENT)))
def test_every_query_string_parses_as_trino(index: int) -> None:
    statements = sqlglot.parse(SENT[index], read="trino", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(statements) == 1 and isinstance(statements[0], exp.Query)
    assert not any(isinstance(node, exp.Command) for node in statements[0].walk())  # no unparsed fallback


def test_every_function_called_is_one_athena_engine_v3_documents() -> None:
    called = set().union(*(functions_called(text) for text in SENT))
    assert called - ATHENA_V3_FUNCTIONS == set()
    # the relations' own calls are all found (the check sees what it checks)
    assert {"REGEXP_EXTRACT", "JSON_PARSE", "JSON_EXTRACT_SCALAR", "ELEMENT_AT", "MAP_KEYS", "FILTER",
            "CARDINALITY", "TRANSFORM", "ROW_NUMBER", "FROM_ISO8601_TIMESTAMP", "DATE_ADD", "TRY"} <= called


def test_the_function_check_catches_a_duckdb_only_function() -> None:
    called = functions_called("SELECT strftime(reading_time, '%Y'), list_filter(x, s -> s > 1) FROM readings")
    assert called - ATHENA_V3_FUNCTIONS == {"STRFTIME", "LIST_FILTER"}


# --- the same rows on DuckDB ----------------------------------------------------------------------------


def emulate_glue_tables(connection: Any, local: LocalArchive) -> None:
    """The two Glue tables as Athena sees them, in DuckDB over the same objects: lower-case columns (the OpenX
    SerDe matches JSON keys case-insensitively), the partition columns of the key, and ``"$path"``."""
    partitions = ", ".join(f"CAST(regexp_extract(filename, '{name}=([0-9]+)/', 1) AS INTEGER) AS {name}"
                           for name in ("year", "month", "day", "hour"))
    connection.execute(f'CREATE SCHEMA "{DATABASE}"')
    for table, paths, columns, fields in (
        ("raw_archive", local.raw, _RAW_JSON, "sequenceNumber, partitionKey, arrivedAt, data, dataBase64"),
        ("quarantine_archive", local.quarantine, _QUARANTINE_JSON,
         "sequenceNumber, partitionKey, reason, sensorType, rejected, data, dataBase64"),
    ):
        files = ", ".join(f"'{p}'" for p in paths)
        lowered = ", ".join(f"{f} AS {f.lower()}" for f in fields.split(", "))
        connection.execute(
            f'CREATE TABLE "{DATABASE}".{table} AS SELECT {lowered}, filename AS "$path", {partitions} '
            f"FROM read_json([{files}], format = 'newline_delimited', compression = 'gzip', columns = {columns}, "
            "filename = true)")


def odd_archive(s3: Any) -> Window:
    """Payloads at the edges (see test_odd_payloads_... in test_sql_duckdb): a window of their hour."""
    index = archive.load_processor(HANDLER)
    arrived = ms("2026-03-04T00:10:00")
    bodies = [
        *odd_bodies(arrived),
        rule({"deviceId": "d2", "timestamp": "2026-03-04T01:09:00+01:00",
              "readings": {"temperature": 85.5, "pressure": 31}}, arrived),
        rule({"deviceId": "d3", "sensorType": "humidity", "value": 40}, arrived),
    ]
    records = [archive.record(index, SHARD0, 500 + n, arrived, body, "d1" if n < 7 else f"d{n - 5}")
               for n, body in enumerate(bodies)]
    archive.put_objects(s3, BUCKET, archive.batch_objects(
        index, records, archive.quarantine_lines(index, records, CFG.thresholds_json)))
    return Window(ms("2026-03-04T00:00:00"), ms("2026-03-04T01:00:00"))


COMPARED = (
    "SELECT * FROM raw_records ORDER BY shard_id, sequence_number",
    "SELECT * FROM quarantined ORDER BY shard_id, sequence_number",
    # several samples of one record share shard, sequence number and sensor type: their times order them (readings
    # dated by their arrival share the reading time: the device time they gave orders them)
    "SELECT * FROM readings ORDER BY shard_id, sequence_number, sensor_type, reading_time, value, device_time",
    *(q.sql for q in NAMED_QUERIES.values()),  # each orders its rows fully
)


@pytest.mark.parametrize("which", ["known archive", "odd payloads", "samples vector", "samples mixed",
                                   "arrival times"])
def test_the_athena_text_transpiled_to_duckdb_gives_the_same_rows(which: str, moto_endpoint: str,
                                                                   tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    if which == "known archive":
        put_known_archive(s3)
        window = WINDOW
    elif which == "samples vector":  # handler/vectors/samples.json, and a retry of it
        window = put_vector_archive(s3)
    elif which == "samples mixed":  # bad samples among good ones, all three forms, a retry
        window = put_mixed_archive(s3)
    elif which == "arrival times":  # equal values dated by their arrival, a device's repeats
        window = put_arrival_archive(s3)
    else:
        window = odd_archive(s3)
    local = fetch_archive(s3, BUCKET, window, tmp_path / "cache")
    connection = require_duckdb().connect()
    connection.execute("SET TimeZone = 'UTC'")
    emulate_glue_tables(connection, local)
    relations = athena_relations(DATABASE, window, CFG.thresholds, CFG.storage.ttl_days)
    compared = 0
    for query in COMPARED:
        athena_text = with_relations(relations, query)
        [duckdb_text] = sqlglot.transpile(athena_text, read="trino", write="duckdb")
        got = [tuple(row) for row in connection.execute(duckdb_text).fetchall()]
        want = list(run_duckdb(query, local, window, CFG.thresholds, CFG.storage.ttl_days).rows)
        assert got == want, query
        compared += len(want)
    assert compared > 10  # rows were compared, not empty relations
