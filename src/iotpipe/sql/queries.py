"""The queries: errors, named queries, the read-only statement check, the relations as common table
expressions, and a query's result and cost."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The processor's rules a reading must pass (docs/contract.md section 3), mirrored where the quarantine cannot say
# which reading of a record it refused: the samples form holds one sensor type in several samples.
from iotpipe.errors import IotpipeError

# Athena's price for SQL queries: $5 per TB scanned, at least 10 MB per query (Athena pricing).
PRICE_PER_TB_USD = 5.0
MIN_BILLED_BYTES = 10 * 1000 * 1000
TB = 1000**4


# Quoted text, comments and semicolons: a semicolon inside a string, identifier or comment ends no statement.
_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|--[^\n]*|/\*.*?\*/|;|[^'\"$;/-]+|.", re.S)
_FIRST_WORD = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*\(*\s*([A-Za-z]+)", re.S)
READ_STATEMENTS = ("select", "with", "values")


class SqlError(IotpipeError):
    """A SQL query could not run, failed or was cancelled; the message says why and what to do."""


class SqlUsageError(SqlError):
    """The query itself is refused: not exactly one read-only statement, or one the engine cannot parse or bind."""

    exit_code = 2


# --- named queries --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedQuery:
    """A query shipped with iotpipe, run by name: ``iotpipe sql hourly-stats``."""

    name: str
    description: str
    sql: str


NAMED_QUERIES: dict[str, NamedQuery] = {q.name: q for q in (
    NamedQuery("hourly-stats", "count, min, average and max per device, sensor and hour",
               "SELECT device_id, sensor_type, date_trunc('hour', reading_time) AS hour, count(*) AS readings,\n"
               "       min(value) AS min_value, round(avg(value), 3) AS avg_value, max(value) AS max_value\n"
               "FROM readings\nGROUP BY 1, 2, 3\nORDER BY 3, 1, 2"),
    NamedQuery("anomalies-per-day", "readings outside the configured thresholds, per day, device and sensor",
               "SELECT CAST(r.reading_time AS DATE) AS day, r.device_id, r.sensor_type, count(*) AS anomalies\n"
               "FROM readings r JOIN thresholds t ON r.sensor_type = t.sensor_type\n"
               "WHERE r.value > t.max_value OR r.value < t.min_value\n"
               "GROUP BY 1, 2, 3\nORDER BY 1, 2, 3"),
    NamedQuery("silent-devices", "devices whose last reading in the window is over an hour before its end",
               "SELECT device_id, max(reading_time) AS last_reading, count(*) AS readings\n"
               "FROM readings\nGROUP BY device_id\n"
               "HAVING max(reading_time) < (SELECT window_end FROM query_window) - INTERVAL '1' HOUR\n"
               "ORDER BY 2, 1"),
    NamedQuery("quarantine-reasons", "quarantined records per reason",
               "SELECT reason, count(*) AS records\nFROM quarantined\nGROUP BY reason\nORDER BY 2 DESC, 1"),
)}


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``: split at semicolons outside quotes and comments, blank ones (and comments alone)
    dropped."""
    statements, current = [], []
    for token in [*_SQL_TOKEN.findall(sql), ";"]:
        if token != ";":
            current.append(token)
            continue
        text = "".join(current).strip()
        if re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.S).strip():
            statements.append(text)
        current = []
    return statements


def resolve_query(text: str) -> str:
    """The SQL of a named query, or ``text`` itself; SqlUsageError unless it is exactly one read query
    (SELECT/WITH/VALUES): a second statement after a semicolon is refused, whatever it is."""
    named = NAMED_QUERIES.get(text.strip())
    sql = named.sql if named else text
    statements = split_statements(sql)
    if len(statements) > 1:
        raise SqlUsageError(f"{len(statements)} statements given; iotpipe sql runs exactly one read query (SELECT, "
                            f"WITH ... SELECT or VALUES): remove everything after the first ';'")
    body = statements[0] if statements else ""
    match = _FIRST_WORD.match(body)
    if not body or match is None or match.group(1).lower() not in READ_STATEMENTS:
        names = ", ".join(NAMED_QUERIES)
        raise SqlUsageError(f"not a query: {text.strip()[:60]!r}; give a SELECT (or WITH ... SELECT), or a named "
                            f"query: {names}")
    return body


def with_relations(ctes: Sequence[tuple[str, str]], sql: str) -> str:
    """``sql`` preceded by the relations as common table expressions (merged into its own WITH, if any)."""
    prelude = ",\n".join(f"{name} AS ({body})" for name, body in ctes)
    body = sql.strip().rstrip(";").strip()
    match = re.match(r"(?is)^with\s+(?!recursive\b)", body)
    if match:
        return f"WITH {prelude},\n{body[match.end():]}"
    return f"WITH {prelude}\n{body}"


@dataclass(frozen=True)
class QueryResult:
    """Rows of a finished query and what it cost to run."""

    engine: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    bytes_scanned: int
    seconds: float
    query_id: str = ""
    objects: int = 0
    downloaded: int = 0
    skipped: tuple[SkippedObject, ...] = ()  # DuckDB: malformed archive objects left out

    @property
    def cost_usd(self) -> float:
        """Athena's charge for the query ($5 per TB, 10 MB minimum); 0 on DuckDB."""
        return athena_cost(self.bytes_scanned) if self.engine == "athena" else 0.0


def athena_cost(bytes_scanned: int) -> float:
    """US dollars Athena charges for a query that scanned ``bytes_scanned`` ($5 per TB, at least 10 MB)."""
    return max(bytes_scanned, MIN_BILLED_BYTES) / TB * PRICE_PER_TB_USD


@dataclass(frozen=True)
class SkippedObject:
    """An archive object a query could not read (truncated or not gzip, a line that is not a JSON object of the
    archive's fields, a time out of range): left out of the query and of the cache."""

    key: str
    reason: str
