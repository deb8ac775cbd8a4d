"""Replay: run archived records of a time window through the deployed processor again.

After a threshold change or a processor fix, the raw archive (docs/contract.md section 7) still has every record.
A replay reads the window's archive objects (all shards, or only the records of ``devices``: the topic rule's
partition key is the device id), deduplicates them on (shard, sequence number) since the archive is at least once,
and invokes the processor with Kinesis events built from them, per shard in sequence-number order, so each device's
records arrive in the order it sent them. Each record keeps its original arrival time.

**Idempotent, item per reading.** A reading's key is ``<ms>#<sensorType>#<value>``: the replay writes the item
again whole (a BatchWriteItem put replaces every attribute), so a reading that was an anomaly and no longer is loses
``reason``, ``anomalyDay`` and ``anomalySk`` (it leaves the anomaly index) and nothing is stored twice.

**The packed layout.** A packed item's key is its window start and the first record (of its batch) with a reading
in it, and an anomaly is an item of its own. Readers take the union of a window's items and drop repeats
(docs/contract.md section 6), so a replay that cuts batches differently adds packed items that hold readings
already held, and readers see each reading once. What they would see twice is an anomaly the new configuration
no longer judges one: its own item would stay beside the packed reading. So, in the packed layout, before each
invocation the replay deletes the anomaly items its records wrote (the keys the processor's own ``interpret``
gives them, the same in both layouts); the invocation writes again those that still are anomalies. A record that
fails leaves its anomaly items deleted until the replay is run again, which the error says.

**Detection state.** Every replayed record is at or below its device's absorbed sequence number (section 12 of the
contract), so the processor scores it against the series' latest state and learns nothing from it: the live stream's
detector is the same after a replay (its ``seq`` and ``statesV2``; the retry snapshot ``prevSeq``/``prevStatesV2``
becomes the latest, so a live batch retried at that moment is scored from the latest states and still learns nothing
twice), and a replayed reading's model judgement is today's model's, not the one it had when it arrived.

**Resumable.** After each invocation the last sequence number replayed per shard goes to the checkpoint file; a
replay with the same window and devices resumes after it (Ctrl-C loses at most one invocation's work, which the
next run writes again, idempotently). **Rate-limited** to ``max_records_per_s`` so the live stream's invocations
keep their concurrency and the table's capacity.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from iotpipe import archive, contract
from iotpipe.errors import ConfigError, IotpipeError
from iotpipe.failures import (
    Clients,
    FailedBatch,
    Invoker,
    StoredRecord,
    archive_records,
    chunks,
    kinesis_event,
    read_archive_object,
    run_records,
)

DEFAULT_RATE = 500  # records per second
_MAX_WINDOW = timedelta(days=400)
_BATCH_ATTEMPTS = 8  # BatchGetItem/BatchWriteItem calls per batch while DynamoDB leaves some unprocessed


class ReplayError(IotpipeError):
    """A replay cannot run, or stopped: the message says why and how to go on."""


@dataclass(frozen=True)
class Window:
    """What to replay: records that arrived in [start_ms, end_ms), of ``devices`` (empty: every device)."""

    start_ms: int
    end_ms: int
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ConfigError("--to must be after --from")
        if self.end_ms - self.start_ms > _MAX_WINDOW.total_seconds() * 1000:
            raise ConfigError("the window is longer than 400 days; replay it in parts")

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's identity of this window."""
        return {"from": self.start_ms, "to": self.end_ms, "devices": sorted(self.devices)}


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did (or, dry, would do)."""

    records: int  # records in the window (after deduplication and the device filter)
    replayed: int  # of them, run through the processor by this run (not skipped by the checkpoint)
    readings: int  # readings the processor stores for the replayed records
    quarantined: int  # records with a rejection
    anomalies_before: int
    anomalies_after: int
    resumed: bool
    dry_run: bool


def hour_prefixes(start_ms: int, end_ms: int) -> Iterator[str]:
    """The archive's hour partitions that can hold records arriving in [start_ms, end_ms): an object is keyed by
    its first record's arrival, so the hour before the window too."""
    hour = datetime.fromtimestamp(start_ms / 1000, UTC).replace(minute=0, second=0, microsecond=0)
    hour -= timedelta(hours=1)
    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    while hour < end:
        yield f"{contract.ARCHIVE_PREFIXES[0]}year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"
        hour += timedelta(hours=1)


