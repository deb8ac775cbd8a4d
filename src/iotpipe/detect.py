"""``iotpipe detect``: the processor's own detector (docs/contract.md 12) over a CSV series, offline.

The detector is imported from the processor shipped in the package (``iotpipe.archive.load_processor``), not
copied, so what this prints is what the Lambda function scores. Each value column is one sensor of one device,
scored in the file's row order, each reading before it is learned. The detector's state is exact across batches
(the processor keeps it per series between invocations), so scoring the file in one pass gives the scores the
processor gives the same readings in batches of any size.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from iotpipe.archive import load_processor
from iotpipe.config import Threshold
from iotpipe.errors import ParameterError

# Label columns of the benchmark files (SKAB's ``anomaly`` and ``changepoint``, NAB results' ``label``): never values.
LABEL_COLUMNS = frozenset({"anomaly", "changepoint", "label"})
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")


@dataclass(frozen=True)
class Series:
    """A device's readings from a CSV: timestamps (epoch ms, row order) and one value list per sensor column."""

    timestamps: tuple[int, ...]
    stamps_text: tuple[str, ...]
    columns: Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class SensorResult:
    """One sensor's scores and flags, a row each, and the detector settings it was scored with."""

    column: str
    sensor_type: str
    preset: str
    threshold: float
    scores: tuple[float, ...]
    flags: tuple[bool, ...]
    state_bytes: int


