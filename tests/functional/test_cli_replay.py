"""``iotpipe replay`` against a moto server: three hours of telemetry processed by the real processor (which
archives it), a threshold changed in the function's configuration, one hour replayed; only that hour's anomaly items
change. Also: resuming from the checkpoint after Ctrl-C, the rate limit, the packed layout, detection state."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cli_failures import (  # the same small stack and helpers
    BUCKET,
    FUNCTION,
    STREAM,
    TABLE,
    THRESHOLDS,
    aws,
    cli,
    items,
    stack,
    target,
)

import iotpipe.cli.common as common
import iotpipe.local.state as local_state
from iotpipe import archive
from iotpipe import failures as failures_lib
from iotpipe import replay as replay_lib
from iotpipe.cli import main
from iotpipe.local.functions.result import InvokeResult
from iotpipe.local.functions.runner import FunctionRunner
from iotpipe.query import dynamodb as query_dynamodb

__all__ = ["stack"]  # a fixture
HOUR_MS = 3_600_000


def create_function(stack: Mapping[str, str], thresholds: Mapping[str, Any], layout: str = "item-per-reading") -> None:
    """The processor's configuration in moto's Lambda (moto keeps it; it cannot run the code)."""
    iam = aws(stack, "iam")
    role = iam.create_role(RoleName="proc-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
                           "Statement": []}))["Role"]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", failures_lib.shipped_processor_code())
    aws(stack, "lambda").create_function(
        FunctionName=FUNCTION, Runtime="python3.12", Role=role, Handler="index.handler", Timeout=60,
        Code={"ZipFile": buffer.getvalue()},
        Environment={"Variables": {"DYNAMODB_TABLE": TABLE, "S3_BUCKET": BUCKET, "THRESHOLDS": json.dumps(thresholds),
                                   "STORAGE_LAYOUT": layout}})


def set_thresholds(stack: Mapping[str, str], thresholds: Mapping[str, Any]) -> None:
    client = aws(stack, "lambda")
    variables = client.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    client.update_function_configuration(FunctionName=FUNCTION, Environment={"Variables": {
        **variables, "THRESHOLDS": json.dumps(thresholds)}})


@pytest.fixture
def deployed(stack: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """A runner of the function as moto has it configured now (as ``iotpipe local`` runs it)."""
    runners: list[FunctionRunner] = []

    def runner() -> FunctionRunner:
        spec = failures_lib.local_function_spec(aws(stack, "lambda"), FUNCTION,
                                                failures_lib.shipped_processor_code())
        made = FunctionRunner(spec, aws_endpoint=stack["endpoint"], region="us-east-1",
                              workdir=tmp_path / f"fn{len(runners)}", on_output=lambda _: None)
        runners.append(made)
        return made

    yield runner
    for made in runners:
        made.close()


def event(records: list[tuple[int, str, float, int]]) -> dict[str, Any]:
    """A Kinesis event of (sequence, device, value, arrival ms) temperature readings, dated by their arrival."""
    stored = [failures_lib.StoredRecord(str(seq), device, at, json.dumps({
        "deviceId": device, "topicDeviceId": device, "sensorType": "temperature", "value": value,
        "timestamp": at}).encode()) for seq, device, value, at in records]
    return failures_lib.kinesis_event(stored, "shardId-000000000000",
                                      f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}")


def anomaly_view(stack: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    return {i["sk"]["S"]: (i["status"]["S"], i.get("reason", {}).get("S", "")) for i in items(stack)}


def test_a_changed_threshold_replayed_for_one_hour_changes_only_that_hours_anomalies(
        stack: dict[str, str], deployed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    create_function(stack, THRESHOLDS)  # temperature max 80
    hour = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS
    live = deployed()
    seq = 1000
    for h in range(3):  # three hours, each 50, 85, 95, 70 from two devices, archived by the processor
        records = []
        for i, value in enumerate((50.0, 85.0, 95.0, 70.0)):
            seq += 1
            records.append((seq, "press-07" if i % 2 else "lathe-2", value, hour + h * HOUR_MS + 60_000 + i * 1000))
        assert live(event(records)).payload == {"batchItemFailures": []}
    before = {k: v for k, v in anomaly_view(stack).items()}
    assert sum(status == "ANOMALY" for status, _ in before.values()) == 6
    every_item_before = {i["sk"]["S"]: i for i in items(stack)}

    set_thresholds(stack, {**THRESHOLDS, "temperature": {**THRESHOLDS["temperature"], "max": 90}})
    monkeypatch.setattr(failures_lib, "lambda_invoker", lambda _client, _name: deployed())
    start = hour + HOUR_MS
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
    iso_end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((start + HOUR_MS) / 1000))
    result = cli(stack, "replay", "--from", iso, "--to", iso_end, "--output", "json",
                 "--checkpoint", str(Path("cp.json").resolve()))

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["records"], summary["replayed"], summary["readings"], summary["quarantined"]) == (4, 4, 4, 0)
    assert (summary["anomaliesBefore"], summary["anomaliesAfter"]) == (6, 5)
    after = anomaly_view(stack)
    assert after.keys() == before.keys()  # nothing stored twice, nothing lost
    changed = {k: (before[k], after[k]) for k in after if after[k] != before[k]}
    in_hour = [k for k in after if start <= int(k[:13]) < start + HOUR_MS]
    assert changed == {  # only the replayed hour's anomalies, as the new threshold says
        **{k: (("ANOMALY", "above max 80"), ("NORMAL", "")) for k in in_hour if "#85" in k},
        **{k: (("ANOMALY", "above max 80"), ("ANOMALY", "above max 90")) for k in in_hour if "#95" in k}}
    replaced = next(k for k in changed if "#85" in k)
    assert "anomalySk" not in {a for i in items(stack) if i["sk"]["S"] == replaced for a in i}  # left the index
    for key, item in every_item_before.items():  # the other hours' items are exactly as they were
        if not start <= int(key[:13]) < start + HOUR_MS:
            assert next(i for i in items(stack) if i["sk"]["S"] == key) == item
    assert not Path("cp.json").exists()  # a finished replay leaves no checkpoint


def archive_two_shards(stack: Mapping[str, str], at: int) -> None:
    processor = archive.load_processor()
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        records = [archive.record(processor, shard, 10 + i, at + i, json.dumps({
            "deviceId": f"dev-{shard[-1]}", "sensorType": "temperature", "value": 20 + i}).encode(),
            f"dev-{shard[-1]}") for i in range(3)]
        archive.put_objects(aws(stack, "s3"), BUCKET, archive.batch_objects(processor, records))
    # at least once: the second shard's last two again, in a retry object
    retry = [archive.record(processor, "shardId-000000000001", 11 + i, at + 1 + i, json.dumps({
        "deviceId": "dev-1", "sensorType": "temperature", "value": 21 + i}).encode(), "dev-1") for i in range(2)]
    archive.put_objects(aws(stack, "s3"), BUCKET, archive.batch_objects(processor, retry))


def test_replay_resumes_from_its_checkpoint_after_ctrl_c(stack: dict[str, str], tmp_path: Path) -> None:
    create_function(stack, THRESHOLDS)
    at = int(time.time() * 1000) - HOUR_MS
    archive_two_shards(stack, at)
    window = replay_lib.Window(at - 1000, at + 60_000)
    checkpoint = tmp_path / "cp.json"
    clients, cfg = target(stack)
    seen: list[list[str]] = []

    def interrupted(event: dict[str, Any]) -> InvokeResult:
        seen.append([r["eventID"] for r in event["Records"]])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return InvokeResult(None, {"batchItemFailures": []})

    with pytest.raises(KeyboardInterrupt):
        replay_lib.replay(clients, cfg, interrupted, window, checkpoint=checkpoint)
    assert json.loads(checkpoint.read_text())["done"] == {"shardId-000000000000": "12"}

    resumed: list[list[str]] = []

    def finishing(event: dict[str, Any]) -> InvokeResult:
        resumed.append([r["eventID"] for r in event["Records"]])
        return InvokeResult(None, {"batchItemFailures": []})

    summary = replay_lib.replay(clients, cfg, finishing, window, checkpoint=checkpoint)
    assert resumed == [[f"shardId-000000000001:{n}" for n in (10, 11, 12)]]  # deduplicated, in order
    assert (summary.records, summary.replayed, summary.resumed) == (6, 3, True)
    assert not checkpoint.exists()
    other = replay_lib.Window(at - 1000, at + 120_000)
    replay_lib.write_checkpoint(checkpoint, window, {"shardId-000000000000": "12"})
    with pytest.raises(replay_lib.ReplayError, match="belongs to another replay"):
        replay_lib.replay(clients, cfg, finishing, other, checkpoint=checkpoint)


def test_replay_is_rate_limited_and_filters_devices(stack: dict[str, str], tmp_path: Path) -> None:
    create_function(stack, THRESHOLDS)
    at = int(time.time() * 1000) - HOUR_MS
    archive_two_shards(stack, at)
    clients, cfg = target(stack)
    slept: list[float] = []
    calls: list[list[str]] = []

    def ok(event: dict[str, Any]) -> InvokeResult:
        calls.append([r["kinesis"]["partitionKey"] for r in event["Records"]])
        return InvokeResult(None, {"batchItemFailures": []})

    everything = replay_lib.replay(clients, cfg, ok, replay_lib.Window(at - 1000, at + 60_000),
                                   checkpoint=tmp_path / "a.json", max_records_per_s=2, sleep=slept.append,
                                   clock=lambda: 0.0)
    assert everything.records == 6 and slept == [1.5, 3.0]  # 3 records at 2/s, then 6: never ahead of the rate
    calls.clear()
    one = replay_lib.replay(clients, cfg, ok, replay_lib.Window(at - 1000, at + 60_000, ("dev-1",)),
                            checkpoint=tmp_path / "b.json", dry_run=True)
    assert (one.records, one.readings, calls) == (3, 3, [])  # a dry run invokes nothing


def test_a_packed_replay_cut_differently_leaves_each_reading_once_and_only_todays_anomalies(
        stack: dict[str, str], deployed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Live: two batches (50, 85 | 95, 70); replayed: one. 85 is no longer an anomaly (its item of its own goes,
    it is packed now), 95 is one for a new reason, 70 is packed in the replay's item and stays in the live one;
    a reader sees every reading once."""
    create_function(stack, THRESHOLDS, layout="packed")
    at = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS + 60_000
    live = deployed()
    assert live(event([(11, "press-07", 50.0, at), (12, "press-07", 85.0, at + 1000)])).payload == {
        "batchItemFailures": []}
    assert live(event([(13, "press-07", 95.0, at + 2000), (14, "press-07", 70.0, at + 3000)])).payload == {
        "batchItemFailures": []}
    set_thresholds(stack, {**THRESHOLDS, "temperature": {**THRESHOLDS["temperature"], "max": 90}})
    monkeypatch.setattr(failures_lib, "lambda_invoker", lambda _client, _name: deployed())
    clients, cfg = target(stack)

    summary = replay_lib.replay(clients, cfg, deployed(), replay_lib.Window(at - 60_000, at + HOUR_MS),
                                checkpoint=Path("cp.json").resolve())

    assert (summary.replayed, summary.anomalies_before, summary.anomalies_after) == (4, 2, 1)
    assert {k: v for k, v in anomaly_view(stack).items() if v[0] == "ANOMALY"} == {
        f"{at + 2000:013d}#temperature#95": ("ANOMALY", "above max 90")}
    packed = {i["sk"]["S"].split("#")[4]: i["readings"]["S"] for i in items(stack) if "#packed#" in i["sk"]["S"]}
    assert packed == {"11": "0:50,1000:85,3000:70", "14": "3000:70"}  # 70 twice: the live cut's item stays
    read = query_dynamodb.query_readings(aws(stack, "dynamodb"), TABLE, "press-07", since_ms=at - 60_000)
    assert sorted((r.timestamp - at, r.value, r.status) for r in read) == [
        (0, 50.0, "NORMAL"), (1000, 85.0, "NORMAL"), (2000, 95.0, "ANOMALY"), (3000, 70.0, "NORMAL")]


