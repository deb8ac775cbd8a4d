"""``iotpipe sql``: SQL over the raw archive, on Athena (the env's workgroup) or DuckDB (embedded)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from iotpipe import contract
from iotpipe import sql as sql_lib
from iotpipe.cli.common import (
    aws_options,
    client_factory,
    config_options,
    load_pipeline_config,
    progress,
    running_local,
)
from iotpipe.cli.output import CSV_FORMATS, format_csv, format_json, format_table, output_choices
from iotpipe.errors import AwsError
from iotpipe.query import now_ms, stack_names
from iotpipe.sql import cache as sql_cache

_QUERIES = "\n".join(f"      {q.name:<20} {q.description}" for q in sql_lib.NAMED_QUERIES.values())


def _cell(value: Any) -> Any:
    """One value as both engines print it: times in UTC with milliseconds, lists as JSON."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return json.dumps([_cell(v) for v in value])
    return value


def format_result(result: sql_lib.QueryResult, output: str) -> str:
    """Rows as a text table, CSV or JSON (a list of objects)."""
    rows = [[_cell(v) for v in row] for row in result.rows]
    if output == "json":
        # the columns keep the query's order
        return format_json([dict(zip(result.columns, row, strict=True)) for row in rows], sort_keys=False)
    if output == "csv":
        return format_csv(result.columns, rows)
    return format_table(result.columns, [["NULL" if v is None else v for v in row] for row in rows])


def _summary(result: sql_lib.QueryResult) -> str:
    rows = f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    if result.engine == "athena":
        return (f"{rows} in {result.seconds:.1f} s; Athena scanned {result.bytes_scanned / 1e6:.2f} MB, "
                f"cost ${result.cost_usd:.6f} ($5/TB, 10 MB minimum); query {result.query_id}")
    skipped = (f"; {len(result.skipped)} malformed object{'s' if len(result.skipped) != 1 else ''} skipped "
               "(named above)") if result.skipped else ""
    return (f"{rows} in {result.seconds:.2f} s; DuckDB read {result.objects - len(result.skipped)} archive objects "
            f"({result.bytes_scanned / 1e6:.2f} MB, {result.downloaded} downloaded, the rest from the cache){skipped}")


@click.command("sql")
@click.argument("query", required=False)
@click.option("--engine", type=click.Choice(["athena", "duckdb"]),
              help="Default: duckdb for --env local, a running iotpipe local or --endpoint-url; else athena.")
@click.option("--since", help="Arrivals from this long ago (30m, 24h, 7d) or this ISO time up to now "
                              "[default: 24h].")
