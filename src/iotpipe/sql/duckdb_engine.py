"""The DuckDB engine: the window's archive objects fetched through boto3 into the cache, parsed once into
Parquet, views for the relations, and a locked-down read-only query."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# The processor's rules a reading must pass (docs/contract.md section 3), mirrored where the quarantine cannot say
# which reading of a record it refused: the samples form holds one sensor type in several samples.
from iotpipe.contract import (
    MAX_READINGS_PER_BODY,
    MAX_READINGS_PER_MESSAGE,
    SENSOR_TYPE_PATTERN,
    UNIT_MAX_CHARS,
    VALUE_MAX_MAGNITUDE,
    VALUE_MIN_MAGNITUDE,
)
from iotpipe.errors import ParameterError
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
from iotpipe.sql.queries import (
    QueryResult,
    SkippedObject,
    SqlError,
    SqlUsageError,
)
from iotpipe.sql.relations import (
    Thresholds,
    _common_ctes,
    _literal,
    _reading_time,
    _repeat_rank,
    _timestamp,
    _unit_case,
)
from iotpipe.sql.window import (
    Window,
    archive_key_hour,
    window_days,
    window_hours,
)

# DuckDB's memory bound by default (iotpipe sql --memory-mb): beyond it, DuckDB spills to the cache's own folder.
DEFAULT_MEMORY_MB = 512
MIN_MEMORY_MB = 128
DOWNLOAD_CHUNK = 1024 * 1024
DUCKDB_MISSING = ("DuckDB is not installed; add it with: pip install 'iotpipe[sql]' (about 25 MB download, 70 MB "
                  "installed), or use --engine athena")


@dataclass(frozen=True)
class ArchiveObject:
    """One archive or quarantine object in S3."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class LocalArchive:
    """The window's archive objects as local files (cache paths keep the key's partitions and shard)."""

    raw: tuple[Path, ...]
    quarantine: tuple[Path, ...]
    bytes: int
    downloaded: int
    root: Path | None = None  # the cache folder: the only files a query may read (else the files' own folders)


def list_archive(s3: Any, bucket: str, window: Window) -> tuple[ArchiveObject, ...]:
    """The raw and quarantine objects whose hour partition overlaps ``window`` (one listing per kind and day)."""
    hours = set(window_hours(window))
    found = []
    paginator = s3.get_paginator("list_objects_v2")
    for kind in ("raw", "quarantine"):
        for day in window_days(window):
            prefix = f"{kind}/year={day:%Y}/month={day:%m}/day={day:%d}/"
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    parsed = archive_key_hour(item["Key"])
                    if parsed is not None and parsed[1] in hours:
                        found.append(ArchiveObject(item["Key"], item["ETag"].strip('"'), int(item["Size"])))
    return tuple(found)


def cache_path(cache_dir: Path, bucket: str, obj: ArchiveObject) -> Path:
    """Where ``obj`` is cached: its key with the ETag before the extension (a new ETag is a new file)."""
    stem = obj.key[: -len(".jsonl.gz")] if obj.key.endswith(".jsonl.gz") else obj.key
    etag = re.sub(r"[^A-Za-z0-9-]", "_", obj.etag)
    return cache_dir / bucket / f"{stem}.{etag}.jsonl.gz"


