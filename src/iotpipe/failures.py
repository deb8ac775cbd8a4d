"""Failed batches: what the processor's on-failure destination (the dead-letter queue) holds, and redriving it.

Lambda's event source mapping gives up on a Kinesis batch after its retries (or its maximum record age) and sends
the queue a record of the failed invocation. AWS's Lambda guide ("Retain discarded batch records for a Kinesis
Data Streams event source") says of it: each record sent to the destination is a JSON document with metadata about
the failed invocation; for Amazon S3 destinations Lambda also sends the entire invocation record. The SQS document
is therefore only a pointer, as in the guide's example::

    {"requestContext": {"requestId": "...", "functionArn": "...", "condition": "RetryAttemptsExhausted",
                        "approximateInvokeCount": 1},
     "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
     "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
     "KinesisBatchInfo": {"shardId": "shardId-000000000001", "startSequenceNumber": "4959...",
                          "endSequenceNumber": "4959...", "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
                          "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z", "batchSize": 500,
                          "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"}}

and the records themselves must be read back: from the stream (``AT_SEQUENCE_NUMBER``) while its retention keeps
them, else from the raw archive, which the processor writes before anything else
(``raw/<partitions>/<shardId>/<firstSeq>-<lastSeq>.jsonl.gz``, docs/contract.md section 7). ``iotpipe local``
writes the same document (``iotpipe.local.esm.failure_record``). The S3 destination (``processor.on_failure =
"s3"``) writes the same document plus ``payload``, the whole invocation event, under ``aws/lambda/`` of the raw
bucket; its records need no reading back.

A redrive runs the records through the processor again, with their original arrival times, so each reaches the
outcome of its first attempt (the contract: the outcome is a function of the record alone, and a re-write lands on
the same item). The message is deleted only when the processor reported no failed record: every record stored or
quarantined. Running it twice stores nothing twice.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from iotpipe import contract
from iotpipe.aws import call_aws
from iotpipe.errors import AwsError, IotpipeError
from iotpipe.local.functions.result import InvokeResult

# The processor refuses nothing for size, but Lambda's synchronous payload limit is 6 MB: stay under it.
MAX_EVENT_BYTES = 5 * 1024 * 1024
MAX_EVENT_RECORDS = 1000
# "Warn loudly" when less than this share of the stream's retention is left to read the records back.
WARN_FRACTION = 0.2
# While a redrive works on a message, it stays hidden from other readers (then returns if the redrive died).
REDRIVE_VISIBILITY_S = 900
# Listing hides each message this long, then makes it visible again at once.
LIST_VISIBILITY_S = 30
MAX_MESSAGES = 1000
# get_records pages read from the stream for one batch, at most (a batch is at most 10,000 records).
_MAX_PAGES = 200
# The archive object of a record is keyed by the hour of its invocation's first record: look this far around.
_ARCHIVE_HOURS_AROUND = 2
_KEY_RANGE = re.compile(r"/(\d+)-(\d+)\.jsonl\.gz$")


class Clients(Protocol):
    """Makes boto3 clients by service name (``iotpipe.aws.ClientFactory``)."""

    def client(self, service: str) -> Any: ...


Invoker = Callable[[dict[str, Any]], InvokeResult]


class RedriveFailed(IotpipeError):
    """Some failed batches could not be redriven; they stay in the queue."""


@dataclass(frozen=True)
class StoredRecord:
    """A Kinesis record read back: from the stream or from the archive."""

    sequence_number: str
    partition_key: str
    arrived_at_ms: int
    data: bytes


@dataclass(frozen=True)
class FailedBatch:
    """One on-failure message: which records of which shard failed, when, and why."""

    message_id: str
    receipt_handle: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    batch_size: int
    stream_arn: str
    condition: str
    function_error: str
    failed_at: float  # epoch seconds (the document's timestamp)
    first_arrival: float  # epoch seconds (approximateArrivalOfFirstRecord)
    kind: str = "sqs"  # "sqs": a queue message (receipt_handle); "s3": an object (message_id is its key)
    function_arn: str = ""  # requestContext.functionArn (with the alias or version invoked, if any)
    records: tuple[StoredRecord, ...] = ()  # the s3 kind's invocation record carries them

    def age_s(self, now: float) -> float:
        """Seconds since the first record arrived in the stream."""
        return max(0.0, now - self.first_arrival)

    def retention_left_s(self, now: float, retention_hours: int) -> float:
        """Seconds until the stream's retention drops the first record (negative: already dropped)."""
        return self.first_arrival + retention_hours * 3600 - now


