"""What the console's views show, as JSON-ready dicts, read through iotpipe's library (the CLI's own functions).

:class:`ConsoleData` holds an env's config and a client source; each view is one method. Nothing here writes to
the pipeline: the console is read-only. Credentials stay in the clients: no method returns them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iotpipe import naming
from iotpipe import sql as sql_lib
from iotpipe.aws import aws_call
from iotpipe.config import PipelineConfig
from iotpipe.console.downsample import lttb
from iotpipe.devices import validate_thing_name
from iotpipe.errors import AwsError, IotpipeError, ParameterError
from iotpipe.local.emulator.clients import raw_dynamodb_reads
from iotpipe.query import fleet as fleet_lib
from iotpipe.query.dynamodb import DEFAULT_ANOMALY_INDEX, Reading, query_anomalies
from iotpipe.query.logs import fetch_logs
from iotpipe.query.metric_data import fetch_metrics
from iotpipe.query.outputs import ClientSource, stack_names
from iotpipe.query.timespec import iso_ms, now_ms

# The ranges a device chart offers, in seconds (15 minutes to 90 days).
RANGES: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 21_600, "24h": 86_400, "7d": 604_800, "30d": 2_592_000,
                          "90d": 7_776_000}
# The most points one chart line is sent (LTTB keeps the shape; anomalies are sent on their own, all of them).
MAX_POINTS = 2000
FLEET_TTL_S = 5.0
FLEET_STALE_OK_S = 120.0
# The charts of one device page share one read of its partition: a read this young (or running) is reused.
SHARED_READ_S = 2.0
SENSOR_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# How long a query of the SQL box may run on Athena (polls, one a second) before the console stops it: a page
# left open must not hold a billed query for the day `iotpipe sql` allows.
SQL_MAX_POLLS = 600
# A chart's archived part (past the table's TTL) is reused this long, or one of its buckets if longer: the page
# reads its charts again every few seconds while its device sends, and on Athena each read is a billed query of
# data that no longer changes.
ARCHIVE_REUSE_S = 300.0


class CachedClients:
    """One boto3 client per service, made once (boto3 clients are thread-safe; making one costs ~50 ms). The
    DynamoDB client is the console's own: its Query and Scan answers are taken as parsed JSON
    (:func:`~iotpipe.local.emulator.clients.raw_dynamodb_reads`)."""

    def __init__(self, source: ClientSource) -> None:
        self._source = source
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        """The client for ``service``."""
        with self._lock:
            if service not in self._clients:
                made = self._source.client(service)
                self._clients[service] = raw_dynamodb_reads(made) if service == "dynamodb" else made
            return self._clients[service]


@dataclass(frozen=True)
class Names:
    """The stack's resources the views read (from its outputs)."""

    table: str
    index: str
    bucket: str
    log_group: str
    queue_url: str
    function_name: str
    environment: str
    workgroup: str
    database: str


def reading_dict(reading: Reading) -> dict[str, Any]:
    """A reading as the page gets it."""
    return reading.as_dict()


