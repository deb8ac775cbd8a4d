"""Every child process of ``iotpipe local``: started so that it dies with the supervisor, waited for until it
is ready, stopped so that none is left; and the ports they listen on.

The only module of ``iotpipe.local`` that forks or signals a process: the emulator (moto), mosquitto and the
function workers are all started by :func:`spawn` and stopped by :func:`stop_process`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

# Linux sends PR_SET_PDEATHSIG when the *thread* that forked the child ends, not the process: a child started from a
# short-lived thread (a shard's poller, a test's thread) would be killed with it. Every child is forked from this
# one thread, which lives as long as the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotpipe-spawner")
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.02

Stream = int | IO[Any] | None


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when this process dies (None elsewhere).

    SIGKILL, since a child stopped by SIGSTOP (a worker under a debugger, or stopped by the supervision tests)
    would never act on a catchable signal. Everything is resolved before the fork: between fork and exec the
    child runs only ``prctl`` and ``getppid``, no import and no allocation. A parent that died between the fork and
    the ``prctl`` would never send the signal, so the child checks that its parent is still the one that forked
    it and exits otherwise."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def start_from_lasting_thread(start: Callable[[], T]) -> T:
    """Run ``start`` on the thread that lives as long as this process (see :data:`_SPAWNER`) and return what it
    returns, so that a child forked by it dies with the process and not with the calling thread."""
    return _SPAWNER.submit(start).result()


def spawn(command: Sequence[str], *, env: Mapping[str, str] | None = None, stdout: Stream = subprocess.DEVNULL,
          stderr: Stream = subprocess.STDOUT, pass_fds: Sequence[int] = (), new_session: bool = False
          ) -> subprocess.Popen[bytes]:
    """Start ``command`` as a child that dies with this process (:func:`die_with_parent_hook`), forked from the
    lasting thread; stdin is /dev/null. ``new_session`` puts it in a process group of its own (Ctrl-C in a
    terminal then reaches the supervisor only, which stops the child in order)."""
    hook = die_with_parent_hook()
    return start_from_lasting_thread(lambda: subprocess.Popen(
        list(command), env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL, stdout=stdout,
        stderr=stderr, pass_fds=tuple(pass_fds), start_new_session=new_session, close_fds=True, preexec_fn=hook))


def spawn_detached(command: Sequence[str], *, env: Mapping[str, str], stdout: Stream,
                   pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own that outlives this process (``iotpipe local up --detach``: the
    one child that must not die with its parent); stdin is /dev/null."""
    return subprocess.Popen(list(command), env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.STDOUT, pass_fds=tuple(pass_fds), start_new_session=True,
                            close_fds=True)


def wait_ready(ready: Callable[[], bool], *, process: subprocess.Popen[Any], deadline: float,
               exited: Callable[[], BaseException], timed_out: Callable[[], BaseException]) -> None:
    """Return once ``ready()`` is true; raise ``exited()`` when ``process`` ends first, ``timed_out()`` when
    ``deadline`` (``time.monotonic``) passes first."""
    while True:
        if process.poll() is not None:
            raise exited()
        if ready():
            return
        if time.monotonic() > deadline:
            raise timed_out()
        time.sleep(_POLL_S)


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 3.0, *, kill: bool = False) -> None:
    """Stop ``process`` and reap it; idempotent. SIGTERM (to its whole group when it leads one), SIGKILL when it
    lingers past ``timeout_s``; ``kill`` skips the SIGTERM (a worker that timed out or broke, as Lambda does)."""
    if process.poll() is None:
        if not kill:
            _signal(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(timeout_s, 0.1))
        if process.poll() is None:
            _signal(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(timeout_s, 5.0))
    # once it is reaped its pid (and group id) may belong to someone else: never signal it again


def _signal(process: subprocess.Popen[Any], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if _leads_group(process.pid):
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def stop_pid(pid: int, timeout_s: float = 5.0, *, kill: bool = False) -> None:
    """Stop a process that is not this one's child (a detached supervisor, or a child a killed one left): SIGTERM
    (unless ``kill``), SIGKILL when it lingers past ``timeout_s``, then wait up to 2 s for it to be gone. The caller
    checks first that ``pid`` is the program it means (:func:`command_line`)."""
    steps = ((signal.SIGTERM, timeout_s),) if not kill else ()
    for signum, wait_s in (*steps, (signal.SIGKILL, 2.0)):
        if not process_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)


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


# -- ports ----------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on now (as a server binds it, with SO_REUSEADDR), or None when it
    can; ``errno.EADDRINUSE`` when another program holds it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    """True when another program listens on ``host:port``."""
    error = bind_error(host, port)
    return error is not None and error.errno == errno.EADDRINUSE


def accepts_connections(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts a TCP connection on ``host:port`` (a wildcard host is reached on loopback)."""
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def connect_host(host: str) -> str:
    """Where a client reaches a server listening on ``host``: a wildcard listener is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
