"""Seeing detection work on ``iotpipe local``, as a user would: ``local up``, ``simulate`` three devices of which
one's pressure shifts its level inside the static bounds, then ``anomalies``: the learned detector (``rule``
``model``) flags the failing series after its failure starts, and nothing else.

What it asserts, precisely: every reading sent is stored; at least one anomaly; every anomaly has ``rule`` ``model``
and a score at or above the default sensitivity, is on the device and sensor the ground truth lists, at or after
the failure's first reading. The values depend only on ``--seed``; with seed 4 the healthy series raise no alarm
(with some seeds a healthy series raises one right after its probation, see docs/detection.md)."""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_run import cli, local_workdir, stored_readings

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""
DEFAULT_SENSITIVITY = 0.5


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


def test_a_failing_sensor_is_flagged_by_the_model_and_healthy_ones_are_not(workdir: Path) -> None:
    started = cli("local", "up", "--detach", "--output", "json")
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    # 20 samples a second for 15 s: 200 healthy samples (the default --healthy-for, past the 150 readings of
    # probation), then 100 with pressure's level shifted on sim-001
    simulated = cli("simulate", "--env", "local", "--devices", "3", "--format", "multi", "--rate", "20",
                    "--duration", "15", "--failure", "level-shift", "--seed", "4", "--ground-truth", "truth.csv",
                    "--output", "json")
    assert simulated.returncode == 0, simulated.stderr
    summary = json.loads(simulated.stdout)
    assert summary["failed"] == 0 and summary["readings"] == 3 * 300 * 3
    with (workdir / "truth.csv").open(newline="") as handle:
        truth = list(csv.DictReader(handle))
    assert len(truth) == summary["failedReadings"] == 100
    assert {(row["deviceId"], row["sensorType"], row["failure"]) for row in truth} == \
        {("sim-001", "pressure", "level-shift")}
    failure_start = min(int(row["timestamp"]) for row in truth)

    outputs = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)
    deadline = time.monotonic() + 180
    count = stored_readings(info, outputs["SensorDataTableName"])
    while count < summary["readings"] and time.monotonic() < deadline:
        time.sleep(1)
        count = stored_readings(info, outputs["SensorDataTableName"])
    assert count == summary["readings"]

    listed = cli("anomalies", "--env", "local", "--since", "1h", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    anomalies = json.loads(listed.stdout)
    assert anomalies, "the level shift was not flagged"
    assert {(a["deviceId"], a["sensorType"], a["rule"]) for a in anomalies} == {("sim-001", "pressure", "model")}
    assert all(a["timestamp"] >= failure_start and a["score"] >= DEFAULT_SENSITIVITY for a in anomalies)
    assert all(a["expectedLow"] < a["expectedHigh"] for a in anomalies)
    assert cli("local", "down").returncode == 0
