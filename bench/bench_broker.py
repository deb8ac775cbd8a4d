"""MQTT broker benchmark for ``iotpipe local`` (``make bench-broker``; not a test).

For each broker kind (mosquitto, amqtt; those installed) ``start_broker`` runs on a free loopback port and N
publisher processes (paho, one client each, as ``iotpipe simulate`` would) send ~120-byte JSON readings:

- ``full q0`` / ``full q1``: at full speed, QoS 0 / QoS 1, bounded by ``--messages`` and ``--seconds``;
- ``paced q1``: QoS 1 at ``--rate`` msg/s in total (the pipeline's target), for the latency at that load.

Measured at ``on_message`` (the feed's dispatcher thread, where the rule engine runs): delivered msg/s (first
publish to last delivery), p50/p99 publish-to-deliver latency (the publisher stamps ``time.time_ns()`` into the
payload), lost messages (sent, or acknowledged at QoS 1, but not delivered when deliveries stopped for 3 s or
after ``--drain-s``), and the CPU the broker and the feed used per 1,000 messages (mosquitto's process plus this
process; for amqtt this process). At full speed the latencies are mostly the publishers' own queues.

Usage: python bench/bench_broker.py [--kinds mosquitto amqtt] [--publishers 4] [--messages 20000]
                                    [--seconds 10] [--rate 2000] [--drain-s 60]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotpipe.local.broker import BrokerSpec, amqtt_available, mosquitto_binary, start_broker

STAMP_DIGITS = 19
TARGET_MSGS = 2000
QUIET_S = 3.0


def payload(stamp_ns: int, publisher: int, seq: int) -> bytes:
    """~120 bytes of JSON, the send time first at a fixed offset so the receiver reads it without parsing."""
    return (
        f'{{"t":{stamp_ns:0{STAMP_DIGITS}d},"deviceId":"bench-{publisher:03d}","sensorType":"temperature",'
        f'"value":71.25,"unit":"celsius","seq":{seq}}}'
    ).encode()


def stamp_of(body: bytes) -> int:
    """The send time (ns) written by ``payload``."""
    return int(body[5 : 5 + STAMP_DIGITS])


def publisher_main(
    port: int, index: int, count: int, qos: int, rate: float, seconds: float, go: Any, results: Any
) -> None:
    """One device: connect, wait for ``go``, publish ``count`` messages (paced when ``rate`` > 0), report."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{index:03d}",
        protocol=mqtt.MQTTv311,
    )
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    topic = f"sensor/bench-{index:03d}/data"
    infos = []
    results.put(("ready", index))
    go.wait(30)
    started = time.monotonic()
    sent = 0
    for seq in range(count):
        if rate > 0:
            delay = started + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if time.monotonic() - started > seconds:
            break
        infos.append(client.publish(topic, payload(time.time_ns(), index, seq), qos=qos))
        sent += 1
    deadline = time.monotonic() + seconds + 10
    acked = 0
    for info in infos:
        try:
            info.wait_for_publish(timeout=max(deadline - time.monotonic(), 0.01))
        except (RuntimeError, ValueError):
            continue
        acked += int(info.is_published())
    client.disconnect()
    client.loop_stop()
    results.put(("done", index, sent, acked))