@dataclass(frozen=True)
class DetectResult:
    """Every sensor's results over a series, and the rows' device flag (any sensor flagged)."""

    series: Series
    sensors: tuple[SensorResult, ...]
    device_flags: tuple[bool, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """Summary as JSON-ready data."""
        return {"rows": len(self.series.timestamps),
                "sensors": [{"column": s.column, "sensorType": s.sensor_type, "preset": s.preset,
                             "threshold": s.threshold, "flagged": sum(s.flags), "stateBytes": s.state_bytes}
                            for s in self.sensors],
                "deviceFlagged": sum(self.device_flags)}


def parse_timestamp(text: str) -> int | None:
    """Epoch ms of ``text``: epoch milliseconds, ``YYYY-MM-DD HH:MM:SS[.f]`` (UTC) or ISO 8601 with an offset."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return math.floor(number) if math.isfinite(number) else None
    for fmt in _DATE_FORMATS:
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def read_series(text: str, timestamp_column: str | None = None,
                value_columns: Sequence[str] = ()) -> Series:
    """The series in CSV ``text`` (comma- or semicolon-separated, as NAB and SKAB ship them).

    The timestamp column defaults to the first; the value columns to every other numeric column but the label
    columns (``anomaly``, ``changepoint``, ``label``).
    """
    header_line = text.split("\n", 1)[0]
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows or not rows[0]:
        raise ParameterError("path", "", "is empty; give a CSV with a header row")
    header = [name.strip() for name in rows[0]]
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    stamp_name = timestamp_column or header[0]
    if stamp_name not in header:
        raise ParameterError("timestamp_column", stamp_name, f"is not a column; the header has {', '.join(header)}")
    stamp_at = header.index(stamp_name)
    names = list(value_columns) or [n for i, n in enumerate(header)
                                    if i != stamp_at and n not in LABEL_COLUMNS and _numeric(body, i)]
    missing = [name for name in names if name not in header]
    if missing or not names:
        raise ParameterError("value_columns", ",".join(missing or names),
                             f"is not a numeric column; the header has {', '.join(header)}")
    stamps, texts = [], []
    for number, row in enumerate(body, start=2):
        stamp = parse_timestamp(row[stamp_at]) if stamp_at < len(row) else None
        if stamp is None:
            raise ParameterError("timestamp_column", stamp_name,
                                 f"has {row[stamp_at] if stamp_at < len(row) else ''!r} on line {number}, not a "
                                 "time; use epoch ms, YYYY-MM-DD HH:MM:SS or ISO 8601")
        stamps.append(stamp)
        texts.append(row[stamp_at].strip())
    columns = {name: tuple(_value(body, header.index(name), name)) for name in names}
    return Series(tuple(stamps), tuple(texts), columns)


def _numeric(body: Sequence[Sequence[str]], at: int) -> bool:
    try:
        return bool(body) and all(math.isfinite(float(row[at])) for row in body[:20])
    except (ValueError, IndexError):
        return False


def _value(body: Sequence[Sequence[str]], at: int, name: str) -> list[float]:
    values = []
    for number, row in enumerate(body, start=2):
        try:
            value = float(row[at])
        except (ValueError, IndexError):
            value = math.nan
        if not math.isfinite(value):
            raise ParameterError("value_columns", name, f"has a value that is not a finite number on line {number}")
        values.append(value)
    return values


def detect(series: Series, *, sensor_types: Mapping[str, str] | None = None,
           bounds: Mapping[str, Threshold] | None = None, threshold: float | None = None,
           probation: int | None = None, preset: str | None = None,
           processor: ModuleType | None = None) -> DetectResult:
    """Score every sensor of ``series`` with the processor's detector; flag a reading as the processor would.

    ``sensor_types`` maps a column to its sensor type (default: the column's name). ``bounds`` are the config's
    thresholds by sensor type: a value past their min or max is flagged whatever its score, and their
    ``detector``, ``sensitivity`` and ``probation`` set the detector's preset, the score at or above which a
    reading is flagged, and the readings a series learns first. ``preset``, ``threshold`` and ``probation``
    given here win over them; a sensor type the config lacks gets the processor's defaults (``onset``, its
    sensitivity, the preset's probation). A sensor whose preset is ``off`` scores 0.
    """
    index = processor or load_processor()
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ParameterError("threshold", threshold, "is out of range; use a score in (0, 1]")
    if preset is not None and preset not in index.DETECTOR_PRESETS:
        raise ParameterError("preset", preset, f"is not a preset; use {' or '.join(index.DETECTOR_PRESETS)}")
    if probation is not None and probation < 0:
        raise ParameterError("probation", probation, "is negative; use 0 or more readings")
    results = []
    for column, values in series.columns.items():
        sensor_type = (sensor_types or {}).get(column, column)
        limit = (bounds or {}).get(sensor_type)
        chosen = preset or (limit.detector if limit is not None else "onset")
        cut = threshold if threshold is not None else (
            limit.sensitivity if limit is not None else index.DEFAULT_SENSITIVITY)
        learn = probation if probation is not None else (limit.probation if limit is not None else 0)
        if chosen == "off":
            scores = [0.0] * len(values)
            state_bytes = 0
        else:
            params = index.DETECTOR_PRESETS[chosen]
            params = replace(params, probation=learn) if learn else params
            scored, state = index.detect_series(zip(series.timestamps, values, strict=True), params)
            scores = [s.score for s in scored]
            state_bytes = len(json.dumps(state.to_list(), separators=(",", ":")).encode())
        flags = tuple(score >= cut or _past(value, limit) for score, value in zip(scores, values, strict=True))
        results.append(SensorResult(column, sensor_type, chosen, cut, tuple(scores), flags, state_bytes))
    device = tuple(any(r.flags[i] for r in results) for i in range(len(series.timestamps)))
    return DetectResult(series, tuple(results), device)


def _past(value: float, limit: Threshold | None) -> bool:
    if limit is None:
        return False
    return (limit.max is not None and value > limit.max) or (limit.min is not None and value < limit.min)


def results_csv(result: DetectResult) -> str:
    """``timestamp,value,anomaly_score,flag`` a row per input row; with several sensors, a column group per
    sensor (``<column>_value``, ...) and ``device_flag``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    single = len(result.sensors) == 1
    if single:
        writer.writerow(["timestamp", "value", "anomaly_score", "flag"])
    else:
        writer.writerow(["timestamp", *[f"{s.column}_{part}" for s in result.sensors
                                        for part in ("value", "anomaly_score", "flag")], "device_flag"])
    for i, stamp in enumerate(result.series.stamps_text):
        cells: list[Any] = [stamp]
        for sensor in result.sensors:
            cells += [repr(result.series.columns[sensor.column][i]), repr(sensor.scores[i]), int(sensor.flags[i])]
        if not single:
            cells.append(int(result.device_flags[i]))
        writer.writerow(cells)
    return out.getvalue()


def detect_file(path: str | Path, output: str | Path, **options: Any) -> DetectResult:
    """Read ``path``, :func:`detect`, and write the results CSV to ``output`` (written whole, or not at all)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ParameterError("path", str(path), f"cannot be read ({exc.strerror}); give a CSV file") from None
    columns = {k: options.pop(k) for k in ("timestamp_column", "value_columns") if k in options}
    result = detect(read_series(text, **columns), **options)
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(results_csv(result), encoding="utf-8")
    partial.replace(target)
    return result
