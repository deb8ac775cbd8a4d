"""Benchmark `iotpipe sql` on DuckDB: an archive of 1,000,000 readings written by the processor's own code
(handler/python/index.py) into a moto server, then a full count per device and hour, and one device over one day
(partition pruning: only that day's objects are fetched). Prints seconds and MB per second.

    python bench/bench_sql.py [--readings 1000000] [--devices 20] [--days 5] [--shards 4]

The archive writer (:func:`write_batches`) is also what the tests use to build known archives.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "handler"))
sys.path.insert(0, str(REPO / "src"))

from processor_support import load_handler  # noqa: E402

from iotpipe.config import build_config  # noqa: E402
from iotpipe.sql import Window, fetch_archive, run_duckdb  # noqa: E402

BUCKET = "iot-raw-data-bench"
HOUR_MS = 3_600_000


def archive_objects(index: Any, records: Sequence[Any], quarantine: Iterable[Any] = ()) -> dict[str, bytes]:
    """The processor's own archive (and quarantine) objects for one batch: key -> gzip JSON lines."""
    objects = {f"raw/{index.batch_suffix(records)}": index.jsonl_gzip(index.archive_lines(records))}
    lines = list(quarantine)
    if lines:
        objects[f"quarantine/{index.batch_suffix(records)}"] = index.jsonl_gzip(lines)
    return objects


def make_record(index: Any, shard: str, sequence: int, arrived_at: int, data: bytes, partition_key: str) -> Any:
    """A processor ``Record`` as decode_record builds it from a Kinesis event record."""
    import base64

    return index.Record(shard, str(sequence), partition_key, arrived_at, data, base64.b64encode(data).decode())


def quarantine_lines(index: Any, records: Sequence[Any], thresholds: Mapping[str, Any] | None = None) -> list[Any]:
    """The quarantine lines the processor writes for ``records`` (its own interpret and quarantine_line)."""
    import json

    env = {"DYNAMODB_TABLE": "t", "S3_BUCKET": "b",
           "THRESHOLDS": json.dumps(thresholds or json.loads(build_config({}, "dev", {}).thresholds_json))}
    settings = index.Settings.from_env(env)
    return [index.quarantine_line(i) for i in (index.interpret(r, settings) for r in records) if i.rejections]


def put_objects(s3: Any, bucket: str, objects: Mapping[str, bytes]) -> None:
    """PUT each object (as the processor does, one per batch)."""
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


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
            records.append(make_record(index, shard, sequence, arrived, json.dumps(payload).encode(), device))
            sequence += 1
        objects.update(archive_objects(index, records))
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

    index = load_handler()
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
        put_objects(s3, BUCKET, objects)
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
                archive = fetch_archive(s3, BUCKET, window, Path(cache) / label)  # cold: its own empty cache
                fetched = time.monotonic() - began
                for attempt in ("cold cache", "warm cache"):
                    began = time.monotonic()
                    if attempt == "warm cache":
                        archive = fetch_archive(s3, BUCKET, window, Path(cache) / label)
                    listed = time.monotonic() - began
                    result = run_duckdb(sql, archive, window, cfg.thresholds, cfg.storage.ttl_days)
                    query = result.seconds
                    total = (fetched if attempt == "cold cache" else listed) + query
                    print(f"{label} ({attempt}): {len(archive.raw)} objects, {archive.bytes / 1e6:.1f} MB, "
                          f"fetch {fetched if attempt == 'cold cache' else listed:.2f} s + query {query:.2f} s; "
                          f"query {archive.bytes / 1e6 / query:.1f} MB/s gzip "
                          f"({archive.bytes * json_ratio / 1e6 / query:.0f} MB/s of JSON lines); "
                          f"{len(result.rows)} rows"
                          + (f" {result.rows[0]}" if len(result.rows) == 1 else "") + f"; total {total:.2f} s")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
