"""The Kinesis event source mapping of ``iotpipe local``: polls a stream's shards and invokes the function the way
Lambda does, without Docker and with whole batches.

Semantics follow the AWS Lambda developer guide ("Using Lambda with Kinesis", "Configuring partial batch
response with Kinesis", "Retain discarded batch records"); the choices that rest on it quote it next to the code.
Two deliberate local limits: one batch per shard at a time (``ParallelizationFactor`` 1; a larger factor is read
and kept in :attr:`MappingSpec.parallelization_factor` but not used, which keeps the per-shard order stricter than
Lambda's per-partition-key order), and the checkpoint lives in memory, so a restarted runner starts again from
``StartingPosition``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from iotpipe import naming
from iotpipe.errors import AwsError, ConfigError
from iotpipe.local.emulator.clients import raw_kinesis_client

log = logging.getLogger(__name__)

STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
# "the batch reaches the payload limit of 6 MB" (synchronous invocation payload limit).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
GET_RECORDS_LIMIT = 10000
READ_AHEAD = 1000
DESTINATION_ATTEMPTS = 5
RETRY_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
_ENVELOPE_BYTES = len('{"Records": []}')
_MAX_BACKOFF_S = 5.0
BATCH_FAILED = -1  # first_failed_index: the batch failed as a whole


@dataclass(frozen=True)
class MappingSpec:
    """One ``AWS::Lambda::EventSourceMapping`` on a Kinesis stream, as the runner applies it."""

    function_name: str
    function_arn: str
    stream_arn: str
    batch_size: int = 100
    batching_window_s: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    # "The default value is -1, which sets the maximum number of retries to infinite. When MaximumRetryAttempts is
    # infinite, Lambda retries failed records until the record expires in the event source."
    max_retry_attempts: int = -1
    max_record_age_s: int = -1  # -1: no age limit (Lambda's default); else 60..604800
    on_failure_destination: str | None = None  # SQS queue ARN, or SNS topic ARN
    enabled: bool = True
    starting_position_timestamp: float | None = None  # epoch seconds, AT_TIMESTAMP only; boto3 sends whole seconds
    parallelization_factor: int = 1  # as declared; the runner always uses 1
    invoke_identity_arn: str = ""  # the function's execution role, shown in each record as invokeIdentityArn

    @property
    def region(self) -> str:
        """The stream's region (the ``awsRegion`` of every record)."""
        return self.stream_arn.split(":")[3]


@dataclass(frozen=True)
class InvokeResult:
    """What one invocation of the function returned."""

    function_error: str | None  # None: the invocation succeeded; else e.g. "Unhandled" (raised) or "TimedOut"
    payload: Any = None  # the function's JSON return value (a dict with batchItemFailures, or None)


class Invoker(Protocol):
    """Invokes the function synchronously with one Kinesis event; called from one thread per shard, never twice at
    once for the same shard."""

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        """Run the function on ``event`` and report how it ended."""
        ...


@dataclass(frozen=True)
class MappingStats:
    """Counters since the runner was made. Every record read ends up processed, sent to the destination or
    discarded (no destination configured): ``records_read == records_processed + sent_to_destination +
    discarded + records still in flight``."""

    invocations: int = 0
    records_read: int = 0
    records_delivered: int = 0  # records handed to the function; a retried record counts each time
    records_processed: int = 0  # records the function accepted (checkpointed after success)
    function_errors: int = 0
    partial_failures: int = 0
    retries: int = 0
    bisections: int = 0
    sent_to_destination: int = 0  # records
    batches_to_destination: int = 0
    records_expired: int = 0  # records past MaximumRecordAgeInSeconds (sent or discarded)
    discarded: int = 0  # records given up with no on-failure destination
    destination_errors: int = 0  # failed sends to the destination (each is retried)
    poll_errors: int = 0  # failed Kinesis calls (each is retried)


@dataclass(frozen=True)
class StreamRecord:
    """One Kinesis record as read from the shard, with its Lambda event form prepared once."""

    shard_id: str
    sequence_number: str
    arrival: float  # epoch seconds
    event: dict[str, Any]
    size: int  # bytes it adds to the event's JSON

    @property
    def seq(self) -> int:
        """The sequence number as an integer (Kinesis sequence numbers compare numerically)."""
        return int(self.sequence_number)


