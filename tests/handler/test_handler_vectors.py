"""Run every behaviour vector in handler/vectors/ through the Python processor against a moto server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from processor_support import (
    VECTORS_DIR,
    clients,
    create_resources,
    emf_documents,
    jsonl_gz,
    kinesis_event,
    load_handler,
    make_runtime,
    metric_totals,
    objects,
    scan_items,
    stdout_documents,
)

VECTORS = sorted(VECTORS_DIR.glob("*.json"))
index = load_handler()


def _quarantine_summary(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rejection: a line's ``rejected`` readings, or the line itself for a rejected record."""
    keep = ("sequenceNumber", "reason", "sensorType")
    rows = [{k: row[k] for k in keep if k in row}
            for line in lines
            for row in ([{**r, "sequenceNumber": line["sequenceNumber"]} for r in line["rejected"]]
                        if "rejected" in line else [line])]
    return sorted(rows, key=lambda r: (int(r["sequenceNumber"]), r.get("sensorType", "")))


def test_the_vector_set_covers_the_contract() -> None:
    names = {path.stem for path in VECTORS}
    assert {"single_reading", "multi_readings", "timestamps", "hostile", "same_millisecond",
            "unknown_sensor_store"} <= names


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector(path: Path, moto_endpoint: str) -> None:
    vector = json.loads(path.read_text())
    expect = vector["expect"]
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    lines: list[str] = []
    runtime = make_runtime(index, vector["env"], s3, dynamodb, emit=lines.append)

    for earlier in vector.get("before", []):  # earlier batches on the same table: retries, late readings
        shard = earlier.get("shardId", vector["shardId"])  # a batch of another shard: before a reshard
        before = index.process(kinesis_event(earlier["records"], shard), None, runtime)
        assert before == {"batchItemFailures": [{"itemIdentifier": s} for s in earlier["batchItemFailures"]]}
    lines.clear()
    response = index.process(kinesis_event(vector["records"], vector["shardId"]), None, runtime)

    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in expect["batchItemFailures"]]}
    assert scan_items(dynamodb) == expect["items"]
    quarantined = [line for body in objects(s3, "quarantine/").values() for line in jsonl_gz(body)]
    assert _quarantine_summary(quarantined) == _quarantine_summary(expect["quarantine"])
    if "quarantineLines" in expect:
        assert len(quarantined) == expect["quarantineLines"]
    if "log" in expect:  # the counts of the `batch processed` line
        summary = next(d for d in stdout_documents(lines) if d.get("message") == "batch processed")
        assert {k: summary[k] for k in expect["log"]} == expect["log"]
    environment, by_type = metric_totals(emf_documents(lines))
    assert {k: environment[k] for k in expect["metrics"]} == expect["metrics"]
    assert {t: {k: v[k] for k in expect["metrics"] if k in v} for t, v in by_type.items()} == \
        expect["metricsBySensorType"]
    archived = [line for body in objects(s3, "raw/").values() for line in jsonl_gz(body)]
    sent = [r["sequenceNumber"] for batch in [*vector.get("before", []), vector] for r in batch["records"]]
    if "before" in vector:  # a retried batch overwrites its archive object: every record is there
        assert sorted({line["sequenceNumber"] for line in archived}, key=int) == sorted(set(sent), key=int)
    else:
        assert [line["sequenceNumber"] for line in archived] == sent
