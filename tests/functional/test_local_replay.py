"""``iotpipe replay`` on a running ``iotpipe local``, as an operator would after changing a threshold: ``local up``,
``simulate`` two devices, lower temperature's ``max`` in the function's configuration, ``replay --from 1h``. Every
temperature reading becomes a ``bound`` anomaly, every other item stays exactly as it was, nothing is stored twice,
and the summary counts the anomalies before and after."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_run import cli, emulator_client, local_workdir, stored_readings

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


def items(info: dict[str, Any], table: str) -> dict[tuple[str, str], dict[str, Any]]:
    pages = emulator_client(info, "dynamodb").get_paginator("scan").paginate(TableName=table)
    return {(i["deviceId"]["S"], i["sk"]["S"]): i for page in pages for i in page["Items"]
            if not i["sk"]["S"].startswith("#")}


@pytest.mark.usefixtures("workdir")
def test_a_lowered_threshold_replayed_on_local_changes_exactly_the_temperature_items() -> None:
    started = cli("local", "up", "--detach", "--output", "json")
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    simulated = cli("simulate", "--env", "local", "--devices", "2", "--rate", "5", "--duration", "4",
                    "--seed", "3", "--output", "json")
    assert simulated.returncode == 0, simulated.stderr
    sent = json.loads(simulated.stdout)["readings"]
    outputs = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)
    table, function = outputs["SensorDataTableName"], outputs["DataProcessorFunctionName"]
    deadline = time.monotonic() + 120
    while stored_readings(info, table) < sent and time.monotonic() < deadline:
        time.sleep(1)
    before = items(info, table)
    assert len(before) == sent
    temperature = {key for key, item in before.items() if item["sensorType"]["S"] == "temperature"}
    assert temperature and all(item["status"]["S"] == "NORMAL" for item in before.values())

    lam = emulator_client(info, "lambda")
    variables = lam.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    thresholds = json.loads(variables["THRESHOLDS"])
    thresholds["temperature"] = {**thresholds["temperature"], "min": -50, "max": -40}  # every reading is above
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": {
        **variables, "THRESHOLDS": json.dumps(thresholds)}})

    replayed = cli("replay", "--env", "local", "--from", "1h", "--output", "json")

    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads(replayed.stdout)
    assert (summary["readings"], summary["quarantined"]) == (sent, 0)
    assert (summary["anomaliesBefore"], summary["anomaliesAfter"]) == (0, len(temperature))
    after = items(info, table)
    assert after.keys() == before.keys()  # nothing stored twice, nothing lost
    for key, item in after.items():
        if key in temperature:
            assert (item["status"]["S"], item["rule"]["S"], item["reason"]["S"]) == ("ANOMALY", "bound",
                                                                                      "above max -40")
        else:
            assert item == before[key]
    assert cli("local", "down").returncode == 0
