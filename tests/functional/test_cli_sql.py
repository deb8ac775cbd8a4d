"""`iotpipe sql` through click against the moto server: DuckDB over an archive written with the processor's archive
code, output formats, named queries, bad input, and the message when DuckDB is missing."""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from click.testing import CliRunner, Result

from iotpipe.aws import ClientFactory
from iotpipe.cli import main
from iotpipe.cli.common import CliContext
from iotpipe.sql.cache import cache_in_use

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))
sys.path.insert(0, str(REPO / "tests" / "handler"))
from test_sql_duckdb import BUCKET, put_known_archive  # noqa: E402
from test_sql_samples import put_mixed_archive  # noqa: E402

WINDOW = ["--from", "2026-03-01T00:00:00Z", "--to", "2026-03-03T00:00:00Z"]


@pytest.fixture
def archive(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml: built-in defaults
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    put_known_archive(s3)
    return moto_endpoint


def sql(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["sql", *args, "--endpoint-url", endpoint, "--region", "us-east-1",
                                     "--bucket", BUCKET])


def test_json_output_of_a_query_over_readings(archive: str) -> None:
    result = sql(archive, "SELECT device_id, sensor_type, value, reading_time FROM readings "
                          "WHERE device_id = 'press-02' ORDER BY sensor_type", *WINDOW, "--output", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"device_id": "press-02", "sensor_type": "pressure", "value": 100.0,
         "reading_time": "2026-03-01 10:14:59.000"},
        {"device_id": "press-02", "sensor_type": "temperature", "value": 90.0,
         "reading_time": "2026-03-01 10:14:59.000"}]
    assert "on duckdb" in result.stderr and "2 rows" in result.stderr and "4 downloaded" in result.stderr


def test_named_query_as_csv_and_the_cache_on_a_second_run(archive: str) -> None:
    first = sql(archive, "anomalies-per-day", *WINDOW, "--output", "csv")
    assert first.exit_code == 0, first.stderr
    assert list(csv.reader(io.StringIO(first.stdout))) == [
        ["day", "device_id", "sensor_type", "anomalies"], ["2026-03-01", "press-02", "temperature", "1"]]
    again = sql(archive, "quarantine-reasons", *WINDOW)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines()[0].split() == ["reason", "records"]
    assert "data is not UTF-8" in again.stdout
    assert "0 downloaded" in again.stderr


def test_readings_sent_in_the_samples_form_are_counted_end_to_end(archive: str) -> None:
    put_mixed_archive(boto3.client("s3", endpoint_url=archive, region_name="us-east-1"))
    result = sql(archive, "SELECT device_id, count(*) AS readings, count(DISTINCT reading_time) AS times "
                          "FROM readings GROUP BY 1 ORDER BY 1", "--from", "2026-03-06T09:00:00Z", "--to",
                 "2026-03-06T10:00:00Z", "--output", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"device_id": "kiln-1", "readings": 10, "times": 8},
                                         {"device_id": "kiln-2", "readings": 3, "times": 2},
                                         {"device_id": "kiln-3", "readings": 2, "times": 2}]


def test_the_cache_is_pruned_after_a_query_and_cleared_on_request(archive: str, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "iotpipe" / "archive"
    assert sql(archive, "SELECT 1", *WINDOW).exit_code == 0
    long_ago = 1_700_000_000
    for path in cache.rglob("*.jsonl.gz"):
        os.utime(path, (long_ago, long_ago))

    pruned = sql(archive, "SELECT count(*) FROM raw_records", "--from", "2026-03-02T00:00:00Z", "--to",
                 "2026-03-03T00:00:00Z", "--cache-max-days", "7")

    assert pruned.exit_code == 0, pruned.stderr
    assert "cache: removed 3 objects" in pruned.stderr and "(bound 2048 MB, 7 days)" in pruned.stderr
    assert [p.name.split(".")[0] for p in cache.rglob("*.jsonl.gz")] == ["200-200"]  # its own window stays
    cleared = sql(archive, "--clear-cache")
    assert cleared.exit_code == 0, cleared.stderr
    assert cleared.stdout.startswith("removed 1 cached archive object (") and str(cache) in cleared.stdout
    assert list(cache.rglob("*.jsonl.gz")) == []


def test_clear_cache_is_refused_while_a_query_uses_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with cache_in_use(cache):
        result = CliRunner().invoke(main, ["sql", "--clear-cache", "--cache-dir", str(cache)])
    assert result.exit_code == 1
    assert "another iotpipe sql is using the cache" in result.stderr


def test_list_shows_the_named_queries() -> None:
    result = CliRunner().invoke(main, ["sql", "--list"])
    assert result.exit_code == 0
    assert "-- hourly-stats:" in result.stdout and "FROM readings" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["DROP TABLE readings"], "not a query"),
    (["SELECT 1", "--since", "24h", "--from", "2026-03-01"], "--since and --from both given"),
    (["SELECT 1", "--from", "2026-03-02", "--to", "2026-03-01"], "the window is empty"),
    (["SELECT 1", "--from", "yesterday"], "--from yesterday is not an ISO 8601 time"),
    (["SELECT 1", "--since", "forever"], "--since forever is not valid"),
    (["SELECT 1", "--cache-max-mb", "0"], "Invalid value for '--cache-max-mb'"),
    (["SELECT 1", "--memory-mb", "64"], "Invalid value for '--memory-mb'"),
    (["SELECT 1", "--clear-cache"], "--clear-cache takes no query"),
])
def test_bad_input_is_one_line_and_exit_2_or_1(archive: str, args: list[str], message: str) -> None:
    result = sql(archive, *args)
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert result.stdout == ""