@click.option("--from", "start", metavar="TIME", help="Window start (ISO 8601, UTC unless it has an offset).")
@click.option("--to", "end", metavar="TIME", help="Window end, exclusive (ISO 8601) [default: now].")
@output_choices(CSV_FORMATS)
@click.option("--bucket", help="DuckDB: read this raw bucket instead of the stack's RawDataBucketName output.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="DuckDB: where archive objects are cached by ETag [default: ~/.cache/iotpipe/archive].")
@click.option("--cache-max-mb", type=click.IntRange(min=1), default=sql_cache.DEFAULT_MAX_MB, show_default=True,
              envvar="IOTPIPE_SQL_CACHE_MAX_MB", show_envvar=True,
              help="DuckDB: after a query, evict the least recently used cached objects beyond this size "
                   "(the query's own window is always kept).")
@click.option("--cache-max-days", type=click.IntRange(min=1), default=sql_cache.DEFAULT_MAX_AGE_DAYS,
              show_default=True, envvar="IOTPIPE_SQL_CACHE_MAX_DAYS", show_envvar=True,
              help="DuckDB: after a query, remove cached objects no query used for this many days.")
@click.option("--memory-mb", type=click.IntRange(min=sql_lib.MIN_MEMORY_MB), default=sql_lib.DEFAULT_MEMORY_MB,
              show_default=True, envvar="IOTPIPE_SQL_MEMORY_MB", show_envvar=True,
              help="DuckDB: memory for parsing and the query; beyond it DuckDB spills to the cache folder "
                   "(the command's peak RSS stays within about this plus 200 MB).")
@click.option("--clear-cache", is_flag=True, help="Remove every cached archive object (of --cache-dir) and exit.")
@click.option("--list", "list_queries", is_flag=True, help="List the named queries and exit.")
@config_options
@aws_options
def sql(query: str | None, engine: str | None, since: str | None, start: str | None, end: str | None,
        output: str, bucket: str | None, cache_dir: Path | None, cache_max_mb: int, cache_max_days: int,
        memory_mb: int, clear_cache: bool, list_queries: bool, config_path: str | None, env: str, region: str | None,
        profile: str | None, endpoint_url: str | None) -> None:
    """Run SQL over the raw archive: relations readings, raw_records, quarantined, thresholds, query_window.

    QUERY is one SELECT (or WITH ... SELECT) or the name of a shipped query; a second statement is refused. The
    same query gives the same rows on Athena and DuckDB; progress, the data scanned and any malformed archive
    object skipped go to stderr, rows to stdout. DuckDB reads files in the cache only, within --memory-mb.

    \b
    Named queries:
    {queries}

    \b
    Examples:
      iotpipe sql "SELECT device_id, max(value) FROM readings WHERE sensor_type = 'temperature' GROUP BY 1" --env prod
      iotpipe sql hourly-stats --env prod --from 2026-03-01 --to 2026-03-08 --output csv > week.csv
      iotpipe sql silent-devices --env local --since 6h
      iotpipe sql anomalies-per-day --engine duckdb --env prod --since 7d
      iotpipe sql --clear-cache
    """
    if list_queries:
        for named in sql_lib.NAMED_QUERIES.values():
            click.echo(f"-- {named.name}: {named.description}\n{named.sql};\n")
        return
    if clear_cache:
        if query:
            raise click.UsageError("--clear-cache takes no query; run the query on its own")
        directory = cache_dir or sql_lib.default_cache_dir()
        cleared = sql_cache.clear_cache(directory)
        click.echo(f"removed {cleared.removed} cached archive object{'s' if cleared.removed != 1 else ''} "
                   f"({cleared.removed_bytes / 1e6:.2f} MB) from {directory}")
        return
    if not query:
        raise click.UsageError("give a query (SELECT ...) or a named query; iotpipe sql --list shows them")
    text = sql_lib.resolve_query(query)
    cfg = load_pipeline_config(config_path, env)
    window = sql_lib.window_from(since, start, end, now_ms())
    factory = client_factory(cfg, region, profile, endpoint_url)
    if engine is None:
        embedded = env == "local" or endpoint_url is not None or running_local(env) is not None
        engine = "duckdb" if embedded else "athena"
    progress(f"window {window.start.isoformat(timespec='seconds')}Z to {window.end.isoformat(timespec='seconds')}Z "
             f"on {engine}")
    if engine == "duckdb":
        sql_lib.require_duckdb()
        name = bucket or _stack_output(factory, cfg, contract.OUT_BUCKET_NAME)
        limits = sql_cache.CacheLimits(max_bytes=cache_max_mb * sql_cache.MB, max_age_days=cache_max_days)
        run = sql_lib.query_duckdb(factory.client("s3"), name, text, window, cfg.thresholds, cfg.storage.ttl_days,
                                   cache_dir or sql_lib.default_cache_dir(), limits, memory_mb,
                                   on_result=lambda result: _show(result, output))
        if run.cache.skipped:
            progress("cache not pruned: another iotpipe sql is using it (the next query prunes it)")
        elif run.cache.removed:
            progress(f"cache: removed {run.cache.removed} objects ({run.cache.removed_bytes / 1e6:.2f} MB, "
                     f"{run.cache.superseded} superseded by a newer ETag); it holds "
                     f"{run.cache.kept_bytes / 1e6:.2f} MB (bound {cache_max_mb} MB, {cache_max_days} days)")
    else:
        outputs = stack_names(factory, cfg)
        workgroup, database = (_required(outputs, key, cfg.env) for key in
                               (contract.OUT_ANALYTICS_WORKGROUP, contract.OUT_ANALYTICS_DATABASE))
        last: list[tuple[str, int]] = []

        def show(step: sql_lib.AthenaProgress) -> None:
            if not last or last[-1] != (step.state, step.bytes_scanned):
                progress(f"{step.query_id} {step.state} scanned {step.bytes_scanned / 1e6:.2f} MB")
                last.append((step.state, step.bytes_scanned))

        result = sql_lib.run_athena(factory.client("athena"), text, workgroup=workgroup, database=database,
                                    window=window, thresholds=cfg.thresholds, ttl_days=cfg.storage.ttl_days,
                                    on_progress=show)
        _show(result, output)


def _show(result: sql_lib.QueryResult, output: str) -> None:
    for skipped in result.skipped:
        progress(f"skipped malformed archive object {skipped.key} (not in the result, not cached): {skipped.reason}")
    click.echo(format_result(result, output))
    progress(_summary(result))


sql.help = (sql.help or "").replace("    {queries}", _QUERIES)


def _stack_output(factory: Any, cfg: Any, key: str) -> str:
    return _required(stack_names(factory, cfg), key, cfg.env)


def _required(outputs: dict[str, str], key: str, env: str) -> str:
    value = outputs.get(key)
    if not value:
        hint = (" (analytics.enabled is false, or the stack predates iotpipe sql)" if key.startswith("Analytics")
                else "")
        raise AwsError(f"the stack has no output {key}{hint}; redeploy with this version: iotpipe deploy --env {env}"
                       + ("; or use --engine duckdb" if key.startswith("Analytics") else ""))
    return value
