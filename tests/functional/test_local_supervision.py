"""Supervision of a running ``iotpipe local`` (detached, on free ports): a part killed or stopped from outside, and
what a device and ``local status`` see afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from iotpipe.local.processes import command_line, process_state
from iotpipe.local.state import LocalState, read_state
from local_run import cli, local_workdir
from waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.processor]
batch_size = 100
batching_window_seconds = 1
timeout_seconds = 3
"""
DEVICE = "press-3"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


def up(workdir: Path) -> LocalState:
    started = cli("local", "up", "--detach", "--output", "json")
    assert started.returncode == 0, started.stderr
    state = read_state(workdir / "state")
    assert state is not None
    return state


def child(state: LocalState, name: str) -> int:
    (pid,) = [pid for pid in state.child_pids if name in command_line(pid)]
    return pid


def reading(value: float, pad: int = 0) -> bytes:
    body: dict[str, Any] = {"deviceId": DEVICE, "sensorType": "temperature", "value": value,
                            "timestamp": int(time.time() * 1000)}
    if pad:
        body["note"] = "x" * pad  # a field the processor ignores makes a large Kinesis record
    return json.dumps(body).encode()


def publish(state: LocalState, payloads: list[bytes], timeout_s: float = 5) -> bool:
    """True when the broker acknowledged every QoS 1 publish (logged in with the run's credentials); False when it
    refused the connection or did not acknowledge within ``timeout_s``."""
    host, port = state.mqtt.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=DEVICE)
    client.username_pw_set(state.mqtt_username, state.mqtt_password)
    try:
        client.connect(host, int(port))
    except OSError:
        return False
    client.loop_start()
    try:
        infos = [client.publish(f"sensor/{DEVICE}/data", payload, qos=1) for payload in payloads]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        return all(info.is_published() for info in infos)
    except (RuntimeError, ValueError):  # paho: the connection was lost before the publish went out
        return False
    finally:
        client.loop_stop()
        client.disconnect()


def stored_values() -> set[float]:
    found = cli("readings", DEVICE, "--env", "local", "--since", "1h", "--limit", "1000", "--output", "json")
    return {row["value"] for row in json.loads(found.stdout)} if found.returncode == 0 else set()


def test_a_killed_emulator_stops_the_broker_and_status_names_it(workdir: Path) -> None:
    state = up(workdir)
    assert publish(state, [reading(1.0)])
    emulator = child(state, "moto_server")
    os.kill(emulator, signal.SIGKILL)
    # Before: the broker went on acknowledging (and losing) publishes for minutes while the supervisor stopped.
    wait_until(lambda: not publish(state, [reading(2.0)], timeout_s=2), 30, "a publish the broker refuses")
    status = cli("local", "status")
    assert status.returncode == 1, status.stdout
    assert "emulator (pid" in status.stdout and ": dead: exited with code -9" in status.stdout
    # other threads may log the emulator's absence first (botocore's EndpointConnectionError): wait for the
    # supervisor's own last word
    gave_up = "the MQTT broker was stopped so that devices see their publishes fail"
    log = wait_until(lambda: gave_up in (text := (workdir / "state" / "local.log").read_text()) and text, 30,
                     "the supervisor's error in its log")
    assert f"emulator (pid {emulator}): dead" in log
    assert cli("local", "down").returncode == 0
    assert cli("local", "status").returncode == 0  # down clears the failure


def test_a_killed_broker_is_restarted_on_its_port_and_nothing_after_is_lost(workdir: Path) -> None:
    state = up(workdir)
    broker = child(state, "mosquitto")
    os.kill(broker, signal.SIGKILL)
    # Before: the broker was never restarted and status did not notice.
    wait_until(lambda: publish(state, [reading(7.0)], timeout_s=2), 30, "the restarted broker's acknowledgement")
    wait_until(lambda: 7.0 in stored_values(), 60, "the reading published after the restart in DynamoDB")
    restarted = read_state(workdir / "state")
    assert restarted is not None and restarted.mqtt == state.mqtt
    assert child(restarted, "mosquitto") != broker
    status = cli("local", "status", "--output", "json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["healthy"] is True
    assert any(f"broker (pid {broker}): dead" in event and "restarted" in event for event in report["events"])
    os.kill(state.pid, signal.SIGSTOP)  # a wedged supervisor: status sees it by itself
    try:
        wedged = wait_until(lambda: (r := cli("local", "status")).returncode == 1 and r.stdout, 30,
                            "status to notice the stopped supervisor")
        assert f"supervisor (pid {state.pid}): stopped" in wedged
    finally:
        os.kill(state.pid, signal.SIGCONT)


def test_a_stopped_worker_does_not_stall_its_shard(workdir: Path) -> None:
    state = up(workdir)
    assert publish(state, [reading(0.5)])
    wait_until(lambda: 0.5 in stored_values(), 60, "the first reading (a warm worker)")
    (worker,) = [pid for pid in _descendants(state.pid) if "iotpipe.local.functions.worker" in command_line(pid)]
    os.kill(worker, signal.SIGSTOP)
    # An event far larger than a pipe's 64 KiB buffer: before, writing it to the stopped worker blocked forever.
    values = [100.0 + n for n in range(60)]
    assert publish(state, [reading(value, pad=2000) for value in values], timeout_s=20)
    wait_until(lambda: set(values) <= stored_values(), 90, "every reading despite the stopped worker")
    assert process_state(worker) == "dead"
    status = cli("local", "status")
    assert status.returncode == 0, status.stdout


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found