def fetch_archive(s3: Any, bucket: str, window: Window, cache_dir: Path, workers: int = 8) -> LocalArchive:
    """The window's archive objects, downloaded into ``cache_dir`` unless a file of the same ETag is there."""
    objects = list_archive(s3, bucket, window)
    paths = [cache_path(cache_dir, bucket, obj) for obj in objects]
    missing = [(obj, path) for obj, path in zip(objects, paths, strict=True) if not path.exists()]

    def download(item: tuple[ArchiveObject, Path]) -> None:
        obj, path = item
        body = s3.get_object(Bucket=bucket, Key=obj.key, IfMatch=obj.etag)["Body"]
        private_folder(path.parent)
        # A name of its own (another query may fetch the same object now), renamed into place when complete:
        # never a half-written cache file under the final name. Streamed: an object is never whole in memory.
        handle, partial = tempfile.mkstemp(prefix=f"{path.name}.part-", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                    out.write(chunk)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        finally:
            body.close()
        os.replace(partial, path)

    if missing:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
            list(pool.map(download, missing))
    mark_used(p for p in paths if p not in {path for _, path in missing})  # last use: what pruning evicts by
    from iotpipe import contract

    raw_prefix, quarantine_prefix = contract.ARCHIVE_PREFIXES
    raw = tuple(p for o, p in zip(objects, paths, strict=True) if o.key.startswith(raw_prefix))
    quarantine = tuple(p for o, p in zip(objects, paths, strict=True) if o.key.startswith(quarantine_prefix))
    return LocalArchive(raw, quarantine, sum(o.size for o in objects), len(missing), root=cache_dir)


def require_duckdb() -> Any:
    """The duckdb module, or SqlError saying how to install it."""
    try:
        import duckdb
    except ImportError:
        raise SqlError(DUCKDB_MISSING) from None
    return duckdb


_RAW_JSON = ("{sequenceNumber: 'VARCHAR', partitionKey: 'VARCHAR', arrivedAt: 'BIGINT', data: 'VARCHAR', "
             "dataBase64: 'VARCHAR'}")
_QUARANTINE_JSON = ("{sequenceNumber: 'VARCHAR', partitionKey: 'VARCHAR', reason: 'VARCHAR', sensorType: 'VARCHAR', "
                    "rejected: 'STRUCT(reason VARCHAR, sensorType VARCHAR)[]', data: 'VARCHAR', "
                    "dataBase64: 'VARCHAR'}")


def _json_source(paths: Iterable[Path], columns: str, empty: str) -> str:
    files = [_literal(str(p)) for p in paths]
    if not files:
        return f"(SELECT {empty}, CAST(NULL AS VARCHAR) AS filename WHERE 1 = 0)"
    return (f"read_json([{', '.join(files)}], format = 'newline_delimited', compression = 'gzip', "
            f"columns = {columns}, filename = true)")


def duckdb_relations(archive: LocalArchive, window: Window, thresholds: Thresholds,
                     ttl_days: int) -> list[str]:
    """CREATE VIEW statements for the relations over the parsed (Parquet) form of the local archive files
    (:func:`convert_archive` makes it) and the quarantine objects."""
    quarantine_empty = ("CAST(NULL AS VARCHAR) AS sequenceNumber, CAST(NULL AS VARCHAR) AS partitionKey, "
                        "CAST(NULL AS VARCHAR) AS reason, CAST(NULL AS VARCHAR) AS sensorType, "
                        "CAST(NULL AS STRUCT(reason VARCHAR, sensorType VARCHAR)[]) AS rejected, "
                        "CAST(NULL AS VARCHAR) AS data, CAST(NULL AS VARCHAR) AS dataBase64")
    hour_path = "regexp_extract(filename, 'year=[0-9]{4}/month=[0-9]{2}/day=[0-9]{2}/hour=[0-9]{2}/', 0)"
    views = [f"CREATE OR REPLACE TEMP VIEW {name.split('(')[0]}{_columns(name)} AS {body}"
             for name, body in _common_ctes(window, thresholds)]
    in_window = f"arrived_at >= {_timestamp(window.start)} AND arrived_at < {_timestamp(window.end)}"
    records = _parquet_source([f for p in archive.raw for f in parsed_files(p, RECORDS_KIND)], _RECORDS_EMPTY)
    entries = _parquet_source([f for p in archive.raw for f in parsed_files(p, ENTRIES_KIND)], _ENTRIES_EMPTY)
    return [
        "SET TimeZone = 'UTC'",
        *views,
        "CREATE OR REPLACE TEMP VIEW raw_records AS "
        "SELECT DISTINCT ON (shard_id, sequence_number) shard_id, sequence_number, partition_key, arrived_at, data, "
        f"data_base64 FROM {records} WHERE {in_window}",
        "CREATE OR REPLACE TEMP VIEW quarantine_lines AS "
        "SELECT DISTINCT ON (shard_id, sequence_number) * FROM ("
        f"SELECT {_SHARD_FROM_PATH} AS shard_id, sequenceNumber AS sequence_number, partitionKey AS partition_key, "
        "reason, sensorType AS sensor_type, [r.sensorType FOR r IN rejected] AS rejected_sensor_types, "
        "[r.sensorType FOR r IN rejected IF r.reason = 'unknown sensorType'] AS unknown_sensor_types, data, "
        f"dataBase64 AS data_base64, strptime({hour_path}, 'year=%Y/month=%m/day=%d/hour=%H/') AS archive_hour "
        f"FROM {_json_source(archive.quarantine, _QUARANTINE_JSON, quarantine_empty)})",
        "CREATE OR REPLACE TEMP VIEW quarantined AS "
        "SELECT shard_id, sequence_number, partition_key, reason, sensor_type, rejected_sensor_types, data, "
        "data_base64, archive_hour FROM quarantine_lines",
        # Which readings a quarantine line excludes: every one of a record refused whole (its line has no list of
        # rejected readings); a rejected reading's sensor type names it in the single and multi forms (one reading
        # per type) but not in the samples form (a type in several samples), where only `unknown sensorType` (a
        # rule of the type, so of every sample) excludes by type: the other rules are mirrored in the parsing.
        "CREATE OR REPLACE TEMP VIEW quarantine_keys AS "
        "SELECT shard_id, sequence_number, CAST(NULL AS VARCHAR) AS sensor_type, true AS every_sample "
        "FROM quarantine_lines WHERE rejected_sensor_types IS NULL "
        "UNION ALL SELECT * FROM ("
        "SELECT shard_id, sequence_number, unnest(rejected_sensor_types) AS sensor_type, false AS every_sample "
        "FROM quarantine_lines UNION ALL "
        "SELECT shard_id, sequence_number, unnest(unknown_sensor_types) AS sensor_type, true AS every_sample "
        "FROM quarantine_lines) WHERE sensor_type IS NOT NULL",
        # A record archived twice has the same entries twice: one per shard, sequence number and position (the
        # sample, and the sensor type within it; several samples of one record share its sequence number).
        "CREATE OR REPLACE TEMP VIEW typed_readings AS "
        "SELECT DISTINCT ON (shard_id, sequence_number, sample_index, sensor_type) device_id, sensor_type, value, "
        f"COALESCE(unit_given, {_unit_case('sensor_type', thresholds)}) AS unit, device_time, received_at, "
        f"arrived_at, shard_id, sequence_number, sample_index FROM {entries} WHERE {in_window}",
        "CREATE OR REPLACE TEMP VIEW readings AS "
        "SELECT device_id, sensor_type, value, unit, reading_time, device_time, received_at, arrived_at, shard_id, "
        "sequence_number FROM ("
        f"SELECT device_id, sensor_type, value, unit, {_reading_time(ttl_days)} AS reading_time, device_time, "
        f"received_at, arrived_at, shard_id, sequence_number, {_repeat_rank(ttl_days, '')} AS repeat_rank "
        "FROM typed_readings t "
        "ANTI JOIN (SELECT shard_id, sequence_number FROM quarantine_keys WHERE sensor_type IS NULL) w "
        "USING (shard_id, sequence_number) "
        "ANTI JOIN (SELECT * FROM quarantine_keys WHERE sensor_type IS NOT NULL) p "
        "ON p.shard_id = t.shard_id AND p.sequence_number = t.sequence_number AND p.sensor_type = t.sensor_type "
        "AND (t.sample_index = 0 OR p.every_sample) "
        "WHERE device_id IS NOT NULL AND sensor_type IS NOT NULL AND value IS NOT NULL) WHERE repeat_rank = 1",
    ]


_SHARD_FROM_PATH = "regexp_extract(filename, 'hour=[0-9]{2}/([^/]+)/', 1)"
_RECORDS_EMPTY = ("CAST(NULL AS VARCHAR) AS shard_id, CAST(NULL AS VARCHAR) AS sequence_number, "
                  "CAST(NULL AS VARCHAR) AS partition_key, CAST(NULL AS TIMESTAMP) AS arrived_at, "
                  "CAST(NULL AS VARCHAR) AS data, CAST(NULL AS VARCHAR) AS data_base64")
_ENTRIES_EMPTY = ("CAST(NULL AS VARCHAR) AS shard_id, CAST(NULL AS VARCHAR) AS sequence_number, "
                  "CAST(NULL AS TIMESTAMP) AS arrived_at, CAST(NULL AS VARCHAR) AS device_id, "
                  "CAST(NULL AS BIGINT) AS sample_index, "
                  "CAST(NULL AS VARCHAR) AS sensor_type, CAST(NULL AS DOUBLE) AS value, "
                  "CAST(NULL AS VARCHAR) AS unit_given, CAST(NULL AS TIMESTAMP) AS device_time, "
                  "CAST(NULL AS TIMESTAMP) AS received_at")


def _parquet_source(files: Sequence[Path], empty: str) -> str:
    if not files:
        return f"(SELECT {empty} WHERE 1 = 0)"
    return f"read_parquet([{', '.join(_literal(str(f)) for f in files)}])"


def parsed_dir(path: Path, kind: str) -> Path:
    """Where the parsed form (``records`` or ``entries``) of a cached archive object is kept, beside it."""
    return path.with_name(f"{path.name}.{kind}")


def parsed_files(path: Path, kind: str) -> list[Path]:
    """The Parquet files of one cached object's parsed form (none for an object without readings)."""
    return sorted(parsed_dir(path, kind).glob("*.parquet"))


def _conversion_statements(paths: Sequence[Path], staging: Path) -> list[str]:
    """Parse the archive lines of ``paths`` once (the line, then the payload inside it) into Parquet per object:
    ``records`` (raw_records' columns) and ``entries`` (one row per reading that passes the processor's
    structural rules, before dedup and quarantine; ``sample_index`` is the reading's sample, 0 outside the samples
    form)."""
    raw_empty = ("CAST(NULL AS VARCHAR) AS sequenceNumber, CAST(NULL AS VARCHAR) AS partitionKey, "
                 "CAST(NULL AS BIGINT) AS arrivedAt, CAST(NULL AS VARCHAR) AS data, "
                 "CAST(NULL AS VARCHAR) AS dataBase64")
    # f: deviceId, receivedAt, samples, then the payload's own body fields (b's order); each a JSON value.
    fields = ("['$.deviceId', '$.receivedAt', '$.samples', '$.sensorType', '$.value', '$.timestamp', '$.unit', "
              "'$.readings']")
    timestamp, received = "json_extract_string(b[3], '$')", "json_extract_string(f[2], '$')"
    return [
        "CREATE OR REPLACE TEMP TABLE _lines AS "
        f"SELECT md5(filename) AS object, {_SHARD_FROM_PATH} AS shard_id, sequenceNumber AS sequence_number, "
        "partitionKey AS partition_key, make_timestamp(arrivedAt * 1000) AS arrived_at, data, "
        f"dataBase64 AS data_base64 FROM {_json_source(paths, _RAW_JSON, raw_empty)}",
        f"COPY (SELECT * FROM _lines) TO {_literal(str(staging / RECORDS_KIND))} "
        "(FORMAT parquet, PARTITION_BY (object), OVERWRITE_OR_IGNORE true)",
        # One parse of each payload (a UNION of the forms would parse every payload twice); a samples-form
        # payload's samples are parsed once more, each for its own body fields.
        "COPY (SELECT object, shard_id, sequence_number, arrived_at, device_id, sample_index, e.key AS sensor_type, "
        "try_cast(e.value AS DOUBLE) AS value, unit_given, device_time, received_at FROM ("
        "SELECT *, unnest(CASE WHEN len(pairs) <= "
        f"{MAX_READINGS_PER_BODY} THEN pairs END) AS e FROM ("
        "SELECT object, shard_id, sequence_number, arrived_at, device_id, received_at, sample_index, "
        "CASE WHEN b[5] IS NULL THEN NULLIF(json_extract_string(b[4], '$'), '') END AS unit_given, "
        f"CASE WHEN try_cast({timestamp} AS DOUBLE) IS NOT NULL THEN {_duckdb_epoch_ms(timestamp)} "
        f"ELSE CAST(timezone('UTC', try_cast({timestamp} AS TIMESTAMPTZ)) AS TIMESTAMP) END AS device_time, "
        # The body checks of section 3 (a multi body's readings a non-empty object of at most 100 members; a
        # single body's sensorType a string and its unit absent, null or a short string): a sample failing them
        # is quarantined alone, so the other samples of its record stay.
        f"CASE WHEN b[5] IS NULL THEN CASE WHEN json_type(b[1]) = 'VARCHAR' AND {_duckdb_unit_ok('b[4]')} "
        "THEN [{'key': json_extract_string(b[1], '$'), 'value': b[2]}] END "
        "WHEN json_type(b[5]) = 'OBJECT' THEN map_entries(try_cast(b[5] AS MAP(VARCHAR, JSON))) END AS pairs FROM ("
        "SELECT *, unnest(bodies) AS b, generate_subscripts(bodies, 1) - CASE WHEN f[3] IS NULL THEN 1 ELSE 0 END "
        "AS sample_index FROM ("
        f"SELECT object, shard_id, sequence_number, arrived_at, f, json_extract_string(f[1], '$') AS device_id, "
        f"COALESCE({_duckdb_epoch_ms(received)}, arrived_at) AS received_at, "
        # More samples than readings a record may hold (docs/contract.md): the processor refuses the record, and
        # expanding them would hold every sample of it in memory at once.
        "CASE WHEN f[3] IS NULL THEN [f[4:8]] "
        f"WHEN json_array_length(f[3]) <= {MAX_READINGS_PER_MESSAGE} "
        "THEN [json_extract(s, ['$.sensorType', '$.value', '$.timestamp', '$.unit', '$.readings']) "
        "FOR s IN json_extract(f[3], '$[*]')] END AS bodies FROM ("
        f"SELECT object, shard_id, sequence_number, arrived_at, json_extract(data, {fields}) AS f "
        "FROM _lines WHERE data IS NOT NULL AND json_valid(data)) WHERE f IS NOT NULL)))) "
        f"WHERE {_duckdb_reading_ok('e.key', 'e.value')}) "
        f"TO {_literal(str(staging / ENTRIES_KIND))} (FORMAT parquet, PARTITION_BY (object), OVERWRITE_OR_IGNORE true)",
        "DROP TABLE _lines",
    ]


def _duckdb_unit_ok(unit: str) -> str:
    """A single body's ``unit`` (a JSON value) is absent, null, or a string of at most 32 characters."""
    return (f"({unit} IS NULL OR json_type({unit}) = 'NULL' OR (json_type({unit}) = 'VARCHAR' "
            f"AND length(json_extract_string({unit}, '$')) <= {UNIT_MAX_CHARS}))")


def _duckdb_reading_ok(sensor_type: str, value: str) -> str:
    """The reading checks of section 3 that depend on the reading alone: the sensor type's pattern, a value that
    is a JSON number in DynamoDB's range (``unknown sensorType`` depends on the config: the quarantine tells it)."""
    number = f"try_cast({value} AS DOUBLE)"
    return (f"regexp_full_match({sensor_type}, {_literal(SENSOR_TYPE_PATTERN.pattern)}) "
            f"AND json_type({value}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND ({number} = 0 "
            f"OR (abs({number}) >= {VALUE_MIN_MAGNITUDE!r} AND abs({number}) < {VALUE_MAX_MAGNITUDE!r}))")


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_archive` did: how many objects it parsed, and which it skipped as malformed."""

    parsed: int
    skipped: tuple[SkippedObject, ...] = ()


def archive_key(path: Path, root: Path | None) -> str:
    """``s3://bucket/key`` of a cached object (its cache path less the ETag), or the path outside a cache."""
    if root is None or root not in path.parents:
        return str(path)
    bucket, _, rest = path.relative_to(root).as_posix().partition("/")
    stem = rest.removesuffix(".jsonl.gz").rpartition(".")[0] or rest
    return f"s3://{bucket}/{stem}.jsonl.gz"


def _skip(path: Path, root: Path | None, exc: Exception) -> SkippedObject:
    """The object at ``path`` is malformed: out of the cache (a rerun fetches and names it again), and why."""
    path.unlink(missing_ok=True)
    reason = " ".join(str(exc).replace(str(path), "the object").split())
    return SkippedObject(archive_key(path, root), reason[:200])


def _convert_chunk(connection: Any, chunk: Sequence[Path]) -> None:
    import hashlib

    with tempfile.TemporaryDirectory(prefix=".iotpipe-parse-", dir=chunk[0].parent) as staging:
        for statement in _conversion_statements(chunk, Path(staging)):
            connection.execute(statement)
        for path in chunk:
            object_id = hashlib.md5(str(path).encode(), usedforsecurity=False).hexdigest()
            for kind in (RECORDS_KIND, ENTRIES_KIND):  # entries last: its directory marks a finished conversion
                source, target = Path(staging) / kind / f"object={object_id}", parsed_dir(path, kind)
                # Another query may have converted the same object meanwhile (same ETag, same content) and be
                # reading it: keep its folder rather than replace it under that query.
                try:
                    if source.is_dir():
                        make_tree_private(source)
                        source.rename(target)
                    else:
                        target.mkdir(mode=PRIVATE_DIR)
                except OSError:
                    if not target.is_dir():
                        raise


def convert_archive(connection: Any, archive: LocalArchive, chunk_objects: int = 500) -> Conversion:
    """Give every raw object of ``archive`` its parsed form beside it in the cache (the ETag is in the name, so a
    changed object is a new file), ``chunk_objects`` objects per DuckDB statement. Files move into place complete.
    A chunk DuckDB cannot read is parsed again object by object: a malformed object is skipped and removed from
    the cache, the others are parsed."""
    duckdb = require_duckdb()
    missing = [p for p in archive.raw if not parsed_dir(p, ENTRIES_KIND).is_dir()]
    skipped: list[SkippedObject] = []
    for start in range(0, len(missing), chunk_objects):  # bounded statement size and memory per conversion
        chunk = missing[start:start + chunk_objects]
        try:
            _convert_chunk(connection, chunk)
            continue
        except duckdb.Error as exc:
            if len(chunk) == 1:
                skipped.append(_skip(chunk[0], archive.root, exc))
                continue
        for path in chunk:
            try:
                _convert_chunk(connection, [path])
            except duckdb.Error as exc:
                skipped.append(_skip(path, archive.root, exc))
    return Conversion(len(missing) - len(skipped), tuple(skipped))


def check_quarantine(connection: Any, archive: LocalArchive) -> tuple[SkippedObject, ...]:
    """The quarantine objects of ``archive`` DuckDB cannot read (each read in full once, all together first):
    skipped and removed from the cache, like a malformed raw object."""
    duckdb = require_duckdb()
    columns = ", ".join(f"count({c})" for c in ("sequenceNumber", "partitionKey", "reason", "sensorType",
                                                 "rejected", "data", "dataBase64"))

    def read(paths: Sequence[Path]) -> None:
        connection.execute(f"SELECT {columns} FROM {_json_source(paths, _QUARANTINE_JSON, '')}").fetchall()

    if not archive.quarantine:
        return ()
    try:
        read(archive.quarantine)
        return ()
    except duckdb.Error:
        pass
    skipped = []
    for path in archive.quarantine:
        try:
            read([path])
        except duckdb.Error as exc:
            skipped.append(_skip(path, archive.root, exc))
    return tuple(skipped)


def _duckdb_epoch_ms(text: str) -> str:
    """Epoch ms text -> TIMESTAMP, NULL when it is not a number or beyond year 5000 (no try() before DuckDB 1.3)."""
    number = f"try_cast({text} AS DOUBLE)"
    return f"CASE WHEN abs({number}) < 1e14 THEN make_timestamp(CAST({number} * 1000 AS BIGINT)) END"


def _columns(name: str) -> str:
    return name[name.index("("):] if "(" in name else ""


def prepare_duckdb(archive: LocalArchive, window: Window, thresholds: Thresholds, ttl_days: int,
                   memory_mb: int = DEFAULT_MEMORY_MB,
                   spill_dir: Path | None = None) -> tuple[Any, tuple[SkippedObject, ...]]:
    """An in-memory DuckDB connection with the relations defined over the readable objects of ``archive``, and the
    objects it skipped as malformed. DuckDB keeps to ``memory_mb`` (its buffers: parsed lines, joins, sorts),
    spilling to ``spill_dir`` beyond it, on one thread per 256 MB (each thread holds buffers of its own)."""
    duckdb = require_duckdb()
    if memory_mb < MIN_MEMORY_MB:
        raise ParameterError("memory_mb", memory_mb, f"is too little for DuckDB; give at least {MIN_MEMORY_MB}")
    settings = {"memory_limit": f"{memory_mb}MB", "threads": max(1, min(os.cpu_count() or 1, memory_mb // 256))}
    connection = duckdb.connect(":memory:", config={
        **settings, **({"temp_directory": str(spill_dir)} if spill_dir is not None else {})})
    connection.execute("SET TimeZone = 'UTC'")
    skipped = (*convert_archive(connection, archive).skipped, *check_quarantine(connection, archive))
    gone = {s.key for s in skipped}
    readable = replace(archive, raw=tuple(p for p in archive.raw if archive_key(p, archive.root) not in gone),
                       quarantine=tuple(p for p in archive.quarantine if archive_key(p, archive.root) not in gone))
    for statement in duckdb_relations(readable, window, thresholds, ttl_days):
        connection.execute(statement)
    return connection, skipped


def duckdb_connection(archive: LocalArchive, window: Window, thresholds: Thresholds,
                      ttl_days: int) -> Any:
    """An in-memory DuckDB connection with the relations defined over ``archive`` (malformed objects skipped)."""
    return prepare_duckdb(archive, window, thresholds, ttl_days)[0]


def _lock_down(connection: Any, archive: LocalArchive) -> None:
    """From here on the connection reads files under the archive's cache only, writes none, loads no extension,
    and its settings cannot be changed back (the user's query runs after this)."""
    folders = [archive.root] if archive.root is not None else sorted({p.parent for p in (*archive.raw,
                                                                                         *archive.quarantine)})
    # Both spellings: the views name files by the cache path as given, which may run through a symbolic link.
    spellings = sorted({str(form) + os.sep for folder in folders for form in (folder.absolute(), folder.resolve())})
    allowed = ", ".join(_literal(spelling) for spelling in spellings)
    connection.execute(f"SET allowed_directories = [{allowed}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET autoinstall_known_extensions = false")
    connection.execute("SET autoload_known_extensions = false")
    connection.execute("SET lock_configuration = true")


def read_statement(connection: Any, sql: str) -> str:
    """``sql`` when DuckDB parses it as exactly one SELECT (WITH, VALUES and FROM-first included), else
    SqlUsageError: DuckDB's own parser decides, so no statement hides behind the lexical check."""
    duckdb = require_duckdb()
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlUsageError(f"DuckDB cannot parse the query: {' '.join(str(exc).split())[:400]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(str(s.type).rsplit(".", 1)[-1] for s in statements) or "nothing"
        raise SqlUsageError(f"iotpipe sql runs exactly one read query (SELECT); DuckDB read: {kinds}")
    return sql


# DuckDB's errors that are the query's fault (exit 2), not the archive's or the machine's.
_QUERY_FAULTS = ("ParserException", "BinderException", "CatalogException", "SyntaxException")


def run_duckdb(sql: str, archive: LocalArchive, window: Window, thresholds: Thresholds,
               ttl_days: int, memory_mb: int = DEFAULT_MEMORY_MB) -> QueryResult:
    """Run ``sql`` over the relations on DuckDB; a SQL error is SqlError with DuckDB's message (SqlUsageError when
    the query is not one SELECT, or names a column or relation that does not exist)."""
    duckdb = require_duckdb()
    started = time.monotonic()
    spill_root = archive.root if archive.root is not None and archive.root.is_dir() else None
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}spill-", dir=spill_root) as spill:
        connection, skipped = prepare_duckdb(archive, window, thresholds, ttl_days, memory_mb, Path(spill))
        try:
            _lock_down(connection, archive)
            cursor = connection.execute(read_statement(connection, sql))
            columns = tuple(d[0] for d in cursor.description or ())
            rows = tuple(tuple(row) for row in cursor.fetchall())
        except duckdb.Error as exc:
            message = " ".join(str(exc).split())
            error = SqlUsageError if type(exc).__name__ in _QUERY_FAULTS else SqlError
            raise error(f"DuckDB refused the query: {message[:400]}") from None
        finally:
            connection.close()
    return QueryResult("duckdb", columns, rows, archive.bytes, time.monotonic() - started,
                       objects=len(archive.raw) + len(archive.quarantine), downloaded=archive.downloaded,
                       skipped=skipped)


@dataclass(frozen=True)
class DuckdbRun:
    """A DuckDB query's result and what pruning the cache afterwards did."""

    result: QueryResult
    cache: PruneReport


def query_duckdb(s3: Any, bucket: str, sql: str, window: Window, thresholds: Thresholds,
                 ttl_days: int, cache_dir: Path, limits: CacheLimits | None = None, memory_mb: int = DEFAULT_MEMORY_MB,
                 on_result: Callable[[QueryResult], None] = lambda _: None) -> DuckdbRun:
    """Fetch the window's archive objects into ``cache_dir``, run ``sql`` over them, hand the result to
    ``on_result`` (so rows can be shown before the cache work), then prune the cache to ``limits`` (superseded ETag
    versions, unused too long, least recently used beyond the size), keeping this window's objects. The cache is
    held (shared) from listing to the last row, so a concurrent prune or clear never removes a file this query
    reads, and this query's prune never removes one another query reads."""
    local: LocalArchive | None = None
    report = PruneReport()
    try:
        with cache_in_use(cache_dir):
            local = fetch_archive(s3, bucket, window, cache_dir)
            result = run_duckdb(sql, local, window, thresholds, ttl_days, memory_mb)
        on_result(result)
    finally:
        if local is not None:  # also after a failed query: what it fetched has superseded older versions
            report = prune_cache(cache_dir, limits or CacheLimits(), keep=(*local.raw, *local.quarantine),
                                 added=local.downloaded > 0)
    return DuckdbRun(result, report)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/iotpipe/archive`` (default ``~/.cache/iotpipe/archive``)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iotpipe" / "archive"
