"""The deployed function, run as Lambda would: its own code, environment, timeout and runtime.

The code is :class:`~iotpipe.local.functions.spec.FunctionSpec`'s. Python runtimes run in a worker process of
this interpreter (:mod:`iotpipe.local.functions.worker`), Node.js runtimes in a ``node`` process (``worker.js``)
with the AWS SDK v3 that the Node twin installs. A worker lives across invocations (a warm execution environment); an
invocation that outlives the function's Timeout kills it, as Lambda does, and the next invocation starts a new one
(a cold start). The Timeout is a hard deadline for the whole exchange, the write of the event to the worker's
pipe included, so a stuck or stopped (SIGSTOP) worker cannot hold its shard. As on Lambda, concurrent
invocations (one per shard of a stream with several) each get an environment of their own: a worker that is idle
is reused, else another one starts. Every line the function writes on stdout or stderr goes to ``on_output``,
which puts it into the function's log group.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from iotpipe.errors import LocalError
from iotpipe.local.functions.framing import encode, read_message
from iotpipe.local.functions.result import InvokeResult
from iotpipe.local.functions.spec import FunctionSpec, node_modules_dir
from iotpipe.local.processes import process_state, spawn, stop_process
from iotpipe.local.state import LOCAL_CREDENTIALS

_NODE_WORKER = Path(__file__).with_name("worker.js")


@dataclass(eq=False)  # identity: the pool tells its workers apart
class _Worker:
    process: subprocess.Popen[bytes]
    requests: IO[bytes]
    responses: IO[bytes]
    readers: list[threading.Thread] = field(default_factory=list)
    generation: int = 0  # the code it loaded (FunctionRunner.update_code bumps the runner's)


class FunctionRunner:
    """Invokes one deployed function; concurrent calls (from different shards) run in different workers."""

    def __init__(self, spec: FunctionSpec, *, aws_endpoint: str, region: str, workdir: Path,
                 on_output: Callable[[str], None], credentials: tuple[str, str] = LOCAL_CREDENTIALS) -> None:
        self.spec = spec
        self._aws_endpoint = aws_endpoint
        self._credentials = credentials
        self._region = region
        self._on_output = on_output
        self._code_dir = workdir / f"function-{spec.name}"
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False
        self.invocations = 0
        self.cold_starts = 0
        self._generation = 0
        self._write_code()

    def update_code(self, code: str) -> None:
        """Run ``code`` from the next invocation on: idle workers are retired now, busy ones when they finish
        (each worker loaded its module once, as a warm Lambda environment does)."""
        with self._lock:
            self.spec = replace(self.spec, code=code)
            self._generation += 1
            self._write_code()
            stale, self._idle = self._idle, []
        for worker in stale:
            self._stop(worker)

    def _write_code(self) -> None:
        if self._code_dir.exists():
            shutil.rmtree(self._code_dir)
        self._code_dir.mkdir(parents=True)
        module = self.spec.handler.rpartition(".")[0]
        suffix = ".py" if self.spec.runtime.startswith("python") else ".js"
        (self._code_dir / f"{module}{suffix}").write_text(self.spec.code, encoding="utf-8")

    def _command(self) -> list[str]:
        if self.spec.runtime.startswith("python"):
            return [sys.executable, "-m", "iotpipe.local.functions.worker", str(self._code_dir), self.spec.handler]
        if self.spec.runtime.startswith("nodejs"):
            node = shutil.which("node")
            if node is None:
                raise LocalError(f"function {self.spec.name} runs on {self.spec.runtime}, but node is not on PATH; "
                                 "install Node.js 20 or newer")
            return [node, str(_NODE_WORKER), str(self._code_dir), self.spec.handler]
        raise LocalError(f"function {self.spec.name}: runtime {self.spec.runtime} is not supported by iotpipe local")

    def _environment(self) -> dict[str, str]:
        keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "SYSTEMROOT") if key in os.environ}
        env = {
            **keep,
            "AWS_ACCESS_KEY_ID": self._credentials[0],
            "AWS_SECRET_ACCESS_KEY": self._credentials[1],
            "AWS_SESSION_TOKEN": "local",
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_ENDPOINT_URL": self._aws_endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": self.spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": self.spec.log_group,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.spec.environment,
        }
        if self.spec.runtime.startswith("nodejs"):
            env["NODE_PATH"] = str(node_modules_dir())
        else:  # the worker module itself must be importable, as the Lambda runtime's bootstrap is
            env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
        return env

    def _start(self) -> _Worker:
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        command = [*self._command(), str(request_read), str(response_write)]
        process = _spawn(command, self._environment(), (request_read, response_write))
        os.close(request_read)
        os.close(response_write)
        worker = _Worker(process, os.fdopen(request_write, "wb"), os.fdopen(response_read, "rb"),
                         generation=self._generation)
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
            reader.start()
            worker.readers.append(reader)
        self.cold_starts += 1
        return worker

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._on_output(raw.decode("utf-8", "replace").rstrip("\n"))

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        """Invoke the function with ``event``; a raise, a crash or a timeout is a function error."""
        worker = self._acquire()
        request_id = str(uuid.uuid4())
        deadline_ms = time.time_ns() // 1_000_000 + self.spec.timeout_s * 1000
        try:
            # The function's timeout bounds the write as well as the answer: a stopped worker (SIGSTOP) does not
            # drain its pipe, so an event larger than the pipe's buffer would block the write forever.
            sent = _write_message(worker.requests, {"requestId": request_id, "event": event,
                                                    "deadlineMs": deadline_ms, "functionArn": self.spec.arn},
                                  deadline_ms / 1000)
            response = _read_message(worker.responses, deadline_ms / 1000) if sent else None
        except (BrokenPipeError, EOFError, OSError) as exc:
            self._discard(worker)
            self._on_output(f"RequestId: {request_id} Error: Runtime exited: {exc or 'no answer'}")
            return InvokeResult(function_error="Unhandled",
                                payload={"errorType": "Runtime.ExitError", "errorMessage": str(exc)})
        if response is None:
            self._discard(worker)
            message = f"Task timed out after {self.spec.timeout_s:.2f} seconds"
            self._on_output(f"{_utc_now()} {request_id} {message}")
            return InvokeResult(function_error="Unhandled",
                                payload={"errorType": "Sandbox.Timedout", "errorMessage": message})
        self._release(worker)
        if "error" in response:
            return InvokeResult(function_error="Unhandled", payload=response["error"])
        return InvokeResult(function_error=None, payload=response.get("payload"))

    def worker_states(self) -> list[tuple[int, str, bool]]:
        """``(pid, state, busy)`` of each worker that has not been reaped: state is ``running``, ``stopped``
        (SIGSTOP: it answers nothing) or ``dead``."""
        with self._lock:
            workers = [(worker, False) for worker in self._idle] + [(worker, True) for worker in self._busy]
        return [(worker.process.pid, "dead" if worker.process.poll() is not None else
                 process_state(worker.process.pid), busy) for worker, busy in workers]

    def discard_idle_unhealthy(self) -> list[int]:
        """Kill and forget the idle workers that died or were stopped, so that no invocation waits out its
        timeout on one; the pids discarded. (A busy one is killed by its invocation's deadline.)"""
        with self._lock:
            bad = [worker for worker in self._idle
                   if worker.process.poll() is not None or process_state(worker.process.pid) != "running"]
            self._idle = [worker for worker in self._idle if worker not in bad]
        for worker in bad:
            self._stop(worker)
        return [worker.process.pid for worker in bad]

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (idle or busy)."""
        with self._lock:
            return [worker.process.pid for worker in (*self._idle, *self._busy) if worker.process.poll() is None]

    def _acquire(self) -> _Worker:
        """An idle warm worker, or a new one (a cold start) when every worker is busy."""
        with self._lock:
            if self._closed:
                raise LocalError(f"function {self.spec.name}: the runner is closed")
            self.invocations += 1
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    break
                self._stop(worker)  # died while idle (killed from outside): not reused
            else:
                worker = self._start()
            self._busy.add(worker)
            return worker

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            if self._closed or worker.generation != self._generation:
                self._stop(worker)
            else:
                self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        self._stop(worker)

    @staticmethod
    def _stop(worker: _Worker) -> None:
        stop_process(worker.process, timeout_s=2, kill=True)  # a timed-out or broken worker is killed, as Lambda does
        for stream in (worker.requests, worker.responses):
            with contextlib.suppress(OSError):
                stream.close()
        for reader in worker.readers:
            reader.join(timeout=1)

    def close(self) -> None:
        """Stop every worker process, busy ones included (idempotent)."""
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for worker in workers:
            self._stop(worker)


def _spawn(command: list[str], env: dict[str, str], fds: tuple[int, int]) -> subprocess.Popen[bytes]:
    """Start ``command`` with the two pipe ends ``fds`` inherited; it dies with this process (and only then: not
    when the calling thread, e.g. a shard's poller, ends)."""
    return spawn(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds)


def _write_message(stream: IO[bytes], message: dict[str, Any], deadline_s: float) -> bool:
    """Write one message; False when ``deadline_s`` (epoch seconds) passes before the reader took all of it
    (BrokenPipeError if the reader is gone)."""
    framed = memoryview(encode(message))
    fd = stream.fileno()
    os.set_blocking(fd, False)  # a write then takes what fits in the pipe and returns, never waits
    while framed:
        remaining = deadline_s - time.time()
        if remaining <= 0:
            return False
        _, ready, _ = select.select([], [fd], [], remaining)
        if not ready:
            return False
        try:
            written = os.write(fd, framed)
        except BlockingIOError:
            continue
        framed = framed[written:]
    return True


class _DeadlinePassed(Exception):
    pass


def _read_message(stream: IO[bytes], deadline_s: float) -> dict[str, Any] | None:
    """The next message, or None when ``deadline_s`` (epoch seconds) passes first; EOFError if the worker died."""
    fd = stream.fileno()

    def read(size: int) -> bytes:
        remaining = deadline_s - time.time()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise _DeadlinePassed
        return os.read(fd, size)

    try:
        message = read_message(read)
    except _DeadlinePassed:
        return None
    if message is None:
        raise EOFError("the worker exited")
    return dict(message)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
