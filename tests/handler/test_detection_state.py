"""The detector's state between invocations (docs/contract.md 12, "State between invocations") against a moto
server: a retried batch (partial failure, a timeout after the write, a bisected half, a failed state write) gives
exactly the first attempt's scores and learns no reading twice."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from processor_support import clients, create_resources, kinesis_event, load_handler, make_runtime, scan_items

index = load_handler()
START = 1_767_225_600_000
ENV = {"ENVIRONMENT": "test", "THRESHOLDS": {
    "temperature": {"min": 10, "max": 80, "unit": "celsius", "detector": "onset", "probation": 5}}}
SPIKES = {10: 35.0, 32: 60.0}


def record(n: int, device: str = "press-1") -> dict[str, Any]:
    value = SPIKES.get(n, 20.0 + (n * 7 % 5) / 10)
    return {"sequenceNumber": str(1000 + n), "partitionKey": device, "arrivedAt": START + 60_000,
            "payload": {"deviceId": device, "sensorType": "temperature", "value": value,
                        "timestamp": START + n * 1000}}


BATCH = [record(n) for n in range(40)]


class FailingWrites:
    """The DynamoDB client, but a BatchWriteItem call whose items match ``fails`` is refused (not retryable)."""

    def __init__(self, client: Any, fails: Any) -> None:
        self.client, self.fails, self.refused = client, fails, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_write_item(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        items = [r["PutRequest"]["Item"] for rs in kwargs["RequestItems"].values() for r in rs]
        if self.fails(items):
            self.refused += 1
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchWriteItem")
        return self.client.batch_write_item(**kwargs)


def run(endpoint: str, *batches: list[dict[str, Any]], fails: Any = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Process ``batches`` in turn on a fresh table; the table after them and each batch's response."""
    with urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")) as answer:
        answer.read()  # a fresh table for each run on the one server
    s3, dynamodb = clients(endpoint)
    create_resources(s3, dynamodb)
    responses = []
    for n, batch in enumerate(batches):
        client = FailingWrites(dynamodb, fails) if fails is not None and n == 0 else dynamodb
        runtime = make_runtime(index, ENV, s3, client, emit=lambda _line: None)
        try:
            responses.append(index.process(kinesis_event(batch), None, runtime))
        except index.BatchFailed as exc:
            responses.append(exc)
    return scan_items(dynamodb), responses


