"""What ``iotpipe local up|status|down`` do, for the CLI and library callers alike: run the pipeline in the
foreground until stopped, start it detached and wait until it is ready, read its status, stop it.

The CLI parses options, calls one of these and formats what they return; nothing here prints or exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from iotpipe.errors import LocalError
from iotpipe.local import processes
from iotpipe.local import state as local_state
from iotpipe.local.health import LocalStatus, local_status, read_health, remove_health
from iotpipe.local.supervisor import LocalOptions, LocalPipeline, refuse_if_running, stop_running

DETACH_TIMEOUT_S = 120.0
Progress = Callable[[str], None]


class _Terminated(Exception):
    """SIGTERM reached the foreground ``local up`` (``iotpipe local down`` sends it)."""


def run_foreground(options: LocalOptions, progress: Progress,
                   on_ready: Callable[[local_state.LocalState], None]) -> None:
    """Start the pipeline, call ``on_ready`` with its state, and serve until Ctrl-C or SIGTERM; everything started
    is stopped on the way out. LocalError (exit 130) when interrupted before it was ready."""
    pipeline = LocalPipeline(options, progress)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops it even when it was started with SIGINT ignored (a shell without job control does that to a
    # background command, and the child inherits it): a foreground run is stopped by SIGINT, always.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    ready = False
    try:
        state = pipeline.start()
        ready = True
        on_ready(state)
        progress("iotpipe local is running; Ctrl-C (or `iotpipe local down`) stops it")
        pipeline.serve_forever()
    except (KeyboardInterrupt, _Terminated):
        progress("stopping iotpipe local")
    finally:
        pipeline.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if not ready:
        raise LocalError("interrupted while starting; everything that had started was stopped", exit_code=130)
    progress("iotpipe local stopped; no process left")


def start_detached(options: LocalOptions, *, timeout_s: float = DETACH_TIMEOUT_S) -> local_state.LocalState:
    """Start ``local up`` in a session of its own, logging to the state directory; its state once it is ready.
    LocalError (and the child stopped) when it fails or is not ready within ``timeout_s``."""
    directory = local_state.state_dir()
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
        command += ["--no-console"] if options.console_port is None else ["--console-port", str(options.console_port)]
        env = {**os.environ, local_state.STATE_DIR_VARIABLE: str(directory),
               local_state.LOCK_FD_VARIABLE: str(lock.fd)}
        with log_path.open("wb") as log:
            child = processes.spawn_detached(command, env=env, stdout=log, pass_fds=(lock.fd,))
        return _wait_detached(directory, child, log_path, timeout_s)
    finally:
        lock.release()


def _wait_detached(directory: Path, child: subprocess.Popen[bytes], log_path: Path,
                   timeout_s: float) -> local_state.LocalState:
    found: list[local_state.LocalState] = []

    def ready() -> bool:
        state = _ready_state(directory, child.pid)
        found.extend([state] if state is not None else [])
        return state is not None

    def exited() -> LocalError:
        # the child's own code: 2 when the config or an option is wrong, as in the foreground
        return LocalError(f"iotpipe local did not start: {_last_error(log_path)} (log: {log_path})",
                          exit_code=2 if child.returncode == 2 else 1)

    def timed_out() -> LocalError:
        processes.stop_process(child, 10)
        return LocalError(f"iotpipe local was not ready within {timeout_s:.0f} s and was stopped (log: {log_path})")

    try:
        processes.wait_ready(ready, process=child, deadline=time.monotonic() + timeout_s, exited=exited,
                             timed_out=timed_out)
    except KeyboardInterrupt:
        processes.stop_process(child, 10)
        raise
    return found[-1]


def _ready_state(directory: Path, pid: int) -> local_state.LocalState | None:
    try:
        found = local_state.read_state(directory)
    except LocalError:
        return None
    return found if found is not None and found.pid == pid and found.ready else None


def _last_error(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("Error: ")


def status(progress: Progress) -> LocalStatus:
    """Whether iotpipe local runs in this folder (or above), and which of its parts failed; a stale state file
    of a killed run is removed (``progress`` says so)."""
    directory = local_state.state_dir()
    try:
        found = local_status(directory)
    except LocalError as exc:
        progress(f"note: {exc}")
        found = LocalStatus(state=None, failed=(), record=read_health(directory))
    if found.stale_pid is not None:
        progress(f"note: a stale state file from a run that was killed (pid {found.stale_pid}) was removed")
    return found


def stop(progress: Progress) -> local_state.LocalState | None:
    """Stop iotpipe local and everything it started; the state of the run stopped, None when nothing ran."""
    directory = local_state.state_dir()
    try:
        stopped = stop_running(directory)
    except LocalError as exc:
        progress(f"note: {exc}")
        local_state.state_path(directory).unlink(missing_ok=True)
        stopped = None
    remove_health(directory)  # a failure on record is over once everything is stopped
    return stopped
