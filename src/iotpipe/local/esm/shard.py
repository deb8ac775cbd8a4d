"""One shard of a mapping: its iterator, the records read ahead, batches gathered as Lambda gathers them, and
their delivery as :mod:`iotpipe.local.esm.policy` decides; the checkpoint lives in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from iotpipe.local.esm.context import MappingContext
from iotpipe.local.esm.policy import (
    BISECT,
    PROCESSED,
    RECORD_AGE_EXCEEDED,
    RETRY,
    RETRY_EXHAUSTED,
    Attempt,
    decide,
    split_expired,
)
from iotpipe.local.esm.records import StreamRecord, record_from_kinesis, take_batch
from iotpipe.local.esm.spec import GET_RECORDS_LIMIT

READ_AHEAD = 1000


@dataclass
class ShardWorker:
    """One shard: its iterator, the records read but not yet batched, and the in-memory checkpoint."""

    context: MappingContext
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
        spec = self.context.spec
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
                                                StreamARN=self.context.spec.stream_arn)
        except self.kinesis.exceptions.ExpiredIteratorException:
            # Iterators expire after five minutes; carry on after the last record read.
            self._reopen()
            return 0
        self.iterator = response.get("NextShardIterator")
        spec = self.context.spec
        records = [record_from_kinesis(raw, shard_id=self.shard_id, spec=spec) for raw in response["Records"]]
        if records:
            self.last_read = records[-1].sequence_number
            self.pending.extend(records)
            self.context.count(records_read=len(records))
        # Kinesis ends a closed shard with a null NextShardIterator; moto never does, so an empty read of a shard
        # that ListShards showed closed (no record can arrive after that) ends it too, and its children may start.
        self.ended = self.iterator is None or (not records and self.ending is not None)
        return len(records)

    def _reopen(self) -> None:
        if self.last_read is None:
            self.open()
            return
        self.iterator = self.kinesis.get_shard_iterator(
            StreamARN=self.context.spec.stream_arn, ShardId=self.shard_id,
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
        context, spec = self.context, self.context.spec
        deadline: float | None = None
        while not context.stopped:
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
                deadline = context.now() + spec.batching_window_s
            remaining = deadline - context.now()
            if remaining <= 0:
                return batch
            if read == 0:
                context.pause(min(context.poll_interval_s, remaining))
        # Stopped: put the batch back so nothing read is dropped from memory.
        self.pending.extendleft(reversed(batch))
        return []

    # -- delivering -----------------------------------------------------------------------------------------------

    def _deliver(self, batch: list[StreamRecord]) -> int:
        """Invoke until every record of ``batch`` is processed or handed to the destination; the records done."""
        work: deque[Attempt] = deque([Attempt(tuple(batch))])
        try:
            return self._work_through(work)
        except BaseException:
            self._requeue(work)  # not done with: delivered again at the next poll, never dropped
            raise

    def _work_through(self, work: deque[Attempt]) -> int:
        context, spec = self.context, self.context.spec
        done = 0
        while work:
            if context.stopped:
                self._requeue(work)
                return done
            attempt = work[0]
            expired, live = split_expired(attempt.records, max_record_age_s=spec.max_record_age_s, now=context.now())
            if expired:
                if not context.give_up(expired, condition=RECORD_AGE_EXCEEDED, attempt=attempt):
                    self._requeue(work)
                    return done
                done += self._advance(expired)
                if not live:
                    work.popleft()
                    continue
                attempt = work[0] = replace(attempt, records=live)
            decision = decide(attempt, context.invoke(attempt.records), spec)
            if decision.partial:
                context.count(partial_failures=1)
            if decision.processed:
                context.count(records_processed=decision.processed)
                done += self._advance(attempt.records[:decision.processed])
            if decision.action == PROCESSED:
                work.popleft()
            elif decision.action == BISECT:
                work.popleft()
                context.count(bisections=1)
                work.extendleft(reversed(decision.attempts))
            elif decision.action == RETRY:
                work[0] = decision.attempts[0]
                context.count(retries=1)
                context.pause(context.backoff(decision.attempts[0].retries))
            else:  # GIVE_UP; the attempt stays at the front until the destination took it (it may refuse: raise)
                given_up = work[0] = decision.attempts[0]
                if not context.give_up(given_up.records, condition=RETRY_EXHAUSTED, attempt=given_up):
                    self._requeue(work)
                    return done
                done += self._advance(given_up.records)
                work.popleft()
        return done

    def _advance(self, records: Iterable[StreamRecord]) -> int:
        count = 0
        for record in records:
            self.checkpoint = record.sequence_number
            count += 1
        return count

    def _requeue(self, work: deque[Attempt]) -> None:
        """Stopped mid-batch: the records not done go back to the front of ``pending`` in order."""
        remaining = [record for attempt in work for record in attempt.records]
        self.pending.extendleft(reversed(remaining))
