"""What Lambda does with a batch the function did not take whole, as a table: each row is a mapping's settings,
the attempt so far and the function's answer, and what must happen next (Lambda developer guide, "Using Lambda
with Kinesis": retries, bisection, partial batch responses, maximum record age)."""

from __future__ import annotations

from typing import Any

import pytest

from iotpipe.local.esm.policy import (
    BISECT,
    GIVE_UP,
    PROCESSED,
    RETRY,
    Attempt,
    decide,
    split_expired,
)
from iotpipe.local.esm.records import StreamRecord
from iotpipe.local.esm.spec import MappingSpec
from iotpipe.local.functions.result import InvokeResult

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/readings"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:processor"


def record(seq: int, arrival: float = 1000.0) -> StreamRecord:
    return StreamRecord(shard_id="shardId-000000000000", sequence_number=str(seq), arrival=arrival, event={},
                        size=100)


def spec(**settings: Any) -> MappingSpec:
    return MappingSpec(function_name="processor", function_arn=FUNCTION, stream_arn=STREAM, **settings)


def items(*identifiers: Any) -> InvokeResult:
    return InvokeResult(None, {"batchItemFailures": [{"itemIdentifier": i} for i in identifiers]})


ERROR = InvokeResult("Unhandled")
REPORT = {"report_batch_item_failures": True}

# id, mapping settings, retries charged so far, the function's answer,
# -> action, leading records processed, the next attempts as (sequence numbers, retries, invokes), partial
CASES = [
    ("success", {}, 0, InvokeResult(None), PROCESSED, 0 + 4, [], False),
    ("null payload with reporting is success", REPORT, 0, InvokeResult(None, None), PROCESSED, 4, [], False),
    ("empty failure list is success", REPORT, 0, items(), PROCESSED, 4, [], False),
    ("null failure list is success", REPORT, 0, InvokeResult(None, {"batchItemFailures": None}), PROCESSED, 4,
     [], False),
    ("a non-object payload is success", REPORT, 0, InvokeResult(None, "ok"), PROCESSED, 4, [], False),
    ("item failures without ReportBatchItemFailures are ignored", {}, 0, items("3"), PROCESSED, 4, [], False),
    ("error retried, infinite retries", {}, 5, ERROR, RETRY, 0, [([1, 2, 3, 4], 6, 1)], False),
    ("error retried below the limit", {"max_retry_attempts": 2}, 1, ERROR, RETRY, 0, [([1, 2, 3, 4], 2, 1)],
     False),
    ("error at the limit gives up", {"max_retry_attempts": 2}, 2, ERROR, GIVE_UP, 0, [([1, 2, 3, 4], 2, 1)],
     False),
    ("no retries at all", {"max_retry_attempts": 0}, 0, ERROR, GIVE_UP, 0, [([1, 2, 3, 4], 0, 1)], False),
    ("error bisected, retries kept, not charged", {"bisect_on_error": True, "max_retry_attempts": 1}, 1, ERROR,
     BISECT, 0, [([1, 2], 1, 0), ([3, 4], 1, 0)], False),
    ("partial failure resumes at the failed record", REPORT, 0, items("3"), RETRY, 2, [([3, 4], 1, 1)], True),
    ("several failures resume at the lowest", REPORT, 0, items("4", "2"), RETRY, 1, [([2, 3, 4], 1, 1)], True),
    ("partial failure is charged to the retries", {**REPORT, "max_retry_attempts": 1}, 1, items("3"), GIVE_UP, 2,
     [([3, 4], 1, 1)], True),
    ("partial failure at the first record keeps all", {**REPORT, "max_retry_attempts": 0}, 0, items("1"),
     GIVE_UP, 0, [([1, 2, 3, 4], 0, 1)], True),
    ("partial failure is not bisected", {**REPORT, "bisect_on_error": True}, 0, items("3"), RETRY, 2,
     [([3, 4], 1, 1)], True),
    ("unknown identifier fails the whole batch", REPORT, 0, items("99"), RETRY, 0, [([1, 2, 3, 4], 1, 1)], True),
    ("null identifier fails the whole batch", REPORT, 0, items(None), RETRY, 0, [([1, 2, 3, 4], 1, 1)], True),
    ("bad key name fails the whole batch", REPORT, 0, InvokeResult(None, {"batchItemFailures": [{"id": "2"}]}),
     RETRY, 0, [([1, 2, 3, 4], 1, 1)], True),
    ("a whole-batch item failure is bisected", {**REPORT, "bisect_on_error": True}, 0, items(""), BISECT, 0,
     [([1, 2], 0, 0), ([3, 4], 0, 0)], True),
]


@pytest.mark.parametrize(("settings", "retries", "result", "action", "processed", "attempts", "partial"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_what_happens_to_a_batch_of_four(settings: dict[str, Any], retries: int, result: InvokeResult, action: str,
                                         processed: int, attempts: list[tuple[list[int], int, int]],
                                         partial: bool) -> None:
    decision = decide(Attempt(tuple(record(n) for n in (1, 2, 3, 4)), retries=retries), result, spec(**settings))
    assert (decision.action, decision.processed, decision.partial) == (action, processed, partial)
    assert [([int(r.sequence_number) for r in a.records], a.retries, a.invokes) for a in decision.attempts] \
        == attempts
    assert all(a.response is result for a in decision.attempts)  # the destination document quotes it


@pytest.mark.parametrize(("bisect", "retries", "max_retries", "action"), [
    (True, 0, -1, RETRY),  # one record cannot be split: it is retried
    (True, 3, 3, GIVE_UP),
    (False, 3, 3, GIVE_UP),
])
def test_a_single_failing_record_is_retried_or_given_up(bisect: bool, retries: int, max_retries: int,
                                                        action: str) -> None:
    settings = {"bisect_on_error": bisect, "max_retry_attempts": max_retries}
    decision = decide(Attempt((record(7),), retries=retries, invokes=2), ERROR, spec(**settings))
    assert decision.action == action
    assert decision.attempts[0].invokes == 3  # approximateInvokeCount counts every invocation of these records


@pytest.mark.parametrize(("max_age", "now", "arrivals", "expired"), [
    (-1, 10_000.0, [0.0, 1.0], 0),  # no age limit
    (60, 1_060.0, [999.0, 1_000.0, 1_001.0], 1),  # older than the limit: strictly
    (60, 2_000.0, [999.0, 1_000.0], 2),
    (60, 1_000.0, [999.0, 1_000.0], 0),
])
def test_records_past_the_maximum_age_lead_the_batch_and_are_split_off(max_age: int, now: float,
                                                                       arrivals: list[float], expired: int) -> None:
    records = tuple(record(n, arrival) for n, arrival in enumerate(arrivals))
    old, live = split_expired(records, max_record_age_s=max_age, now=now)
    assert (old, live) == (records[:expired], records[expired:])


def test_a_shard_worker_reaches_other_objects_through_their_public_interface_only() -> None:
    # It used to make 18 calls into MappingRunner's private members; now it talks to MappingContext's methods.
    import ast
    import inspect

    from iotpipe.local.esm import shard

    tree = ast.parse(inspect.getsource(shard))
    private = sorted({f"{ast.unparse(node.value)}.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                      and not node.attr.startswith("__") and ast.unparse(node.value) != "self"})
    assert private == []