def archived(s3: Any, bucket: str, window: Window) -> dict[str, list[StoredRecord]]:
    """The window's records by shard, deduplicated on sequence number, in sequence-number order."""
    by_shard: dict[str, dict[int, StoredRecord]] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in hour_prefixes(window.start_ms, window.end_ms):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                shard = item["Key"][len(prefix):].split("/")[0]
                for record in archive_records(read_archive_object(s3, bucket, item["Key"])):
                    if _wanted(record, window):
                        by_shard.setdefault(shard, {}).setdefault(int(record.sequence_number), record)
    return {shard: [found[seq] for seq in sorted(found)] for shard, found in sorted(by_shard.items())}


def _wanted(record: StoredRecord, window: Window) -> bool:
    in_time = window.start_ms <= record.arrived_at_ms < window.end_ms
    return in_time and (not window.devices or record.partition_key in window.devices)


def outcome_counts(settings_env: dict[str, str], records: Iterable[StoredRecord], shard: str) -> tuple[int, int]:
    """(readings stored, records quarantined) of ``records`` under the function's settings, by the processor's
    own ``interpret`` (the shipped Python processor)."""
    processor = archive.load_processor()
    settings = processor.Settings.from_env({"DYNAMODB_TABLE": "-", "S3_BUCKET": "-", **settings_env})
    readings = quarantined = 0
    for record in records:
        found = processor.interpret(
            archive.record(processor, shard, record.sequence_number, record.arrived_at_ms, record.data,
                           record.partition_key), settings)
        readings += len(found.readings)
        quarantined += bool(found.rejections)
    return readings, quarantined


def own_item_keys(settings_env: dict[str, str], records: Iterable[StoredRecord], shard: str) -> list[tuple[str, str]]:
    """The (deviceId, sk) of the item of its own each reading of ``records`` has (an anomaly's key in either
    layout), by the processor's own ``interpret``."""
    processor = archive.load_processor()
    settings = processor.Settings.from_env({"DYNAMODB_TABLE": "-", "S3_BUCKET": "-", **settings_env})
    keys: dict[tuple[str, str], None] = {}
    for record in records:
        found = processor.interpret(
            archive.record(processor, shard, record.sequence_number, record.arrived_at_ms, record.data,
                           record.partition_key), settings)
        keys.update(dict.fromkeys(tuple(reading.key) for reading in found.readings))
    return list(keys)


def delete_anomaly_items(dynamodb: Any, table: str, settings_env: dict[str, str], shard: str,
                         records: Sequence[StoredRecord]) -> int:
    """Delete the anomaly items of ``records``' readings (packed layout, before they are replayed); how many."""
    keys = own_item_keys(settings_env, records, shard)
    anomalies: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {table: {
            "Keys": [{"deviceId": {"S": device}, "sk": {"S": sk}} for device, sk in keys[start:start + 100]],
            "ProjectionExpression": "deviceId, sk, #s", "ExpressionAttributeNames": {"#s": "status"},
            "ConsistentRead": True}}
        for _attempt in range(_BATCH_ATTEMPTS):
            answer = dynamodb.batch_get_item(RequestItems=request)
            anomalies += [{"deviceId": item["deviceId"], "sk": item["sk"]}
                          for item in answer.get("Responses", {}).get(table, [])
                          if item.get("status", {}).get("S") == "ANOMALY"]
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise ReplayError(f"DynamoDB left keys of {table} unread after {_BATCH_ATTEMPTS} attempts; run the "
                              "replay again to resume")
    for start in range(0, len(anomalies), 25):
        writes: dict[str, Any] = {table: [{"DeleteRequest": {"Key": key}} for key in anomalies[start:start + 25]]}
        for _attempt in range(_BATCH_ATTEMPTS):
            writes = dynamodb.batch_write_item(RequestItems=writes).get("UnprocessedItems") or {}
            if not writes:
                break
        else:
            raise ReplayError(f"DynamoDB left deletes of {table} unprocessed after {_BATCH_ATTEMPTS} attempts; run "
                              "the replay again to resume")
    return len(anomalies)


