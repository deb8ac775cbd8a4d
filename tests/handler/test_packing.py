"""The packed layout's 400 KB item limit (docs/contract.md, section 6): a window whose readings do not fit in
one item continues in the next part, in both processors alike, and DynamoDB accepts every part. The vectors
cannot reach the limit (a window of one batch holds at most 4,999 readings), so this drives the packing
function itself with 20,000 readings of one device, sensor and hour."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import boto3
import pytest
from moto import mock_aws
from processor_support import REPO, SHARD, kinesis_event, load_handler, settings_env

index = load_handler()
NODE_DIR = REPO / "handler" / "node"
WINDOW_MS = 3_600_000
START = 1_717_999_200_000  # an hour boundary
ENV = {"THRESHOLDS": {"vibration": {"min": None, "max": 5.0, "unit": "mm/s"}}, "STORAGE_LAYOUT": "packed",
       "PACK_WINDOW_SECONDS": "3600"}
DYNAMODB_ITEM_LIMIT = 400 * 1024

NODE_SCRIPT = r"""
const m = require(process.argv[1]);
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const settings = m.settingsFromEnv(input.env);
const readings = input.event.Records.flatMap((r) => m.interpret(m.decodeRecord(r, 0), settings).readings);
process.stdout.write(JSON.stringify(m.packItems(readings, input.windowMs)));
"""


def _event() -> dict[str, Any]:
    """20 records of 1,000 readings each, one per millisecond, with 24-character values."""
    records = []
    for n in range(20):
        samples = [{"timestamp": START + n * 1000 + k, "sensorType": "vibration",
                    "value": -(1.2345678901234567 + (n * 1000 + k) * 1e-12) * 1e-100} for k in range(1000)]
        records.append({"sequenceNumber": str(5000 + n), "partitionKey": "press-1", "arrivedAt": START + 30_000,
                        "payload": {"deviceId": "press-1", "samples": samples, "receivedAt": START + 30_000}})
    return kinesis_event(records)


def _python_items(event: dict[str, Any], max_bytes: int | None = None) -> list[dict[str, Any]]:
    settings = index.Settings.from_env(settings_env(ENV))
    readings = [r for e in event["Records"] for r in index.interpret(index.decode_record(e, 0), settings).readings]
    limit = {} if max_bytes is None else {"max_bytes": max_bytes}
    items: list[dict[str, Any]] = index.pack_items(readings, WINDOW_MS, **limit)
    return items


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size, bounded from above: names and strings in UTF-8, a number at most its text."""
    return sum(len(name.encode()) + len(next(iter(value.values())).encode()) for name, value in item.items())


def test_a_window_over_the_item_limit_is_split_into_parts_below_it() -> None:
    items = _python_items(_event())
    assert len(items) == 2
    assert [item["sk"]["S"] for item in items] == [
        f"{START}#vibration#packed#{SHARD}#5000#0", f"{START}#vibration#packed#{SHARD}#5000#1"]
    assert all(item_size(item) < DYNAMODB_ITEM_LIMIT for item in items)
    entries = [entry for item in items for entry in item["readings"]["S"].split(",")]
    assert len(entries) == 20_000 and [int(e.split(":")[0]) for e in entries] == list(range(20_000))
    assert {tuple(sorted(item)) for item in items} == {
        ("deviceId", "readings", "sensorType", "shardId", "sk", "status", "ttl", "unit")}


@pytest.mark.skipif(shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
                    reason="needs node and the handler's node_modules (make install)")
def test_the_node_twin_splits_into_the_same_items() -> None:
    event = _event()
    done = subprocess.run(["node", "-e", NODE_SCRIPT, str(NODE_DIR / "index.js")],
                          input=json.dumps({"env": settings_env(ENV), "event": event, "windowMs": WINDOW_MS}),
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == _python_items(event)


def test_dynamodb_accepts_every_part_and_refuses_the_unsplit_item() -> None:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "deviceId", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "deviceId", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        for item in _python_items(_event()):
            dynamodb.put_item(TableName="t", Item=item)
        assert dynamodb.scan(TableName="t", Select="COUNT")["Count"] == 2
        (whole,) = _python_items(_event(), max_bytes=10**9)
        with pytest.raises(dynamodb.exceptions.ClientError, match="Item size has exceeded"):
            dynamodb.put_item(TableName="t", Item=whole)
