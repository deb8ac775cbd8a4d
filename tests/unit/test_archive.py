"""iotpipe.archive writes the archive the processor's way: the keys iotpipe sql lists, the lines it reads, the
quarantine lines of refused records; and loads the processor shipped in the package."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import boto3
from moto import mock_aws

from iotpipe import archive
from iotpipe.config import build_config
from iotpipe.sql import archive_key_hour

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "handler" / "python" / "index.py"
CFG = build_config({}, "dev", {})
ARRIVED = 1_772_359_200_000  # 2026-03-01T10:00:00Z
SHARD = "shardId-000000000003"


def test_the_shipped_processor_loads_as_a_fresh_module() -> None:
    first, second = archive.load_processor(), archive.load_processor()
    assert first is not second and first.__name__ != second.__name__
    assert callable(first.handler) and callable(first.archive_lines)


def test_a_batch_becomes_the_raw_and_quarantine_objects_iotpipe_sql_reads() -> None:
    index = archive.load_processor(HANDLER)
    good = json.dumps({"deviceId": "d1", "sensorType": "temperature", "value": 21.5}).encode()
    records = [archive.record(index, SHARD, 7, ARRIVED, good, "d1"),
               archive.record(index, SHARD, 8, ARRIVED + 5, b"\xff not utf-8", "d1")]

    quarantine = archive.quarantine_lines(index, records, CFG.thresholds_json)
    objects = archive.batch_objects(index, records, quarantine)

    assert sorted(objects) == [f"quarantine/year=2026/month=03/day=01/hour=10/{SHARD}/7-8.jsonl.gz",
                               f"raw/year=2026/month=03/day=01/hour=10/{SHARD}/7-8.jsonl.gz"]
    assert {archive_key_hour(key)[0] for key in objects} == {"raw", "quarantine"}  # type: ignore[index]
    raw = [json.loads(line) for line in gzip.decompress(objects[sorted(objects)[1]]).splitlines()]
    assert [(line["sequenceNumber"], line["arrivedAt"], "data" in line) for line in raw] == [
        ("7", ARRIVED, True), ("8", ARRIVED + 5, False)]
    assert [(line["sequenceNumber"], line["reason"]) for line in quarantine] == [("8", "data is not UTF-8")]


def test_a_batch_without_refusals_has_no_quarantine_object() -> None:
    index = archive.load_processor(HANDLER)
    good = json.dumps({"deviceId": "d1", "sensorType": "pressure", "value": 99}).encode()
    records = [archive.record(index, SHARD, 1, ARRIVED, good, "d1")]
    assert archive.quarantine_lines(index, records, CFG.thresholds_json) == []
    assert [key.split("/")[0] for key in archive.batch_objects(index, records)] == ["raw"]


@mock_aws
def test_objects_are_put_under_their_keys() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="raw")
    archive.put_objects(s3, "raw", {"raw/a.jsonl.gz": b"1", "quarantine/b.jsonl.gz": b"22"})
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="raw")["Contents"]}
    assert listed == {"raw/a.jsonl.gz": 1, "quarantine/b.jsonl.gz": 2}
