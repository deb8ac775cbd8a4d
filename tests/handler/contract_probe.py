"""What handler/python/index.py does with the contract's inputs, as JSON: run by test_python_runtimes.py natively
and inside every other CPython the config allows (3.12, 3.13, 3.14 as Pyodide under node). Standard library only,
and no threads or sockets (Pyodide has neither): the pure path of the processor, record by record."""

from __future__ import annotations

import importlib.util
import json
import sys
from decimal import Decimal
from typing import Any


def load(path: str) -> Any:
    """handler/python/index.py as a module."""
    spec = importlib.util.spec_from_file_location("iotpipe_probe_index", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _plain(attribute: dict[str, Any]) -> Any:
    if "N" in attribute:
        number = Decimal(attribute["N"])
        return int(number) if number == number.to_integral_value() else float(number)
    return attribute["S"] if "S" in attribute else attribute["BOOL"]


def vector_outcome(index: Any, vector: dict[str, Any], data: list[list[str]]) -> dict[str, Any]:
    """The items (plain values, by key) and quarantine rows the vector's batches yield, each batch one window:
    its ``before`` batches first, then its records (``data`` holds the encoded records of each batch). A later
    item with the same key replaces an earlier one, as a later batch's quarantine object with the same key does."""
    env = {"DYNAMODB_TABLE": "t", "S3_BUCKET": "b"}
    env.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in vector["env"].items()})
    settings = index.Settings.from_env(env)
    table: dict[tuple[str, str], dict[str, Any]] = {}
    quarantine: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for batch, encoded_batch in zip([*vector.get("before", []), vector], data, strict=True):
        interpretations = []
        for spec, encoded in zip(batch["records"], encoded_batch, strict=True):
            shard = batch.get("shardId", vector["shardId"])  # a batch of another shard: before a reshard
            event_record = {"eventID": f"{shard}:{spec['sequenceNumber']}", "kinesis": {
                "partitionKey": spec["partitionKey"], "sequenceNumber": spec["sequenceNumber"], "data": encoded,
                "approximateArrivalTimestamp": spec["arrivedAt"] / 1000}}
            interpretations.append(index.interpret(index.decode_record(event_record, 0), settings))
        readings, _ = index.deduplicate([r for i in interpretations for r in i.readings])
        # The detector (contract 12) from empty states, as a first batch: its scores and each device's state item.
        states: dict[tuple[str, str], Any] = {}
        readings = index.score_readings(readings, settings, states)
        last: dict[str, str] = {}
        for reading in readings:
            if (reading.item["deviceId"]["S"], reading.sensor_type) in states:
                last[reading.item["deviceId"]["S"]] = reading.record.sequence_number
        state_items = [index.state_item(device, seq, {t: st for (d, t), st in states.items() if d == device}, "", {})
                       for device, seq in last.items()]
        for item in [*index.window_items(readings, settings), *state_items]:
            plain = {k: _plain(v) for k, v in item.items()}
            table[(plain["deviceId"], plain["sk"])] = plain
        rows = []
        for interpretation in interpretations:
            if not interpretation.rejections:
                continue
            line = index.quarantine_line(interpretation)
            for row in ([{**r, "sequenceNumber": line["sequenceNumber"]} for r in line["rejected"]]
                        if "rejected" in line else [line]):
                rows.append({k: row[k] for k in ("sequenceNumber", "reason", "sensorType") if k in row})
        quarantine[(batch["records"][0]["sequenceNumber"], batch["records"][-1]["sequenceNumber"])] = rows
    every = [row for rows in quarantine.values() for row in rows]
    every.sort(key=lambda r: (int(r["sequenceNumber"]), r.get("sensorType", "")))
    return {"items": [table[key] for key in sorted(table)], "quarantine": every}


def _json_class(index: Any, text: str) -> str:
    if index.json_depth(text) > index.MAX_JSON_DEPTH:
        return "deep"
    try:
        index.parse_json(text)
    except ValueError:
        return "invalid"
    return "ok"


def _parsed(index: Any, text: str) -> Any:
    try:
        return index.parse_json(text)
    except ValueError:
        return None


def probe(index_path: str, job: dict[str, Any]) -> dict[str, Any]:
    """Everything the job asks, computed by this interpreter."""
    index = load(index_path)
    received, retention = job["received"], job["retention"]
    values = []
    for text in job["values"]:
        outcome = index.number_value(_parsed(index, text))
        values.append(outcome if isinstance(outcome, str) else [outcome[0], outcome[1]])
    records = []
    for given in job["records"]:
        record = index.decode_record(given, job["now"])
        records.append([record.shard_id, record.sequence_number, record.partition_key, record.arrived_at,
                        record.data, None if record.raw is None else record.raw.hex()])
    return {
        "python": sys.version.split()[0],
        "timestamps": [list(index.resolve_timestamp(t, received, retention)) for t in job["timestamps"]],
        "epochs": [list(index.resolve_timestamp(_parsed(index, t), received, retention)) for t in job["epochs"]],
        "values": values,
        "doubles": [index.format_number(x) for x in job["doubles"]],
        "json": [_json_class(index, text) for text in job["json"]],
        "records": records,
        "vectors": {v["name"]: vector_outcome(index, v, data) for v, data in job["vectors"]},
        "detector": {name: _detector_outcome(index, v) for name, v in job.get("detector", {}).items()},
    }


def _detector_outcome(index: Any, vector: dict[str, Any]) -> list[Any]:
    """A detector vector's scores, expected values, spreads and learned flags, and the final state."""
    scored, state = index.detect_series([(int(t), float(v)) for t, v in vector["points"]],
                                        index.DetectorParams(**vector["params"]))
    return [[[s.score, s.expected, s.spread, s.learned] for s in scored], state.to_list()]


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], json.load(sys.stdin))))