def test_a_sql_error_names_duckdbs_reason_and_exits_2(archive: str) -> None:
    result = sql(archive, "SELECT no_such_column FROM readings", *WINDOW)
    assert result.exit_code == 2
    assert "DuckDB refused the query" in result.stderr and "no_such_column" in result.stderr


def test_a_syntax_error_exits_2(archive: str) -> None:
    result = sql(archive, "SELECT FROM WHERE readings", *WINDOW)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: DuckDB")


@pytest.mark.parametrize("query", [
    "SELECT 1; COPY (SELECT 42) TO 'out.csv'",
    "SELECT 1 AS x; ATTACH 'stolen.db'",
    "WITH a AS (SELECT 1) SELECT * FROM a; COPY (SELECT 42) TO 'out.csv'",
])
def test_a_second_statement_is_refused_and_writes_nothing(archive: str, tmp_path: Path, query: str) -> None:
    result = sql(archive, query, *WINDOW)
    assert result.exit_code == 2
    assert "exactly one read query" in result.stderr and result.stdout == ""
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "stolen.db").exists()


def test_the_query_reads_no_file_outside_the_cache(archive: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    result = sql(archive, f"SELECT * FROM read_csv('{secret}')", *WINDOW)
    assert result.exit_code == 1
    assert "hunter2" not in result.stdout and "disabled by configuration" in result.stderr


def test_without_duckdb_the_message_says_how_to_add_it(archive: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_duckdb(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "duckdb":
            raise ImportError("No module named 'duckdb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_duckdb)
    result = sql(archive, "SELECT 1", *WINDOW)
    assert result.exit_code == 1
    assert "pip install 'iotpipe[sql]'" in result.stderr


def test_athena_without_a_deployed_stack_says_what_to_do(moto_endpoint: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["sql", "SELECT 1", "--engine", "athena", "--endpoint-url", moto_endpoint,
                                       "--region", "us-east-1"])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "iotpipe deploy" in result.stderr


def test_deployed_stack_processor_archive_then_sql_finds_the_bucket(moto_endpoint: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Deploy on moto, run the real processor through its handler with the deployed function's environment, then
    `iotpipe sql` (DuckDB, found the raw bucket from the stack outputs) reads what it archived."""
    from processor_support import kinesis_event, load_handler, rule_records

    from iotpipe.query import now_ms

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    common = ["--env", "dev", "--endpoint-url", moto_endpoint, "--region", "us-east-1"]
    deployed = CliRunner().invoke(main, ["deploy", "--yes", *common])
    assert deployed.exit_code == 0, deployed.stderr
    outputs = json.loads(CliRunner().invoke(main, ["outputs", "--output", "json", *common]).stdout)
    function = boto3.client("lambda", endpoint_url=moto_endpoint, region_name="us-east-1").get_function_configuration(
        FunctionName=outputs["DataProcessorFunctionName"])
    for name, value in function["Environment"]["Variables"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    arrived = now_ms() - 60_000
    payloads = [{"deviceId": "oven-1", "sensorType": "temperature", "value": 95.5, "timestamp": arrived - 500},
                {"deviceId": "oven-2", "timestamp": arrived - 400, "readings": {"pressure": 120.0, "vibration": 7.5}},
                {"deviceId": "oven-3", "sensorType": "temperature"}]  # no value: quarantined
    event = kinesis_event(rule_records(payloads, arrived))
    assert load_handler().handler(event, None) == {"batchItemFailures": []}
    monkeypatch.delenv("AWS_ENDPOINT_URL")

    result = CliRunner().invoke(main, ["sql", "SELECT device_id, sensor_type, value FROM readings ORDER BY 1, 2",
                                       "--since", "1h", "--output", "json", *common])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"device_id": "oven-1", "sensor_type": "temperature", "value": 95.5},
        {"device_id": "oven-2", "sensor_type": "pressure", "value": 120.0},
        {"device_id": "oven-2", "sensor_type": "vibration", "value": 7.5}]
    anomalies = CliRunner().invoke(main, ["sql", "anomalies-per-day", "--since", "1h", "--output", "json", *common])
    assert anomalies.exit_code == 0, anomalies.stderr
    assert sorted((r["device_id"], r["sensor_type"], r["anomalies"]) for r in json.loads(anomalies.stdout)) == [
        ("oven-1", "temperature", 1), ("oven-2", "vibration", 1)]
    refused = CliRunner().invoke(main, ["sql", "SELECT r.partition_key, q.reason FROM raw_records r JOIN "
                                               "quarantined q USING (shard_id, sequence_number)", "--since", "1h",
                                        "--output", "json", *common])
    assert refused.exit_code == 0, refused.stderr
    [row] = json.loads(refused.stdout)
    assert row["partition_key"] == "oven-3" and "value" in row["reason"]


class StubbedFactory(ClientFactory):
    """Hands out pre-stubbed clients (botocore Stubber) for the Athena path, which moto cannot run."""

    clients: ClassVar[dict[str, Any]] = {}

    def client(self, service: str) -> Any:
        return self.clients[service]


def test_athena_path_shows_progress_rows_and_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.stub import ANY, Stubber

    monkeypatch.chdir(tmp_path)
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    athena = boto3.client("athena", region_name="us-east-1")
    StubbedFactory.clients = {"cloudformation": cloudformation, "athena": athena}
    with Stubber(cloudformation) as cfn_stub, Stubber(athena) as stub:
        cfn_stub.add_response("describe_stacks", {"Stacks": [{
            "StackName": "iotpipe-dev", "CreationTime": "2026-01-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE",
            "Outputs": [{"OutputKey": "AnalyticsWorkGroupName", "OutputValue": "iotpipe-dev"},
                        {"OutputKey": "AnalyticsDatabaseName", "OutputValue": "iotpipe_dev"}]}]},
            {"StackName": "iotpipe-dev"})
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-7"},
                          {"QueryString": ANY, "WorkGroup": "iotpipe-dev",
                           "QueryExecutionContext": {"Database": "iotpipe_dev"}})
        stub.add_response("get_query_execution", {"QueryExecution": {
            "Status": {"State": "SUCCEEDED"}, "Statistics": {"DataScannedInBytes": 250_000_000}}},
            {"QueryExecutionId": "q-7"})
        stub.add_response("get_query_results", {"ResultSet": {
            "Rows": [{"Data": [{"VarCharValue": "device_id"}, {"VarCharValue": "n"}]},
                     {"Data": [{"VarCharValue": "press-01"}, {"VarCharValue": "42"}]}],
            "ResultSetMetadata": {"ColumnInfo": [{"Name": "device_id", "Type": "varchar"},
                                                 {"Name": "n", "Type": "bigint"}]}}},
            {"QueryExecutionId": "q-7"})
        result = CliRunner().invoke(main, ["sql", "SELECT device_id, count(*) AS n FROM readings GROUP BY 1",
                                           "--env", "dev", "--since", "7d", "--output", "csv"],
                                    obj=CliContext(factory_class=StubbedFactory))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "device_id,n\npress-01,42\n"
    assert "q-7 SUCCEEDED scanned 250.00 MB" in result.stderr
    assert "Athena scanned 250.00 MB, cost $0.001250" in result.stderr


def test_the_cache_is_private_even_one_that_an_earlier_version_made_public(archive: str, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "iotpipe" / "archive"
    cache.mkdir(parents=True, mode=0o755)
    cache.chmod(0o755)  # as an earlier iotpipe left it
    result = sql(archive, "SELECT count(*) FROM readings", *WINDOW)
    assert result.exit_code == 0, result.stderr
    found = [cache, *cache.rglob("*")]
    assert len([p for p in found if p.name.endswith(".parquet")]) >= 2  # the parsed forms are there
    public = {str(p.relative_to(cache)): oct(p.stat().st_mode & 0o777) for p in found if p.stat().st_mode & 0o077}
    assert public == {}


def test_a_malformed_object_is_named_counted_and_the_query_answers(archive: str) -> None:
    key = "raw/year=2026/month=03/day=01/hour=10/shardId-000000000009/1-1.jsonl.gz"
    boto3.client("s3", endpoint_url=archive, region_name="us-east-1").put_object(
        Bucket=BUCKET, Key=key, Body=b"\x1f\x8b\x08 truncated")
    for _ in range(2):
        result = sql(archive, "SELECT count(*) AS n FROM readings", *WINDOW, "--output", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == [{"n": 5}]
        assert f"skipped malformed archive object s3://{BUCKET}/{key}" in result.stderr
        assert "1 malformed object skipped" in result.stderr and "Traceback" not in result.stderr


def test_a_cache_dir_reached_through_a_symbolic_link_is_readable(archive: str, tmp_path: Path) -> None:
    (tmp_path / "real-cache").mkdir()
    (tmp_path / "linked-cache").symlink_to(tmp_path / "real-cache")
    result = sql(archive, "SELECT count(*) AS n FROM readings", *WINDOW, "--cache-dir", str(tmp_path / "linked-cache"),
                 "--output", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 5}]