@dataclass(frozen=True)
class FailureView:
    """A failed batch as ``failures list`` shows it."""

    batch: FailedBatch
    age_s: float
    retention_left_s: float
    retention_hours: int

    @property
    def left_fraction(self) -> float:
        """The share of the stream's retention still left (0 when the records are gone from the stream)."""
        return max(0.0, self.retention_left_s / (self.retention_hours * 3600))

    @property
    def urgent(self) -> bool:
        """Less than 20 % of the retention left: redrive now, or the records are only in the archive."""
        return self.left_fraction < WARN_FRACTION


@dataclass(frozen=True)
class Unreadable:
    """A message that is not a Kinesis on-failure record (left in the queue)."""

    message_id: str
    problem: str


@dataclass(frozen=True)
class Listing:
    """What the dead-letter queue holds."""

    queue_url: str
    retention_hours: int
    failures: tuple[FailureView, ...]
    unreadable: tuple[Unreadable, ...]


@dataclass(frozen=True)
class RedriveOutcome:
    """What a redrive did with one message."""

    message_id: str
    shard_id: str
    source: str  # "stream" | "archive" | "" (not read)
    records: int
    deleted: bool
    problem: str = ""  # why the message stays (empty when deleted, or a dry run that found every record)


@dataclass(frozen=True)
class RedriveReport:
    """Every message's outcome."""

    outcomes: tuple[RedriveOutcome, ...]
    dry_run: bool

    @property
    def failed(self) -> tuple[RedriveOutcome, ...]:
        """The messages left in the queue because something went wrong."""
        return tuple(o for o in self.outcomes if o.problem)


# -- reading the queue -------------------------------------------------------------------------------------------


