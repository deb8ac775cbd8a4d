"""``iotpipe local up|status|down``: the whole pipeline on this machine, without an AWS account."""

from __future__ import annotations

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
from iotpipe.local.health import LocalStatus, local_status, read_health, remove_health
from iotpipe.local.pipeline import LocalOptions, LocalPipeline, stop_running

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
    use it without extra flags, from this folder or below it (they read .iotpipe/local/state.json, which
    holds this run's random AWS and MQTT credentials, readable by you alone). One folder runs one instance.
    """
    os.umask(0o077)  # every file of the run (state, logs, broker files, function code) is the user's alone
    inherited = os.environ.pop(local_state.LOCK_FD_VARIABLE, "")
    options = LocalOptions(env=env, config_path=config_path, aws_port=aws_port, mqtt_port=mqtt_port, broker=broker,
                           lock_fd=int(inherited) if inherited.isdigit() else None)
    if detach:
        _show_state(_start_detached(options), output)
        progress(console_hint(env))
        return
    _run_foreground(options, output)


def console_hint(env: str) -> str:
    """Where to see the env in a browser (the console picks its own token, so its full URL is its own to print)."""
    return f"see it in a browser: iotpipe console --env {env} (it prints http://127.0.0.1:8765/?token=...)"


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
        progress(console_hint(options.env))
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

    # The lock is taken here and handed to the child (same open file), so a second `up` refuses at once
    # instead of starting a child that would find the folder taken.
    lock = local_state.DirectoryLock(directory)
    try:
        refuse_if_running(directory)
        log_path = directory / "local.log"
        local_state.rotate_log(log_path)
        command = [sys.executable, "-c", "from iotpipe.cli import main; main()", "local", "up", "--env",
                   options.env, "--aws-port", str(options.aws_port), "--mqtt-port", str(options.mqtt_port),
                   "--broker", options.broker]
        if options.config_path:
            command += ["--config", options.config_path]
        env = {**os.environ, local_state.STATE_DIR_VARIABLE: str(directory),
               local_state.LOCK_FD_VARIABLE: str(lock.fd)}
        with log_path.open("wb") as log:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, pass_fds=(lock.fd,))
        return _wait_detached(directory, child, log_path)
    finally:
        lock.release()


def _wait_detached(directory: Path, child: subprocess.Popen[Any], log_path: Path) -> local_state.LocalState:
    """The child's state once it is ready; LocalError (and the child stopped) if it fails or takes too long."""
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
    """Show whether iotpipe local runs, where, and whether every part works.

    \b
    Exit 0 when it runs and every part works, or when nothing runs; exit 1 naming the part when one failed
    (died, stopped, or stopped answering): the emulator, the broker, the rule engine, a mapping, a worker or
    the supervisor itself. A failure stays reported until `iotpipe local down` or the next `local up`.
    """
    directory = local_state.state_dir()
    try:
        found = local_status(directory)
    except LocalError as exc:
        progress(f"note: {exc}")
        found = LocalStatus(state=None, failed=(), record=read_health(directory))
    if found.stale_pid is not None:
        progress(f"note: a stale state file from a run that was killed (pid {found.stale_pid}) was removed")
    if output == "json":
        echo_json(found.as_dict())
    elif found.failed:
        click.echo("iotpipe local is failing:" if found.running else "iotpipe local failed:")
        for part in found.failed:
            click.echo(f"  {part.describe()}")
        if found.failure:
            click.echo(f"the supervisor gave up: {found.failure}")
        if found.running and found.state is not None:
            _show_state(found.state, output)
    elif found.state is None:
        click.echo("iotpipe local is not running (start it with `iotpipe local up --detach`)")
    else:
        click.echo("iotpipe local is running")
        _show_state(found.state, output)
    if found.failed:
        sys.exit(1)


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
    remove_health(directory)  # a failure on record is over once everything is stopped
    if stopped is None:
        click.echo("iotpipe local is not running; nothing to stop")
        return
    click.echo(f"iotpipe local (pid {stopped.pid}, env {stopped.env}) stopped")
