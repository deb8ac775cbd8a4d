"""What Lambda does with a batch the function did not take whole: expire, checkpoint, bisect, retry or give up to
the on-failure destination. Pure: no clock, no thread, no AWS call; the runner asks and does what it is told, and
``tests/unit/test_local_esm_policy.py`` pins every case as a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from iotpipe.local.esm.records import InvokeOutcome, StreamRecord
from iotpipe.local.esm.spec import MappingSpec

RETRY_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
BATCH_FAILED = -1  # first_failed_index: the batch failed as a whole

# What to do with an attempt after an invocation (Decision.action).
PROCESSED = "processed"  # every record was taken: checkpoint them all
RETRY = "retry"  # deliver Decision.attempts[0] again after a backoff (charged to MaximumRetryAttempts)
BISECT = "bisect"  # deliver the two halves in Decision.attempts, in order (not charged)
GIVE_UP = "give-up"  # hand Decision.attempts[0] to the on-failure destination (RetryAttemptsExhausted)


@dataclass(frozen=True)
class Attempt:
    """A (sub)batch still to be delivered: its records, retries charged so far, invocations of these records and
    the last function response."""

    records: tuple[StreamRecord, ...]
    retries: int = 0
    invokes: int = 0
    response: InvokeOutcome | None = None


@dataclass(frozen=True)
class Decision:
    """What happens to an attempt after the function answered.

    ``processed``: how many leading records the function took (checkpoint them before anything else);
    ``attempts``: what is delivered next in the attempt's place (RETRY, BISECT) or given up (GIVE_UP);
    ``partial``: the function answered with item failures rather than an error."""

    action: str
    processed: int = 0
    attempts: tuple[Attempt, ...] = ()
    partial: bool = False


def decide(attempt: Attempt, result: InvokeOutcome, spec: MappingSpec) -> Decision:
    """What Lambda does after invoking the function with ``attempt`` (whose ``invokes`` does not count this
    invocation yet) and getting ``result``."""
    attempt = replace(attempt, invokes=attempt.invokes + 1, response=result)
    failed_at = first_failed_index(result, attempt.records, report_batch_item_failures=spec.report_batch_item_failures)
    if failed_at is None:
        return Decision(PROCESSED, processed=len(attempt.records))
    partial = result.function_error is None
    processed = 0
    if failed_at != BATCH_FAILED:
        # "the batch is bisected at the returned sequence number and Lambda retries only the remaining records";
        # such a retry is charged to MaximumRetryAttempts.
        processed = failed_at
        attempt = replace(attempt, records=attempt.records[failed_at:])
    elif spec.bisect_on_error and len(attempt.records) > 1:
        # "split a failed batch into two batches ... Splitting a batch does not count towards the retry quota":
        # each half keeps the retries charged so far and is delivered in order.
        half = len(attempt.records) // 2
        return Decision(BISECT, attempts=(Attempt(attempt.records[:half], attempt.retries, 0, result),
                                          Attempt(attempt.records[half:], attempt.retries, 0, result)),
                        partial=partial)
    # "The default value is -1, which sets the maximum number of retries to infinite."
    if spec.max_retry_attempts == -1 or attempt.retries < spec.max_retry_attempts:
        return Decision(RETRY, processed, (replace(attempt, retries=attempt.retries + 1),), partial)
    return Decision(GIVE_UP, processed, (attempt,), partial)


def split_expired(records: tuple[StreamRecord, ...], *, max_record_age_s: int,
                  now: float) -> tuple[tuple[StreamRecord, ...], tuple[StreamRecord, ...]]:
    """The leading records older than MaximumRecordAgeInSeconds at ``now`` (to the destination, unprocessed:
    "The maximum age of a record that Lambda sends to your function"), and the rest. Arrival is ordered in a
    shard, so the expired ones lead; -1 is no limit."""
    if max_record_age_s == -1:
        return (), records
    oldest_allowed = now - max_record_age_s
    cut = 0
    while cut < len(records) and records[cut].arrival < oldest_allowed:
        cut += 1
    return records[:cut], records[cut:]


def first_failed_index(result: InvokeOutcome, records: Sequence[StreamRecord], *,
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