@dataclass(frozen=True)
class _Attempt:
    """A (sub)batch still to be delivered: its records, retries charged so far, invocations of these records and
    the last function response."""

    records: tuple[StreamRecord, ...]
    retries: int = 0
    invokes: int = 0
    response: InvokeResult | None = None


# -- the mapping's properties ------------------------------------------------------------------------------------


def mapping_from_properties(properties: Mapping[str, Any], *, function_arn: str,
                            invoke_identity_arn: str = "") -> MappingSpec:
    """The :class:`MappingSpec` of an ``AWS::Lambda::EventSourceMapping``'s ``Properties`` whose intrinsics are
    already resolved to strings; ConfigError naming the property when a value cannot run locally."""
    where = "AWS::Lambda::EventSourceMapping"
    stream_arn = _required_str(properties, "EventSourceArn", where)
    parts = stream_arn.split(":")
    if len(parts) != 6 or parts[2] != "kinesis" or not parts[5].startswith("stream/") or "/consumer/" in parts[5]:
        raise ConfigError(f"{where} EventSourceArn {stream_arn!r} is not a Kinesis stream ARN "
                          "(arn:<partition>:kinesis:<region>:<account>:stream/<name>); iotpipe local reads streams "
                          "only, not enhanced fan-out consumers")
    for unsupported in ("FilterCriteria", "TumblingWindowInSeconds"):
        if properties.get(unsupported):
            raise ConfigError(f"{where} {unsupported} is not supported by iotpipe local (records would reach the "
                              "function unfiltered or without windows); remove it to run locally")
    position = properties.get("StartingPosition", "TRIM_HORIZON")
    if position not in STARTING_POSITIONS:
        raise ConfigError(f"{where} StartingPosition {position!r} is not one of {', '.join(STARTING_POSITIONS)}")
    timestamp: float | None = None
    if position == "AT_TIMESTAMP":
        if properties.get("StartingPositionTimestamp") is None:
            raise ConfigError(f"{where} StartingPosition AT_TIMESTAMP needs StartingPositionTimestamp "
                              "(epoch seconds)")
        timestamp = _number(properties, "StartingPositionTimestamp", where, lo=0, hi=None, default=0)
    response_types = properties.get("FunctionResponseTypes") or []
    if not isinstance(response_types, list | tuple) or any(t != "ReportBatchItemFailures" for t in response_types):
        raise ConfigError(f"{where} FunctionResponseTypes {response_types!r}: only ReportBatchItemFailures exists")
    return MappingSpec(
        function_name=_required_str(properties, "FunctionName", where),
        function_arn=function_arn,
        stream_arn=stream_arn,
        batch_size=int(_number(properties, "BatchSize", where, lo=1, hi=GET_RECORDS_LIMIT, default=100)),
        batching_window_s=float(_number(properties, "MaximumBatchingWindowInSeconds", where, lo=0, hi=300,
                                        default=0)),
        starting_position=position,
        starting_position_timestamp=timestamp,
        report_batch_item_failures="ReportBatchItemFailures" in response_types,
        bisect_on_error=_boolean(properties, "BisectBatchOnFunctionError", where, default=False),
        max_retry_attempts=_limit(properties, "MaximumRetryAttempts", where, lo=0, hi=10000),
        max_record_age_s=_limit(properties, "MaximumRecordAgeInSeconds", where, lo=60, hi=604800),
        on_failure_destination=_destination(properties, where),
        enabled=_boolean(properties, "Enabled", where, default=True),
        parallelization_factor=int(_number(properties, "ParallelizationFactor", where, lo=1, hi=10, default=1)),
        invoke_identity_arn=invoke_identity_arn,
    )


def _required_str(properties: Mapping[str, Any], key: str, where: str) -> str:
    value = properties.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} {key} must be a resolved string, got {value!r}; resolve intrinsics first")
    return value


def _number(properties: Mapping[str, Any], key: str, where: str, *, lo: float, hi: float | None,
            default: float) -> float:
    value = properties.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (number >= lo and (hi is None or number <= hi)):
        bound = f"{lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
        raise ConfigError(f"{where} {key} {value!r} is out of range; use {bound}")
    return number


