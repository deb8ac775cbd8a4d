"""Kinesis records in the form Lambda delivers them, the batches they are gathered into, and the on-failure
document of a batch given up (Lambda's Kinesis invocation record)."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from iotpipe import contract
from iotpipe.local.esm.spec import MappingSpec

# "the batch reaches the payload limit of 6 MB" (synchronous invocation payload limit).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_ENVELOPE_BYTES = len('{"Records": []}')


class InvokeOutcome(Protocol):
    """How one invocation of the function ended (the functions room's ``InvokeResult`` is one)."""

    @property
    def function_error(self) -> str | None:
        """None when the invocation succeeded; else e.g. ``Unhandled`` (raised) or ``TimedOut``."""
        ...

    @property
    def payload(self) -> Any:
        """The function's JSON return value (a dict with ``batchItemFailures``, or None)."""
        ...


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


def failure_record(records: Sequence[StreamRecord], *, condition: str, spec: MappingSpec,
                   response: InvokeOutcome | None, invoke_count: int, now: float) -> dict[str, Any]:
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
    return f"{contract.FAILURE_PREFIX}{mapping}/{shard}/{at:%Y/%m/%d}/{at:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"


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
