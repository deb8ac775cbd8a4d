"""What the rule engine asks of AWS: the action sink protocol, the only way the engine reaches a service.

The engine evaluates rules, renders the actions' templates, checks Kinesis's limits, batches records and builds
error-action messages; a sink only delivers the results. :class:`~iotpipe.local.rules.boto_actions.BotoActions`
delivers to the emulated AWS with boto3; a test can hand the engine a list in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from iotpipe.errors import IotpipeError


class ActionError(IotpipeError):
    """A sink could not deliver; the message is the reason an error-action message gives (``Code: Message``)."""


@dataclass(frozen=True)
class KinesisRecord:
    """One Kinesis record a rule action produced: the evaluated payload and its rendered partition key."""

    data: bytes
    partition_key: str


@runtime_checkable
class ActionSink(Protocol):
    """Delivers evaluated actions. A call that fails raises: :class:`ActionError` with AWS's reason, or any
    exception (the engine reports its type and text); either way the engine sends the message to the rule's error
    action, as AWS does."""

    def put_records(self, stream: str, records: Sequence[KinesisRecord]) -> Sequence[str | None]:
        """Put ``records`` (at most 500 and 5 MiB, in order) into ``stream`` in one call; one result per record,
        None when it was stored, else why not (``ErrorCode: ErrorMessage``, as PutRecords reports one record)."""
        ...

    def put_record(self, stream: str, record: KinesisRecord) -> None:
        """Put one record into ``stream`` (a Kinesis error action's message)."""
        ...

    def put_object(self, bucket: str, key: str, body: bytes, *, canned_acl: str | None = None) -> None:
        """Store ``body`` as ``key`` in ``bucket`` (an S3 action, or an S3 error action's message)."""
        ...
