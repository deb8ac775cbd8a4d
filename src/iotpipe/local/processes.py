"""Child processes of ``iotpipe local``: started so that they die with it, stopped so that none is left."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Linux sends PR_SET_PDEATHSIG when the *thread* that forked the child ends, not the process: a child started from a
# short-lived thread (a shard's poller, a test's thread) would be killed with it. Children that must outlive the
# thread asking for them are forked from this one thread, which lives as long as the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotpipe-spawner")


def die_with_parent() -> None:
    """In a child before exec: ask Linux to kill it when its parent dies, so no child outlives a killed run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def start_from_lasting_thread(start: Callable[[], T]) -> T:
    """Run ``start`` (which forks a child with :func:`die_with_parent`) on a thread that lives as long as this
    process, so the child dies with the process and not with the calling thread."""
    return _SPAWNER.submit(start).result()


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 3.0) -> None:
    """Terminate ``process``, kill it if it lingers past ``timeout_s``, and reap it; idempotent."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)


def process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists and is not a zombie."""
    return process_state(pid) != "dead"


def process_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP or a tracer: alive but answering nothing) or ``dead`` (gone, or a
    zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "running"
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return "running"
    if status in ("Z", "X"):
        return "dead"
    return "stopped" if status in ("T", "t") else "running"


def command_line(pid: int) -> str:
    """The command line of ``pid`` ('' when it cannot be read), to tell our children from a reused pid."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""