@dataclass
class Receiver:
    """Collects delivery times and latencies in ``on_message``."""

    latencies_ns: list[int]
    last_ns: int = 0

    def __call__(self, _topic: str, body: bytes, _client_id: str | None) -> None:
        now = time.time_ns()
        self.latencies_ns.append(now - stamp_of(body))
        self.last_ns = now


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    kind: str
    mode: str
    sent: int
    delivered: int
    lost: int
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_1k: float


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of this process plus, when given, process ``pid`` (from /proc)."""
    own = time.process_time()
    if pid is None:
        return own
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return own + (int(fields[11]) + int(fields[12])) / ticks


def percentile(values: list[int], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` in ms (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def run_case(kind: str, mode: str, qos: int, rate: float, args: argparse.Namespace) -> Row:
    """Start the broker, run the publishers, wait for the deliveries, stop the broker."""
    receiver = Receiver([])
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as workdir:
        broker = start_broker(BrokerSpec(kind), Path(workdir), receiver)
        try:
            go, results = ctx.Event(), ctx.Queue()
            per = args.messages // args.publishers
            per_rate = rate / args.publishers if rate else 0.0
            procs = [
                ctx.Process(target=publisher_main,
                            args=(broker.port, i, per, qos, per_rate, args.seconds, go, results))
                for i in range(args.publishers)
            ]
            for proc in procs:
                proc.start()
            # every publisher is connected before the clock starts
            readies = [results.get(timeout=60) for _ in procs]
            assert all(item[0] == "ready" for item in readies), readies
            cpu0 = cpu_seconds(broker.pid)
            start_ns = time.time_ns()
            go.set()
            reports = [results.get(timeout=args.seconds + 60)[1:] for _ in procs]
            for proc in procs:
                proc.join(10)
            sent = sum(r[1] for r in reports)
            acked = sum(r[2] for r in reports)
            expected = acked if qos else sent
            deadline = time.monotonic() + args.drain_s
            last_count, last_change = -1, time.monotonic()
            # wait for the backlog: until all arrived, or nothing arrived for QUIET_S (then it is lost)
            while len(receiver.latencies_ns) < expected and time.monotonic() < deadline:
                if len(receiver.latencies_ns) != last_count:
                    last_count, last_change = len(receiver.latencies_ns), time.monotonic()
                elif time.monotonic() - last_change > QUIET_S:
                    break
                time.sleep(0.05)
            cpu = cpu_seconds(broker.pid) - cpu0
            delivered = len(receiver.latencies_ns)
            elapsed_s = max(receiver.last_ns - start_ns, 1) / 1e9
        finally:
            broker.stop()
    return Row(
        kind=kind,
        mode=mode,
        sent=sent,
        delivered=delivered,
        lost=max(expected - delivered, 0),
        rate=delivered / elapsed_s,
        p50_ms=percentile(receiver.latencies_ns, 0.50),
        p99_ms=percentile(receiver.latencies_ns, 0.99),
        cpu_ms_per_1k=1000 * cpu / max(delivered, 1) * 1000,
    )


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width table."""
    head = (f"{'broker':<10} {'mode':<14} {'sent':>7} {'deliv.':>7} {'lost':>5} {'msg/s':>8} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'cpu ms/1k':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.kind:<10} {r.mode:<14} {r.sent:>7} {r.delivered:>7} {r.lost:>5} {r.rate:>8.0f} "
                     f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.cpu_ms_per_1k:>10.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every case for every installed kind and print the table and the verdict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["mosquitto", "amqtt"], choices=["mosquitto", "amqtt"])
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=TARGET_MSGS)
    parser.add_argument("--drain-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    available = {"mosquitto": mosquitto_binary() is not None, "amqtt": amqtt_available()}
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    for kind in args.kinds:
        if not available[kind]:
            print(f"{kind}: not installed, skipped", file=sys.stderr)
            continue
        for mode, qos, rate in (("full q0", 0, 0.0), ("full q1", 1, 0.0), (f"paced q1 {args.rate:g}/s", 1, args.rate)):
            print(f"{kind} {mode} ...", file=sys.stderr, flush=True)
            rows.append(run_case(kind, mode, qos, rate, args))
    size = len(payload(time.time_ns(), 0, args.messages // 2))
    print(f"{args.publishers} publisher processes, {args.messages} messages or {args.seconds:g} s per case, "
          f"{size}-byte payloads, {os.cpu_count()} CPUs, load average {load_before:.1f} before "
          f"and {os.getloadavg()[0]:.1f} after (other work on the machine slows every row)")
    print(table(rows))
    for kind in dict.fromkeys(r.kind for r in rows):
        full_q1 = next(r for r in rows if r.kind == kind and r.mode == "full q1")
        verdict = "meets" if full_q1.rate >= TARGET_MSGS and full_q1.lost == 0 else "does not meet"
        print(f"{kind}: {full_q1.rate:.0f} msg/s at QoS 1, {verdict} {TARGET_MSGS} msg/s on its own "
              f"(the pipeline shares the CPU with moto and the processor)")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
