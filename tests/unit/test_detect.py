"""iotpipe.detect: NAB- and SKAB-shaped CSVs through the processor's own detector, and the results file."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from iotpipe import detect as detect_lib
from iotpipe.archive import load_processor
from iotpipe.config import Threshold
from iotpipe.errors import ParameterError

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


def nab_text(values: list[float]) -> str:
    rows = [f"2015-09-08 {i // 60:02d}:{i % 60:02d}:00,{v}" for i, v in enumerate(values)]
    return "timestamp,value\n" + "\n".join(rows) + "\n"


def skab_text(rows: int) -> str:
    lines = ["datetime;Current;Pressure;anomaly;changepoint"]
    for i in range(rows):
        current = 1.3 + 0.01 * math.sin(i) + (2.0 if i == rows - 5 else 0.0)
        lines.append(f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{current};{0.05 + 0.001 * math.cos(i)};0;0")
    return "\n".join(lines) + "\n"


NOISE = [10.0 + math.sin(i * 1.7) for i in range(300)]


def test_scores_are_the_processors_own() -> None:
    series = detect_lib.read_series(nab_text(NOISE))
    index = load_processor(REPO / "handler" / "python" / "index.py")
    result = detect_lib.detect(series, processor=index)
    expected, _ = index.detect_series(zip(series.timestamps, NOISE, strict=True), index.DetectorParams())
    assert result.sensors[0].scores == tuple(s.score for s in expected)
    assert (result.sensors[0].preset, result.sensors[0].threshold) == ("onset", index.DEFAULT_SENSITIVITY)


def test_a_spike_is_flagged_and_the_csv_has_a_row_per_input_row(tmp_path: Path) -> None:
    values = list(NOISE)
    values[250] = 40.0
    source = tmp_path / "series.csv"
    source.write_text(nab_text(values))
    result = detect_lib.detect_file(source, tmp_path / "out.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "flag"]
    assert len(rows) == len(values) == len(result.series.timestamps)
    assert rows[0]["timestamp"] == "2015-09-08 00:00:00"
    assert [i for i, row in enumerate(rows) if row["flag"] == "1"] == [250]
    assert all(0.0 <= float(row["anomaly_score"]) <= 1.0 for row in rows)
    assert float(rows[250]["value"]) == 40.0


def test_skab_semicolons_several_sensors_and_a_device_flag() -> None:
    series = detect_lib.read_series(skab_text(300))
    assert list(series.columns) == ["Current", "Pressure"]  # the label columns are not values
    result = detect_lib.detect(series)
    text = detect_lib.results_csv(result)
    header = text.split("\n", 1)[0].split(",")
    assert header[0] == "timestamp" and header[-1] == "device_flag"
    assert "Current_anomaly_score" in header and "Pressure_flag" in header
    assert result.device_flags[295] and result.sensors[0].flags[295]
    assert sum(result.device_flags) == sum(a or b for a, b in zip(*(s.flags for s in result.sensors), strict=True))


def test_static_bounds_flag_whatever_the_score() -> None:
    series = detect_lib.read_series(nab_text(NOISE), value_columns=["value"])
    result = detect_lib.detect(series, sensor_types={"value": "temperature"},
                               bounds={"temperature": Threshold(min=None, max=10.5, unit="C")})
    assert result.sensors[0].flags == tuple(v > 10.5 for v in NOISE)


def test_the_sustained_preset_flags_every_reading_of_a_lasting_shift() -> None:
    values = [10.0 + 0.1 * math.sin(i * 1.7) for i in range(500)] + [12.0 + 0.1 * math.sin(i) for i in range(100)]
    series = detect_lib.read_series(nab_text(values))
    onset = detect_lib.detect(series).sensors[0].flags
    sustained = detect_lib.detect(series, preset="sustained").sensors[0].flags
    assert sum(onset[500:]) < 10
    assert all(sustained[502:])
    assert not any(sustained[:500])
    with pytest.raises(ParameterError, match="preset"):
        detect_lib.detect(series, preset="eager")


def test_the_config_chooses_each_sensor_types_detector_and_flags_win() -> None:
    values = [10.0 + 0.1 * math.sin(i * 1.7) for i in range(500)] + [12.0 + 0.1 * math.sin(i) for i in range(100)]
    series = detect_lib.read_series(nab_text(values))
    bounds = {"value": Threshold(min=None, max=100.0, unit="", detector="sustained", sensitivity=0.9,
                                 probation=50)}
    configured = detect_lib.detect(series, bounds=bounds).sensors[0]
    assert (configured.preset, configured.threshold) == ("sustained", 0.9)
    assert configured.scores == detect_lib.detect(series, preset="sustained", probation=50).sensors[0].scores
    assert detect_lib.detect(series, bounds=bounds, preset="onset", threshold=0.4).sensors[0].preset == "onset"
    off = detect_lib.detect(series, bounds={"value": Threshold(min=None, max=11.0, unit="", detector="off")})
    assert set(off.sensors[0].scores) == {0.0}
    assert off.sensors[0].flags == tuple(v > 11.0 for v in values)  # the static bound still flags


def test_the_state_is_small() -> None:
    result = detect_lib.detect(detect_lib.read_series(nab_text(NOISE)))
    assert 0 < result.sensors[0].state_bytes <= 1024


@pytest.mark.parametrize(("text", "options", "parameter"), [
    ("timestamp,value\nyesterday,1\n", {}, "timestamp_column"),
    ("timestamp,value\n2015-09-08 00:00:00,1\n", {"value_columns": ["speed"]}, "value_columns"),
    ("timestamp,value\n2015-09-08 00:00:00,1\n", {"timestamp_column": "time"}, "timestamp_column"),
    ("timestamp,value\n2015-09-08 00:00:00,1\n2015-09-08 00:01:00,nan\n", {"value_columns": ["value"]},
     "value_columns"),
])
def test_bad_input_names_the_parameter(text: str, options: dict, parameter: str) -> None:
    with pytest.raises(ParameterError) as caught:
        detect_lib.read_series(text, **options)
    assert caught.value.parameter == parameter


def test_a_bad_threshold_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source = tmp_path / "series.csv"
    source.write_text(nab_text(NOISE))
    with pytest.raises(ParameterError, match="threshold"):
        detect_lib.detect_file(source, tmp_path / "out.csv", threshold=1.5)
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize(("text", "ms"), [("1718000000000", 1_718_000_000_000),
                                          ("2024-06-10 06:13:20", 1_718_000_000_000),
                                          ("2024-06-10T08:13:20+02:00", 1_718_000_000_000),
                                          ("2024-06-10T06:13:20Z", 1_718_000_000_000), ("soon", None)])
def test_timestamps(text: str, ms: int | None) -> None:
    assert detect_lib.parse_timestamp(text) == ms


def test_the_detector_settings_are_config_keys_of_a_sensor_type() -> None:
    from iotpipe.config import build_config
    from iotpipe.errors import ConfigError

    cfg = build_config({"defaults": {"thresholds": {"vibration": {"detector": "sustained", "sensitivity": 0.6}}}},
                       "dev", {})
    vibration = cfg.thresholds["vibration"]
    assert (vibration.max, vibration.detector, vibration.sensitivity, vibration.probation) == (5.0, "sustained",
                                                                                              0.6, 0)
    assert cfg.thresholds["temperature"].detector == "onset"
    entries = json.loads(cfg.thresholds_json)  # the processor's THRESHOLDS: defaults left to the contract
    assert entries["vibration"] == {"min": None, "max": 5.0, "unit": "mm/s", "detector": "sustained",
                                    "sensitivity": 0.6}
    assert entries["temperature"]["detector"] == "onset" and "sensitivity" not in entries["temperature"]
    off = build_config({"defaults": {"thresholds": {"vibration": {"detector": "off", "probation": 9}}}}, "dev", {})
    assert set(json.loads(off.thresholds_json)["vibration"]) == {"min", "max", "unit"}
    probing = build_config({"defaults": {"thresholds": {"vibration": {"probation": 9}}}}, "dev", {})
    assert json.loads(probing.thresholds_json)["vibration"]["probation"] == 9
    for bad in ({"detector": "eager"}, {"sensitivity": 0.0}, {"probation": -1}):
        with pytest.raises(ConfigError, match=r"defaults\.thresholds\.vibration"):
            build_config({"defaults": {"thresholds": {"vibration": bad}}}, "dev", {})
