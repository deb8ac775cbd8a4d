"""The state file of ``iotpipe local``: its secrets, its permissions, where it is found, the folder's lock, the
supervisor's identity before any signal, and the logs kept per run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.errors import LocalError
from iotpipe.local import state as local_state
from iotpipe.local.processes import command_line, process_alive
from iotpipe.local.supervisor import refuse_if_running, stop_running

SUPERVISOR_COMMAND = f"{sys.executable} -c from iotpipe.cli import main; main() local up --env local"


def state_of(pid: int, command: str, **changes: object) -> local_state.LocalState:
    credentials = local_state.new_credentials()
    fields: dict[str, object] = {
        "env": "local", "stack_name": "iotpipe-local", "region": "us-east-1", "aws_endpoint": "http://127.0.0.1:1",
        "mqtt": "mqtt://127.0.0.1:2", "broker": "mosquitto", "pid": pid, "child_pids": (), "started_at": "",
        "ready": True, "log_file": "", "aws_access_key_id": credentials.aws_access_key_id,
        "aws_secret_access_key": credentials.aws_secret_access_key, "mqtt_username": credentials.mqtt_username,
        "mqtt_password": credentials.mqtt_password, "command": command, **changes}
    return local_state.LocalState(**fields)  # type: ignore[arg-type]


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen[bytes]]:
    """A program that is not iotpipe, standing for whatever got the pid of a killed supervisor."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_each_run_has_its_own_random_credentials_in_a_0600_file_in_a_0700_folder(tmp_path: Path) -> None:
    directory = tmp_path / "project" / ".iotpipe" / "local"
    state = state_of(os.getpid(), command_line(os.getpid()))
    local_state.write_state(state, directory)
    assert stat.S_IMODE(local_state.state_path(directory).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    shown = state.as_dict()
    assert {key: shown[key] for key in ("awsAccessKeyId", "awsSecretAccessKey", "mqttUsername", "mqttPassword")} == {
        "awsAccessKeyId": state.aws_access_key_id, "awsSecretAccessKey": state.aws_secret_access_key,
        "mqttUsername": state.mqtt_username, "mqttPassword": state.mqtt_password}
    first, second = local_state.new_credentials(), local_state.new_credentials()
    assert first.aws_access_key_id != second.aws_access_key_id and first.mqtt_password != second.mqtt_password
    assert first.aws_access_key_id != "local" and len(first.aws_secret_access_key) >= 40
    session = local_state.local_factory(state).session().get_credentials()
    assert (session.access_key, session.secret_key) == (state.aws_access_key_id, state.aws_secret_access_key)


def test_an_existing_open_folder_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    local_state.write_state(state_of(os.getpid(), ""), directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_pid_reused_by_another_program_is_never_signalled(
        tmp_path: Path, unrelated_process: subprocess.Popen[bytes]) -> None:
    local_state.write_state(state_of(unrelated_process.pid, SUPERVISOR_COMMAND), tmp_path)
    assert local_state.running_state(tmp_path) is None
    refuse_if_running(tmp_path)  # not "already runs": the file is stale, and removed
    assert local_state.read_state(tmp_path) is None
    local_state.write_state(state_of(unrelated_process.pid, SUPERVISOR_COMMAND), tmp_path)
    assert stop_running(tmp_path, timeout_s=0.5) is None
    assert unrelated_process.poll() is None and process_alive(unrelated_process.pid)
    assert local_state.read_state(tmp_path) is None


def test_a_state_file_without_a_recorded_command_needs_an_iotpipe_process(
        tmp_path: Path, unrelated_process: subprocess.Popen[bytes]) -> None:
    local_state.write_state(state_of(unrelated_process.pid, ""), tmp_path)
    assert local_state.running_state(tmp_path) is None
    assert stop_running(tmp_path, timeout_s=0.5) is None
    assert unrelated_process.poll() is None


def test_the_folder_is_found_from_subdirectories_and_the_variable_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(local_state.STATE_DIR_VARIABLE, raising=False)
    project = tmp_path / "project"
    deep = project / "src" / "deeper"
    deep.mkdir(parents=True)
    assert local_state.state_dir(deep) == deep / ".iotpipe" / "local"  # none yet: this folder's
    (project / ".iotpipe" / "local").mkdir(parents=True)
    assert local_state.state_dir(deep) == project / ".iotpipe" / "local"
    assert local_state.state_dir(project) == project / ".iotpipe" / "local"
    monkeypatch.setenv(local_state.STATE_DIR_VARIABLE, str(tmp_path / "elsewhere"))
    assert local_state.state_dir(deep) == tmp_path / "elsewhere"


def test_status_and_other_commands_find_a_running_local_from_a_subdirectory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(local_state.STATE_DIR_VARIABLE, raising=False)
    project = tmp_path / "project"
    state = state_of(os.getpid(), command_line(os.getpid()))
    local_state.write_state(state, project / ".iotpipe" / "local")
    (project / "src").mkdir()
    monkeypatch.chdir(project / "src")
    status = CliRunner().invoke(main, ["local", "status", "--output", "json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["running"] is True
    assert json.loads(status.stdout)["pid"] == os.getpid()
    # any other command with --env local uses the emulator's endpoint and region (not "no AWS region")
    sent = CliRunner().invoke(main, ["simulate", "--env", "local", "--count", "1", "--ack-timeout", "1"])
    assert "using iotpipe local (http://127.0.0.1:1, MQTT mqtt://127.0.0.1:2)" in sent.stderr


def test_one_lock_per_folder(tmp_path: Path) -> None:
    first = local_state.DirectoryLock(tmp_path)
    with pytest.raises(LocalError, match=r"is starting or running in .*its lock is held"):
        local_state.DirectoryLock(tmp_path)
    local_state.write_state(state_of(os.getpid(), command_line(os.getpid())), tmp_path)
    with pytest.raises(LocalError, match=rf"iotpipe local already runs \(pid {os.getpid()}"):
        local_state.DirectoryLock(tmp_path)
    first.release()
    local_state.DirectoryLock(tmp_path).release()


def test_a_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from iotpipe.local.state import DirectoryLock; "
         "DirectoryLock(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LocalError, match="its lock is held"):
            local_state.DirectoryLock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    local_state.DirectoryLock(tmp_path).release()  # the kernel dropped it with the process


def test_an_inherited_lock_is_adopted_only_when_it_is_this_folders(tmp_path: Path) -> None:
    parent = local_state.DirectoryLock(tmp_path)
    child = local_state.DirectoryLock(tmp_path, inherited_fd=os.dup(parent.fd))  # as a detached child gets it
    parent.release()
    with pytest.raises(LocalError):
        local_state.DirectoryLock(tmp_path)
    with (tmp_path / "other").open("w") as other, pytest.raises(LocalError):
        local_state.DirectoryLock(tmp_path, inherited_fd=os.dup(other.fileno()))
    child.release()


def test_logs_rotate_per_run_keeping_the_last_three(tmp_path: Path) -> None:
    log = tmp_path / "aws.log"
    for run in range(1, 6):
        local_state.rotate_log(log)
        log.write_text(f"run {run}\n")
    assert log.read_text() == "run 5\n"
    assert [(tmp_path / f"aws.{index}.log").read_text() for index in (1, 2, 3)] == ["run 4\n", "run 3\n", "run 2\n"]
    assert not (tmp_path / "aws.4.log").exists()
