"""Provisioning by claim on ``iotpipe local``, as an operator and a device do it: ``local up``, ``fleet claim
create``, ``fleet allow``, then ``simulate --provision-by-claim``: an allowed serial gets its own thing and
certificate over MQTT and its telemetry is stored; a serial not allowed exits 1 with the hook's refusal."""

from __future__ import annotations

import json
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_run import cli, emulator_client, local_workdir, stored_readings

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.fleet]
provisioning_by_claim = true

[env.local.processor]
batch_size = 100
batching_window_seconds = 1
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


def test_an_allowed_serial_provisions_and_sends_and_another_is_refused(workdir: Path) -> None:
    started = cli("local", "up", "--detach", "--output", "json")
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    created = cli("fleet", "claim", "create", "--env", "local", "--expires", "1d", "-o", "claim")
    assert created.returncode == 0, created.stderr
    assert cli("fleet", "allow", "SN-0001", "--env", "local").returncode == 0

    sent = cli("simulate", "--env", "local", "--provision-by-claim", "claim", "--serial", "SN-0001", "--count", "6",
               "--rate", "10", "--output", "json")
    assert sent.returncode == 0, sent.stderr
    assert "provisioned thing SN-0001" in sent.stderr
    summary = json.loads(sent.stdout)
    assert summary["sent"] == 6 and summary["failed"] == 0
    key = workdir / "claim" / "devices" / "SN-0001" / "SN-0001.private.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    iot = emulator_client(info, "iot")
    thing = iot.describe_thing(thingName="SN-0001")
    assert thing["attributes"] == {"serial": "SN-0001", "provisionedBy": "claim", "environment": "local",
                                   "managedBy": "iotpipe"}
    listed = json.loads(cli("device", "list", "--env", "local", "--output", "json").stdout)
    assert "SN-0001" in [device["thingName"] for device in listed]  # one of the env's devices
    principal = iot.list_thing_principals(thingName="SN-0001")["principals"][0]
    certificate_id = principal.rsplit("/", 1)[-1]
    assert iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"] == "ACTIVE"
    assert [p["policyName"] for p in iot.list_attached_policies(target=principal)["policies"]] \
        == ["SensorDevicePolicy-local"]

    outputs = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)
    deadline = time.monotonic() + 120
    while stored_readings(info, outputs["SensorDataTableName"]) < 6 and time.monotonic() < deadline:
        time.sleep(1)
    assert stored_readings(info, outputs["SensorDataTableName"]) == 6

    refused = cli("simulate", "--env", "local", "--provision-by-claim", "claim", "--serial", "SN-0002",
                  "--count", "1")
    assert refused.returncode == 1
    assert "pre-provisioning hook refused: serial SN-0002 is not on the allow-list" in refused.stderr
    status = json.loads(cli("fleet", "status", "--env", "local", "--output", "json").stdout)
    assert status["provisionedDevices"] == ["SN-0001"] and status["allowedSerials"] == 1
    assert cli("local", "down").returncode == 0
