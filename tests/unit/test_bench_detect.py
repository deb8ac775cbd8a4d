"""bench/bench_detect.py as a user runs it, on a tiny NAB- and SKAB-shaped folder the test writes (the real
development data is not needed): the three detectors side by side, and a clear skip without data."""

from __future__ import annotations

import json
import math
from pathlib import Path

from script_runner import REPO, run_script

SCRIPT = REPO / "bench" / "bench_detect.py"


def _make_data(root: Path) -> None:
    (root / "nab" / "labels").mkdir(parents=True)
    (root / "nab" / "data" / "synthetic").mkdir(parents=True)
    stamps = [f"2015-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(1200)]
    values = [10.0 + math.sin(i * 1.3) + (25.0 if i == 800 else 0.0) for i in range(1200)]
    (root / "nab" / "data" / "synthetic" / "spike.csv").write_text(
        "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True)))
    windows = {"synthetic/spike.csv": [[f"{stamps[790]}.000000", f"{stamps[850]}.000000"]],
               "heldout/absent.csv": [[f"{stamps[1]}.000000", f"{stamps[2]}.000000"]]}
    (root / "nab" / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "skab" / "valve1").mkdir(parents=True)
    lines = ["datetime;Current;Pressure;Temperature;anomaly;changepoint"]
    for i in range(600):
        shift = 5.0 if i >= 400 else 0.0
        lines.append(f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{1.3 + 0.01 * math.sin(i) + shift};"
                     f"{0.05 + 0.001 * math.cos(i)};{70 + 0.1 * math.sin(i / 3)};{int(i >= 400)};0")
    (root / "skab" / "valve1" / "0.csv").write_text("\n".join(lines) + "\n")


def test_the_three_detectors_side_by_side(tmp_path: Path) -> None:
    _make_data(tmp_path)
    result = run_script(SCRIPT, "--data", str(tmp_path), timeout_s=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NAB: 1 files, 1,200 readings")
    nab = {line[:16].strip(): line[16:].split() for line in lines[2:5]}
    assert set(nab) == {"static rules", "naive z-score", "iotpipe onset"}
    assert nab["static rules"][:3] == ["0.0", "0.0", "0.0"]
    assert float(nab["iotpipe onset"][0]) > 90  # the spike found at the window's start
    assert 0 < int(nab["iotpipe onset"][-1]) <= 1024  # state bytes
    assert lines[5].startswith("iotpipe onset per category")
    assert lines[6].split() == ["synthetic", *nab["iotpipe onset"][:3]]  # the only category: the corpus score
    assert lines[7].startswith("SKAB: 1 labelled files, 600 rows")
    skab = {line[:18].strip(): [float(x) for x in line[18:].split()] for line in lines[9:13]}
    assert skab["static rules"][1:] == [100.0, 0.0]  # the seed's pressure rule (30 psi) flags every SKAB row
    assert skab["iotpipe sustained"][0] > 0.9  # the shift flagged on every reading while it lasts
    assert skab["iotpipe onset"][0] < skab["iotpipe sustained"][0]
    assert "us per reading" in lines[13]
    # the healthy series: every flagged reading a false alarm, fewer at each higher sensitivity, none of Gaussian
    # noise at 0.9 (the sensitivity prod deploys)
    assert lines[14].startswith("healthy series (no anomaly)")
    assert lines[15].split()[-4:] == ["0.5", "0.7", "0.8", "0.9"]
    healthy = {line[:42].strip(): [int(x.replace(",", "")) for x in line[42:].split()[:1] + line[42:].split()[2:]]
               for line in lines[16:]}
    assert set(healthy) == {"Gaussian noise, 1 Hz (seeded)", "Student's t noise (5 dof), 1 Hz (seeded)"}
    for readings, *alarms in healthy.values():
        assert readings == 360_000
        assert alarms == sorted(alarms, reverse=True)
    assert healthy["Gaussian noise, 1 Hz (seeded)"][1] > 0 and healthy["Gaussian noise, 1 Hz (seeded)"][-1] == 0
    assert healthy["Student's t noise (5 dof), 1 Hz (seeded)"][-1] > 0  # heavy tails still alarm at 0.9


def test_without_data_it_says_so_and_succeeds(tmp_path: Path) -> None:
    result = run_script(SCRIPT, "--data", str(tmp_path / "absent"), timeout_s=120)
    assert result.returncode == 0
    assert "skipped, no development data" in result.stdout


def test_held_out_scores_each_category_at_a_threshold_chosen_without_it(tmp_path: Path) -> None:
    _make_data(tmp_path)
    result = run_script(SCRIPT, "--data", str(tmp_path), "--held-out", "--skip-skab", timeout_s=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("iotpipe onset per category, leaving it out"))
    # the only category: without it nothing is left to choose a threshold on, so nothing is detected (the null)
    assert lines[start + 1].split() == ["synthetic", "0.0", "0.0", "0.0", "1.100"]
    assert lines[start + 2].split() == ["mean", "0.0", "0.0", "0.0"]
