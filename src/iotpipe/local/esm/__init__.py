"""The event source mapping room of ``iotpipe local``: a Kinesis stream's records delivered to a function as
Lambda delivers them.

``spec`` (the mapping's properties), ``records`` (records and batches in Lambda's event form, the on-failure
document), ``policy`` (pure: what happens to a failed batch), ``context`` (what a mapping's shards share: counters,
stop, the function, the destination), ``shard`` (one shard's reading and delivery) and ``runner`` (the threads).
The names below are its public interface.
"""

from __future__ import annotations

from iotpipe.local.esm.context import Invoker, MappingStats
from iotpipe.local.esm.policy import RECORD_AGE_EXCEEDED, RETRY_EXHAUSTED
from iotpipe.local.esm.records import (
    InvokeOutcome,
    StreamRecord,
    failure_object_key,
    failure_record,
    lambda_event,
    record_from_kinesis,
)
from iotpipe.local.esm.runner import MappingRunner
from iotpipe.local.esm.spec import MappingSpec, mapping_from_properties

__all__ = [
    "RECORD_AGE_EXCEEDED",
    "RETRY_EXHAUSTED",
    "InvokeOutcome",
    "Invoker",
    "MappingRunner",
    "MappingSpec",
    "MappingStats",
    "StreamRecord",
    "failure_object_key",
    "failure_record",
    "lambda_event",
    "mapping_from_properties",
    "record_from_kinesis",
]