def _limit(properties: Mapping[str, Any], key: str, where: str, *, lo: int, hi: int) -> int:
    """A retry or age limit: -1 (Lambda's default) means infinite."""
    value = properties.get(key, -1)
    if value in (-1, "-1"):
        return -1
    number = _number(properties, key, where, lo=lo, hi=hi, default=-1)
    if number != int(number):
        raise ConfigError(f"{where} {key} {value!r} must be -1 (infinite) or a whole number {lo}..{hi}")
    return int(number)


def _boolean(properties: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    value = properties.get(key, default)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"{where} {key} {value!r} must be true or false")


def _destination(properties: Mapping[str, Any], where: str) -> str | None:
    config = properties.get("DestinationConfig") or {}
    arn = (config.get("OnFailure") or {}).get("Destination") if isinstance(config, Mapping) else None
    if arn in (None, ""):
        return None
    service = arn.split(":")[2] if isinstance(arn, str) and arn.count(":") >= 5 else None
    if service not in ("sqs", "sns", "s3"):
        raise ConfigError(f"{where} DestinationConfig.OnFailure.Destination {arn!r}: iotpipe local sends to an "
                          "SQS queue, SNS topic or S3 bucket ARN only; use one of those")
    return str(arn)


# -- what Lambda makes of the function's answer -------------------------------------------------------------------


def lambda_event(records: Sequence[StreamRecord]) -> dict[str, Any]:
    """The Kinesis event Lambda passes to the function for ``records``."""
    return {"Records": [record.event for record in records]}


def record_from_kinesis(raw: Mapping[str, Any], *, shard_id: str, spec: MappingSpec) -> StreamRecord:
    """A record from GetRecords in the form Lambda delivers it; ``Data`` may be bytes (boto3's default) or its
    base64 text, the arrival time a datetime (boto3's default) or epoch seconds (see :func:`raw_kinesis_client`)."""
    arrived = raw["ApproximateArrivalTimestamp"]
    arrival = arrived.timestamp() if isinstance(arrived, datetime) else float(arrived)
    sequence_number = raw["SequenceNumber"]
    data = raw["Data"]
    partition_key = raw["PartitionKey"]
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode("ascii")
    event = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": encoded,
            # Lambda gives seconds with millisecond precision, e.g. 1545084650.987.
            "approximateArrivalTimestamp": round(arrival, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": spec.invoke_identity_arn,
        "awsRegion": spec.region,
        "eventSourceARN": spec.stream_arn,
    }
    # The record's share of the event's JSON: the fixed part measured once per mapping, plus the variable fields
    # (the partition key through json.dumps, for its escapes; a float's repr is at most 24 characters).
    size = (_fixed_event_bytes(spec, shard_id) + len(encoded) + len(json.dumps(partition_key))
            + 3 * len(sequence_number) + 24)
    return StreamRecord(shard_id=shard_id, sequence_number=sequence_number, arrival=arrival, event=event,
                        size=size)


@functools.lru_cache(maxsize=64)
def _fixed_event_bytes(spec: MappingSpec, shard_id: str) -> int:
    """The bytes of one event record with empty variable fields, plus a separator."""
    event = {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "", "sequenceNumber": "",
                    "data": "", "approximateArrivalTimestamp": 0},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard_id}:",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": spec.invoke_identity_arn,
        "awsRegion": spec.region, "eventSourceARN": spec.stream_arn,
    }
    return len(json.dumps(event)) + 2


def first_failed_index(result: InvokeResult, records: Sequence[StreamRecord], *,
                       report_batch_item_failures: bool) -> int | None:
    """Where the batch failed: None if it succeeded, BATCH_FAILED if it failed as a whole, else the index of the
    record with the lowest reported sequence number (everything before it succeeded)."""
    if result.function_error is not None:
        return BATCH_FAILED
    # "Even when your function code returns partial batch failure responses, these responses will not be
    # processed by Lambda unless the ReportBatchItemFailures feature is explicitly turned on."
    if not report_batch_item_failures or not isinstance(result.payload, Mapping):
        # "Lambda treats a batch as a complete success if you return ... a null EventResponse".
        return None
    failures = result.payload.get("batchItemFailures")
    if failures is None or failures == []:
        # "... an empty batchItemFailure list; a null batchItemFailure list".
        return None
    positions = {record.sequence_number: index for index, record in enumerate(records)}
    indexes: list[int] = []
    for failure in failures if isinstance(failures, list) else [None]:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in positions:
            # "Lambda treats a batch as a complete failure if you return: an empty string itemIdentifier, a null
            # itemIdentifier, an itemIdentifier with a bad key name"; one not in the batch is no better.
            return BATCH_FAILED
        indexes.append(positions[identifier])
    # "If the batchItemFailures array contains multiple items, Lambda uses the record with the lowest sequence
    # number as the checkpoint. Lambda then retries all records starting from that checkpoint."
    return min(indexes)


