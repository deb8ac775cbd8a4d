"""Concurrent writes through a whole ``iotpipe local`` run, on each broker: two publishers at once, the rule engine's
PutRecords, two shards read by two processor invocations, each writing its readings with concurrent
BatchWriteItems. Every reading published is stored (a run on amqtt once stored 105 of 180)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iotpipe.local.broker import amqtt_available
from local_run import CLI, cli, local_workdir, stored_readings

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""
PUBLISHERS = ("press", "lathe")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_every_reading_published_at_once_by_several_devices_is_stored(broker: str) -> None:
    if broker == "mosquitto" and shutil.which("mosquitto") is None:
        pytest.skip("needs mosquitto (make install)")
    if broker == "amqtt" and not amqtt_available():
        pytest.skip("needs amqtt (pip install 'iotpipe[local]')")
    started = cli("local", "up", "--detach", "--broker", broker, "--output", "json")
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    # two publishing processes at once, 4 new devices each, 3 readings per message
    publishers = [subprocess.Popen(
        [*CLI, "simulate", "--env", "local", "--devices", "4", "--device-prefix", prefix, "--format", "multi",
         "--rate", "10", "--count", "80", "--seed", str(seed)],
        env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed, prefix in enumerate(PUBLISHERS)]
    sent = 0
    for publisher in publishers:
        out, err = publisher.communicate(timeout=180)
        assert publisher.returncode == 0, err
        assert "sent 80, failed 0" in out, out
        sent += int(re.search(r"readings (\d+)", out).group(1))  # type: ignore[union-attr]
    assert sent == 2 * 80 * 3

    outputs = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)
    table = outputs["SensorDataTableName"]
    deadline = time.monotonic() + 120
    count = stored_readings(info, table)
    while count < sent and time.monotonic() < deadline:
        time.sleep(0.5)
        count = stored_readings(info, table)
    assert count == sent  # one item per reading (the item-per-reading layout)
    assert cli("local", "down").returncode == 0
