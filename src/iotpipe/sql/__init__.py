"""SQL over the raw archive: the same relations on Athena (cloud) and DuckDB (laptop, ``iotpipe local``, moto).

Relations (same names and columns on both engines):

- ``raw_records``: one row per archived Kinesis record, deduplicated by shard and sequence number.
- ``readings``: one row per reading (single, multi-reading and samples payloads expanded), quarantined readings
  excluded.
- ``quarantined``: one row per record the processor refused, with its reason.
- ``thresholds``: the configured sensor thresholds; ``query_window``: the requested time window.

On Athena they are common table expressions over the Glue tables, with partition predicates for the window
(partition projection prunes to the window's hours). On DuckDB they are views over the archive objects of the
window, fetched through boto3 and cached locally by ETag.

One module per seam: :mod:`~iotpipe.sql.window` (the time window), :mod:`~iotpipe.sql.queries` (named queries,
the read-only check, results), :mod:`~iotpipe.sql.relations` (the SQL both engines share),
:mod:`~iotpipe.sql.athena`, :mod:`~iotpipe.sql.duckdb_engine` and :mod:`~iotpipe.sql.cache` (the local archive
cache). This package re-exports what ``iotpipe.sql`` exported as one module.
"""

from __future__ import annotations

from iotpipe.config import (
    Threshold,
)
from iotpipe.contract import (
    MAX_READINGS_PER_BODY,
    MAX_READINGS_PER_MESSAGE,
    SENSOR_TYPE_PATTERN,
    UNIT_MAX_CHARS,
    VALUE_MAX_MAGNITUDE,
    VALUE_MIN_MAGNITUDE,
)
from iotpipe.sql.athena import (
    MAX_DAY_PREDICATES,
    AthenaProgress,
    athena_failure,
    athena_relations,
    partition_predicate,
    run_athena,
)

# Names the single module imported and callers read from it (from iotpipe.sql import CacheLimits, ...).
from iotpipe.sql.cache import (
    ENTRIES_KIND,
    PRIVATE_DIR,
    RECORDS_KIND,
    STAGING_PREFIX,
    CacheLimits,
    PruneReport,
    cache_in_use,
    make_tree_private,
    mark_used,
    private_folder,
    prune_cache,
)
from iotpipe.sql.duckdb_engine import (
    _QUARANTINE_JSON,
    _RAW_JSON,
    DEFAULT_MEMORY_MB,
    DOWNLOAD_CHUNK,
    DUCKDB_MISSING,
    MIN_MEMORY_MB,
    ArchiveObject,
    Conversion,
    DuckdbRun,
    LocalArchive,
    archive_key,
    cache_path,
    check_quarantine,
    convert_archive,
    default_cache_dir,
    duckdb_connection,
    duckdb_relations,
    fetch_archive,
    list_archive,
    parsed_dir,
    parsed_files,
    prepare_duckdb,
    query_duckdb,
    read_statement,
    require_duckdb,
    run_duckdb,
)
from iotpipe.sql.queries import (
    MIN_BILLED_BYTES,
    NAMED_QUERIES,
    PRICE_PER_TB_USD,
    READ_STATEMENTS,
    TB,
    NamedQuery,
    QueryResult,
    SkippedObject,
    SqlError,
    SqlUsageError,
    athena_cost,
    resolve_query,
    split_statements,
    with_relations,
)
from iotpipe.sql.relations import (
    RELATION_COLUMNS,
    Thresholds,
)
from iotpipe.sql.window import (
    HOUR_MS,
    Window,
    archive_key_hour,
    parse_time,
    window_days,
    window_from,
    window_hours,
)

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DOWNLOAD_CHUNK",
    "DUCKDB_MISSING",
    "ENTRIES_KIND",
    "HOUR_MS",
    "MAX_DAY_PREDICATES",
    "MAX_READINGS_PER_BODY",
    "MAX_READINGS_PER_MESSAGE",
    "MIN_BILLED_BYTES",
    "MIN_MEMORY_MB",
    "NAMED_QUERIES",
    "PRICE_PER_TB_USD",
    "PRIVATE_DIR",
    "READ_STATEMENTS",
    "RECORDS_KIND",
    "RELATION_COLUMNS",
    "SENSOR_TYPE_PATTERN",
    "STAGING_PREFIX",
    "TB",
    "UNIT_MAX_CHARS",
    "VALUE_MAX_MAGNITUDE",
    "VALUE_MIN_MAGNITUDE",
    "_QUARANTINE_JSON",
    "_RAW_JSON",
    "ArchiveObject",
    "AthenaProgress",
    "CacheLimits",
    "Conversion",
    "DuckdbRun",
    "LocalArchive",
    "NamedQuery",
    "PruneReport",
    "QueryResult",
    "SkippedObject",
    "SqlError",
    "SqlUsageError",
    "Threshold",
    "Thresholds",
    "Window",
    "archive_key",
    "archive_key_hour",
    "athena_cost",
    "athena_failure",
    "athena_relations",
    "cache_in_use",
    "cache_path",
    "check_quarantine",
    "convert_archive",
    "default_cache_dir",
    "duckdb_connection",
    "duckdb_relations",
    "fetch_archive",
    "list_archive",
    "make_tree_private",
    "mark_used",
    "parse_time",
    "parsed_dir",
    "parsed_files",
    "partition_predicate",
    "prepare_duckdb",
    "private_folder",
    "prune_cache",
    "query_duckdb",
    "read_statement",
    "require_duckdb",
    "resolve_query",
    "run_athena",
    "run_duckdb",
    "split_statements",
    "window_days",
    "window_from",
    "window_hours",
    "with_relations",
]
