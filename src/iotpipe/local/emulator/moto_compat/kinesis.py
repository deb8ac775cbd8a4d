"""moto's Kinesis streams: resharding as Kinesis does it, and reads and writes that do not slow down as a shard
grows."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def arrival_seconds(record: Any) -> float:
    """A moto Kinesis record's arrival time as epoch seconds: moto up to 5.2.5 keeps a float, 5.2.6 a naive UTC
    datetime (``moto.core.utils.utcnow``)."""
    created_at = record.created_at
    if isinstance(created_at, datetime):
        return created_at.replace(tzinfo=UTC).timestamp() if created_at.tzinfo is None \
            else created_at.timestamp()
    return float(created_at)


def _shard_scans(patches: Recorder) -> None:
    """A Kinesis shard walks all its records from the first on every GetRecords, and lists all its keys to find
    the last sequence number on every put: both grow with the shard, so a long ``iotpipe local`` run slows down
    without bound. Sequence numbers in a moto shard are consecutive integers (``put_record`` uses last + 1), so
    both can start where they are needed."""
    from moto.kinesis.models import Record, Shard

    def get_min_sequence_number(self: Any) -> int:
        return next(iter(self.records)) if self.records else 0

    def get_max_sequence_number(self: Any) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_records(self: Any, last_sequence_id: str, limit: int | None) -> tuple[list[Record], int, int]:
        last = int(last_sequence_id)
        results: list[Record] = []
        if not self.records:
            return results, last, 0
        newest = self.records[next(reversed(self.records))]
        sequence = max(last + 1, next(iter(self.records)))
        while sequence <= newest.sequence_number and (limit is None or len(results) < limit):
            record = self.records.get(sequence)
            if record is not None:
                results.append(record)
                last = sequence
            sequence += 1
        behind = arrival_seconds(newest) - arrival_seconds(results[-1]) if results else 0.0
        return results, last, int(behind * 1000)

    patches.setattr(Shard, "get_min_sequence_number", get_min_sequence_number)
    patches.setattr(Shard, "get_max_sequence_number", get_max_sequence_number)
    patches.setattr(Shard, "get_records", get_records)


def _get_records_answer(patches: Recorder) -> None:
    """GetRecords goes through moto's generic serializer, which decodes each record's base64 data only to encode it
    again and walks the output shape per field: most of the emulator's time per record read. Write the JSON
    directly, in the same shape (Data as base64 text, ApproximateArrivalTimestamp as epoch seconds)."""
    from moto.kinesis.responses import KinesisResponse

    # moto 5.2.6 parses requests from the service model (Data arrives decoded, kept as raw bytes); before, Data
    # was kept as the request's base64 text.
    raw_data = bool(getattr(KinesisResponse(), "automated_parameter_parsing", False))

    def data_base64(data: str | bytes) -> str:
        if raw_data:
            return base64.b64encode(data if isinstance(data, bytes) else data.encode("utf-8")).decode("ascii")
        return data if isinstance(data, str) else data.decode("ascii")

    def get_records(self: Any) -> tuple[str, dict[str, str]]:
        next_iterator, records, millis_behind = self.kinesis_backend.get_records(
            self._get_param("StreamARN"), self._get_param("ShardIterator"), self._get_param("Limit"))
        body = json.dumps({
            "NextShardIterator": next_iterator,
            "Records": [{"Data": data_base64(record.data),
                         "PartitionKey": record.partition_key,
                         "SequenceNumber": str(record.sequence_number),
                         "ApproximateArrivalTimestamp": round(arrival_seconds(record), 3)} for record in records],
            "MillisBehindLatest": millis_behind,
        })
        # The serializer's content type; a bare string body would go out as text/html.
        return body, {"Content-Type": "application/x-amz-json-1.1"}

    patches.setattr(KinesisResponse, "get_records", get_records)


def _closed_shards(patches: Recorder) -> None:
    """Resharding as Kinesis does it: a split or merge leaves the parent's records in the parent (moto moves them,
    with new sequence numbers, so a reader sees them twice or not at all), and new records go to open shards only
    (moto keeps writing to the closed parent, where a reader that finished it would never see them)."""
    from collections import OrderedDict

    from moto.kinesis.models import Stream
    from moto.utilities.utils import md5_hash

    original_shard_for_key = Stream.get_shard_for_key
    original_split = Stream.split_shard
    original_merge = Stream.merge_shards

    def get_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        shard = original_shard_for_key(self, partition_key, explicit_hash_key)
        if shard is None or shard.is_open:
            return shard
        key = int(explicit_hash_key) if explicit_hash_key else int(md5_hash(partition_key.encode()).hexdigest(), 16)
        return next((candidate for candidate in self.shards.values()
                     if candidate.is_open and candidate.starting_hash <= key < candidate.ending_hash), shard)

    def keeping_records(self: Any, shard_ids: tuple[str, ...], reshard: Callable[[], None]) -> None:
        parents = [self.shards[shard_id] for shard_id in shard_ids if shard_id in self.shards]
        kept = [parent.records for parent in parents]
        for parent in parents:
            parent.records = OrderedDict()  # nothing for moto to move
        try:
            reshard()
        finally:
            for parent, records in zip(parents, kept, strict=True):
                parent.records = records

    def split_shard(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
        keeping_records(self, (shard_to_split,),
                        lambda: original_split(self, shard_to_split, new_starting_hash_key))

    def merge_shards(self: Any, shard_to_merge: str, adjacent_shard_to_merge: str) -> None:
        keeping_records(self, (shard_to_merge, adjacent_shard_to_merge),
                        lambda: original_merge(self, shard_to_merge, adjacent_shard_to_merge))

    patches.setattr(Stream, "get_shard_for_key", get_shard_for_key)
    patches.setattr(Stream, "split_shard", split_shard)
    patches.setattr(Stream, "merge_shards", merge_shards)


def _put_records_answer(patches: Recorder) -> None:
    """moto writes a PutRecords answer through its generic model-driven serializer, which took 55% of the
    server's time for a 500-record call (py-spy); the rule engine of ``iotpipe local`` sends every reading
    through PutRecords. The answer is two plain fields (FailedRecordCount, Records), written as JSON here."""
    from moto.kinesis.responses import KinesisResponse

    def put_records(self: Any) -> tuple[str, dict[str, str]]:
        answer = self.kinesis_backend.put_records(self._get_param("StreamARN"), self._get_param("StreamName"),
                                                  self._get_param("Records"))
        return json.dumps(answer), {"Content-Type": "application/x-amz-json-1.1"}

    patches.setattr(KinesisResponse, "put_records", put_records)


PATCHES: tuple[Patch, ...] = (
    Patch("kinesis.shard_scans", "speed",
          "GetRecords and PutRecord start where they are needed, not at the shard's first record",
          _shard_scans),
    Patch("kinesis.get_records_answer", "speed",
          "GetRecords answer written as JSON directly",
          _get_records_answer),
    Patch("kinesis.closed_shards", "parity",
          "a split or merge leaves the parent's records in place; writes go to open shards",
          _closed_shards),
    Patch("kinesis.put_records_answer", "speed",
          "PutRecords answer written as JSON directly",
          _put_records_answer),
)
