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
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from iotpipe.local.state import STATE_DIR_VARIABLE

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""
CLI = [sys.executable, "-c", "from iotpipe.cli import main; main()"]
DEFAULT_SENSITIVITY = 0.5


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(tmp_path / "state"))
    (tmp_path / "iotpipe.toml").write_text(CONFIG)
    yield tmp_path
    subprocess.run([*CLI, "local", "down"], env={**os.environ}, capture_output=True, timeout=30, check=False)


def cli(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**os.environ}, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def stored_readings(info: dict[str, Any], table: str) -> int:
    # the emulator takes only the run's access key (`local up --output json` prints it)
    dynamodb = boto3.client("dynamodb", endpoint_url=info["awsEndpoint"], region_name="us-east-1",
                            aws_access_key_id=info["awsAccessKeyId"],
                            aws_secret_access_key=info["awsSecretAccessKey"])
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT", FilterExpression="sk <> :state",
                                                    ExpressionAttributeValues={":state": {"S": "#detector"}})
    return sum(page["Count"] for page in pages)


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
