"""The one module that starts, waits for and stops the children of ``iotpipe local``, and finds their ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from iotpipe.errors import LocalError
from iotpipe.local.processes import (
    accepts_connections,
    free_port,
    port_in_use,
    process_state,
    spawn,
    stop_process,
    wait_ready,
)

# A parent that spawns a sleeper from a thread that ends at once, then prints the sleeper's pid and waits.
PARENT = """
import sys, threading, time
from iotpipe.local.processes import spawn
children = []
thread = threading.Thread(target=lambda: children.append(spawn([sys.executable, "-c", "import time; time.sleep(60)"])))
thread.start(); thread.join()
print(children[0].pid, flush=True)
time.sleep(60)
"""


def _wait_for(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_child_outlives_the_thread_that_asked_for_it_and_dies_with_its_parent_even_when_stopped() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process_state(child) == "running"  # the spawning thread ended; the child did not
        os.kill(child, signal.SIGSTOP)  # a stopped child acts on no catchable signal: only SIGKILL ends it
        assert _wait_for(lambda: process_state(child) == "stopped")
        parent.kill()
        parent.wait(timeout=5)
        assert _wait_for(lambda: process_state(child) == "dead")
    finally:
        stop_process(parent, 1)


def test_stop_process_ends_the_whole_group_of_a_child_in_a_session_of_its_own() -> None:
    # The child starts a grandchild in its group and ignores SIGTERM itself: both end, the child by SIGKILL.
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True); "
            "time.sleep(60)")
    child = spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, new_session=True)
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    stop_process(child, timeout_s=0.5)
    assert child.returncode == -signal.SIGKILL
    assert _wait_for(lambda: process_state(grandchild) == "dead")


def test_stop_process_with_kill_sends_no_sigterm_and_is_idempotent() -> None:
    child = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(child, kill=True)
    assert child.returncode == -signal.SIGKILL
    stop_process(child)  # already reaped: nothing is signalled
    assert child.returncode == -signal.SIGKILL


def test_wait_ready_returns_when_ready_and_names_an_exit_or_a_timeout() -> None:
    sleeper = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        calls = iter([False, False, True])
        wait_ready(lambda: next(calls), process=sleeper, deadline=time.monotonic() + 10,
                   exited=lambda: LocalError("exited"), timed_out=lambda: LocalError("timed out"))
        with pytest.raises(LocalError, match="timed out"):
            wait_ready(lambda: False, process=sleeper, deadline=time.monotonic() + 0.1,
                       exited=lambda: LocalError("exited"), timed_out=lambda: LocalError("timed out"))
    finally:
        stop_process(sleeper, kill=True)
    with pytest.raises(LocalError, match="exited"):
        wait_ready(lambda: True, process=sleeper, deadline=time.monotonic() + 10,
                   exited=lambda: LocalError("exited"), timed_out=lambda: LocalError("timed out"))


def test_port_helpers_see_a_listener_and_a_free_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert accepts_connections("0.0.0.0", port)  # a wildcard host is reached on loopback
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    assert not accepts_connections("127.0.0.1", port)


def test_spawn_from_many_threads_at_once_starts_every_child() -> None:
    children: list[subprocess.Popen[bytes]] = []
    threads = [threading.Thread(target=lambda: children.append(spawn([sys.executable, "-c", "pass"])))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [child.wait(timeout=30) for child in children] == [0, 0, 0, 0]