def test_a_replay_learns_nothing_so_the_live_detector_state_is_unchanged(
        stack: dict[str, str], deployed: Any) -> None:
    detected = {"temperature": {**THRESHOLDS["temperature"], "detector": "onset"}}
    create_function(stack, detected)
    at = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS + 60_000
    live = deployed()
    for batch in range(3):
        assert live(event([(100 + batch * 10 + i, "press-07", 40.0 + (i % 3), at + (batch * 10 + i) * 1000)
                           for i in range(10)])).payload == {"batchItemFailures": []}
    state = [i for i in items(stack) if i["sk"]["S"] == "#detector"]
    assert len(state) == 1 and state[0]["seq"]["S"] == "129"
    clients, cfg = target(stack)

    summary = replay_lib.replay(clients, cfg, deployed(), replay_lib.Window(at - 60_000, at + HOUR_MS),
                                checkpoint=Path("cp.json").resolve())

    assert summary.replayed == 30
    after = [i for i in items(stack) if i["sk"]["S"] == "#detector"]
    assert [(i["seq"], i["statesV2"]) for i in after] == [(i["seq"], i["statesV2"]) for i in state]


def test_on_iotpipe_local_replay_runs_the_function_runner_with_the_emulated_configuration(
        stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No Lambda invoke (moto's cannot run the code): the runner ``iotpipe local`` uses, on its emulator."""
    create_function(stack, {**THRESHOLDS, "temperature": {**THRESHOLDS["temperature"], "max": 90}})
    at = int(time.time() * 1000) - HOUR_MS

    processor = archive.load_processor()
    records = [archive.record(processor, "shardId-000000000000", 10 + i, at + i, json.dumps({
        "deviceId": "press-07", "sensorType": "temperature", "value": value, "timestamp": at + i}).encode(),
        "press-07") for i, value in enumerate((50.0, 85.0))]
    archive.put_objects(aws(stack, "s3"), BUCKET, archive.batch_objects(processor, records))
    state = local_state.LocalState(env="dev", stack_name="iotpipe-dev", region="us-east-1",
                                   aws_endpoint=stack["endpoint"], mqtt="mqtt://127.0.0.1:1", broker="none",
                                   pid=1, child_pids=(), started_at="", ready=True, log_file="")
    monkeypatch.setattr(common, "running_state", lambda: state)
    monkeypatch.setattr(local_state, "running_state", lambda: state)
    monkeypatch.setattr(failures_lib, "lambda_invoker", lambda *_: pytest.fail("Lambda's Invoke on local"))

    result = CliRunner().invoke(main, ["replay", "--env", "dev", "--from", "2h", "--output", "json"])

    assert result.exit_code == 0, result.output
    assert "using iotpipe local" in result.stderr
    assert json.loads(result.stdout)["readings"] == 2
    assert sorted((i["value"]["N"], i["status"]["S"]) for i in items(stack)) == [("50", "NORMAL"), ("85", "NORMAL")]