def count_anomalies(dynamodb: Any, table: str, devices: Iterable[str], window: Window) -> int:
    """Anomaly items of ``devices`` with a reading time in the window, with a day's slack either side (a reading
    is keyed by the device's time, which may differ from its arrival)."""
    total = 0
    lower, upper = f"{max(window.start_ms - 86_400_000, 0):013d}", f"{window.end_ms + 86_400_000:013d}~"
    for device in sorted(set(devices)):
        paginator = dynamodb.get_paginator("query")
        for page in paginator.paginate(
                TableName=table, Select="COUNT", KeyConditionExpression="deviceId = :d AND sk BETWEEN :a AND :b",
                FilterExpression="#s = :anomaly", ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":d": {"S": device}, ":a": {"S": lower},
                                           ":b": {"S": upper}, ":anomaly": {"S": "ANOMALY"}}):
            total += int(page.get("Count", 0))
    return total


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flags(saved: dict[str, Any]) -> str:
    """The replay options that name a checkpoint's window (--from 2h is relative: a rerun is another window)."""
    devices = "".join(f" --device {device}" for device in saved["devices"])
    return f"--from {_iso(saved['from'])} --to {_iso(saved['to'])}{devices}"


def _checkpoint_fields(text: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    """(window, stream ARN, done) of a checkpoint's text; ValueError when it is not one."""
    saved = json.loads(text)
    if not isinstance(saved, dict):
        raise ValueError("it is not a JSON object")
    window, done = saved.get("window"), saved.get("done", {})
    if (not isinstance(window, dict) or not isinstance(window.get("from"), int) or not isinstance(window.get("to"), int)
            or not isinstance(window.get("devices"), list) or not isinstance(done, dict)
            or not all(isinstance(seq, str) and seq.isdecimal() for seq in done.values())):
        raise ValueError("its window or done shards are missing or malformed")
    return window, str(saved.get("stream", "")), {str(shard): seq for shard, seq in done.items()}


def read_checkpoint(path: Path, window: Window, stream_arn: str = "") -> dict[str, str]:
    """The last sequence number replayed per shard, from a checkpoint of the same window and stream; {} when there
    is none. ReplayError when the file is corrupt or belongs to another window or stream."""
    if not path.exists():
        return {}
    try:
        saved, stream, done = _checkpoint_fields(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReplayError(f"checkpoint {path} is not a replay checkpoint ({exc}); delete it to replay from the start "
                          "(a replay writes the same items again, so nothing is stored twice)") from exc
    if stream and stream_arn and stream != stream_arn:
        # Shard ids repeat in every env: another stream's sequence numbers would skip this one's records.
        raise ReplayError(f"checkpoint {path} belongs to a replay of stream {stream.rpartition(':stream/')[2]}, not "
                          f"{stream_arn.rpartition(':stream/')[2]}; pass that env, or another --checkpoint file")
    if saved != window.as_dict():
        raise ReplayError(f"checkpoint {path} belongs to another replay; finish it with {_flags(saved)}, or delete "
                          "the file to start this one")
    return done


def write_checkpoint(path: Path, window: Window, done: dict[str, str], stream_arn: str = "") -> None:
    """Write the checkpoint atomically (a Ctrl-C never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps({"window": window.as_dict(), "stream": stream_arn, "done": done}, indent=1),
                         encoding="utf-8")
    os.replace(temporary, path)


@contextmanager
def checkpoint_lock(path: Path) -> Iterator[None]:
    """Hold ``<checkpoint>.lock`` while a replay writes ``path``; ReplayError when another replay holds it."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        raise ReplayError(f"another replay is using checkpoint {path} (process {holder}); wait for it to finish, or "
                          f"delete {lock} if that replay is no longer running") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass(frozen=True)
class Target:
    """The deployed pieces a replay uses (from the stack's outputs and the function's configuration)."""

    bucket: str
    table: str
    stream_arn: str
    settings_env: dict[str, str]


def target(clients: Clients, cfg: Any, function_name: str | None = None) -> Target:
    """The raw bucket, table, stream and the processor's environment of ``cfg``'s stack."""
    from iotpipe.query.outputs import required_output, stack_names

    outputs = stack_names(clients, cfg)
    bucket = required_output(outputs, contract.OUT_BUCKET_NAME, cfg)
    table = required_output(outputs, contract.OUT_TABLE_NAME, cfg)
    stream = required_output(outputs, contract.OUT_STREAM_NAME, cfg)
    name = function_name or required_output(outputs, contract.OUT_FUNCTION_NAME, cfg)
    config = clients.client("lambda").get_function_configuration(FunctionName=name)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    arn = clients.client("kinesis").describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    return Target(bucket, table, str(arn), env)


def replay(clients: Clients, cfg: Any, invoke: Invoker, window: Window, *, checkpoint: Path,
           dry_run: bool = False, max_records_per_s: float = DEFAULT_RATE,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
           on_start: Callable[[int], None] = lambda _: None,
           on_records: Callable[[int], None] = lambda _: None) -> ReplaySummary:
    """Replay ``window`` through ``invoke`` (the deployed processor); see the module's docstring.

    ReplayError when the processor fails on a record (the checkpoint keeps what was done; run again to resume).
    """
    if max_records_per_s <= 0:
        raise ConfigError("--rate must be above 0 records per second")
    with nullcontext() if dry_run else checkpoint_lock(checkpoint):
        return _replay(clients, cfg, invoke, window, checkpoint=checkpoint, dry_run=dry_run,
                       max_records_per_s=max_records_per_s, sleep=sleep, clock=clock, on_start=on_start,
                       on_records=on_records)


def _replay(clients: Clients, cfg: Any, invoke: Invoker, window: Window, *, checkpoint: Path, dry_run: bool,
            max_records_per_s: float, sleep: Callable[[float], None], clock: Callable[[], float],
            on_start: Callable[[int], None], on_records: Callable[[int], None]) -> ReplaySummary:
    found = target(clients, cfg)
    packed = found.settings_env.get("STORAGE_LAYOUT", "item-per-reading") == "packed"
    by_shard = archived(clients.client("s3"), found.bucket, window)
    done = {} if dry_run else read_checkpoint(checkpoint, window, found.stream_arn)
    pending = {shard: [r for r in records if shard not in done or int(r.sequence_number) > int(done[shard])]
               for shard, records in by_shard.items()}
    total = sum(len(r) for r in by_shard.values())
    to_run = sum(len(r) for r in pending.values())
    devices = window.devices or tuple(sorted({r.partition_key for rs in by_shard.values() for r in rs}))
    dynamodb = clients.client("dynamodb")
    before = count_anomalies(dynamodb, found.table, devices, window)
    readings = quarantined = 0
    for shard, records in pending.items():
        counted = outcome_counts(found.settings_env, records, shard)
        readings, quarantined = readings + counted[0], quarantined + counted[1]
    on_start(to_run)
    if not dry_run:
        before_chunk = (partial(delete_anomaly_items, dynamodb, found.table, found.settings_env) if packed
                        else lambda _shard, _records: 0)
        _run(invoke, pending, found.stream_arn, done, checkpoint, window, max_records_per_s, sleep, clock,
             on_records, before_chunk)
        checkpoint.unlink(missing_ok=True)
    else:
        on_records(to_run)
    after = before if dry_run else count_anomalies(dynamodb, found.table, devices, window)
    return ReplaySummary(total, to_run, readings, quarantined, before, after, bool(done), dry_run)


def _run(invoke: Invoker, pending: dict[str, list[StoredRecord]], stream_arn: str, done: dict[str, str],
         checkpoint: Path, window: Window, rate: float, sleep: Callable[[float], None], clock: Callable[[], float],
         on_records: Callable[[int], None], before_chunk: Callable[[str, Sequence[StoredRecord]], int]) -> None:
    started, sent = clock(), 0
    for shard, records in pending.items():
        for chunk in chunks(records):
            before_chunk(shard, chunk)
            batch = _batch(shard, stream_arn, chunk)
            problem = run_records(invoke, chunk, batch, on_records)
            if problem:
                raise ReplayError(f"{problem} (shard {shard}, records {chunk[0].sequence_number}.."
                                  f"{chunk[-1].sequence_number}); the checkpoint {checkpoint} keeps what was "
                                  "replayed: fix the cause and run the same replay again to resume")
            done[shard] = chunk[-1].sequence_number
            write_checkpoint(checkpoint, window, done, stream_arn)
            sent += len(chunk)
            ahead = sent / rate - (clock() - started)
            if ahead > 0:
                sleep(ahead)


def _batch(shard: str, stream_arn: str, records: Sequence[StoredRecord]) -> FailedBatch:
    return FailedBatch("replay", "", shard, records[0].sequence_number, records[-1].sequence_number, len(records),
                       stream_arn, "replay", "", 0.0, records[0].arrived_at_ms / 1000)


__all__ = ["ReplayError", "ReplaySummary", "Window", "archived", "kinesis_event", "replay"]
