"""Issue 25: an endpoint that accepts connections and never answers fails a command in one line, within the
bounds of --connect-timeout, --read-timeout and --max-attempts (was six minutes: botocore's 60 s x 5 tries)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iotpipe.aws import CLI_TIMEOUTS, STACK_TIMEOUTS, ClientFactory, Timeouts
from iotpipe.cli import main
from iotpipe.cli.common import CliContext
from iotpipe.errors import IotpipeError


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:<port>: accepts every connection, reads nothing, answers nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set() and len(held) < 1000:
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


@pytest.mark.parametrize("command", [
    ["doctor", "--env", "dev"],
    ["status", "--env", "dev"],
    ["sql", "SELECT 1", "--bucket", "b", "--since", "1h"],
    ["sql", "SELECT 1", "--engine", "athena", "--since", "1h"],
])
def test_a_silent_endpoint_fails_the_command_in_one_line(silent_endpoint: str, tmp_path: Path,
                                                         command: list[str]) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    done = subprocess.run(
        [sys.executable, "-c", "from iotpipe.cli import main; main()", *command, "--endpoint-url", silent_endpoint,
         "--region", "us-east-1", "--connect-timeout", "1", "--read-timeout", "0.5", "--max-attempts", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # a hang fails the test, not the suite
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and done.stderr.rstrip().splitlines()[-1] == errors[0], done.stderr
    assert "no answer in time" in errors[0] and "--read-timeout" in errors[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_cli_bounds_every_client_and_help_says_so() -> None:
    config = ClientFactory(region="us-east-1", timeouts=CLI_TIMEOUTS).client("s3").meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (5.0, 10.0, 3)
    for command in ("doctor", "status", "sql", "deploy", "readings", "device"):
        text = CliRunner().invoke(main, [*command.split(), "--help"] if command != "device" else
                                  ["device", "list", "--help"]).stdout
        assert "--connect-timeout" in text and "--read-timeout" in text and "--max-attempts" in text, command
    assert Timeouts().config() == {"retries": {"mode": "standard", "max_attempts": 5}}  # the library's default


class Stop(IotpipeError):
    """Raised by the recording factory: the test needs the bounds, not the call."""


SEEN: list[Timeouts] = []


class RecordingFactory(ClientFactory):
    def client(self, service: str) -> Any:
        SEEN.append(self.timeouts)
        raise Stop(f"stopped before calling {service}")


@pytest.mark.parametrize(("args", "expected"), [
    (["status", "--env", "dev"], CLI_TIMEOUTS),
    (["deploy", "--env", "dev", "--yes"], STACK_TIMEOUTS),
    (["outputs", "--env", "dev", "--read-timeout", "2.5", "--max-attempts", "1"],
     Timeouts(connect_s=5.0, read_s=2.5, attempts=1)),
])
def test_each_command_hands_its_bounds_to_the_client_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              args: list[str], expected: Timeouts) -> None:
    monkeypatch.chdir(tmp_path)
    SEEN.clear()
    result = CliRunner().invoke(main, [*args, "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"],
                                obj=CliContext(factory_class=RecordingFactory))
    assert result.exit_code == 1 and "stopped before calling" in result.stderr, result.output
    assert SEEN and set(SEEN) == {expected}


def test_the_bounds_come_from_the_environment_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IOTPIPE_READ_TIMEOUT", "4")
    SEEN.clear()
    CliRunner().invoke(main, ["outputs", "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"],
                       obj=CliContext(factory_class=RecordingFactory))
    assert SEEN and SEEN[0].read_s == 4.0
