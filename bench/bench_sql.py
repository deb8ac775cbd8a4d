"""Benchmark `iotpipe sql` on DuckDB: an archive of 1,000,000 readings written by the processor's own code
(handler/python/index.py) into a moto server, then a full count per device and hour, and one device over one day
(partition pruning: only that day's objects are fetched). Prints seconds, MB per second and the peak resident
memory (RSS) of each query: its fetch and parse included, the moto server's own memory (the same process) not.

    python bench/bench_sql.py [--readings 1000000] [--devices 20] [--days 5] [--shards 4] [--batch 500]
                              [--samples N] [--memory-mb 512]

``--batch 1000000`` puts every reading in one object (the largest object a query may meet); ``--samples N`` adds
one record of N samples (a hand-made or foreign payload: the processor quarantines more than 1,000 readings).

The archive is written by :mod:`iotpipe.archive` (the processor's own code), as the tests write theirs.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from iotpipe import archive  # noqa: E402
from iotpipe.config import build_config  # noqa: E402
from iotpipe.sql import Window, fetch_archive, run_duckdb  # noqa: E402

BUCKET = "iot-raw-data-bench"
HOUR_MS = 3_600_000
# This checkout's processor, so a change to it is measured before it is installed.
HANDLER = REPO / "handler" / "python" / "index.py"


def generate(index: Any, readings: int, devices: int, days: int, shards: int, batch: int,
             start_ms: int) -> dict[str, bytes]:
    """Archive objects holding ``readings`` single-form readings spread over devices, days, hours and shards."""
    import json

    sensors = (("temperature", 20.0), ("pressure", 100.0), ("vibration", 1.0))
    span = days * 24 * HOUR_MS
    objects: dict[str, bytes] = {}
    per_batch_step = span // max(1, readings // batch)
    sequence = 49_000_000_000
    for first in range(0, readings, batch):
        arrived = start_ms + (first // batch) * per_batch_step
        shard = f"shardId-{(first // batch) % shards:012d}"
        records = []
        for n in range(first, min(first + batch, readings)):
            device = f"press-{n % devices:02d}"
            sensor, base = sensors[n % 3]
            payload = {"deviceId": device, "sensorType": sensor, "value": round(base + (n % 17) * 0.5, 2),
                       "timestamp": arrived - 20, "receivedAt": arrived - 5, "topicDeviceId": device}
            records.append(archive.record(index, shard, sequence, arrived, json.dumps(payload).encode(), device))
            sequence += 1
        objects.update(archive.batch_objects(index, records))
    return objects


def samples_object(index: Any, samples: int, start_ms: int) -> dict[str, bytes]:
    """One archive object holding one record of ``samples`` samples."""
    import json

    payload = {"deviceId": "press-samples", "receivedAt": start_ms, "topicDeviceId": "press-samples",
               "samples": [{"timestamp": start_ms - n, "sensorType": "temperature", "value": n % 100}
                           for n in range(samples)]}
    shard = "shardId-000000000099"
    return archive.batch_objects(index, [archive.record(index, shard, 1, start_ms + 1000, json.dumps(payload).encode(),
                                                        "press-samples")])


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return int(next(line.split()[1] for line in status if line.startswith(f"{field}:")))


def reset_peak() -> int:
    """Reset the process's peak RSS (Linux: clear_refs 5) and return the RSS now, in MB (0 elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return _status_kb("VmRSS") // 1024
    except OSError:
        return 0


def peak_rss() -> int:
    """The process's peak RSS since :func:`reset_peak`, in MB (0 where /proc is missing)."""
    try:
        return _status_kb("VmHWM") // 1024
    except OSError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Write the archive into a moto server, then time the two queries."""
    import boto3
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--samples", type=int, default=0, help="add one record of this many samples")
    parser.add_argument("--memory-mb", type=int, help="DuckDB's memory bound (iotpipe sql --memory-mb)")
    args = parser.parse_args(argv)

    index = archive.load_processor(HANDLER)
    start_ms = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    began = time.monotonic()
    objects = generate(index, args.readings, args.devices, args.days, args.shards, args.batch, start_ms)
    if args.samples:
        objects.update(samples_object(index, args.samples, start_ms + HOUR_MS))
    size = sum(len(b) for b in objects.values())
    raw_size = sum(len(gzip.decompress(b)) for b in list(objects.values())[:50]) / min(50, len(objects)) * len(objects)
    json_ratio = raw_size / size
    print(f"archive: {args.readings:,} readings in {len(objects):,} objects, {size / 1e6:.1f} MB gzip "
          f"(~{raw_size / 1e6:.0f} MB of JSON lines), built in {time.monotonic() - began:.1f} s")

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket=BUCKET)
        began = time.monotonic()
        archive.put_objects(s3, BUCKET, objects)
        print(f"uploaded to moto in {time.monotonic() - began:.1f} s")
        cfg = build_config({}, "dev", {})
        everything = Window(start_ms, start_ms + args.days * 24 * HOUR_MS)
        one_day = Window(start_ms + 24 * HOUR_MS, start_ms + 48 * HOUR_MS)
        with tempfile.TemporaryDirectory(prefix="iotpipe-bench-sql-") as cache:
            for label, window, sql in (
                ("full scan, count per device and hour", everything,
                 "SELECT device_id, date_trunc('hour', reading_time) AS hour, count(*) AS n FROM readings "
                 "GROUP BY 1, 2"),
                ("one device, one day", one_day,
                 "SELECT count(*) AS n, avg(value) AS mean FROM readings WHERE device_id = 'press-03'"),
            ):
                before = reset_peak()
                began = time.monotonic()
                local = fetch_archive(s3, BUCKET, window, Path(cache) / label)  # cold: its own empty cache
                fetched = time.monotonic() - began
                for attempt in ("cold cache", "warm cache"):
                    if attempt == "warm cache":
                        before = reset_peak()
                    began = time.monotonic()
                    if attempt == "warm cache":
                        local = fetch_archive(s3, BUCKET, window, Path(cache) / label)
                    listed = time.monotonic() - began
                    bound = {"memory_mb": args.memory_mb} if args.memory_mb else {}
                    result = run_duckdb(sql, local, window, cfg.thresholds, cfg.storage.ttl_days, **bound)
                    query = result.seconds
                    total = (fetched if attempt == "cold cache" else listed) + query
                    print(f"{label} ({attempt}): {len(local.raw)} objects, {local.bytes / 1e6:.1f} MB, "
                          f"fetch {fetched if attempt == 'cold cache' else listed:.2f} s + query {query:.2f} s; "
                          f"query {local.bytes / 1e6 / query:.1f} MB/s gzip "
                          f"({local.bytes * json_ratio / 1e6 / query:.0f} MB/s of JSON lines); "
                          f"{len(result.rows)} rows"
                          + (f" {result.rows[0]}" if len(result.rows) == 1 else "") + f"; total {total:.2f} s; "
                          f"peak RSS {peak_rss()} MB ({peak_rss() - before:+d} MB over {before} MB before)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
