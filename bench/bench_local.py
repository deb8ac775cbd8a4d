"""``make bench-local``: the whole local pipeline, MQTT publish to reading stored, for 60 s per run.

Runs ``iotpipe local`` in this process (the supervisor: rule engine, mapping runner, function runner; the moto
server and mosquitto are its children), publishes from separate processes with paho over real sockets (QoS 1,
each reading's ``timestamp`` is its publish time in ms), and measures:

- readings/s stored end to end, and readings lost (published but not in DynamoDB at the end);
- publish-to-stored latency p50/p99: a reading counts as stored when the function invocation that wrote it
  returns (the processor writes DynamoDB before it returns), recorded by wrapping the function runner;
- the emulator's memory growth (moto server RSS) per 100,000 readings;
- ``local up`` ready time and ``local down`` time (through the CLI, as a user runs them).

Targets (issue 11): >= 2,000 readings/s with multi-reading messages, >= 1,000 readings/s with one reading per
message, 0 lost; ready <= 10 s; down <= 5 s. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SENSORS = {"temperature": 50.0, "pressure": 90.0, "vibration": 2.0}
CONFIG = """
[env.local.processor]
batch_size = {batch_size}
batching_window_seconds = 1
memory_mb = 1024

[env.local.stream]
shard_count = {shards}
"""


@dataclass(frozen=True)
class RunResult:
    """One run's figures."""

    name: str
    published: int
    stored: int
    lost: int
    seconds: float
    readings_per_s: float
    p50_ms: float
    p99_ms: float
    rss_growth_mb_per_100k: float

    def row(self) -> str:
        """A table row."""
        return (f"{self.name:<28} {self.published:>9,} {self.stored:>9,} {self.lost:>5} {self.seconds:>7.1f} "
                f"{self.readings_per_s:>10,.0f} {self.p50_ms:>8.0f} {self.p99_ms:>8.0f} "
                f"{self.rss_growth_mb_per_100k:>10.1f}")


