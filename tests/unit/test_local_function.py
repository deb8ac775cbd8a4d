"""The function runner runs deployed code as Lambda would: warm worker, timeout kills it, errors are results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from iotpipe.local.functions.runner import FunctionRunner
from iotpipe.local.functions.spec import FunctionSpec
from iotpipe.local.functions.telemetry import emf_metrics
from iotpipe.local.processes import process_alive, process_state

PYTHON_CODE = """
import json, os, time
CALLS = []
def handler(event, context):
    CALLS.append(1)
    print(json.dumps({"seen": event.get("n"), "calls": len(CALLS), "table": os.environ.get("TABLE"),
                      "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 2000}))
    if event.get("raise"):
        raise ValueError("boom " + str(event["n"]))
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"batchItemFailures": [], "n": event.get("n")}
"""

NODE_CODE = """
exports.handler = async (event, context) => {
  process.stdout.write(JSON.stringify({ seen: event.n, table: process.env.TABLE,
    remainingOk: context.getRemainingTimeInMillis() > 0 }) + '\\n');
  if (event.raise) throw new Error('boom ' + event.n);
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  return { batchItemFailures: [], n: event.n };
};
"""


KINESIS_CODE = """
import base64, json
def handler(event, context):
    payloads = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
    if any(p["raise"] for p in payloads):
        raise RuntimeError("poisoned batch")
    return {"batchItemFailures": []}
"""


def spec(runtime: str, code: str, timeout_s: int = 2) -> FunctionSpec:
    return FunctionSpec(name="fn-test", arn="arn:aws:lambda:us-east-1:123456789012:function:fn-test",
                        runtime=runtime, handler="index.handler", code=code, environment={"TABLE": "t1"},
                        timeout_s=timeout_s, memory_mb=128, log_group="/aws/lambda/fn-test")


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float = 5) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if any(text in line for line in self.lines):
                    return list(self.lines)
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in {self.lines}")


RUNTIMES = [("python3.13", PYTHON_CODE), ("nodejs22.x", NODE_CODE)]


def skip_without_node(runtime: str) -> None:
    """The Node runtime needs a node binary (make install has one; a bare Python machine may not)."""
    if runtime.startswith("nodejs") and shutil.which("node") is None:
        pytest.skip("node is not on PATH")


@pytest.mark.parametrize(("runtime", "code"), RUNTIMES)
def test_invocations_share_a_warm_worker_and_log_every_line(tmp_path: Path, runtime: str, code: str) -> None:
    skip_without_node(runtime)
    lines = Lines()
    runner = FunctionRunner(spec(runtime, code), aws_endpoint="http://127.0.0.1:9", region="us-east-1",
                            workdir=tmp_path, on_output=lines)
    try:
        first = runner({"n": 1})
        second = runner({"n": 2})
        assert (first.function_error, first.payload) == (None, {"batchItemFailures": [], "n": 1})
        assert second.payload == {"batchItemFailures": [], "n": 2}
        assert runner.cold_starts == 1
        logged = lines.wait_for("END RequestId")
        printed = [json.loads(line) for line in logged if line.startswith('{"seen"')]
        assert printed[0]["table"] == "t1"  # the function's own environment
        assert all(entry.get("remaining_ok", entry.get("remainingOk")) for entry in printed)
        assert any(line.startswith("START RequestId:") for line in logged)
        assert any(line.startswith("REPORT RequestId:") for line in logged)
    finally:
        runner.close()


@pytest.mark.parametrize(("runtime", "code"), RUNTIMES)
def test_a_raise_is_a_function_error_and_the_worker_survives(tmp_path: Path, runtime: str, code: str) -> None:
    skip_without_node(runtime)
    lines = Lines()
    runner = FunctionRunner(spec(runtime, code), aws_endpoint="http://127.0.0.1:9", region="us-east-1",
                            workdir=tmp_path, on_output=lines)
    try:
        failed = runner({"n": 7, "raise": True})
        assert failed.function_error == "Unhandled"
        assert "boom 7" in failed.payload["errorMessage"]
        assert runner({"n": 8}).payload["n"] == 8
        assert runner.cold_starts == 1
        assert "boom 7" in "\n".join(lines.wait_for("[ERROR]"))
    finally:
        runner.close()


@pytest.mark.parametrize(("runtime", "code"), RUNTIMES)
def test_a_timeout_kills_the_worker_and_the_next_call_starts_a_new_one(tmp_path: Path, runtime: str,
                                                                        code: str) -> None:
    skip_without_node(runtime)
    lines = Lines()
    runner = FunctionRunner(spec(runtime, code, timeout_s=1), aws_endpoint="http://127.0.0.1:9",
                            region="us-east-1", workdir=tmp_path, on_output=lines)
    try:
        runner({"n": 0})
        [pid] = runner.worker_pids()
        started = time.monotonic()
        timed_out = runner({"n": 1, "sleep": 30})
        assert time.monotonic() - started < 5
        assert timed_out.function_error == "Unhandled"
        assert timed_out.payload["errorType"] == "Sandbox.Timedout"
        assert not process_alive(pid)
        assert runner({"n": 2}).payload["n"] == 2
        assert runner.cold_starts == 2
        assert any("Task timed out after 1.00 seconds" in line for line in lines.lines)
    finally:
        runner.close()


@pytest.mark.parametrize(("runtime", "code"), RUNTIMES)
def test_concurrent_invocations_run_in_environments_of_their_own(tmp_path: Path, runtime: str,
                                                                 code: str) -> None:
    skip_without_node(runtime)
    runner = FunctionRunner(spec(runtime, code), aws_endpoint="http://127.0.0.1:9", region="us-east-1",
                            workdir=tmp_path, on_output=Lines())
    try:
        results: dict[int, object] = {}
        calls = [threading.Thread(target=lambda n=n: results.__setitem__(n, runner({"n": n, "sleep": 0.5})))
                 for n in (1, 2)]
        for call in calls:
            call.start()
        for call in calls:
            call.join(timeout=10)
        assert {n: result.payload["n"] for n, result in results.items()} == {1: 1, 2: 2}  # type: ignore[attr-defined]
        assert runner.cold_starts == 2  # the second call found the first worker busy
        assert len(runner.worker_pids()) == 2
        assert runner({"n": 3}).payload["n"] == 3
        assert runner.cold_starts == 2  # an idle warm worker is reused
    finally:
        runner.close()
    assert runner.worker_pids() == []


@pytest.mark.parametrize(("runtime", "code"), RUNTIMES)
def test_a_stopped_worker_meets_the_timeout_even_when_the_event_overflows_its_pipe(tmp_path: Path, runtime: str,
                                                                                  code: str) -> None:
    """A worker stopped with SIGSTOP reads nothing: an event larger than the pipe's buffer (64 KiB) used to block
    the write forever, so the function's timeout never fired and the shard stalled."""
    skip_without_node(runtime)
    lines = Lines()
    runner = FunctionRunner(spec(runtime, code, timeout_s=1), aws_endpoint="http://127.0.0.1:9",
                            region="us-east-1", workdir=tmp_path, on_output=lines)
    results: list[object] = []
    try:
        runner({"n": 0})
        [pid] = runner.worker_pids()
        stop(pid)
        call = threading.Thread(target=lambda: results.append(runner({"n": 1, "pad": "x" * 1_000_000})),
                                daemon=True)
        call.start()
        call.join(timeout=30)
        assert not call.is_alive(), "the invocation is still writing to the stopped worker"
        [timed_out] = results
        assert timed_out.payload["errorType"] == "Sandbox.Timedout"  # type: ignore[attr-defined]
        assert not process_alive(pid)  # killed, as Lambda kills a timed-out environment
        assert runner({"n": 2}).payload["n"] == 2  # a new worker
        assert any("Task timed out after 1.00 seconds" in line for line in lines.lines)
    finally:
        runner.close()


def test_an_idle_worker_that_is_stopped_is_discarded_before_an_invocation_waits_on_it(tmp_path: Path) -> None:
    runner = FunctionRunner(spec("python3.13", PYTHON_CODE), aws_endpoint="http://127.0.0.1:9",
                            region="us-east-1", workdir=tmp_path, on_output=Lines())
    try:
        runner({"n": 1})
        [pid] = runner.worker_pids()
        assert runner.worker_states() == [(pid, "running", False)]
        assert runner.discard_idle_unhealthy() == []
        stop(pid)
        assert runner.worker_states() == [(pid, "stopped", False)]
        assert runner.discard_idle_unhealthy() == [pid]
        assert not process_alive(pid)
        assert runner({"n": 2}).payload["n"] == 2
        assert runner.cold_starts == 2
    finally:
        runner.close()


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel shows it stopped (the signal is delivered asynchronously)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while process_state(pid) != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(pid) == "stopped"


def test_close_leaves_no_worker(tmp_path: Path) -> None:
    runner = FunctionRunner(spec("python3.13", PYTHON_CODE), aws_endpoint="http://127.0.0.1:9",
                            region="us-east-1", workdir=tmp_path, on_output=Lines())
    runner({"n": 1})
    [pid] = runner.worker_pids()
    runner.close()
    assert not process_alive(pid)
    assert runner.worker_pids() == []


def test_emf_lines_become_metrics_per_dimension_set() -> None:
    line = json.dumps({"_aws": {"Timestamp": 1_700_000_000_000, "CloudWatchMetrics": [{
        "Namespace": "IoT/Manufacturing", "Dimensions": [["Environment"], ["Environment", "SensorType"]],
        "Metrics": [{"Name": "SensorReadingsProcessed", "Unit": "Count"}]}]},
        "Environment": "local", "SensorType": "temperature", "SensorReadingsProcessed": 12})
    metrics = emf_metrics(line)
    assert [(m.name, m.dimensions, m.value, m.unit) for m in metrics] == [
        ("SensorReadingsProcessed", (("Environment", "local"),), 12.0, "Count"),
        ("SensorReadingsProcessed", (("Environment", "local"), ("SensorType", "temperature")), 12.0, "Count"),
    ]
    assert metrics[0].timestamp_ms == 1_700_000_000_000
    assert emf_metrics('{"level": "INFO", "message": "no metrics"}') == []
    assert emf_metrics("START RequestId: x") == []


def test_a_raising_or_timing_out_function_ends_in_the_on_failure_queue(tmp_path: Path, moto_endpoint: str) -> None:
    """The runner's function errors drive the mapping as on Lambda: retries, bisection, then the destination."""
    from iotpipe.aws import ClientFactory
    from iotpipe.local.esm import MappingRunner, MappingSpec

    factory = ClientFactory(region="us-east-1", endpoint_url=moto_endpoint)
    kinesis, sqs = factory.client("kinesis"), factory.client("sqs")
    kinesis.create_stream(StreamName="s", ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName="s")["StreamDescriptionSummary"]["StreamARN"]
    queue_url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for n in range(4):
        kinesis.put_record(StreamName="s", PartitionKey="p", Data=json.dumps({"n": n, "raise": n == 2}).encode())
    runner = FunctionRunner(spec("python3.13", KINESIS_CODE), aws_endpoint=moto_endpoint, region="us-east-1",
                            workdir=tmp_path, on_output=Lines())
    mapping = MappingRunner(MappingSpec(function_name="fn-test", function_arn=runner.spec.arn, stream_arn=stream_arn,
                                        batch_size=10, bisect_on_error=True, max_retry_attempts=1,
                                        on_failure_destination=queue_arn), factory, runner, retry_backoff_s=0.01)
    try:
        deadline = time.monotonic() + 30
        while mapping.stats.sent_to_destination == 0 and time.monotonic() < deadline:
            mapping.run_once()
        stats = mapping.stats
    finally:
        runner.close()
    assert stats.sent_to_destination == 1  # only the poisoned record, isolated by bisection
    assert stats.bisections >= 1 and stats.function_errors >= 2
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    failure = json.loads(message["Body"])
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert failure["KinesisBatchInfo"]["batchSize"] == 1
    assert failure["KinesisBatchInfo"]["startSequenceNumber"] == failure["KinesisBatchInfo"]["endSequenceNumber"]


def test_a_saved_edit_of_the_handler_runs_from_the_next_invocation(tmp_path: Path) -> None:
    from iotpipe.local.functions.follower import HandlerFollower
    from iotpipe.package import handler_path

    source = tmp_path / "edited" / "index.py"  # a copy of the processor: the checkout's file is left alone
    source.parent.mkdir()
    original = handler_path("python3.13").read_text(encoding="utf-8")
    source.write_text(original, encoding="utf-8")
    follower = HandlerFollower({"python": source})
    processor = FunctionRunner(
        FunctionSpec(name="processor", arn="arn:aws:lambda:us-east-1:123456789012:function:processor",
                     runtime="python3.13", handler="index.handler", code=original,
                     environment={"DYNAMODB_TABLE": "t", "S3_BUCKET": "b"}, timeout_s=10, memory_mb=128,
                     log_group="/aws/lambda/processor"),
        aws_endpoint="http://127.0.0.1:9", region="us-east-1", workdir=tmp_path / "run", on_output=Lines())
    other = FunctionRunner(spec("python3.13", PYTHON_CODE), aws_endpoint="http://127.0.0.1:9", region="us-east-1",
                           workdir=tmp_path / "other", on_output=Lines())
    try:
        assert processor({"Records": []}).payload == {"batchItemFailures": []}
        assert follower.poll([processor, other]) == []  # nothing saved yet
        source.write_text(original + "\n\ndef handler(event, context):\n    return {'edited': len(event['Records'])}\n",
                          encoding="utf-8")
        assert follower.poll([processor, other]) == ["processor"]  # the blueprint-like function is left alone
        assert processor({"Records": []}).payload == {"edited": 0}
        assert processor.cold_starts == 2  # the warm worker that had loaded the old code was retired
        assert other.spec.code == PYTHON_CODE
    finally:
        processor.close()
        other.close()


def test_the_pipeline_watcher_hands_saved_edits_to_its_functions(tmp_path: Path) -> None:
    from iotpipe.local.functions.follower import HandlerFollower
    from iotpipe.local.supervisor import LocalOptions, LocalPipeline, _Wiring

    source = tmp_path / "index.py"
    source.write_text(PYTHON_CODE)
    said: list[str] = []
    pipeline = LocalPipeline(LocalOptions(directory=tmp_path / "state"), said.append)
    runner = FunctionRunner(spec("python3.13", PYTHON_CODE), aws_endpoint="http://127.0.0.1:9", region="us-east-1",
                            workdir=tmp_path, on_output=Lines())
    follower = HandlerFollower({"python": source})
    try:
        pipeline._follow_edits(follower)  # nothing wired (between a destroy and a deploy): nothing to do
        pipeline._wiring = _Wiring(stack=None, engine=None, runners=[], functions=[runner], sinks=[])
        source.write_text(PYTHON_CODE.replace('"n": event.get("n")', '"n": -1'))
        pipeline._follow_edits(follower)
        assert said == ["function fn-test: picked up the saved edit of its handler source"]
        assert runner({"n": 3}).payload == {"batchItemFailures": [], "n": -1}
    finally:
        runner.close()
