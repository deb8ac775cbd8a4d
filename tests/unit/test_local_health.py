"""Supervision without a running pipeline: ``local status`` reads the supervisor's health record and checks the
processes itself; the supervisor acts on what it finds (parts stood in by fakes and real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.errors import LocalError
from iotpipe.local.health import DEAD, OK, HealthRecord, PartHealth, read_health, write_health
from iotpipe.local.processes import command_line, process_state
from iotpipe.local.state import STATE_DIR_VARIABLE, LocalState, read_state, write_state
from iotpipe.local.supervisor import LocalOptions, LocalPipeline, _Wiring

DEAD_PID = 2**22 + 4321  # above the default pid_max: no such process


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(directory))
    return directory


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real child process standing in for the emulator."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def a_state(pid: int, child_pids: tuple[int, ...] = ()) -> LocalState:
    return LocalState(env="local", stack_name="iotpipe-local", region="us-east-1", aws_endpoint="http://127.0.0.1:1",
                      mqtt="mqtt://127.0.0.1:2", broker="mosquitto", pid=pid, child_pids=child_pids, started_at="",
                      ready=True, log_file="", command=command_line(pid))


def status() -> Any:
    return CliRunner().invoke(main, ["local", "status"])


def test_status_names_a_dead_emulator_that_the_last_record_thought_ok(state_dir: Path,
                                                                     sleeper: subprocess.Popen[bytes]) -> None:
    write_state(a_state(os.getpid(), (DEAD_PID, sleeper.pid)), state_dir)
    write_health(HealthRecord(pid=os.getpid(), checked_at=time.time(),
                              parts=(PartHealth("emulator", OK, DEAD_PID), PartHealth("broker", OK, sleeper.pid))),
                 state_dir)
    result = status()
    assert result.exit_code == 1
    assert f"emulator (pid {DEAD_PID}): dead" in result.stdout
    assert "broker" not in result.stdout.split("AWS endpoint")[0]  # the live broker is not named


def test_status_says_when_the_supervisor_itself_stopped_answering(state_dir: Path) -> None:
    write_state(a_state(os.getpid()), state_dir)
    write_health(HealthRecord(pid=os.getpid(), checked_at=time.time() - 60, parts=(PartHealth("emulator"),)),
                 state_dir)
    result = status()
    assert result.exit_code == 1
    assert "supervisor" in result.stdout and "not answering: its last check was 60 s ago" in result.stdout


def test_status_names_a_part_the_supervisor_found_failing(state_dir: Path) -> None:
    write_state(a_state(os.getpid()), state_dir)
    write_health(HealthRecord(pid=os.getpid(), checked_at=time.time(),
                              parts=(PartHealth("rule engine", DEAD, detail="its thread ended"),)), state_dir)
    result = CliRunner().invoke(main, ["local", "status", "--output", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["running"] is True and report["healthy"] is False
    assert [part["part"] for part in report["failed"]] == ["rule engine"]


def test_a_recorded_failure_outlives_the_supervisor_until_local_down(state_dir: Path) -> None:
    write_state(a_state(DEAD_PID), state_dir)
    write_health(HealthRecord(pid=DEAD_PID, checked_at=time.time(), failure="emulator (pid 7): dead: exited",
                              parts=(PartHealth("emulator", DEAD, 7, "exited"), PartHealth("broker", DEAD))), state_dir)
    for _ in range(2):  # reported again: status does not clear it
        result = status()
        assert result.exit_code == 1
        assert "iotpipe local failed:" in result.stdout and "emulator (pid 7): dead: exited" in result.stdout
    assert CliRunner().invoke(main, ["local", "down"]).exit_code == 0
    assert read_health(state_dir) is None
    after = status()
    assert after.exit_code == 0 and "not running" in after.stdout


def test_a_killed_run_whose_children_are_gone_is_not_running(state_dir: Path) -> None:
    write_state(a_state(DEAD_PID, (DEAD_PID + 1,)), state_dir)
    result = status()
    assert result.exit_code == 0 and "not running" in result.stdout
    assert read_state(state_dir) is None


def test_a_killed_supervisor_whose_child_still_runs_is_a_failure(state_dir: Path,
                                                                 sleeper: subprocess.Popen[bytes]) -> None:
    write_state(a_state(DEAD_PID, (sleeper.pid,)), state_dir)
    result = status()
    assert result.exit_code == 1
    assert f"supervisor (pid {DEAD_PID}): dead: killed; its children still run (pids {sleeper.pid})" in result.stdout


# -- the supervisor acting on what it finds ----------------------------------------------------------------------


class FakeBroker:
    kind = "amqtt"
    pid = None
    port = 1
    url = "mqtt://127.0.0.1:1"

    def __init__(self) -> None:
        self.stopped = False

    @property
    def stats(self) -> Any:
        return SimpleNamespace(broker_running=not self.stopped, feed_connected=not self.stopped,
                               last_feed_error=None)

    def stop(self, **_options: Any) -> None:
        self.stopped = True


class FakeMoto:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def answers(self, _timeout_s: float) -> bool:
        return True

    def stop(self) -> None:
        self.process.kill()


def supervised(tmp_path: Path, sleeper: subprocess.Popen[bytes], engine_alive: bool) -> tuple[LocalPipeline,
                                                                                                FakeBroker]:
    pipeline = LocalPipeline(LocalOptions(directory=tmp_path))
    broker = FakeBroker()
    pipeline.moto, pipeline.broker = FakeMoto(sleeper), broker  # type: ignore[assignment]
    engine = SimpleNamespace(alive=engine_alive, close=lambda: None)
    pipeline._wiring = _Wiring(stack=None, engine=engine, runners=[], functions=[], sinks=[])  # type: ignore[arg-type]
    return pipeline, broker


def test_a_dead_rule_engine_stops_the_broker_and_is_recorded(tmp_path: Path,
                                                             sleeper: subprocess.Popen[bytes]) -> None:
    healthy, _ = supervised(tmp_path, sleeper, engine_alive=True)
    record = healthy.supervise_once()
    assert record.failure is None and all(part.ok for part in record.parts)
    assert {part.part for part in record.parts} == {"emulator", "broker", "rule engine"}

    pipeline, broker = supervised(tmp_path, sleeper, engine_alive=False)
    with pytest.raises(LocalError, match=r"rule engine: dead: its thread ended; the MQTT broker was stopped"):
        pipeline.supervise_once()
    assert broker.stopped  # devices' publishes now fail instead of being acknowledged and lost
    recorded = read_health(tmp_path)
    assert recorded is not None and recorded.failure is not None and "rule engine" in recorded.failure


def test_a_killed_emulator_stops_the_broker_at_the_next_check(tmp_path: Path,
                                                              sleeper: subprocess.Popen[bytes]) -> None:
    pipeline, broker = supervised(tmp_path, sleeper, engine_alive=True)
    sleeper.kill()
    sleeper.wait()
    with pytest.raises(LocalError, match=rf"emulator \(pid {sleeper.pid}\): dead: exited with code -9"):
        pipeline.supervise_once()
    assert broker.stopped


def test_a_stopped_emulator_fails_after_three_unanswered_checks(tmp_path: Path,
                                                                sleeper: subprocess.Popen[bytes]) -> None:
    pipeline, broker = supervised(tmp_path, sleeper, engine_alive=True)
    pipeline.moto.answers = lambda _timeout_s: False  # type: ignore[union-attr, method-assign]
    os.kill(sleeper.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5  # the signal takes effect when the process is next scheduled
    while process_state(sleeper.pid) != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        for _ in range(2):  # one slow answer is not a failure
            record = pipeline.supervise_once()
            assert record.failure is None and not broker.stopped
        with pytest.raises(LocalError, match=rf"emulator \(pid {sleeper.pid}\): stopped: 3 probes unanswered"):
            pipeline.supervise_once()
        assert broker.stopped
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)


def test_a_message_while_no_stack_is_wired_is_counted_and_logged(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    pipeline = LocalPipeline(LocalOptions(directory=tmp_path))
    assert pipeline.wiring is None  # destroyed, or between a destroy and the next deploy
    with caplog.at_level("WARNING", logger="iotpipe.local.supervisor"):
        pipeline._on_message("sensor/press-7/data", b'{"value": 1}', "press-7")
    assert pipeline.unrouted == 1
    assert "sensor/press-7/data" in caplog.text and "not routed" in caplog.text


def test_a_reused_pid_is_not_taken_for_the_supervisor(state_dir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    recorded = a_state(sleeper.pid)
    write_state(LocalState(**{**recorded.__dict__, "command": "python -m iotpipe local up --detach"}), state_dir)
    result = status()
    assert result.exit_code == 0
    assert "not running" in result.stdout
    assert read_state(state_dir) is None  # the stale file is gone
    assert process_state(sleeper.pid) != DEAD  # and the program now holding the pid was left alone
