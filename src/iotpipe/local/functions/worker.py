"""The Python Lambda runtime of ``iotpipe local``: runs one deployed handler in its own process.

Started by :class:`iotpipe.local.functions.runner.FunctionRunner` as ``python -m iotpipe.local.functions.worker
CODE_DIR HANDLER IN_FD OUT_FD`` with the function's environment. It reads invocations from IN_FD and answers on
OUT_FD (:mod:`iotpipe.local.functions.framing`), so that the handler's stdout and stderr stay free for its log
lines, as on Lambda, where they go to the function's log group. Standard library only, before the handler.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any, BinaryIO

from iotpipe.local.functions.framing import encode, read_message


class Context:
    """The parts of the Lambda context object that handlers use."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.aws_request_id: str = request["requestId"]
        self.function_name: str = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = "$LATEST"
        self.invoked_function_arn: str = request.get("functionArn", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name: str = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name: str = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms: int = request["deadlineMs"]

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the runner stops this invocation as timed out."""
        return max(0, self._deadline_ms - time.time_ns() // 1_000_000)


def serve(code_dir: str, handler_name: str, requests: BinaryIO, responses: BinaryIO) -> None:
    """Load the handler once (an init error fails every invocation) and answer invocations until EOF."""
    sys.path.insert(0, code_dir)
    module_name, _, function_name = handler_name.rpartition(".")
    handler: Any = None
    init_error: dict[str, Any] | None = None
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # an init error is the function's error, reported per invocation as Lambda does
        init_error = _error(exc, "Runtime.ImportModuleError")
    while (request := read_message(requests.read)) is not None:
        request_id = request["requestId"]
        started = time.perf_counter()
        print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
        if init_error is not None:
            response: dict[str, Any] = {"error": init_error}
        else:
            try:
                response = {"payload": handler(request["event"], Context(request))}
            except Exception as exc:  # the handler's own failure is the invocation's result, not the worker's
                response = {"error": _error(exc, type(exc).__name__)}
        if "error" in response:
            print(f"[ERROR] {json.dumps(response['error'])}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        duration_ms = (time.perf_counter() - started) * 1000
        print(f"END RequestId: {request_id}", flush=True)
        print(f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms", flush=True)
        responses.write(encode(response))
        responses.flush()


def _error(exc: BaseException, error_type: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__)[-5:]}


def main() -> None:
    """Entry point: ``python -m iotpipe.local.functions.worker CODE_DIR HANDLER IN_FD OUT_FD``."""
    code_dir, handler_name, in_fd, out_fd = sys.argv[1:5]
    with os.fdopen(int(in_fd), "rb") as requests, os.fdopen(int(out_fd), "wb") as responses:
        serve(code_dir, handler_name, requests, responses)


if __name__ == "__main__":
    main()
