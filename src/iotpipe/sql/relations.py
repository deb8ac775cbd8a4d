"""The relations' SQL both engines share: columns, literals, thresholds and the reading time rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from iotpipe.config import Threshold

# The processor's rules a reading must pass (docs/contract.md section 3), mirrored where the quarantine cannot say
# which reading of a record it refused: the samples form holds one sensor type in several samples.
from iotpipe.sql.window import (
    Window,
)

# A config's thresholds (a read-only mapping, sensor type -> Threshold), or the same as pairs.
Thresholds = Mapping[str, Threshold] | Sequence[tuple[str, Threshold]]


# Relation name -> (column, type) as both engines return them.
RELATION_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "readings": (("device_id", "varchar"), ("sensor_type", "varchar"), ("value", "double"), ("unit", "varchar"),
                 ("reading_time", "timestamp"), ("device_time", "timestamp"), ("received_at", "timestamp"),
                 ("arrived_at", "timestamp"), ("shard_id", "varchar"), ("sequence_number", "varchar")),
    "raw_records": (("shard_id", "varchar"), ("sequence_number", "varchar"), ("partition_key", "varchar"),
                    ("arrived_at", "timestamp"), ("data", "varchar"), ("data_base64", "varchar")),
    "quarantined": (("shard_id", "varchar"), ("sequence_number", "varchar"), ("partition_key", "varchar"),
                    ("reason", "varchar"), ("sensor_type", "varchar"), ("rejected_sensor_types", "array(varchar)"),
                    ("data", "varchar"), ("data_base64", "varchar"), ("archive_hour", "timestamp")),
    "thresholds": (("sensor_type", "varchar"), ("min_value", "double"), ("max_value", "double"),
                   ("unit", "varchar")),
    "query_window": (("window_start", "timestamp"), ("window_end", "timestamp")),
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _number(value: float | None) -> str:
    return "CAST(NULL AS DOUBLE)" if value is None else f"CAST({value!r} AS DOUBLE)"


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ', timespec='milliseconds')}'"


def _pairs(thresholds: Thresholds) -> Sequence[tuple[str, Threshold]]:
    """(sensor type, threshold) pairs of a config's thresholds mapping, or of pairs given as such."""
    return tuple(thresholds.items()) if isinstance(thresholds, Mapping) else thresholds


def _thresholds_values(thresholds: Thresholds) -> str:
    rows = [f"({_literal(name)}, {_number(t.min)}, {_number(t.max)}, {_literal(t.unit)})"
            for name, t in _pairs(thresholds)]
    if not rows:
        return "SELECT CAST(NULL AS VARCHAR), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR) " \
               "WHERE 1 = 0"
    return "VALUES " + ", ".join(rows)


def _unit_case(column: str, thresholds: Thresholds) -> str:
    """The configured unit of a sensor type, as the processor stores it when the payload gives none."""
    whens = " ".join(f"WHEN {_literal(name)} THEN {_literal(t.unit)}" for name, t in _pairs(thresholds) if t.unit)
    return f"CASE {column} {whens} END" if whens else "CAST(NULL AS VARCHAR)"


def _device_time_ok(ttl_days: int) -> str:
    """The processor's rule for a device time: after 2000, within the retention before and a day after receipt."""
    return ("device_time >= TIMESTAMP '2000-01-01 00:00:00.000' "
            f"AND device_time >= received_at - INTERVAL '{ttl_days}' DAY "
            "AND device_time <= received_at + INTERVAL '1' DAY")


def _reading_time(ttl_days: int) -> str:
    """The processor's rule: the device time when plausible, else the receive time."""
    return f"CASE WHEN {_device_time_ok(ttl_days)} THEN device_time ELSE received_at END"


def _repeat_rank(ttl_days: int, t: str) -> str:
    """1 for the reading the processor stores, more for its repeats (docs/contract.md, section 6): readings of one
    device, sensor type, value and device time are one item; a reading dated by its arrival is told apart by its
    origin (shard, sequence number, sample), so equal values sharing an arrival time are distinct readings."""
    origin = (f"CASE WHEN {_device_time_ok(ttl_days)} THEN NULL ELSE concat({t}shard_id, '#', {t}sequence_number, "
              f"'#', CAST({t}sample_index AS VARCHAR)) END")
    return (f"row_number() OVER (PARTITION BY device_id, {t}sensor_type, value, {_reading_time(ttl_days)}, {origin} "
            f"ORDER BY arrived_at, {t}shard_id, {t}sequence_number, {t}sample_index)")


def _common_ctes(window: Window, thresholds: Thresholds) -> list[tuple[str, str]]:
    return [
        ("query_window(window_start, window_end)",
         f"SELECT {_timestamp(window.start)}, {_timestamp(window.end)}"),
        ("thresholds(sensor_type, min_value, max_value, unit)", _thresholds_values(thresholds)),
    ]
