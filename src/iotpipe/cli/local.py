"""``iotpipe local up|status|down``: the whole pipeline on this machine, without an AWS account."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from iotpipe.cli.common import progress
from iotpipe.cli.output import echo_json, output_option, write_table
from iotpipe.errors import LocalError
from iotpipe.local import state as local_state
from iotpipe.local.pipeline import LocalOptions, LocalPipeline, stop_running
from iotpipe.local.processes import process_alive

DETACH_TIMEOUT_S = 120.0


class _Terminated(Exception):
    """SIGTERM reached the foreground ``local up`` (``iotpipe local down`` sends it)."""


@click.group()
def local() -> None:
    """Run the whole pipeline on this machine: AWS emulator, MQTT broker, topic rule, mapping, function.

    \b
    Examples:
      iotpipe local up --detach
      iotpipe simulate --env local --count 100
      iotpipe readings sim-001 --env local
      iotpipe local down
    """


def _show_state(state: local_state.LocalState, output: str) -> None:
    if output == "json":
        echo_json(state.as_dict())
        return
    rows = [("env", state.env), ("stack", state.stack_name), ("AWS endpoint", state.aws_endpoint),
            ("MQTT", f"{state.mqtt} ({state.broker})"), ("pid", str(state.pid)), ("since", state.started_at),
            ("logs", state.log_file)]
    write_table(None, rows)


@local.command("up")
@click.option("--env", default="local", show_default=True, help="Environment whose stack is deployed locally.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: ./iotpipe.toml when present).")
@click.option("--aws-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the AWS emulator on 127.0.0.1 (0: a free port).")
@click.option("--mqtt-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the MQTT broker on 127.0.0.1 (0: a free port).")
@click.option("--broker", type=click.Choice(["auto", "mosquitto", "amqtt"]), default="auto", show_default=True,
              help="MQTT broker: mosquitto (when on PATH) or the embedded amqtt.")
@click.option("--detach", is_flag=True, help="Return once everything is ready and keep running in the background.")
@output_option
def up(env: str, config_path: str | None, aws_port: int, mqtt_port: int, broker: str, detach: bool,
       output: str) -> None:
    """Start the emulator and the broker, deploy the env's stack into it, and run the pipeline.

    Without --detach it runs in the foreground until Ctrl-C. Other commands given the same --env then
    use it without extra flags (they read .iotpipe/local/state.json in this directory).
    """
    options = LocalOptions(env=env, config_path=config_path, aws_port=aws_port, mqtt_port=mqtt_port, broker=broker)
    if detach:
        _show_state(_start_detached(options), output)
        return
    _run_foreground(options, output)


def _run_foreground(options: LocalOptions, output: str) -> None:
    pipeline = LocalPipeline(options, progress)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    ready = False
    try:
        state = pipeline.start()
        ready = True
        _show_state(state, output)
        sys.stdout.flush()
        progress("iotpipe local is running; Ctrl-C (or `iotpipe local down`) stops it")
        pipeline.serve_forever()
    except (KeyboardInterrupt, _Terminated):
        progress("stopping iotpipe local")
    finally:
        pipeline.stop()
        signal.signal(signal.SIGTERM, previous)
    if not ready:
        raise LocalError("interrupted while starting; everything that had started was stopped", exit_code=130)
    progress("iotpipe local stopped; no process left")


def _start_detached(options: LocalOptions) -> local_state.LocalState:
    """Start ``local up`` in a new session, logging to the state directory; return its state once ready."""
    directory = local_state.state_dir()
    from iotpipe.local.pipeline import refuse_if_running

    refuse_if_running(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "local.log"
    command = [sys.executable, "-c", "from iotpipe.cli import main; main()", "local", "up", "--env", options.env,
               "--aws-port", str(options.aws_port), "--mqtt-port", str(options.mqtt_port), "--broker", options.broker]
    if options.config_path:
        command += ["--config", options.config_path]
    env = {**os.environ, local_state.STATE_DIR_VARIABLE: str(directory)}
    with log_path.open("wb") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            state = _ready_state(directory, child.pid)
            if state is not None:
                return state
            if child.poll() is not None:
                # the child's own code: 2 when the config or an option is wrong, as in the foreground
                raise LocalError(f"iotpipe local did not start: {_last_error(log_path)} (log: {log_path})",
                                 exit_code=2 if child.returncode == 2 else 1)
            time.sleep(0.1)
    except KeyboardInterrupt:
        _terminate(child)
        raise
    _terminate(child)
    raise LocalError(f"iotpipe local was not ready within {DETACH_TIMEOUT_S:.0f} s and was stopped (log: {log_path})")


def _ready_state(directory: Path, pid: int) -> local_state.LocalState | None:
    try:
        found = local_state.read_state(directory)
    except LocalError:
        return None
    return found if found is not None and found.pid == pid and found.ready else None


def _terminate(child: subprocess.Popen[Any]) -> None:
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def _last_error(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("Error: ")


@local.command("status")
@output_option
def status(output: str) -> None:
    """Show whether iotpipe local runs, where, and what it serves (exit 0 either way)."""
    directory = local_state.state_dir()
    try:
        found = local_state.read_state(directory)
    except LocalError as exc:
        progress(f"note: {exc}")
        found = None
    if found is not None and not process_alive(found.pid):
        progress(f"note: a stale state file from a run that was killed (pid {found.pid}) was removed")
        local_state.remove_state(directory)
        found = None
    if found is None:
        if output == "json":
            click.echo(json.dumps({"running": False}))
        else:
            click.echo("iotpipe local is not running (start it with `iotpipe local up --detach`)")
        return
    if output == "json":
        echo_json({"running": True, **found.as_dict()})
        return
    click.echo("iotpipe local is running")
    _show_state(found, output)


@local.command("down")
def down() -> None:
    """Stop iotpipe local and everything it started (exit 0 when nothing runs)."""
    directory = local_state.state_dir()
    try:
        stopped = stop_running(directory)
    except LocalError as exc:
        progress(f"note: {exc}")
        local_state.state_path(directory).unlink(missing_ok=True)
        stopped = None
    if stopped is None:
        click.echo("iotpipe local is not running; nothing to stop")
        return
    click.echo(f"iotpipe local (pid {stopped.pid}, env {stopped.env}) stopped")