class ConsoleData:
    """The console's views of one env; ``local`` says the env runs on ``iotpipe local`` (DuckDB for SQL, devices
    found in the table as well as the registered things)."""

    def __init__(self, cfg: PipelineConfig, clients: ClientSource, *, local: bool,
                 cache_dir: Path | None = None, clock: Callable[[], int] = now_ms, names: Names | None = None,
                 max_points: int = MAX_POINTS, sql_max_polls: int = SQL_MAX_POLLS) -> None:
        self.cfg = cfg
        self.sql_max_polls = sql_max_polls
        self.clients = CachedClients(clients)
        self.local = local
        self.cache_dir = cache_dir or sql_lib.default_cache_dir()
        self.clock = clock
        self.max_points = max_points
        self._names = names  # None: read from the stack's outputs on first use
        self._fleet: tuple[float, dict[str, Any]] | None = None
        self._fleet_lock = threading.Lock()
        self._fleet_seconds = 0.0  # how long the last read of the fleet took
        self._reads: dict[tuple[str, str], tuple[float, Future[Any]]] = {}
        self._reads_lock = threading.Lock()
        self._archived: dict[tuple[str, str, str], tuple[float, tuple[list[float], list[float], str]]] = {}
        self._archive_lock = threading.Lock()  # one archive query at a time (each is billed on Athena)

    # -- resources -------------------------------------------------------------------------------------------

    def names(self) -> Names:
        """The stack's resource names (read once)."""
        if self._names is None:
            out = stack_names(self.clients, self.cfg)
            table = out.get(naming.OUT_TABLE_NAME)
            if not table:
                raise AwsError(f"stack {self.cfg.resolved_stack_name} has no output {naming.OUT_TABLE_NAME}; "
                               f"deploy it first: iotpipe deploy --env {self.cfg.env}")
            self._names = Names(table=table, index=out.get(naming.OUT_ANOMALY_INDEX) or DEFAULT_ANOMALY_INDEX,
                                bucket=out.get(naming.OUT_BUCKET_NAME, ""),
                                log_group=out.get(naming.OUT_LOG_GROUP_NAME, ""),
                                queue_url=out.get(naming.OUT_DLQ_URL, ""),
                                function_name=out.get(naming.OUT_FUNCTION_NAME, ""),
                                environment=out.get(naming.OUT_ENV) or self.cfg.env,
                                workgroup=out.get(naming.OUT_ANALYTICS_WORKGROUP, ""),
                                database=out.get(naming.OUT_ANALYTICS_DATABASE, ""))
        return self._names

    def about(self) -> dict[str, Any]:
        """The env the console shows (no credentials: the region and whether it is iotpipe local)."""
        return {"env": self.cfg.env, "stack": self.cfg.resolved_stack_name, "local": self.local,
                "region": self.cfg.region or "", "ttlDays": self.cfg.storage.ttl_days,
                "sensors": {name: {"min": t.min, "max": t.max, "unit": t.unit}
                            for name, t in sorted(self.cfg.thresholds.items())},
                "ranges": list(RANGES), "staleAfter": fleet_lib.STALE_AFTER_S,
                "offlineAfter": fleet_lib.OFFLINE_AFTER_S}

    # -- fleet -----------------------------------------------------------------------------------------------

    def fleet(self, max_age_s: float = FLEET_TTL_S) -> dict[str, Any]:
        """Every device's row. A snapshot younger than ``max_age_s`` is returned as it is; one younger than
        FLEET_STALE_OK_S is returned at once while a background read refreshes it (a page never waits on a
        thousand devices' reads it has just seen); else the fleet is read now."""
        snapshot = self._fleet
        age = time.monotonic() - snapshot[0] if snapshot is not None else None
        # a fleet that takes long to read (a thousand devices on the emulator) is read again less often
        if snapshot is not None and age is not None and age < max(max_age_s, 2 * self._fleet_seconds):
            return snapshot[1]
        if snapshot is not None and age is not None and age < FLEET_STALE_OK_S:
            if self._fleet_lock.acquire(blocking=False):
                threading.Thread(target=self._refresh_fleet, args=(True,), daemon=True).start()
            return snapshot[1]
        with self._fleet_lock:
            if self._fleet is not None and self._fleet is not snapshot:
                return self._fleet[1]  # another request read it meanwhile
            return self._refresh_fleet(False)

    def _refresh_fleet(self, release: bool) -> dict[str, Any]:
        started = time.monotonic()
        try:
            names = self.names()
            now = self.clock()
            rows = fleet_lib.fleet_summary(self.clients.client("iot"), self.clients.client("dynamodb"),
                                           table=names.table, index=names.index, environment=self.cfg.env,
                                           now_ms=now, discover=self.local)
            result = {"now": now, "devices": [row.as_dict(now) for row in rows],
                      "counts": {state: sum(1 for r in rows if r.state == state) for state in fleet_lib.STATES}}
            self._fleet = (time.monotonic(), result)
            self._fleet_seconds = time.monotonic() - started
            return result
        finally:
            if release:
                self._fleet_lock.release()

    # -- a device ----------------------------------------------------------------------------------------------

    def device(self, device_id: str, range_name: str) -> dict[str, Any]:
        """A device's sensors (with their static bounds) and its anomalies over the range."""
        validate_thing_name(device_id)
        since, until = self._range(range_name)
        names = self.names()
        # the page asks for each sensor's line next: the one read of the partition they share starts now, beside
        # this read of the anomaly index (their requests find it running, or done)
        threading.Thread(target=self._read_ahead, args=(device_id, range_name), daemon=True).start()
        found = query_anomalies(self.clients.client("dynamodb"), names.table, names.index, since_ms=since,
                                until_ms=until, device_id=device_id, limit=1000)
        sensors = sorted(set(self.cfg.thresholds) | {a.sensor_type for a in found})
        return {"deviceId": device_id, "range": range_name, "since": since, "until": until,
                "sensors": [{"name": s, **self._bounds(s)} for s in sensors],
                "anomalies": [reading_dict(a) for a in found]}

    def series(self, device_id: str, sensor: str, range_name: str) -> dict[str, Any]:
        """One sensor's line over the range, downsampled to ``max_points`` (LTTB), every anomaly with its band,
        the static bounds, and where the readings came from: the table, or the SQL archive for the part older than
        the table's retention (``sources``)."""
        max_points = self.max_points
        validate_thing_name(device_id)
        if not SENSOR_PATTERN.match(sensor):
            raise ParameterError("sensor", sensor, "is not a sensor type (letters, digits, _ . -)")
        since, until, table_from, read = self._device_read(device_id, range_name)
        retained_from = until - self.cfg.storage.ttl_days * 86_400_000
        sources: list[dict[str, Any]] = []
        times: list[float] = []
        values: list[float] = []
        anomalies: list[dict[str, Any]] = []
        truncated = False
        if since < retained_from:
            archived = self._archive_series(device_id, sensor, since, retained_from - 1, range_name)
            times += archived[0]
            values += archived[1]
            sources.append({"source": "archive", "from": since, "to": retained_from, "engine": archived[2]})
        found = read.get(sensor, fleet_lib.SensorSeries((), (), (), False))
        truncated = found.truncated
        times += [when / 1000 for when in found.times]
        values += found.values
        anomalies += [reading_dict(reading) for reading in found.anomalies]
        sources.append({"source": "table", "from": table_from, "to": until})
        total = len(times)
        shown_t, shown_v = lttb(times, values, max_points) if total > max_points else (times, values)
        return {"deviceId": device_id, "sensor": sensor, "range": range_name, "since": since, "until": until,
                "points": total, "shown": len(shown_t), "truncated": truncated, "times": shown_t,
                "values": shown_v, "anomalies": anomalies, "sources": sources, **self._bounds(sensor)}

    def _device_read(self, device_id: str, range_name: str) -> tuple[int, int, int, dict[str, Any]]:
        """The range's bounds (since, until, where the table's part starts) and every sensor's series from the
        table, in one read of the device's partition shared by the requests of its charts: a page asks for each
        sensor at once, and each sensor's own Query would read every sensor's items. A read started less than
        SHARED_READ_S ago (or still running) is reused; a failed one is not."""
        key = (device_id, range_name)
        with self._reads_lock:
            entry = self._reads.get(key)
            owner = entry is None or (entry[1].done() and time.monotonic() - entry[0] > SHARED_READ_S)
            if owner:
                self._reads = {k: v for k, v in self._reads.items()
                               if not v[1].done() or time.monotonic() - v[0] <= SHARED_READ_S}
                entry = self._reads[key] = (time.monotonic(), Future())
        assert entry is not None
        future: Future[tuple[int, int, int, dict[str, Any]]] = entry[1]
        if owner:
            try:
                since, until = self._range(range_name)
                table_from = max(since, until - self.cfg.storage.ttl_days * 86_400_000)
                found = fleet_lib.query_device_series(self.clients.client("dynamodb"), self.names().table, device_id,
                                                      since_ms=table_from, until_ms=until)
                future.set_result((since, until, table_from, found))
            except BaseException as exc:
                with self._reads_lock:
                    if self._reads.get(key) is entry:
                        del self._reads[key]
                future.set_exception(exc)
        return future.result()

    def _read_ahead(self, device_id: str, range_name: str) -> None:
        # a failed read is not kept: each chart's own request reads again and shows why it failed
        with contextlib.suppress(Exception):
            self._device_read(device_id, range_name)

    def _archive_series(self, device_id: str, sensor: str, since: int, until: int,
                        range_name: str = "") -> tuple[list[float], list[float], str]:
        """The readings the table no longer holds, from the raw archive through ``iotpipe sql``'s relations,
        averaged per bucket so the result stays small (LTTB then shapes it). One query at a time; the answer for
        a device, sensor and range is reused for ARCHIVE_REUSE_S (or a bucket, if longer)."""
        step_s = max(1, (until - since) // 1000 // self.max_points)
        key = (device_id, sensor, range_name)
        with self._archive_lock:
            cached = self._archived.get(key)
            if cached is not None and time.monotonic() - cached[0] < max(ARCHIVE_REUSE_S, step_s):
                return cached[1]
            found = self._query_archive(device_id, sensor, since, until, step_s)
            # answers past the longest reuse (the widest range's bucket) are dropped: it holds the charts open now
            now, longest = time.monotonic(), max(ARCHIVE_REUSE_S, max(RANGES.values()) / self.max_points)
            self._archived = {k: v for k, v in self._archived.items() if now - v[0] < longest}
            self._archived[key] = (now, found)
            return found

    def _query_archive(self, device_id: str, sensor: str, since: int, until: int,
                       step_s: int) -> tuple[list[float], list[float], str]:
        window = sql_lib.Window(since, until + 1)
        query = ("SELECT floor(epoch_ms(reading_time) / 1000 / {step}) * {step} AS t, avg(value) AS v FROM readings "
                 f"WHERE device_id = '{device_id}' AND sensor_type = '{sensor}' GROUP BY 1 ORDER BY 1")
        names = self.names()
        if self.local:
            sql_lib.require_duckdb()
            run = sql_lib.query_duckdb(self.clients.client("s3"), names.bucket, query.format(step=step_s), window,
                                       self.cfg.thresholds, self.cfg.storage.ttl_days, self.cache_dir)
            result, engine = run.result, "duckdb"
        else:
            athena_sql = query.replace("epoch_ms(reading_time)", "to_unixtime(reading_time) * 1000")
            result = sql_lib.run_athena(self.clients.client("athena"), athena_sql.format(step=step_s),
                                        workgroup=names.workgroup, database=names.database, window=window,
                                        thresholds=self.cfg.thresholds, ttl_days=self.cfg.storage.ttl_days,
                                        max_polls=self.sql_max_polls)
            engine = "athena"
        return [float(row[0]) for row in result.rows], [float(row[1]) for row in result.rows], engine

    def _bounds(self, sensor: str) -> dict[str, Any]:
        threshold = self.cfg.thresholds.get(sensor)
        return {"min": threshold.min if threshold else None, "max": threshold.max if threshold else None,
                "unit": threshold.unit if threshold else ""}

    def _range(self, range_name: str) -> tuple[int, int]:
        if range_name not in RANGES:
            raise ParameterError("range", range_name, f"is not a range; use one of {', '.join(RANGES)}")
        until = self.clock()
        return until - RANGES[range_name] * 1000, until

    # -- anomalies ---------------------------------------------------------------------------------------------

    def anomalies(self, *, since_ms: int | None = None, device_id: str | None = None, sensor: str | None = None,
                  rule: str | None = None, limit: int = 200) -> dict[str, Any]:
        """Anomalies across the fleet, newest first (24 h unless ``since_ms``), filtered by device, sensor, rule."""
        if device_id:
            validate_thing_name(device_id)
        if sensor and not SENSOR_PATTERN.match(sensor):
            raise ParameterError("sensor", sensor, "is not a sensor type (letters, digits, _ . -)")
        now = self.clock()
        names = self.names()
        found = query_anomalies(self.clients.client("dynamodb"), names.table, names.index,
                                since_ms=since_ms if since_ms is not None else now - 86_400_000, until_ms=now,
                                sensor=sensor or None, device_id=device_id or None, limit=limit)
        if rule:
            found = [a for a in found if (a.rule or "bound") == rule]
        return {"now": now, "anomalies": [reading_dict(a) for a in found]}

    # -- pipeline health ---------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Readings per minute, iterator age, failed batches (DLQ depth), quarantined records with their reasons,
        the processor's errors (last hour) and the month's cost estimate. A part that cannot be read says why."""
        now = self.clock()
        since = now - 3_600_000
        names = self.names()
        return {"now": now,
                "metrics": _part(lambda: self._metrics(names, since, now)),
                "iteratorAge": _part(lambda: self._iterator_age(names, since, now)),
                "deadLetters": _part(lambda: self._dead_letters(names)),
                "quarantined": _part(lambda: self._log_lines(names, "quarantined", since)),
                "errors": _part(lambda: self._log_lines(names, "ERROR", since)),
                "cost": _part(self._cost)}

    def _metrics(self, names: Names, since: int, now: int) -> dict[str, Any]:
        report = fetch_metrics(self.clients.client("cloudwatch"), names.environment, since_ms=since, until_ms=now,
                               period_s=60)
        return report.as_dict()

    def _iterator_age(self, names: Names, since: int, now: int) -> dict[str, Any]:
        with aws_call("cloudwatch", "get-metric-statistics"):
            found = self.clients.client("cloudwatch").get_metric_statistics(
                Namespace="AWS/Lambda", MetricName="IteratorAge",
                Dimensions=[{"Name": "FunctionName", "Value": names.function_name}],
                StartTime=datetime.fromtimestamp(since / 1000, tz=UTC),
                EndTime=datetime.fromtimestamp(now / 1000, tz=UTC), Period=60, Statistics=["Maximum"])
        points = sorted(found.get("Datapoints", []), key=lambda p: p["Timestamp"])
        return {"maxMs": max((p["Maximum"] for p in points), default=None),
                "latestMs": points[-1]["Maximum"] if points else None}

    def _dead_letters(self, names: Names) -> dict[str, Any]:
        with aws_call("sqs", "get-queue-attributes"):
            attributes = self.clients.client("sqs").get_queue_attributes(
                QueueUrl=names.queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            ).get("Attributes", {})
        with aws_call("s3", "list-objects-v2"):
            listed = self.clients.client("s3").list_objects_v2(Bucket=names.bucket, Prefix=naming.FAILURE_PREFIX,
                                                               MaxKeys=1000)
        return {"queued": int(attributes.get("ApproximateNumberOfMessages", 0)),
                "inFlight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                "s3Objects": int(listed.get("KeyCount", 0))}

    def _log_lines(self, names: Names, text: str, since: int) -> list[dict[str, Any]]:
        lines = fetch_logs(self.clients.client("logs"), names.log_group, start_ms=since,
                           pattern=_pattern(text), limit=50)
        return [line.as_dict() for line in lines]

    def _cost(self) -> dict[str, Any]:
        from iotpipe import cost as cost_lib
        from iotpipe.cli.cost import count_alarms

        fleet = self.fleet(max_age_s=60)
        devices = max(1, len(fleet["devices"]))
        sensors = max(1, len(self.cfg.thresholds))
        per_hour = sum(d["readingsLastHour"] for d in fleet["devices"])
        rate = max(per_hour / 3600 / devices / sensors, 0.001)
        workload = cost_lib.validate_workload(cost_lib.Workload(
            devices=devices, sensors=sensors, rate_hz=round(rate, 3),
            readings_per_message=self.cfg.ingest.readings_per_message))
        region = self.cfg.region if self.cfg.region in cost_lib.regions() else cost_lib.DEFAULT_REGION
        est = cost_lib.estimate(workload, self.cfg, prices=cost_lib.load_price_table(region),
                                alarms=count_alarms(self.cfg))
        return {"monthlyUsd": est.monthly_total_usd, "perMillionUsd": est.per_million_readings_usd,
                "byService": est.by_service(), "devices": devices, "sensors": sensors, "rateHz": workload.rate_hz,
                "region": region, "pricesAsOf": est.prices.as_of}

    # -- SQL ---------------------------------------------------------------------------------------------------

    def sql_queries(self) -> dict[str, Any]:
        """The named queries and the engine a query runs on."""
        return {"engine": "duckdb" if self.local else "athena",
                "queries": [{"name": q.name, "description": q.description, "sql": q.sql}
                            for q in sql_lib.NAMED_QUERIES.values()]}

    def run_sql(self, text: str, since: str = "24h") -> dict[str, Any]:
        """One SELECT (or a named query) over the archive window, as ``iotpipe sql`` runs it; on Athena the
        most it can scan (the window's archive objects) before, and what it scanned after."""
        query = sql_lib.resolve_query(text)
        window = sql_lib.window_from(since, None, None, self.clock())
        names = self.names()
        s3 = self.clients.client("s3")
        if self.local:
            sql_lib.require_duckdb()
            result = sql_lib.query_duckdb(s3, names.bucket, query, window, self.cfg.thresholds,
                                          self.cfg.storage.ttl_days, self.cache_dir).result
            before = None
        else:
            most = sum(obj.size for obj in sql_lib.list_archive(s3, names.bucket, window))
            before = {"bytes": most, "usd": sql_lib.athena_cost(most)}
            result = sql_lib.run_athena(self.clients.client("athena"), query, workgroup=names.workgroup,
                                        database=names.database, window=window, thresholds=self.cfg.thresholds,
                                        ttl_days=self.cfg.storage.ttl_days, max_polls=self.sql_max_polls)
        return {"engine": result.engine, "columns": list(result.columns),
                "rows": [[_cell(v) for v in row] for row in result.rows[:5000]], "rowCount": len(result.rows),
                "seconds": result.seconds, "bytesScanned": result.bytes_scanned, "costUsd": result.cost_usd,
                "estimate": before, "skipped": [s.key for s in result.skipped]}


def _pattern(text: str) -> str:
    from iotpipe.query.logs import filter_pattern

    return filter_pattern(text) or ""


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _part(read: Callable[[], Any]) -> dict[str, Any]:
    """A health part's value, or why it could not be read (the other parts still show)."""
    try:
        return {"ok": True, "value": read()}
    except IotpipeError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a botocore error outside aws_call: one part fails, the page stays
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def iso(epoch_ms: int) -> str:
    """ISO 8601 UTC of an epoch ms."""
    return iso_ms(epoch_ms)
