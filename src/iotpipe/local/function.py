"""The deployed function, run as Lambda would: its own code, environment, timeout and runtime.

The code is the deployed template's ``Code.ZipFile``, or its module read from the zip at ``Code.S3Bucket`` /
``S3Key`` in the emulator's S3 (where ``iotpipe deploy`` uploaded it). Python runtimes run in a worker process of
this interpreter (:mod:`iotpipe.local.worker`), Node.js runtimes in a ``node`` process (``worker.js``) with the
AWS SDK v3 that the Node twin installs. A worker lives across invocations (a warm execution environment); an
invocation that outlives the function's Timeout kills it, as Lambda does, and the next invocation starts a new one
(a cold start). The Timeout is a hard deadline for the whole exchange, the write of the event to the worker's
pipe included, so a stuck or stopped (SIGSTOP) worker cannot hold its shard. As on Lambda, concurrent
invocations (one per shard of a stream with several) each get an environment of their own: a worker that is idle
is reused, else another one starts. Every line the function writes on stdout or stderr goes to ``on_output``,
which puts it into the function's log group.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from iotpipe.errors import LocalError
from iotpipe.local.esm import InvokeResult
from iotpipe.local.processes import process_state, spawn, stop_process
from iotpipe.local.stack import DeployedStack
from iotpipe.local.state import LOCAL_CREDENTIALS

_NODE_WORKER = Path(__file__).with_name("worker.js")


@dataclass(frozen=True)
class FunctionSpec:
    """What the runner needs of a deployed ``AWS::Lambda::Function``."""

    name: str
    arn: str
    runtime: str
    handler: str
    code: str
    environment: Mapping[str, str]
    timeout_s: int
    memory_mb: int
    log_group: str
    role_arn: str = ""


def function_from_stack(stack: DeployedStack, logical_id: str,
                        read_object: Callable[[str, str], bytes] | None = None) -> FunctionSpec:
    """The function ``logical_id`` of the deployed stack, its code inline or read with ``read_object(bucket,
    key)`` from a zip in S3; LocalError if the code is neither, or cannot be read."""
    properties = stack.properties(logical_id)
    handler = properties.get("Handler", "index.handler")
    source = _function_code(logical_id, properties.get("Code", {}), properties["Runtime"], handler, read_object)
    name = stack.physical_ids[logical_id]
    logging_config = properties.get("LoggingConfig", {})
    return FunctionSpec(
        name=name,
        arn=f"arn:aws:lambda:{stack.region}:{stack.account_id}:function:{name}",
        runtime=properties["Runtime"],
        handler=handler,
        code=source,
        environment={key: str(value) for key, value in
                     properties.get("Environment", {}).get("Variables", {}).items()},
        timeout_s=int(properties.get("Timeout", 3)),
        memory_mb=int(properties.get("MemorySize", 128)),
        log_group=logging_config.get("LogGroup") or f"/aws/lambda/{name}",
        role_arn=str(properties.get("Role", "")),
    )


def _function_code(logical_id: str, code: Mapping[str, Any], runtime: str, handler: str,
                   read_object: Callable[[str, str], bytes] | None) -> str:
    """The handler module's source: ``Code.ZipFile``, or the module file of the zip at S3Bucket/S3Key."""
    from iotpipe.package import read_zip_member

    if "ZipFile" in code:
        return str(code["ZipFile"])
    if "S3Bucket" not in code or "S3Key" not in code or read_object is None:
        raise LocalError(f"function {logical_id}: iotpipe local runs code given as Code.ZipFile or Code.S3Bucket/"
                         f"S3Key; this template gives {', '.join(sorted(code)) or 'no code'}")
    bucket, key = str(code["S3Bucket"]), str(code["S3Key"])
    module = handler.rpartition(".")[0] + (".py" if runtime.startswith("python") else ".js")
    try:
        return read_zip_member(read_object(bucket, key), module)
    except Exception as exc:  # botocore, a bad zip or a missing member: the user needs the same answer
        raise LocalError(f"function {logical_id}: cannot read its code {module} from s3://{bucket}/{key} in the "
                         f"emulator ({exc}); deploy with `iotpipe deploy`, which uploads it") from None


def node_modules_dir() -> Path:
    """Where the Node twin's AWS SDK is installed (``npm install --prefix handler/node``)."""
    import iotpipe.handlers

    return Path(iotpipe.handlers.__path__[0]) / "node" / "node_modules"


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
            return [sys.executable, "-m", "iotpipe.local.worker", str(self._code_dir), self.spec.handler]
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
            env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
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


class HandlerFollower:
    """Puts saved edits of the processor's sources into the functions that run them (``iotpipe local``'s inner
    loop, as ``sam local`` reads the code at each invoke).

    ``sources`` maps a runtime family (``python``, ``nodejs``) to its source file. A function follows a file
    while it runs that file's text as last seen: another function's code (a blueprint's) is left alone.
    """

    def __init__(self, sources: Mapping[str, Path]) -> None:
        self._sources = dict(sources)
        self._seen = {family: _read_text(path) for family, path in self._sources.items()}

    @classmethod
    def for_packaged_handlers(cls) -> HandlerFollower:
        """Following the processor and its Node twin as iotpipe packages them (``handler/`` in a checkout)."""
        from iotpipe.package import handler_path

        return cls({"python": handler_path("python3"), "nodejs": handler_path("nodejs")})

    def poll(self, functions: list[FunctionRunner]) -> list[str]:
        """Read each source; update the functions that ran its previous text; their names."""
        from iotpipe.package import runtime_family

        updated = []
        for family, path in self._sources.items():
            text, previous = _read_text(path), self._seen[family]
            if text is None or text == previous:
                continue  # unchanged, or gone for a moment while an editor replaces it
            for function in functions:
                if runtime_family(function.spec.runtime) == family and function.spec.code == previous:
                    function.update_code(text)
                    updated.append(function.spec.name)
            self._seen[family] = text
        return updated


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _spawn(command: list[str], env: dict[str, str], fds: tuple[int, int]) -> subprocess.Popen[bytes]:
    """Start ``command`` with the two pipe ends ``fds`` inherited; it dies with this process (and only then: not
    when the calling thread, e.g. a shard's poller, ends)."""
    return spawn(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds)


def _write_message(stream: IO[bytes], message: dict[str, Any], deadline_s: float | None = None) -> bool:
    """Write one message; False when ``deadline_s`` (epoch seconds) passes before the reader took all of it
    (BrokenPipeError if the reader is gone)."""
    data = json.dumps(message, default=str).encode("utf-8")
    framed = memoryview(struct.pack(">I", len(data)) + data)
    if deadline_s is None:
        stream.write(framed)
        stream.flush()
        return True
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


def _read_message(stream: IO[bytes], deadline_s: float) -> dict[str, Any] | None:
    """The next message, or None when ``deadline_s`` (epoch seconds) passes first; EOFError if the worker died."""
    data = b""
    needed = 4
    length: int | None = None
    fd = stream.fileno()
    while True:
        remaining = deadline_s - time.time()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, needed - len(data))
        if not chunk:
            raise EOFError("the worker exited")
        data += chunk
        if len(data) < needed:
            continue
        if length is None:
            (length,) = struct.unpack(">I", data)
            data, needed = b"", length
            if length == 0:
                return {}
            continue
        return json.loads(data)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
