"""``iotpipe local`` under bad input and faults: each a clear message, a sensible exit code, no orphan."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.local.processes import command_line, process_alive
from iotpipe.local.state import STATE_DIR_VARIABLE, LocalState, read_state, write_state

CLI = [sys.executable, "-c", "from iotpipe.cli import main; main()"]
DEAD_PID = 2**22 + 4321  # above the default pid_max: no such process


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(directory))
    yield directory
    subprocess.run([*CLI, "local", "down"], capture_output=True, timeout=30, check=False)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def supervisors_of(directory: Path) -> list[int]:
    """Live ``local up`` processes serving ``directory`` (told by their environment, as other runs share the
    machine)."""
    marker = f"{STATE_DIR_VARIABLE}={directory}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and "local up" in command_line(int(entry.name))
                    and marker in (entry / "environ").read_bytes().split(b"\0") and process_alive(int(entry.name))):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def gone(pids: list[int], timeout_s: float = 3.0) -> list[str]:
    """The command lines of ``pids`` still alive after ``timeout_s`` (children die with their parent, a moment
    after it)."""
    deadline = time.monotonic() + timeout_s
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [command_line(pid) for pid in pids if process_alive(pid)]


@pytest.mark.usefixtures("state_dir")
def test_down_and_status_with_nothing_running_exit_0_with_a_note() -> None:
    down = CliRunner().invoke(main, ["local", "down"])
    assert down.exit_code == 0
    assert "not running; nothing to stop" in down.stdout
    status = CliRunner().invoke(main, ["local", "status", "--output", "json"])
    assert status.exit_code == 0
    assert json.loads(status.stdout) == {"running": False}


def test_a_stale_state_file_from_a_killed_run_is_reported_and_removed(state_dir: Path) -> None:
    write_state(LocalState(env="local", stack_name="iotpipe-local", region="us-east-1",
                           aws_endpoint="http://127.0.0.1:1", mqtt="mqtt://127.0.0.1:2", broker="mosquitto",
                           pid=DEAD_PID, child_pids=(), started_at="", ready=True, log_file=""), state_dir)
    status = CliRunner().invoke(main, ["local", "status"])
    assert status.exit_code == 0
    assert f"stale state file from a run that was killed (pid {DEAD_PID})" in status.stderr
    assert "not running" in status.stdout
    assert read_state(state_dir) is None


def test_commands_ignore_a_stale_state_file(state_dir: Path) -> None:
    write_state(LocalState(env="dev", stack_name="iotpipe-dev", region="us-east-1",
                           aws_endpoint="http://127.0.0.1:1", mqtt="mqtt://127.0.0.1:2", broker="mosquitto",
                           pid=DEAD_PID, child_pids=(), started_at="", ready=True, log_file=""), state_dir)
    result = CliRunner().invoke(main, ["simulate", "--env", "dev", "--count", "1"])
    assert result.exit_code == 2
    assert "where to send?" in result.stderr


def test_a_port_in_use_is_refused_before_anything_starts(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*CLI, "local", "up", "--aws-port", str(port)], capture_output=True, text=True,
                                timeout=60, check=False)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use; pick another with --aws-port N" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_state(state_dir) is None


@pytest.mark.parametrize("detach", [[], ["--detach"]])
def test_a_config_typo_at_up_is_a_usage_error_detached_or_not(state_dir: Path, detach: list[str]) -> None:
    Path("iotpipe.toml").write_text('[env.local]\nregion = 5\n', encoding="utf-8")
    result = subprocess.run([*CLI, "local", "up", "--env", "local", *detach], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr  # README: 2 for configuration errors (detached was 1)
    assert "env.local.region: expected str" in result.stderr and "Traceback" not in result.stderr
    assert read_state(state_dir) is None


def test_a_second_up_is_refused_and_ctrl_c_in_the_foreground_leaves_nothing(state_dir: Path) -> None:
    foreground = subprocess.Popen([*CLI, "local", "up", "--output", "json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while (found := read_state(state_dir)) is None and time.monotonic() < deadline:
            assert foreground.poll() is None, foreground.communicate()[1]
            time.sleep(0.2)
        assert found is not None and found.pid == foreground.pid
        children = children_of(foreground.pid)
        assert children, "the emulator and the broker run as children"

        second = subprocess.run([*CLI, "local", "up", "--detach"], capture_output=True, text=True, timeout=60,
                                check=False)
        assert second.returncode == 1
        assert f"iotpipe local already runs (pid {foreground.pid}" in second.stderr

        foreground.send_signal(signal.SIGINT)
        _, stderr = foreground.communicate(timeout=30)
        assert foreground.returncode == 0, stderr
        assert "iotpipe local stopped; no process left" in stderr
        assert gone(children) == []
        assert read_state(state_dir) is None
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.wait()


def test_ctrl_c_while_starting_stops_what_was_started(state_dir: Path) -> None:
    starting = subprocess.Popen([*CLI, "local", "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while not children_of(starting.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        children = children_of(starting.pid)
        assert children, "the emulator starts first"
        starting.send_signal(signal.SIGINT)
        _, stderr = starting.communicate(timeout=30)
        assert starting.returncode == 130, stderr
        assert "interrupted while starting; everything that had started was stopped" in stderr
        assert gone(children) == []
        assert read_state(state_dir) is None
    finally:
        if starting.poll() is None:
            starting.kill()
            starting.wait()


@pytest.mark.mqtt
def test_simulate_logs_in_to_the_local_broker_with_the_runs_credentials(state_dir: Path) -> None:
    from iotpipe.local.broker import BrokerSpec, start_broker
    from iotpipe.local.processes import command_line as running_command
    from iotpipe.local.state import new_credentials

    credentials = new_credentials()
    received: list[str] = []
    spec = BrokerSpec("auto", username=credentials.mqtt_username, password=credentials.mqtt_password)
    with start_broker(spec, state_dir / "broker", lambda topic, _payload, _client: received.append(topic)) as broker:
        state = LocalState(env="local", stack_name="iotpipe-local", region="us-east-1",
                           aws_endpoint="http://127.0.0.1:1", mqtt=broker.url, broker=broker.kind,
                           pid=os.getpid(), child_pids=(), started_at="", ready=True, log_file="",
                           command=running_command(os.getpid()))
        try:
            write_state(state, state_dir)  # no credentials: what any other local user could try
            refused = CliRunner().invoke(main, ["simulate", "--env", "local", "--count", "1", "--ack-timeout", "2"])
            assert refused.exit_code == 1 and "refused the connection" in refused.stderr
            write_state(replace(state, mqtt_username=credentials.mqtt_username,
                                mqtt_password=credentials.mqtt_password), state_dir)
            sent = CliRunner().invoke(main, ["simulate", "--env", "local", "--count", "3", "--output", "json"])
            assert sent.exit_code == 0, sent.stderr
        finally:  # the state names this test's process: `local down` at teardown must not stop it
            (state_dir / "state.json").unlink()
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(received) == 3


def test_two_detached_ups_in_one_folder_start_one_instance_and_no_orphan(state_dir: Path) -> None:
    starts = [subprocess.Popen([*CLI, "local", "up", "--detach", "--output", "json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(start.wait(timeout=180), *start.communicate(timeout=10)) for start in starts]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    winner = next(json.loads(out) for code, out, _ in results if code == 0)
    loser = next(err for code, _, err in results if code == 1)
    assert "already runs" in loser or "its lock is held" in loser
    assert "Traceback" not in loser
    assert supervisors_of(state_dir) == [winner["pid"]]  # the other one's child is not left running
    assert (state_dir / "state.json").stat().st_mode & 0o077 == 0
    down = subprocess.run([*CLI, "local", "down"], capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert gone([winner["pid"], *winner["childPids"]]) == []


def _get(url: str) -> int:
    """The HTTP status of a GET of ``url``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.usefixtures("state_dir")
def test_up_serves_the_console_and_prints_its_url_until_down() -> None:
    up = subprocess.run([*CLI, "local", "up", "--detach", "--output", "json", "--console-port", "0"],
                        capture_output=True, text=True, timeout=180, check=False)
    assert up.returncode == 0, up.stderr
    url = json.loads(up.stdout)["consoleUrl"]
    base, _, token = url.partition("/?token=")
    assert base.startswith("http://127.0.0.1:") and len(token) >= 32
    assert _get(url) == 200  # the token's page: it sets the cookie and goes on to the console
    assert _get(base + "/") == 401  # the token guards it
    assert _get(f"{base}/?token={'x' * len(token)}") == 403
    status = subprocess.run([*CLI, "local", "status"], capture_output=True, text=True, timeout=60, check=False)
    assert url in status.stdout
    down = subprocess.run([*CLI, "local", "down"], capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    quiet = subprocess.run([*CLI, "local", "up", "--detach", "--output", "json", "--no-console"],
                           capture_output=True, text=True, timeout=180, check=False)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["consoleUrl"] == ""