def _epoch(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a timestamp")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_message(message_id: str, receipt_handle: str, body: str | bytes) -> FailedBatch:
    """The failed batch of an SQS on-failure message; ValueError naming what is missing when it is not one."""
    return _parse_document(json.loads(body), message_id, receipt_handle)


def parse_object(key: str, body: str | bytes) -> FailedBatch:
    """The failed batch of an S3 on-failure object, its records from the invocation record it carries
    (``payload``: the event, as an object or its JSON text); ValueError when it is not one."""
    document = json.loads(body)
    payload = document.get("payload") if isinstance(document, dict) else None
    if isinstance(payload, str):
        payload = json.loads(payload)
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise ValueError("no payload with Records: not an S3 on-failure record of a Kinesis mapping")
    records = tuple(event_record(r) for r in payload["Records"])
    batch = _parse_document(document, key, "")
    return replace(batch, kind="s3", records=records)


def event_record(record: dict[str, Any]) -> StoredRecord:
    """A record of a Lambda Kinesis event."""
    kinesis = record["kinesis"]
    return StoredRecord(str(kinesis["sequenceNumber"]), str(kinesis.get("partitionKey", "")),
                        int(float(kinesis["approximateArrivalTimestamp"]) * 1000 + 0.5),
                        base64.b64decode(kinesis["data"]))


def _parse_document(document: Any, message_id: str, receipt_handle: str) -> FailedBatch:
    info = document.get("KinesisBatchInfo") if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise ValueError("no KinesisBatchInfo: not a Kinesis on-failure record")
    missing = [key for key in ("shardId", "startSequenceNumber", "endSequenceNumber", "streamArn", "batchSize",
                               "approximateArrivalOfFirstRecord") if key not in info]
    if missing:
        raise ValueError(f"KinesisBatchInfo lacks {', '.join(missing)}")
    request = document.get("requestContext") or {}
    response = document.get("responseContext") or {}
    for name, context in (("requestContext", request), ("responseContext", response)):
        if not isinstance(context, dict):
            raise ValueError(f"{name} is not an object")
    # Redrive compares and orders sequence numbers as integers: a message that lies about them is left alone.
    for key in ("startSequenceNumber", "endSequenceNumber"):
        if not isinstance(info[key], str) or not info[key].isdecimal():
            raise ValueError(f"{key} {info[key]!r} is not a sequence number")
    if int(info["startSequenceNumber"]) > int(info["endSequenceNumber"]):
        raise ValueError("the sequence range starts after it ends")
    if isinstance(info["batchSize"], bool) or not isinstance(info["batchSize"], int) or info["batchSize"] < 1:
        raise ValueError(f"batchSize {info['batchSize']!r} is not a number of records")
    return FailedBatch(
        message_id=message_id, receipt_handle=receipt_handle, shard_id=str(info["shardId"]),
        start_sequence=info["startSequenceNumber"], end_sequence=info["endSequenceNumber"],
        batch_size=info["batchSize"], stream_arn=str(info["streamArn"]),
        condition=str(request.get("condition", "")), function_error=str(response.get("functionError", "")),
        function_arn=str(request.get("functionArn", "")),
        failed_at=_epoch(document.get("timestamp", info["approximateArrivalOfFirstRecord"])),
        first_arrival=_epoch(info["approximateArrivalOfFirstRecord"]),
    )


def receive_all(sqs: Any, queue_url: str, *, visibility_s: int, limit: int = MAX_MESSAGES) -> list[dict[str, Any]]:
    """Every message of the queue (up to ``limit``), each hidden for ``visibility_s`` seconds from then on."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(limit // 10 + 2):
        # Long polling: a short poll samples some of SQS's servers and can answer nothing while messages wait.
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility_s,
                                  WaitTimeSeconds=1).get("Messages", [])
        fresh = [m for m in got if m["MessageId"] not in seen]
        if not fresh or len(seen) >= limit:
            break
        for message in fresh:
            seen[message["MessageId"]] = message
    received = list(seen.values())
    release(sqs, queue_url, received[limit:])  # received past the limit: not ours to hide
    return received[:limit]


def release(sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Make ``messages`` visible again at once (a listing only looked at them)."""
    for start in range(0, len(messages), 10):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                   for i, m in enumerate(messages[start:start + 10])]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def _split(messages: Iterable[dict[str, Any]]) -> tuple[list[FailedBatch], list[Unreadable]]:
    batches, unreadable = [], []
    for message in messages:
        try:
            batches.append(parse_message(message["MessageId"], message["ReceiptHandle"], message["Body"]))
        except (ValueError, TypeError, KeyError) as exc:
            unreadable.append(Unreadable(message["MessageId"], str(exc)))
    return batches, unreadable


def foreign_problem(batch: FailedBatch, stream_name: str, function_name: str) -> str:
    """Why ``batch`` is not this pipeline's to redrive ("" when it is): another stream's records (its sequence
    numbers would pick this stream's or archive's records), or another function's failure."""
    stream = batch.stream_arn.rpartition(":stream/")[2]
    if stream != stream_name:
        return (f"it names stream/{stream}, not this stack's stream/{stream_name}: it is another pipeline's; "
                "redrive it with that one's env")
    # functionArn may carry the alias or version invoked (arn:...:function:name:live).
    function = batch.function_arn.partition(":function:")[2].partition(":")[0]
    if batch.function_arn and function != function_name:
        return (f"it names function:{function}, not this stack's function:{function_name}: it is another "
                "pipeline's; redrive it with that one's env")
    return ""


def _own(batches: Iterable[FailedBatch], found: Resources) -> tuple[list[FailedBatch], list[Unreadable]]:
    own, foreign = [], []
    for batch in batches:
        problem = foreign_problem(batch, found.stream_name, found.function_name)
        if problem:
            foreign.append(Unreadable(batch.message_id, problem))
        else:
            own.append(batch)
    return own, foreign


@dataclass(frozen=True)
class Resources:
    """The stack's resources a redrive uses."""

    queue_url: str
    stream_name: str
    bucket: str
    function_name: str


def resources(clients: Clients, cfg: Any) -> Resources:
    """The queue, stream, archive bucket and processor of ``cfg``'s stack (from its outputs)."""
    from iotpipe.query.outputs import required_output, stack_names

    outputs = stack_names(clients, cfg)
    return Resources(*(required_output(outputs, key, cfg) for key in (
        contract.OUT_DLQ_URL, contract.OUT_STREAM_NAME, contract.OUT_BUCKET_NAME, contract.OUT_FUNCTION_NAME)))