def publisher(mqtt_url: str, devices: list[str], readings_per_message: int, rate_msgs: float, duration_s: float,
              result: Any, qos: int = 1, login: tuple[str, str] | None = None) -> None:
    """Publish at ``rate_msgs`` messages/s (all devices together) for ``duration_s``; put (sent, readings, unacked).

    One paho client per device, all driven from this one thread through a selector (paho's ``loop_read`` /
    ``loop_write`` / ``loop_misc``) rather than a network thread per client: the load generator shares the 2 cores
    with the pipeline it measures, and a thread per client cost about 0.4 ms of CPU per message, this about 0.15."""
    import paho.mqtt.client as mqtt

    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    selector = selectors.DefaultSelector()
    clients = []
    for device in devices:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
        if login is not None:
            client.username_pw_set(*login)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect(host, int(port))
        selector.register(client.socket(), selectors.EVENT_READ, client)
        clients.append((device, client))

    def pump(timeout_s: float) -> None:
        for key, _ in selector.select(timeout_s):
            key.data.loop_read()
        for _, client in clients:
            if client.want_write():
                client.loop_write()

    sensors = list(SENSORS)[:readings_per_message]
    sent = readings = 0
    pending: list[Any] = []
    started = last_misc = time.monotonic()
    while (elapsed := time.monotonic() - started) < duration_s:
        due = int(elapsed * rate_msgs)
        while sent < due:
            device, client = clients[sent % len(clients)]
            now_ms = time.time_ns() // 1_000_000
            # Every reading distinct: the processor stores an identical repeat (same device, millisecond, sensor
            # and value) once, so repeated values would read as lost.
            jitter = (sent % 100_000) / 1_000_000
            if readings_per_message == 1:
                sensor = sensors[(sent // len(clients)) % len(sensors)]
                body = {"deviceId": device, "sensorType": sensor, "value": SENSORS[sensor] + jitter,
                        "timestamp": now_ms, "seq": sent}
            else:
                body = {"deviceId": device, "timestamp": now_ms, "seq": sent,
                        "readings": {sensor: SENSORS[sensor] + jitter for sensor in sensors}}
            pending.append(client.publish(f"sensor/{device}/data", json.dumps(body), qos=qos))
            sent += 1
            readings += readings_per_message
        pump(0.002)
        if time.monotonic() - last_misc > 1:  # keep-alive pings and QoS 1 retries
            for _, client in clients:
                client.loop_misc()
            last_misc = time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(info.is_published() for info in pending):
        pump(0.01)
    for _, client in clients:
        client.disconnect()
        client.loop_write()
    result.put((sent, readings, sum(1 for info in pending if not info.is_published())))


class LatencyProbe:
    """Wraps the function runner: when an invocation succeeds, each reading it carried is stored."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.lock = threading.Lock()

    def install(self) -> None:
        """Patch FunctionRunner.__call__ in this process (the benchmark's own instrumentation)."""
        import base64

        from iotpipe.local.functions.runner import FunctionRunner

        original = FunctionRunner.__call__
        probe = self

        def timed(runner: Any, event: dict[str, Any]) -> Any:
            result = original(runner, event)
            if result.function_error is None:
                now_ms = time.time_ns() // 1_000_000
                failed = {item.get("itemIdentifier") for item in (result.payload or {}).get("batchItemFailures", [])}
                samples = []
                for record in event.get("Records", []):
                    kinesis = record["kinesis"]
                    if kinesis["sequenceNumber"] in failed:
                        continue
                    body = json.loads(base64.b64decode(kinesis["data"]))
                    samples += [now_ms - body["timestamp"]] * len(body.get("readings") or {"one": 1})
                with probe.lock:
                    probe.latencies_ms += samples
            return result

        FunctionRunner.__call__ = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        """Forget what was measured."""
        with self.lock:
            self.latencies_ms = []


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count_items(factory: Any, table: str) -> int:
    """Items in ``table``. moto's DescribeTable counts them live (AWS refreshes ItemCount every six hours); a COUNT
    scan of 150,000 items takes moto minutes."""
    return int(factory.client("dynamodb").describe_table(TableName=table)["Table"]["ItemCount"])


def detector_state_items(factory: Any, table: str, device_ids: list[str]) -> int:
    """How many of ``device_ids`` have a detector state item in ``table`` (one a device, docs/contract.md 12):
    items, but not readings."""
    from iotpipe.metering import STATE_SORT_KEY

    dynamodb, found = factory.client("dynamodb"), 0
    for start in range(0, len(device_ids), 100):  # BatchGetItem takes 100 keys
        keys = [{"deviceId": {"S": device}, "sk": {"S": STATE_SORT_KEY}} for device in device_ids[start:start + 100]]
        answer = dynamodb.batch_get_item(RequestItems={table: {"Keys": keys, "ProjectionExpression": "deviceId"}})
        found += len(answer["Responses"].get(table, []))
    return found


def drain(factory: Any, table: str, published: int, started: float, device_ids: list[str], quiet_s: float = 10.0,
          limit_s: float = 180.0) -> tuple[int, float]:
    """Wait until every published reading is in ``table``, or the count stops growing for ``quiet_s``; return
    (stored readings, seconds since ``started`` when the count last grew)."""
    stored, grew_at = 0, time.monotonic()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        count = count_items(factory, table) - detector_state_items(factory, table, device_ids)
        if count > stored:
            stored, grew_at = count, time.monotonic()
        if stored >= published or time.monotonic() - grew_at > quiet_s:
            break
        time.sleep(1.0)
    return stored, grew_at - started


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(name: str, readings_per_message: int, rate_msgs: float, duration_s: float, devices: int,
        batch_size: int, probe: LatencyProbe, broker: str, qos: int = 1, shards: int = 2) -> RunResult:
    """One run on a fresh ``iotpipe local``."""
    from iotpipe.aws import stack_outputs
    from iotpipe.local.state import local_factory
    from iotpipe.local.supervisor import LocalOptions, LocalPipeline

    with tempfile.TemporaryDirectory(prefix="iotpipe-bench-local-") as temp:
        config = Path(temp) / "iotpipe.toml"
        config.write_text(CONFIG.format(batch_size=batch_size, shards=shards))
        pipeline = LocalPipeline(LocalOptions(env="local", config_path=str(config), broker=broker,
                                              directory=Path(temp) / "state"))
        state = pipeline.start()
        try:
            assert pipeline.moto is not None
            factory = local_factory(state)
            table = stack_outputs(factory.client("cloudformation"), state.stack_name)["SensorDataTableName"]
            rss_before = rss_mb(pipeline.moto.process.pid)
            probe.reset()
            queue: Any = multiprocessing.Queue()
            ids = [f"bench-{i:03d}" for i in range(devices)]
            halves = [ids[: devices // 2], ids[devices // 2:]]
            workers = [multiprocessing.Process(target=publisher, args=(state.mqtt, half, readings_per_message,
                                                                       rate_msgs / 2, duration_s, queue, qos,
                                                                       (state.mqtt_username, state.mqtt_password)))
                       for half in halves]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            results = [queue.get(timeout=duration_s + 120) for _ in workers]
            for worker in workers:
                worker.join(timeout=30)
            published = sum(readings for _, readings, _ in results)
            stored, seconds = drain(factory, table, published, started, ids)
            rss_after = rss_mb(pipeline.moto.process.pid)
            with probe.lock:
                latencies = list(probe.latencies_ms)
            wiring = pipeline.wiring
            print(f"  {name}: rule engine {wiring.engine.stats}", file=sys.stderr)
            for runner in wiring.runners:
                print(f"  {name}: mapping {runner.stats}", file=sys.stderr)
            return RunResult(name=name, published=published, stored=stored, lost=published - stored,
                             seconds=seconds, readings_per_s=stored / seconds,
                             p50_ms=percentile(latencies, 0.5), p99_ms=percentile(latencies, 0.99),
                             rss_growth_mb_per_100k=(rss_after - rss_before) / max(stored, 1) * 100_000)
        finally:
            pipeline.stop()


def time_up_down(broker: str) -> tuple[float, float]:
    """Seconds for ``iotpipe local up --detach`` to return ready, and for ``iotpipe local down``."""
    cli = [sys.executable, "-c", "from iotpipe.cli import main; main()", "local"]
    with tempfile.TemporaryDirectory(prefix="iotpipe-bench-updown-") as temp:
        env = {**os.environ, "IOTPIPE_LOCAL_DIR": temp}
        started = time.monotonic()
        subprocess.run([*cli, "up", "--detach", "--broker", broker], env=env, cwd=temp, check=True,
                       capture_output=True, timeout=120)
        ready = time.monotonic() - started
        started = time.monotonic()
        subprocess.run([*cli, "down"], env=env, cwd=temp, check=True, capture_output=True, timeout=60)
        return ready, time.monotonic() - started


def main() -> None:
    """Run the benchmark and print the table and the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing per run")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--multi-rate", type=float, default=900.0, help="messages/s with 3 readings each")
    parser.add_argument("--single-rate", type=float, default=1300.0, help="messages/s with 1 reading each")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--broker", default="auto")
    parser.add_argument("--only", choices=("multi", "single"), help="run one of the two runs (no verdicts)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of the publishers")
    parser.add_argument("--shards", type=int, default=2, help="the stream's shards (iotpipe.toml's env local: 2)")
    args = parser.parse_args()
    probe = LatencyProbe()
    probe.install()
    if args.only:
        readings_per_message, rate = (3, args.multi_rate) if args.only == "multi" else (1, args.single_rate)
        print(run(args.only, readings_per_message, rate, args.duration, args.devices, args.batch_size, probe,
                  args.broker, args.qos, args.shards).row())
        return
    ready, down = time_up_down(args.broker)
    runs = [
        run("multi (3 readings/message)", 3, args.multi_rate, args.duration, args.devices, args.batch_size, probe,
            args.broker, args.qos, args.shards),
        run("single (1 reading/message)", 1, args.single_rate, args.duration, args.devices, args.batch_size, probe,
            args.broker, args.qos, args.shards),
    ]
    print(f"{'run':<28} {'published':>9} {'stored':>9} {'lost':>5} {'s':>7} {'readings/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'MB/100k':>10}")
    for result in runs:
        print(result.row())
    print(f"local up ready: {ready:.1f} s (target <= 10 s); local down: {down:.1f} s (target <= 5 s)")
    verdicts = [
        ("multi >= 2,000 readings/s, 0 lost", runs[0].readings_per_s >= 2000 and runs[0].lost == 0),
        ("single >= 1,000 readings/s, 0 lost", runs[1].readings_per_s >= 1000 and runs[1].lost == 0),
        ("ready <= 10 s", ready <= 10),
        ("down <= 5 s", down <= 5),
    ]
    for label, met in verdicts:
        print(f"{'met' if met else 'NOT met'}: {label}")


if __name__ == "__main__":
    main()
