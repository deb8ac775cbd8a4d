"""Benchmark `iotpipe sql` on DuckDB: an archive of 1,000,000 readings written by the processor's own code
(handler/python/index.py) into a moto server, then a full count per device and hour, and one device over one day
(partition pruning: only that day's objects are fetched). Prints seconds and MB per second.

    python bench/bench_sql.py [--readings 1000000] [--devices 20] [--days 5] [--shards 4]

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
    args = parser.parse_args(argv)

    index = archive.load_processor(HANDLER)
    start_ms = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    began = time.monotonic()
    objects = generate(index, args.readings, args.devices, args.days, args.shards, args.batch, start_ms)
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
                began = time.monotonic()
                local = fetch_archive(s3, BUCKET, window, Path(cache) / label)  # cold: its own empty cache
                fetched = time.monotonic() - began
                for attempt in ("cold cache", "warm cache"):
                    began = time.monotonic()
                    if attempt == "warm cache":
                        local = fetch_archive(s3, BUCKET, window, Path(cache) / label)
                    listed = time.monotonic() - began
                    result = run_duckdb(sql, local, window, cfg.thresholds, cfg.storage.ttl_days)
                    query = result.seconds
                    total = (fetched if attempt == "cold cache" else listed) + query
                    print(f"{label} ({attempt}): {len(local.raw)} objects, {local.bytes / 1e6:.1f} MB, "
                          f"fetch {fetched if attempt == 'cold cache' else listed:.2f} s + query {query:.2f} s; "
                          f"query {local.bytes / 1e6 / query:.1f} MB/s gzip "
                          f"({local.bytes * json_ratio / 1e6 / query:.0f} MB/s of JSON lines); "
                          f"{len(result.rows)} rows"
                          + (f" {result.rows[0]}" if len(result.rows) == 1 else "") + f"; total {total:.2f} s")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