def retention_hours(kinesis: Any, stream_name: str) -> int:
    """The stream's retention period in hours."""
    summary = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    return int(summary["RetentionPeriodHours"])


def view(batches: Iterable[FailedBatch], retention_h: int, now: float) -> tuple[FailureView, ...]:
    """Each batch with its age and the retention left, oldest first."""
    ordered = sorted(batches, key=lambda b: b.first_arrival)
    return tuple(FailureView(b, b.age_s(now), b.retention_left_s(now, retention_h), retention_h) for b in ordered)


def s3_failures(s3: Any, bucket: str, limit: int = MAX_MESSAGES) -> tuple[list[FailedBatch], list[Unreadable]]:
    """The failed batches Lambda's S3 on-failure destination wrote under ``aws/lambda/`` of ``bucket``."""
    batches: list[FailedBatch] = []
    unreadable: list[Unreadable] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=contract.FAILURE_PREFIX):
        for item in page.get("Contents", []):
            if len(batches) + len(unreadable) >= limit:
                return batches, unreadable
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            try:
                batches.append(parse_object(item["Key"], body))
            except (ValueError, TypeError, KeyError) as exc:
                unreadable.append(Unreadable(item["Key"], str(exc)))
    return batches, unreadable


def list_failures(clients: Clients, cfg: Any, *, now: float, limit: int = MAX_MESSAGES) -> Listing:
    """The failed batches of both on-failure kinds: the dead-letter queue's messages (they stay in the queue,
    visible again at once) and the S3 destination's objects in the raw bucket."""
    found = resources(clients, cfg)
    sqs = clients.client("sqs")
    messages = receive_all(sqs, found.queue_url, visibility_s=LIST_VISIBILITY_S, limit=limit)
    try:
        batches, unreadable = _split(messages)
        hours = retention_hours(clients.client("kinesis"), found.stream_name)
    finally:
        release(sqs, found.queue_url, messages)
    in_s3, unreadable_s3 = s3_failures(clients.client("s3"), found.bucket, limit)
    own, foreign = _own(batches + in_s3, found)
    return Listing(found.queue_url, hours, view(own, hours, now), tuple(unreadable + unreadable_s3 + foreign))


# -- reading the records back -------------------------------------------------------------------------------------


def _stream_name(stream_arn: str, default: str) -> str:
    return stream_arn.rpartition(":stream/")[2] or default


def read_from_stream(kinesis: Any, batch: FailedBatch, stream_name: str) -> list[StoredRecord] | None:
    """The batch's records from the stream (``AT_SEQUENCE_NUMBER``), or None when the stream no longer has all of
    them (the first one trimmed by the retention, or fewer than the batch held)."""
    try:
        iterator = call_aws("kinesis", "get-shard-iterator", kinesis.get_shard_iterator,
                            StreamName=_stream_name(batch.stream_arn, stream_name), ShardId=batch.shard_id,
                            ShardIteratorType="AT_SEQUENCE_NUMBER",
                            StartingSequenceNumber=batch.start_sequence)["ShardIterator"]
    except AwsError:  # trimmed by the retention, or the shard is gone: the archive has the records
        return None
    end = int(batch.end_sequence)
    found: list[StoredRecord] = []
    for _ in range(_MAX_PAGES):
        if iterator is None:
            break
        try:
            page = call_aws("kinesis", "get-records", kinesis.get_records, ShardIterator=iterator, Limit=10000)
        except AwsError:  # throttled past botocore's retries, an expired iterator, a KMS error: the archive has them
            return None
        for item in page.get("Records", []):
            if int(item["SequenceNumber"]) > end:
                return _complete(found, batch)
            found.append(StoredRecord(item["SequenceNumber"], item.get("PartitionKey", ""),
                                      int(item["ApproximateArrivalTimestamp"].timestamp() * 1000 + 0.5),
                                      bytes(item["Data"])))
        if found and int(found[-1].sequence_number) >= end:
            break
        if not page.get("Records") and page.get("MillisBehindLatest", 0) == 0:
            break
        iterator = page.get("NextShardIterator")
    return _complete(found, batch)