def failure_record(records: Sequence[StreamRecord], *, condition: str, spec: MappingSpec,
                   response: InvokeResult | None, invoke_count: int, now: float) -> dict[str, Any]:
    """The on-failure destination document for discarded ``records`` (Lambda's Kinesis invocation record)."""
    response_context: dict[str, Any] = {"statusCode": 200 if response else 0,
                                        "executedVersion": "$LATEST" if response else ""}
    if response is not None and response.function_error:
        response_context["functionError"] = response.function_error
    return {
        "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": spec.function_arn,
                           "condition": condition, "approximateInvokeCount": invoke_count},
        "responseContext": response_context,
        "version": "1.0",
        "timestamp": _iso_ms(now),
        "KinesisBatchInfo": {
            "shardId": records[0].shard_id,
            "startSequenceNumber": records[0].sequence_number,
            "endSequenceNumber": records[-1].sequence_number,
            "approximateArrivalOfFirstRecord": _iso_ms(records[0].arrival),
            "approximateArrivalOfLastRecord": _iso_ms(records[-1].arrival),
            "batchSize": len(records),
            "streamArn": spec.stream_arn,
        },
    }


def failure_object_key(spec: MappingSpec, body: str) -> str:
    """Where Lambda's S3 on-failure destination puts a failed batch's record: "aws/lambda/<ESM-UUID>/<shardID>/
    YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>" (Lambda guide); the mapping's UUID is made up from its ARNs."""
    document = json.loads(body)
    shard = document["KinesisBatchInfo"]["shardId"]
    at = datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00"))
    mapping = uuid.uuid5(uuid.NAMESPACE_URL, f"{spec.stream_arn} {spec.function_arn}")
    return f"{naming.FAILURE_PREFIX}{mapping}/{shard}/{at:%Y/%m/%d}/{at:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"