def readings_and_state(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    [state] = [i for i in items if i["sk"] == index.STATE_SORT_KEY]
    return [i for i in items if i["sk"] != index.STATE_SORT_KEY], state


@pytest.fixture
def single_pass(moto_endpoint: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The reference: the whole series in one batch, scored once."""
    items, _ = run(moto_endpoint, BATCH)
    return readings_and_state(items)


def test_the_state_persists_between_batches_as_one_pass(moto_endpoint: str, single_pass: Any) -> None:
    reference_readings, reference_state = single_pass
    readings, state = readings_and_state(run(moto_endpoint, BATCH[:17], BATCH[17:])[0])
    assert readings == reference_readings
    assert [r["rule"] for r in readings if r.get("anomalyDetected")] == ["model", "model"]
    assert state["statesV2"] == reference_state["statesV2"] and state["seq"] == "1039"
    assert (state["prevSeq"], json.loads(state["prevStatesV2"])["temperature"][0]) == ("1016", 17)
    assert json.loads(state["statesV2"])["temperature"][0] == 40  # every reading learned once


def test_a_partial_retry_scores_as_the_first_attempt(moto_endpoint: str, single_pass: Any) -> None:
    # The second chunk of 25 items (records 1025 on) is refused: 1000..1024 commit, the rest is retried.
    items, responses = run(moto_endpoint, BATCH, BATCH[25:],
                           fails=lambda items: any(i.get("sequenceNumber", {}).get("S") == "1030" for i in items))
    assert responses[0] == {"batchItemFailures": [{"itemIdentifier": str(1000 + n)} for n in range(25, 40)]}
    readings, state = readings_and_state(items)
    assert readings == single_pass[0]
    assert state["statesV2"] == single_pass[1]["statesV2"] and state["prevSeq"] == "1024"


def test_a_batch_retried_after_its_write_gives_the_same_table(moto_endpoint: str) -> None:
    once, _ = run(moto_endpoint, BATCH)
    twice, _ = run(moto_endpoint, BATCH, BATCH)  # a timeout after the state write: Lambda sends it again
    assert twice == once


def test_bisected_halves_after_the_write_score_as_the_first_attempt(moto_endpoint: str, single_pass: Any) -> None:
    readings, state = readings_and_state(run(moto_endpoint, BATCH, BATCH[:20], BATCH[20:])[0])
    assert readings == single_pass[0]
    assert state["statesV2"] == single_pass[1]["statesV2"]


def test_a_failed_state_write_retries_the_whole_batch(moto_endpoint: str, single_pass: Any) -> None:
    items, responses = run(moto_endpoint, BATCH, BATCH,
                           fails=lambda items: any(i["sk"]["S"] == index.STATE_SORT_KEY for i in items))
    assert isinstance(responses[0], index.BatchFailed)
    assert readings_and_state(items) == single_pass


def test_a_record_redelivered_below_the_snapshot_is_scored_not_learned(moto_endpoint: str) -> None:
    items, _ = run(moto_endpoint, BATCH[:20], BATCH[20:], BATCH[5:8])
    _, state = readings_and_state(items)
    assert (state["seq"], json.loads(state["statesV2"])["temperature"][0]) == ("1039", 40)


def test_devices_keep_states_of_their_own(moto_endpoint: str) -> None:
    mixed = [r for n in range(40) for r in (record(n), record(n, "press-2"))]
    items, _ = run(moto_endpoint, mixed[:30], mixed[30:])
    states = {i["deviceId"]: json.loads(i["statesV2"]) for i in items if i["sk"] == index.STATE_SORT_KEY}
    assert states["press-1"] == states["press-2"] and states["press-1"]["temperature"][0] == 40



class Overlap:
    """Clients on which a call of ``waiter`` waits (2 s at most) for a call of ``awaited`` to start, and records
    whether it did: calls issued together overlap, a call issued after the waiting one ended never does."""

    def __init__(self, waiter: Any, awaited: Any) -> None:
        import threading

        self.waiter, self.awaited, self.started = waiter, awaited, threading.Event()
        self.overlapped: list[bool] = []

    def call(self, name: str, kwargs: dict[str, Any], send: Any) -> Any:
        if self.awaited(name, kwargs):
            self.started.set()
        if self.waiter(name, kwargs):
            self.overlapped.append(self.started.wait(timeout=2))
        return send(**kwargs)

    def wrap(self, client: Any, *names: str) -> Any:
        overlap = self

        class Wrapped:
            def __getattr__(self, attribute: str) -> Any:
                if attribute in names:
                    return lambda **kwargs: overlap.call(attribute, kwargs, getattr(client, attribute))
                return getattr(client, attribute)
        return Wrapped()


def state_write(name: str, kwargs: dict[str, Any]) -> bool:
    return name == "batch_write_item" and any(
        r["PutRequest"]["Item"]["sk"]["S"] == index.STATE_SORT_KEY
        for rs in kwargs["RequestItems"].values() for r in rs)


def readings_write(name: str, kwargs: dict[str, Any]) -> bool:
    return name == "batch_write_item" and not state_write(name, kwargs)


@pytest.mark.parametrize(("waiter", "awaited"), [
    # The state items are read while the raw archive is written ...
    (lambda name, _: name == "put_object", lambda name, _: name == "batch_get_item"),
    # ... and written with the readings, not after them.
    (readings_write, state_write),
], ids=["read-with-archive", "write-with-readings"])
def test_state_round_trips_overlap_the_batchs_own_calls(moto_endpoint: str, waiter: Any, awaited: Any) -> None:
    s3, dynamodb = clients(moto_endpoint)
    create_resources(s3, dynamodb)
    overlap = Overlap(waiter, awaited)
    runtime = make_runtime(index, ENV, overlap.wrap(s3, "put_object"),
                           overlap.wrap(dynamodb, "batch_get_item", "batch_write_item"), emit=lambda _line: None)
    assert index.process(kinesis_event(BATCH), None, runtime) == {"batchItemFailures": []}
    [state] = [i for i in scan_items(dynamodb) if i["sk"] == index.STATE_SORT_KEY]
    assert state["seq"] == "1039"
    assert overlap.overlapped and all(overlap.overlapped)


def test_the_previous_release_and_this_one_read_each_others_state_items() -> None:
    # a canary (prod: 10 % of batches on the new version for 5 minutes) or a rollback runs both releases on one
    # table: this release writes its states as statesV2, which the previous one does not read (it would fail on
    # 13 numbers and the strings of long doubles, and fail every batch of the device), so it starts that device
    # afresh instead; an item the previous release wrote (states, 11 numbers) is read here, its peak as the tail
    states = {"temperature": index.DetectorState(300, 1718000000000, 20.5, 0.25, 20.5, 60000.0, 0, 2.5, 20.25, 0, 3,
                                                 4.0, 7)}
    item = index.state_item("press-1", "1039", states, "1016", states)
    assert {"statesV2", "prevStatesV2"} <= set(item) and not {"states", "prevStates"} & set(item)
    assert index.memory_of(item).states == index.read_states(item["statesV2"]["S"]) == states
    previous = {"deviceId": {"S": "press-1"}, "sk": {"S": index.STATE_SORT_KEY}, "seq": {"S": "1039"},
                "states": {"S": '{"temperature":[300,1718000000000,20.5,0.25,20.5,60000,0,2.5,20.25,0,3]}'},
                "prevSeq": {"S": "1016"}, "prevStates": {"S": "{}"}}
    memory = index.memory_of(previous)
    assert memory.seq == "1039" and memory.prev_states == {}
    assert memory.states["temperature"] == states["temperature"]._replace(tail=2.5, below=0)