def _complete(found: list[StoredRecord], batch: FailedBatch) -> list[StoredRecord] | None:
    if not found or found[0].sequence_number != batch.start_sequence or len(found) != batch.batch_size:
        return None
    return found


def _hour_prefixes(shard_id: str, around: float) -> Iterator[str]:
    start = datetime.fromtimestamp(around, UTC).replace(minute=0, second=0, microsecond=0)
    for offset in range(-_ARCHIVE_HOURS_AROUND, _ARCHIVE_HOURS_AROUND + 1):
        hour = start + timedelta(hours=offset)
        yield (f"{contract.ARCHIVE_PREFIXES[0]}year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}/"
               f"{shard_id}/")


def archive_keys(s3: Any, bucket: str, batch: FailedBatch) -> list[str]:
    """The raw archive objects that may hold the batch's records: its shard's, in the hours around its first
    arrival, whose sequence range overlaps the batch's."""
    low, high = int(batch.start_sequence), int(batch.end_sequence)
    keys = []
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in _hour_prefixes(batch.shard_id, batch.first_arrival):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                matched = _KEY_RANGE.search(item["Key"])
                if matched and int(matched.group(1)) <= high and int(matched.group(2)) >= low:
                    keys.append(item["Key"])
    return keys


def archive_records(lines: Iterable[dict[str, Any]]) -> Iterator[StoredRecord]:
    """Records from archive lines (``data`` as text or ``dataBase64``, contract section 7)."""
    for line in lines:
        data = (base64.b64decode(line["dataBase64"]) if "dataBase64" in line
                else str(line.get("data", "")).encode("utf-8", "surrogatepass"))
        yield StoredRecord(str(line["sequenceNumber"]), str(line.get("partitionKey", "")),
                           int(line["arrivedAt"]), data)


class CorruptArchive(IotpipeError):
    """An archive object that is not a gzip of JSON lines."""


def read_archive_object(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The JSON lines of one gzip archive object; CorruptArchive naming it when it is not one."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        lines = [json.loads(line) for line in gzip.decompress(body).decode("utf-8").splitlines() if line.strip()]
    except (OSError, EOFError, ValueError) as exc:  # BadGzipFile is an OSError; JSON and UTF-8 errors ValueErrors
        raise CorruptArchive(f"s3://{bucket}/{key} is not a gzip of JSON lines ({exc}); restore it from a version "
                             "or backup, or move it out of raw/ to go on without its records") from exc
    if not all(isinstance(line, dict) for line in lines):
        raise CorruptArchive(f"s3://{bucket}/{key} is not a gzip of JSON lines (a line is not an object); restore "
                             "it from a version or backup, or move it out of raw/ to go on without its records")
    return lines


def read_from_archive(s3: Any, bucket: str, batch: FailedBatch) -> list[StoredRecord] | None:
    """The batch's records from the raw archive, deduplicated on sequence number (the archive is at least once);
    None when it does not hold all of them."""
    low, high = int(batch.start_sequence), int(batch.end_sequence)
    found: dict[int, StoredRecord] = {}
    for key in archive_keys(s3, bucket, batch):
        for item in archive_records(read_archive_object(s3, bucket, key)):
            seq = int(item.sequence_number)
            if low <= seq <= high:
                found.setdefault(seq, item)
    ordered = [found[seq] for seq in sorted(found)]
    return _complete(ordered, batch)


# -- running them through the processor ---------------------------------------------------------------------------


def kinesis_event(records: Sequence[StoredRecord], shard_id: str, stream_arn: str) -> dict[str, Any]:
    """The Kinesis event Lambda would give the function for ``records`` (their original arrival times)."""
    region = stream_arn.split(":")[3] if stream_arn.count(":") >= 5 else ""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number, "data": base64.b64encode(r.data).decode(),
                    "approximateArrivalTimestamp": r.arrived_at_ms / 1000},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard_id}:{r.sequence_number}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "", "awsRegion": region,
        "eventSourceARN": stream_arn,
    } for r in records]}


def chunks(records: Sequence[StoredRecord]) -> Iterator[Sequence[StoredRecord]]:
    """``records`` in events Lambda accepts synchronously (under 6 MB; base64 grows data by 4/3)."""
    start, size = 0, 0
    for index, record in enumerate(records):
        weight = len(record.data) * 4 // 3 + 400
        if index > start and (size + weight > MAX_EVENT_BYTES or index - start >= MAX_EVENT_RECORDS):
            yield records[start:index]
            start, size = index, 0
        size += weight
    if start < len(records):
        yield records[start:]


