"""``iotpipe detect`` from the command line: a NAB-shaped file in, the results CSV out, flags named on errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpipe.cli.app import main


def _series(path: Path, spike_at: int) -> None:
    rows = [f"2015-09-08 {i // 60:02d}:{i % 60:02d}:00,{10.0 + math.sin(i * 1.7) + (30 if i == spike_at else 0)}"
            for i in range(300)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")


def test_detect_writes_a_row_per_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml: the built-in config
    _series(tmp_path / "s.csv", 260)
    result = CliRunner().invoke(main, ["detect", str(tmp_path / "s.csv"), "-o", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert "value   value        onset   0.5" in result.output
    assert "300 rows; results in" in result.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 300
    assert [i for i, row in enumerate(rows) if row["flag"] == "1"] == [260]


def test_detect_names_the_flag_of_a_bad_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _series(tmp_path / "s.csv", 260)
    result = CliRunner().invoke(main, ["detect", str(tmp_path / "s.csv"), "-o", str(tmp_path / "r.csv"),
                                       "--value-column", "speed"])
    assert result.exit_code == 2
    assert "--value-column speed is not a numeric column" in result.output
    assert not (tmp_path / "r.csv").exists()