def _iso_ms(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def take_batch(pending: deque[StreamRecord], batch: list[StreamRecord], batch_size: int) -> bool:
    """Move records from ``pending`` into ``batch`` up to BatchSize and the 6 MB payload; True when it is full."""
    size = _ENVELOPE_BYTES + sum(record.size for record in batch)
    while pending and len(batch) < batch_size:
        if batch and size + pending[0].size > MAX_PAYLOAD_BYTES:
            return True
        record = pending.popleft()
        size += record.size
        batch.append(record)
    return len(batch) >= batch_size


# -- the runner ------------------------------------------------------------------------------------------------


class MappingRunner:
    """Polls every shard of the mapping's stream and delivers batches to ``invoke`` with Lambda's semantics."""

    def __init__(self, spec: MappingSpec, clients: Any, invoke: Invoker, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 poll_interval_s: float = 0.2, retry_backoff_s: float = 0.2,
                 discovery_interval_s: float = 5.0, resume_from: Mapping[str, str | None] | None = None) -> None:
        # resume_from: the checkpoints() of a runner this one replaces (a redeploy that keeps the mapping): Lambda
        # keeps a mapping's position across updates, so those shards carry on after their last record done.
        self.spec = spec
        self._resume_from = dict(resume_from or {})
        self._clients = clients
        self._invoke = invoke
        self._clock = clock
        self._sleep = sleep
        self._poll_interval_s = poll_interval_s
        self._retry_backoff_s = retry_backoff_s
        self._discovery_interval_s = discovery_interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys((f.name for f in fields(MappingStats)), 0)
        self._shards: dict[str, _ShardWorker] = {}
        self._threads: list[threading.Thread] = []
        self._shard_threads: dict[str, threading.Thread] = {}
        self._watcher: threading.Thread | None = None
        self._kinesis: Any = None
        self._destination_client: Any = None
        self._queue_url: str | None = None

    # -- public ---------------------------------------------------------------------------------------------------

    @property
    def stats(self) -> MappingStats:
        """A snapshot of the counters."""
        with self._lock:
            return MappingStats(**self._counts)

    @property
    def running(self) -> bool:
        """True while a polling thread is alive."""
        return any(thread.is_alive() for thread in self._threads)

    def dead_threads(self) -> list[str]:
        """The names of the polling threads that ended while they still had work: the shard watcher, or the
        poller of a shard that is not finished. Empty for a runner that was never started or was stopped."""
        if not self._threads or self._stop.is_set():
            return []
        dead = [] if self._watcher is None or self._watcher.is_alive() else [self._watcher.name]
        for shard_id, thread in list(self._shard_threads.items()):
            worker = self._shards.get(shard_id)
            if not thread.is_alive() and worker is not None and not worker.finished:
                dead.append(thread.name)
        return dead

    def checkpoints(self) -> dict[str, str | None]:
        """Per shard, the sequence number of the last record done with (None before the first)."""
        return {worker.shard_id: worker.checkpoint for worker in self._ordered()}

    def start(self) -> None:
        """Poll in the background: one thread per shard, plus one that finds new shards (resharding)."""
        if not self.spec.enabled or self._threads:
            return
        self._stop.clear()
        for worker in self._discover():
            self._start_thread(worker)
        watcher = self._watcher = threading.Thread(target=self._watch_shards, name="esm-shards", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def stop(self, timeout_s: float = 5) -> None:
        """Stop polling; waits at most ``timeout_s`` for in-flight invocations. Records not yet done stay
        unprocessed (they are not checkpointed)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def run_once(self, *, window: bool = False) -> int:
        """Poll every shard once and deliver what is there, batch after batch, without waiting for more (unless
        ``window``: then each batch waits up to MaximumBatchingWindowInSeconds to fill). Returns the records done
        with (processed, sent to the destination, or discarded)."""
        if not self.spec.enabled:
            return 0
        self._discover()
        done = 0
        for worker in self._ordered():
            while not self._stop.is_set() and self._parents_done(worker):
                count = worker.poll(window=window)
                done += count
                if count == 0:
                    break
        return done

    # -- shards ---------------------------------------------------------------------------------------------------

    def _kinesis_client(self) -> Any:
        if self._kinesis is None:
            self._kinesis = self._clients.client("kinesis")
        return self._kinesis

    def _discover(self) -> list[_ShardWorker]:
        """Workers for shards not seen before; shards found after the first look start at TRIM_HORIZON, since
        all their records came after the start."""
        first_look = not self._shards
        paginator = self._kinesis_client().get_paginator("list_shards")
        new: list[_ShardWorker] = []
        for page in paginator.paginate(StreamARN=self.spec.stream_arn):
            for shard in page["Shards"]:
                shard_id = shard["ShardId"]
                ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                if shard_id in self._shards:
                    self._shards[shard_id].ending = ending
                    continue
                parents = {shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key)}
                worker = _ShardWorker(self, shard_id, parents, self._reader_client(),
                                      position=self.spec.starting_position if first_look else "TRIM_HORIZON",
                                      ending=ending, checkpoint=self._resume_from.get(shard_id))
                # Anchor the iterator now, so LATEST means "after start", not "after the first poll".
                worker.open()
                self._shards[shard_id] = worker
                new.append(worker)
        return new

    def _reader_client(self) -> Any:
        """A Kinesis client for one shard's reads: a fresh one from a ClientFactory gets the cheaper GetRecords
        parsing; a client that may be shared (any other ``clients``, e.g. a cache) is used as it is."""
        from iotpipe.aws import ClientFactory

        client = self._clients.client("kinesis")
        return raw_kinesis_client(client) if isinstance(self._clients, ClientFactory) else client

    def _ordered(self) -> list[_ShardWorker]:
        """The shards in shard id order (parents before their children)."""
        return [worker for _, worker in sorted(list(self._shards.items()))]

    def _parents_done(self, worker: _ShardWorker) -> bool:
        """A child's records come after its parents': it waits until they are finished."""
        return all(parent not in self._shards or self._shards[parent].finished for parent in worker.parents)

    def _start_thread(self, worker: _ShardWorker) -> None:
        thread = threading.Thread(target=self._poll_shard, args=(worker,), name=f"esm-{worker.shard_id}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)
        self._shard_threads[worker.shard_id] = thread

    def _watch_shards(self) -> None:
        while not self._pause(self._discovery_interval_s):
            try:
                for worker in self._discover():
                    self._start_thread(worker)
            except Exception:
                self._count(poll_errors=1)
                log.exception("listing the shards of %s failed; trying again", self.spec.stream_arn)

    def _poll_shard(self, worker: _ShardWorker) -> None:
        failures = 0
        while not self._stop.is_set() and not worker.finished:
            if not self._parents_done(worker):
                self._pause(self._poll_interval_s)
                continue
            try:
                count = worker.poll(window=True)
                failures = 0
            except Exception:
                failures += 1
                self._count(poll_errors=1)
                log.exception("polling %s failed; trying again", worker.shard_id)
                self._pause(self._backoff(failures))
                continue
            if count == 0 and not worker.pending:
                self._pause(self._poll_interval_s)

    # -- helpers the workers share --------------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped."""
        if self._sleep is time.sleep:
            # The stop event's wait instead of a sleep, so stop() interrupts a long batching window or backoff.
            return self._stop.wait(max(0.0, seconds))
        if not self._stop.is_set() and seconds > 0:
            self._sleep(seconds)
        return self._stop.is_set()

    def _backoff(self, attempt: int) -> float:
        return float(min(_MAX_BACKOFF_S, self._retry_backoff_s * 2 ** max(0, attempt - 1)))

    def _send_to_destination(self, records: Sequence[StreamRecord], *, condition: str, attempt: _Attempt) -> bool:
        """Hand discarded ``records`` to the on-failure destination (or count them discarded when there is none);
        False when stopped before the destination took them; AwsError when it refused them
        DESTINATION_ATTEMPTS times (the records then stay unprocessed, to be delivered again)."""
        expired = len(records) if condition == RECORD_AGE_EXCEEDED else 0
        destination = self.spec.on_failure_destination
        if destination is None:
            log.warning("%s: %d records of %s (%s..%s) discarded (%s) and no on-failure destination is set",
                        self.spec.function_name, len(records), records[0].shard_id, records[0].sequence_number,
                        records[-1].sequence_number, condition)
            self._count(discarded=len(records), records_expired=expired)
            return True
        document = failure_record(records, condition=condition, spec=self.spec, response=attempt.response,
                                  invoke_count=attempt.invokes, now=self._clock())
        if destination.split(":")[2] == "s3":  # "Lambda also sends the entire invocation record" (Lambda guide)
            document["payload"] = lambda_event(records)
        body = json.dumps(document)
        failures = 0
        while True:
            try:
                self._deliver_document(destination, body)
                break
            except Exception as exc:
                failures += 1
                self._count(destination_errors=1)
                if failures >= DESTINATION_ATTEMPTS:
                    raise AwsError(f"the on-failure destination {destination} refused a failed batch of "
                                   f"{records[0].shard_id} {failures} times ({exc}); its records stay unprocessed "
                                   "and are delivered again: check that the queue or topic exists") from exc
                log.warning("sending a failed batch to %s failed (%s); trying again", destination, exc)
                if self._pause(self._backoff(failures)):
                    return False
        self._count(sent_to_destination=len(records), batches_to_destination=1, records_expired=expired)
        return True

    def _deliver_document(self, destination: str, body: str) -> None:
        service = destination.split(":")[2]
        with self._lock:
            if self._destination_client is None:
                self._destination_client = self._clients.client(service)
            client = self._destination_client
        if service == "sns":
            client.publish(TopicArn=destination, Message=body)
            return
        if service == "s3":
            client.put_object(Bucket=destination.split(":")[5], Key=failure_object_key(self.spec, body),
                              Body=body.encode())
            return
        if self._queue_url is None:
            account, name = destination.split(":")[4], destination.split(":")[5]
            self._queue_url = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        client.send_message(QueueUrl=self._queue_url, MessageBody=body)


@dataclass
class _ShardWorker:
    """One shard: its iterator, the records read but not yet batched, and the in-memory checkpoint."""

    runner: MappingRunner
    shard_id: str
    parents: set[str]
    kinesis: Any
    position: str
    checkpoint: str | None = None
    pending: deque[StreamRecord] = field(default_factory=deque)
    iterator: str | None = None
    last_read: str | None = None
    ending: str | None = None  # the last sequence number of a closed shard (ListShards' EndingSequenceNumber)
    ended: bool = False  # the shard is closed and every record was read
    busy: bool = False  # a batch is being gathered or delivered

    @property
    def finished(self) -> bool:
        """Closed, read to the end and every record done with."""
        return self.ended and not self.pending and not self.busy

    def open(self) -> None:
        """Get the first shard iterator: after the checkpoint carried over, else at the starting position."""
        spec = self.runner.spec
        if self.checkpoint is not None:
            self.last_read = self.checkpoint
            self._reopen()
            return
        args: dict[str, Any] = {"StreamARN": spec.stream_arn, "ShardId": self.shard_id,
                                "ShardIteratorType": self.position}
        if self.position == "AT_TIMESTAMP":
            args["Timestamp"] = spec.starting_position_timestamp
        self.iterator = self.kinesis.get_shard_iterator(**args)["ShardIterator"]

    def poll(self, *, window: bool) -> int:
        """Gather one batch and deliver it; the number of records done with (0 when there was nothing)."""
        self.busy = True
        try:
            batch = self._gather(window=window)
            return self._deliver(batch) if batch else 0
        finally:
            self.busy = False

    # -- reading --------------------------------------------------------------------------------------------------

    def _read(self, limit: int) -> int:
        """One GetRecords call into ``pending``; the number of records it returned."""
        if self.ended:
            return 0
        if self.iterator is None:
            self._reopen()
        try:
            response = self.kinesis.get_records(ShardIterator=self.iterator, Limit=min(limit, GET_RECORDS_LIMIT),
                                                StreamARN=self.runner.spec.stream_arn)
        except self.kinesis.exceptions.ExpiredIteratorException:
            # Iterators expire after five minutes; carry on after the last record read.
            self._reopen()
            return 0
        self.iterator = response.get("NextShardIterator")
        spec = self.runner.spec
        records = [record_from_kinesis(raw, shard_id=self.shard_id, spec=spec) for raw in response["Records"]]
        if records:
            self.last_read = records[-1].sequence_number
            self.pending.extend(records)
            self.runner._count(records_read=len(records))
        # Kinesis ends a closed shard with a null NextShardIterator; moto never does, so an empty read of a shard
        # that ListShards showed closed (no record can arrive after that) ends it too, and its children may start.
        self.ended = self.iterator is None or (not records and self.ending is not None)
        return len(records)

    def _reopen(self) -> None:
        if self.last_read is None:
            self.open()
            return
        self.iterator = self.kinesis.get_shard_iterator(
            StreamARN=self.runner.spec.stream_arn, ShardId=self.shard_id,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=self.last_read)["ShardIterator"]

    def _gather(self, *, window: bool) -> list[StreamRecord]:
        """Read until BatchSize, the 6 MB payload or the batching window: "Lambda continues to read records from
        the event source until it has gathered a full batch, the batching window expires, or the batch reaches the
        payload limit of 6 MB"."""
        batch: list[StreamRecord] = []
        try:
            return self._fill(batch, window=window)
        except BaseException:
            self.pending.extendleft(reversed(batch))  # read but not delivered: keep them for the next poll
            raise

    def _fill(self, batch: list[StreamRecord], *, window: bool) -> list[StreamRecord]:
        runner, spec = self.runner, self.runner.spec
        deadline: float | None = None
        while not runner._stop.is_set():
            if take_batch(self.pending, batch, spec.batch_size):
                return batch
            wanted = spec.batch_size - len(batch)
            # Reading ahead (records wait in memory for the next batches) saves a round trip per small batch when
            # the shard has a backlog; one call costs as much as ~100 records.
            read = self._read(max(wanted, READ_AHEAD))
            if take_batch(self.pending, batch, spec.batch_size):
                return batch
            if not batch or self.ended:
                return batch
            if not window or spec.batching_window_s <= 0:
                # Without a window Lambda invokes as soon as records are there; a short read means caught up.
                if read < wanted:
                    return batch
                continue
            if deadline is None:
                deadline = runner._clock() + spec.batching_window_s
            remaining = deadline - runner._clock()
            if remaining <= 0:
                return batch
            if read == 0:
                runner._pause(min(runner._poll_interval_s, remaining))
        # Stopped: put the batch back so nothing read is dropped from memory.
        self.pending.extendleft(reversed(batch))
        return []

    # -- delivering -----------------------------------------------------------------------------------------------

    def _deliver(self, batch: list[StreamRecord]) -> int:
        """Invoke until every record of ``batch`` is processed or handed to the destination; the records done."""
        work: deque[_Attempt] = deque([_Attempt(tuple(batch))])
        try:
            return self._work_through(work)
        except BaseException:
            self._requeue(work)  # not done with: delivered again at the next poll, never dropped
            raise

    def _work_through(self, work: deque[_Attempt]) -> int:
        runner, spec = self.runner, self.runner.spec
        done = 0
        while work:
            if runner._stop.is_set():
                self._requeue(work)
                return done
            attempt = work[0]
            expired, live = self._split_expired(attempt.records)
            if expired:
                # "Maximum age of record - The maximum age of a record that Lambda sends to your function."
                if not runner._send_to_destination(expired, condition=RECORD_AGE_EXCEEDED, attempt=attempt):
                    self._requeue(work)
                    return done
                done += self._advance(expired)
                if not live:
                    work.popleft()
                    continue
                attempt = work[0] = replace(attempt, records=live)
            result = self._invoke(attempt.records)
            attempt = replace(attempt, invokes=attempt.invokes + 1, response=result)
            failed_at = first_failed_index(result, attempt.records,
                                           report_batch_item_failures=spec.report_batch_item_failures)
            if failed_at is None:
                runner._count(records_processed=len(attempt.records))
                done += self._advance(attempt.records)
                work.popleft()
                continue
            if result.function_error is None:
                runner._count(partial_failures=1)
            if failed_at != BATCH_FAILED:
                runner._count(records_processed=failed_at)
                done += self._advance(attempt.records[:failed_at])
                # "the batch is bisected at the returned sequence number and Lambda retries only the remaining
                # records"; such a retry is charged to MaximumRetryAttempts.
                attempt = work[0] = replace(attempt, records=attempt.records[failed_at:])
            elif spec.bisect_on_error and len(attempt.records) > 1:
                # "split a failed batch into two batches ... Splitting a batch does not count towards the retry
                # quota": each half keeps the retries charged so far and is delivered in order.
                half = len(attempt.records) // 2
                work.popleft()
                work.appendleft(_Attempt(attempt.records[half:], attempt.retries, 0, result))
                work.appendleft(_Attempt(attempt.records[:half], attempt.retries, 0, result))
                runner._count(bisections=1)
                continue
            if spec.max_retry_attempts == -1 or attempt.retries < spec.max_retry_attempts:
                work[0] = replace(attempt, retries=attempt.retries + 1)
                runner._count(retries=1)
                runner._pause(runner._backoff(attempt.retries + 1))
                continue
            if not runner._send_to_destination(attempt.records, condition=RETRY_EXHAUSTED, attempt=attempt):
                work[0] = attempt
                self._requeue(work)
                return done
            done += self._advance(attempt.records)
            work.popleft()
        return done

    def _invoke(self, records: Sequence[StreamRecord]) -> InvokeResult:
        runner = self.runner
        runner._count(invocations=1, records_delivered=len(records))
        try:
            result = runner._invoke(lambda_event(records))
        except Exception as exc:
            # The invoker itself broke (not the function): treat it as a function error so the batch is retried
            # within the mapping's limits rather than lost or retried forever.
            log.exception("invoking %s failed", runner.spec.function_name)
            result = InvokeResult(function_error=f"Unhandled ({type(exc).__name__})")
        if result.function_error is not None:
            runner._count(function_errors=1)
        return result

    def _split_expired(self, records: tuple[StreamRecord, ...]) -> tuple[tuple[StreamRecord, ...],
                                                                         tuple[StreamRecord, ...]]:
        """The leading records older than MaximumRecordAgeInSeconds, and the rest (arrival is ordered in a
        shard, so the expired ones lead)."""
        max_age = self.runner.spec.max_record_age_s
        if max_age == -1:
            return (), records
        oldest_allowed = self.runner._clock() - max_age
        cut = 0
        while cut < len(records) and records[cut].arrival < oldest_allowed:
            cut += 1
        return records[:cut], records[cut:]

    def _advance(self, records: Iterable[StreamRecord]) -> int:
        count = 0
        for record in records:
            self.checkpoint = record.sequence_number
            count += 1
        return count

    def _requeue(self, work: deque[_Attempt]) -> None:
        """Stopped mid-batch: the records not done go back to the front of ``pending`` in order."""
        remaining = [record for attempt in work for record in attempt.records]
        self.pending.extendleft(reversed(remaining))