def run_records(invoke: Invoker, records: Sequence[StoredRecord], batch: FailedBatch,
                on_records: Callable[[int], None]) -> str:
    """Invoke the processor on ``records`` in order; the problem ("" when every record was stored or
    quarantined)."""
    for chunk in chunks(records):
        result = invoke(kinesis_event(chunk, batch.shard_id, batch.stream_arn))
        if result.function_error:
            return f"the processor failed ({result.function_error}): {_error_text(result.payload)}"
        failures = (result.payload or {}).get("batchItemFailures") if isinstance(result.payload, dict) else None
        if failures:
            return (f"the processor reported {len(failures)} failed record(s) from "
                    f"{failures[0].get('itemIdentifier')}; see its log")
        on_records(len(chunk))
    return ""


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("errorMessage") or payload)
    return str(payload)


def lambda_invoker(lambda_client: Any, function_name: str) -> Invoker:
    """Invoke the deployed function synchronously, as the event source mapping does."""
    def invoke(event: dict[str, Any]) -> InvokeResult:
        answer = lambda_client.invoke(FunctionName=function_name, InvocationType="RequestResponse",
                                      Payload=json.dumps(event).encode())
        text = answer["Payload"].read()
        payload = json.loads(text) if text else None
        return InvokeResult(answer.get("FunctionError"), payload)

    return invoke


def read_records(clients: Clients, found: Resources, batch: FailedBatch, *,
                 now: float, retention_h: int) -> tuple[str, list[StoredRecord] | None]:
    """The batch's records and where they came from: the S3 kind's own, else the stream while it retains them,
    else the archive."""
    if batch.kind == "s3" and len(batch.records) == batch.batch_size:
        return "s3", list(batch.records)
    if batch.retention_left_s(now, retention_h) > 0:
        records = read_from_stream(clients.client("kinesis"), batch, found.stream_name)
        if records is not None:
            return "stream", records
    return "archive", read_from_archive(clients.client("s3"), found.bucket, batch)


def redrive(clients: Clients, cfg: Any, invoke: Invoker, *, now: float, dry_run: bool = False,
            limit: int = MAX_MESSAGES, on_start: Callable[[int], None] = lambda _: None,
            on_records: Callable[[int], None] = lambda _: None) -> RedriveReport:
    """Redrive every failed batch of the dead-letter queue through ``invoke`` (the deployed processor).

    A message is deleted only when all its records were read back and the processor stored or quarantined every
    one; otherwise it stays (visible again after :data:`REDRIVE_VISIBILITY_S`) with the reason in its outcome.
    ``dry_run`` reads the records back and invokes nothing, deleting nothing. ``on_start`` gets the number of
    records to go, ``on_records`` each number done (a progress bar).
    """
    found = resources(clients, cfg)
    sqs = clients.client("sqs")
    hours = retention_hours(clients.client("kinesis"), found.stream_name)
    messages = receive_all(sqs, found.queue_url, visibility_s=REDRIVE_VISIBILITY_S, limit=limit)
    batches, unreadable = _split(messages)
    in_s3, unreadable_s3 = s3_failures(clients.client("s3"), found.bucket, limit)
    batches, foreign = _own(batches + in_s3, found)
    outcomes = [RedriveOutcome(u.message_id, "", "", 0, False, f"left where it is: {u.problem}")
                for u in unreadable + unreadable_s3 + foreign]
    on_start(sum(b.batch_size for b in batches))
    try:
        for batch in sorted(batches, key=lambda b: b.first_arrival):
            if batch.kind == "sqs":  # hidden for a whole visibility timeout from its own start, not the run's
                sqs.change_message_visibility(QueueUrl=found.queue_url, ReceiptHandle=batch.receipt_handle,
                                              VisibilityTimeout=REDRIVE_VISIBILITY_S)
            outcomes.append(_redrive_one(clients, found, batch, invoke, now=now, retention_h=hours,
                                         dry_run=dry_run, on_records=on_records))
    finally:
        if dry_run:
            release(sqs, found.queue_url, messages)
        else:  # the ones not deleted (kept, or not reached after a Ctrl-C) come back at once for the next try
            deleted = {o.message_id for o in outcomes if o.deleted}
            release(sqs, found.queue_url, [m for m in messages if m["MessageId"] not in deleted])
    return RedriveReport(tuple(outcomes), dry_run)


def _redrive_one(clients: Clients, found: Resources, batch: FailedBatch, invoke: Invoker, *, now: float,
                 retention_h: int, dry_run: bool, on_records: Callable[[int], None]) -> RedriveOutcome:
    try:
        source, records = read_records(clients, found, batch, now=now, retention_h=retention_h)
    except CorruptArchive as exc:  # this message stays; the others are still redriven
        return RedriveOutcome(batch.message_id, batch.shard_id, "", 0, False, str(exc))
    if records is None:
        return RedriveOutcome(batch.message_id, batch.shard_id, "", 0, False,
                              f"neither the stream nor the archive s3://{found.bucket} holds all {batch.batch_size} "
                              f"records {batch.start_sequence}..{batch.end_sequence} of {batch.shard_id}")
    if dry_run:
        on_records(len(records))
        return RedriveOutcome(batch.message_id, batch.shard_id, source, len(records), False)
    problem = run_records(invoke, records, batch, on_records)
    if problem:
        return RedriveOutcome(batch.message_id, batch.shard_id, source, len(records), False, problem)
    try:
        if batch.kind == "s3":
            clients.client("s3").delete_object(Bucket=found.bucket, Key=batch.message_id)
        else:
            clients.client("sqs").delete_message(QueueUrl=found.queue_url, ReceiptHandle=batch.receipt_handle)
    except Exception as exc:  # the records are stored: a later redrive writes the same items again
        raise AwsError(f"the records of message {batch.message_id} were stored but deleting it failed ({exc}); "
                       "run iotpipe failures redrive again (it stores nothing twice)") from exc
    return RedriveOutcome(batch.message_id, batch.shard_id, source, len(records), True)


def show(clients: Clients, cfg: Any, message_id: str, *, now: float) -> tuple[FailureView, Sequence[StoredRecord]
                                                                               | None, str]:
    """One failed batch with its records read back (None when neither source has all of them) and their
    source; AwsError when the queue has no such message."""
    listing = list_failures(clients, cfg, now=now)
    matches = [v for v in listing.failures if v.batch.message_id == message_id]
    if not matches:
        raise AwsError(f"the dead-letter queue has no failed batch {message_id}; list them with "
                       f"iotpipe failures list --env {cfg.env}")
    chosen = matches[0]
    source, records = read_records(clients, resources(clients, cfg), chosen.batch, now=now,
                                   retention_h=listing.retention_hours)
    return chosen, records, source


def local_function_spec(lambda_client: Any, function_name: str, code: str | None = None) -> Any:
    """The emulated function as ``iotpipe local``'s runner runs it: its configuration (runtime, handler,
    environment, timeout) from the emulator, and ``code`` (moto stores the zip but cannot run it; default: the
    shipped processor of the function's runtime)."""
    from iotpipe.local.functions.spec import FunctionSpec

    config = lambda_client.get_function_configuration(FunctionName=function_name)
    runtime = config.get("Runtime", "python3.12")
    return FunctionSpec(
        name=config["FunctionName"], arn=config["FunctionArn"], runtime=runtime,
        handler=config.get("Handler", "index.handler"), code=code or shipped_processor_code(runtime),
        environment=dict((config.get("Environment") or {}).get("Variables") or {}),
        timeout_s=int(config.get("Timeout", 60)), memory_mb=int(config.get("MemorySize", 256)),
        log_group=f"/aws/lambda/{config['FunctionName']}", role_arn=str(config.get("Role", "")))


def shipped_processor_code(runtime: str = "python3.12") -> str:
    """The processor shipped with iotpipe for ``runtime`` (what ``iotpipe deploy`` packages): the Python one, or
    its Node twin for ``nodejs*``."""
    from importlib import resources as package_files

    member = "node/index.js" if runtime.startswith("nodejs") else "python/index.py"
    return package_files.files("iotpipe.handlers").joinpath(member).read_text(encoding="utf-8")
