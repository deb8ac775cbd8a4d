"""The engine of ``iotpipe local``'s topic rules: published messages in, actions out, in a background thread.

The actions leave through an :class:`~iotpipe.local.rules.sink.ActionSink`, the engine's only way to AWS: the
engine evaluates, renders, checks Kinesis's limits and batches; the sink delivers.

Throughput: AWS's Kinesis action is one PutRecord per message; here a background thread coalesces the records
of ~50 ms into PutRecords calls of up to 500 records (invisible to the consumer: order per partition key is kept,
records go out in arrival order). A record that PutRecords reports failed, or a call that raises, goes to the
rule's error action; an error action that fails too is counted in :attr:`RuleEngine.stats` and reported.

Nothing the processors would accept is lost without a trace: a full queue makes ``on_message`` wait (the broker's
feed then pushes back on the broker) instead of dropping; every lost message is logged; a lone surrogate escape is
written back as an escape; a payload nested too deeply to parse goes to the error action; number literals keep
AWS IoT's Decimal (``iotsql.values._decimal``). docs/local.md, "What the rule engine never loses", has the details.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iotpipe.local.rules.iotsql import (
    Message,
    PayloadTooDeepError,
    RuleError,
    RuleEvaluationError,
    parse_message,
    to_json,
)
from iotpipe.local.rules.model import Action, KinesisAction, S3Action, TopicRule, basic_ingest_target
from iotpipe.local.rules.sink import ActionError, ActionSink, KinesisRecord

if TYPE_CHECKING:
    from iotpipe.local.rules.boto_actions import ClientSource

KINESIS_MAX_RECORDS = 500
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
KINESIS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
KINESIS_MAX_PARTITION_KEY = 256

# The logger docs/local.md names (and `local up` writes to its log), whichever module of the room logs.
_log = logging.getLogger("iotpipe.local.rules")


@dataclass(frozen=True)
class RuleEngineStats:
    """A snapshot of the engine's counters.

    ``messages_in``: ``on_message`` calls. ``unrouted``: messages no enabled rule's FROM matched (AWS ignores
    them too). ``matched``: (message, rule) pairs whose WHERE held, so the actions ran; ``filtered``: pairs whose
    WHERE was false or Undefined. ``sql_failed``: pairs the SQL could not evaluate: a non-JSON payload where
    the SQL adds to ``*`` (dropped), or JSON nested too deeply to parse (each action counted failed, the message
    sent to the error action). ``actions_ok`` / ``actions_failed``: action runs (one Kinesis record, one S3
    object). ``error_actions`` / ``error_actions_failed``: error-action messages delivered / not delivered.
    ``dropped``: (message, rule) pairs lost, each also logged and given to ``on_problem``: SQL that could not
    evaluate a payload that is not JSON, failed actions with no working error action, an unknown or disabled
    Basic Ingest rule. ``backpressured``: messages ``on_message`` held until the full queue had room.
    ``pending``: messages queued and not yet processed.
    """

    messages_in: int = 0
    unrouted: int = 0
    matched: int = 0
    filtered: int = 0
    sql_failed: int = 0
    actions_ok: int = 0
    actions_failed: int = 0
    error_actions: int = 0
    error_actions_failed: int = 0
    dropped: int = 0
    backpressured: int = 0
    pending: int = 0


_COUNTERS = tuple(f for f in RuleEngineStats.__dataclass_fields__ if f != "pending")


@dataclass
class _Invocation:
    """One rule run on one message, and the failures of its actions."""

    rule: TopicRule
    message: Message
    original_topic: str
    failures: list[dict[str, str]]


@dataclass
class _Record:
    invocation: _Invocation
    action: KinesisAction
    stream: str
    partition_key: str
    data: bytes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ActionError) else f"{type(exc).__name__}: {exc}"


def _as_sink(target: ActionSink | ClientSource) -> ActionSink:
    """``target`` itself if it is an action sink, else boto3 actions with its clients (``iotpipe local``'s wiring
    hands the engine its client factory)."""
    if isinstance(target, ActionSink):
        return target
    from iotpipe.local.rules.boto_actions import BotoActions

    return BotoActions(target)


class RuleEngine:
    """Runs topic rules on published messages, in a background thread; the actions go to ``sink``.

    ``on_message`` queues (thread-safe); the thread evaluates each message against the rules and sends Kinesis
    records in PutRecords calls of up to ``max_batch`` records every ~``flush_interval_s``. The queue holds at most
    ``max_pending`` messages: past that ``on_message`` waits for room (the broker's feed then stops acknowledging,
    which pushes back on the broker) rather than drop. Each lost message (and each failed error action) is logged
    as a warning of this module's logger and given to ``on_problem`` as one line.

    ``sink`` is an :class:`~iotpipe.local.rules.sink.ActionSink`, the engine's only way to AWS; a client factory
    (anything with ``client(service)``) is wrapped in :class:`~iotpipe.local.rules.boto_actions.BotoActions`.
    """

    def __init__(self, rules: Sequence[TopicRule], sink: ActionSink | ClientSource, *,
                 clock_ms: Callable[[], int] = _now_ms, flush_interval_s: float = 0.05,
                 max_batch: int = KINESIS_MAX_RECORDS, max_pending: int = 200_000,
                 on_problem: Callable[[str], None] | None = None) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleError(f"topic rule names must be unique; {', '.join(duplicates)} appear more than once")
        if not 1 <= max_batch <= KINESIS_MAX_RECORDS:
            raise RuleError(f"max_batch must be between 1 and {KINESIS_MAX_RECORDS}, not {max_batch}")
        self._rules = tuple(rules)
        self._by_name = {rule.name: rule for rule in rules}
        self._sink = _as_sink(sink)
        self._clock_ms = clock_ms
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._on_problem = on_problem
        self._routes: dict[str, tuple[TopicRule, ...]] = {}
        self._queue: deque[tuple[str, bytes, str | None, int]] = deque()
        lock = threading.Lock()
        self._condition = threading.Condition(lock)  # the thread waits for messages
        self._room = threading.Condition(lock)  # producers wait for room in the queue
        self._processing = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="iotpipe-rule-engine", daemon=True)
        self._thread.start()

    # -- public
    def on_message(self, topic: str, payload: bytes, client_id: str | None) -> None:
        """Queue a published message for the rules (thread-safe).

        With ``max_pending`` messages waiting it blocks until the thread takes them: the broker's feed calls this
        before it acknowledges, so a stalled emulator holds the broker back instead of losing messages. After
        ``close()`` it runs the rules on what is queued and on this message itself.
        """
        item = (topic, bytes(payload), client_id, self._clock_ms())
        with self._condition:
            self._counts["messages_in"] += 1
            if len(self._queue) >= self._max_pending and not self._closed:
                self._counts["backpressured"] += 1
                self._condition.notify()  # the thread must not linger over a full queue
                while len(self._queue) >= self._max_pending and not self._closed:
                    self._room.wait(1.0)
            if not self._closed:
                self._queue.append(item)
                if len(self._queue) == 1 or len(self._queue) >= min(self._max_batch, self._max_pending):
                    self._condition.notify()
                return
        with self._processing:
            problems = self._process([*self._take(), item])
        self._report(problems)

    def flush(self) -> None:
        """Deliver everything queued so far (waits for a batch in flight; for tests and shutdown)."""
        with self._processing:
            problems = self._process(self._take())
        self._report(problems)  # outside the lock: on_problem may call back into the engine

    def close(self) -> None:
        """Deliver what is queued, then stop the thread; idempotent. Later messages are run by ``on_message``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            self._room.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=120)
        self.flush()

    @property
    def stats(self) -> RuleEngineStats:
        """A consistent snapshot of the counters (and how many messages wait in the queue)."""
        with self._condition:
            return RuleEngineStats(**self._counts, pending=len(self._queue))

    @property
    def alive(self) -> bool:
        """True while the engine's thread runs (or it was closed on purpose): messages queued now will be sent."""
        return self._closed or self._thread.is_alive()

    @property
    def rules(self) -> tuple[TopicRule, ...]:
        """The rules this engine runs."""
        return self._rules

    # -- the thread
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    self._condition.wait(timeout=0.5)
                if self._closed and not self._queue:
                    return
                # Linger to coalesce records into fewer PutRecords calls, unless a full batch is waiting.
                deadline = time.monotonic() + self._flush_interval_s
                while len(self._queue) < min(self._max_batch, self._max_pending) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
            with self._processing:
                try:
                    problems = self._process(self._take())
                except Exception as exc:  # never let the thread die: report and keep serving
                    problems = [f"rule engine batch failed: {_describe(exc)}"]
            self._report(problems)

    def _take(self) -> list[tuple[str, bytes, str | None, int]]:
        with self._condition:
            items = list(self._queue)
            self._queue.clear()
            self._room.notify_all()
        return items

    # -- processing (always under self._processing)
    def _process(self, items: list[tuple[str, bytes, str | None, int]]) -> list[str]:
        """Run the rules on ``items``; the problems to report (one line per lost message)."""
        if not items:
            return []
        counts = dict.fromkeys(_COUNTERS, 0)
        problems: list[str] = []
        invocations: list[_Invocation] = []
        records: dict[str, list[_Record]] = {}
        for topic, payload, client_id, now in items:
            self._evaluate(topic, payload, client_id, now, counts, problems, invocations, records)
        for stream, stream_records in records.items():
            self._put_records(stream, stream_records, counts)
        for invocation in invocations:
            if invocation.failures:
                self._run_error_action(invocation, counts, problems)
        with self._condition:
            for key, value in counts.items():
                self._counts[key] += value
        return problems

    def _targets(self, topic: str) -> tuple[TopicRule, ...]:
        routes = self._routes.get(topic)
        if routes is None:
            if len(self._routes) >= 10_000:
                self._routes.clear()
            routes = tuple(r for r in self._rules if not r.disabled and r.query.matches(topic))
            self._routes[topic] = routes
        return routes

    def _evaluate(self, topic: str, payload: bytes, client_id: str | None, now: int, counts: dict[str, int],
                  problems: list[str], invocations: list[_Invocation], records: dict[str, list[_Record]]) -> None:
        ingest = basic_ingest_target(topic)
        if ingest is not None:
            rule = self._by_name.get(ingest[0])
            if rule is None or rule.disabled:
                counts["dropped"] += 1
                state = "does not exist" if rule is None else "is disabled"
                problems.append(f"message on Basic Ingest topic {topic} dropped: rule {ingest[0]} {state}")
                return
            targets: tuple[TopicRule, ...] = (rule,)
            rule_topic = ingest[1]
        else:
            targets = self._targets(topic)
            rule_topic = topic
        if not targets:
            counts["unrouted"] += 1
            return
        parsed: dict[str, Message] = {}
        for rule in targets:
            version = rule.query.version
            message = parsed.get(version)
            if message is None:
                message = parsed[version] = parse_message(payload, version, rule_topic, client_id, now)
            try:
                out = rule.query.run(message)
                data = None if out is None else out if isinstance(out, bytes) else to_json(out)
            except RuleEvaluationError as exc:
                # A payload that is not JSON: no error action. "The error handling covered in this topic is for
                # rule actions. To debug SQL issues ... set up AWS IoT logging" (Error handling); here the log
                # and on_problem are that log.
                counts["sql_failed"] += 1
                counts["dropped"] += 1
                problems.append(f"rule {rule.name}: message on {topic} dropped: {exc}")
                continue
            except Exception as exc:  # PayloadTooDeepError, or anything else a strange payload provokes
                # JSON the processors would take (and quarantine) but this engine cannot evaluate or write again:
                # its actions cannot run, so it goes where AWS sends a message whose actions failed, the error
                # action, rather than vanish.
                counts["sql_failed"] += 1
                reason = str(exc) if isinstance(exc, PayloadTooDeepError) else _describe(exc)
                invocation = _Invocation(rule, message, topic, [_unrunnable(action, reason) for action in rule.actions])
                counts["actions_failed"] += len(invocation.failures)
                invocations.append(invocation)
                continue
            if data is None:
                counts["filtered"] += 1
                continue
            counts["matched"] += 1
            invocation = _Invocation(rule, message, topic, [])
            invocations.append(invocation)
            for action in rule.actions:
                try:
                    self._start_action(action, invocation, data, counts, records)
                except Exception as exc:  # a template that cannot render must not take the batch down
                    counts["actions_failed"] += 1
                    invocation.failures.append({"failedAction": type(action).__name__, "failedResource": "",
                                                "errorMessage": f"Failed to run the action: {_describe(exc)}"})

    def _start_action(self, action: Action, invocation: _Invocation, data: bytes, counts: dict[str, int],
                      records: dict[str, list[_Record]]) -> None:
        message = invocation.message
        if isinstance(action, KinesisAction):
            stream = action.stream_name.render(message)
            # Not stated in the pages we read: without a PartitionKey a random one spreads records over shards.
            key = str(uuid.uuid4()) if action.partition_key is None else action.partition_key.render(message)
            problem = _record_problem(stream, key, data)
            if problem:
                counts["actions_failed"] += 1
                invocation.failures.append(_kinesis_failure(stream, invocation.original_topic, problem))
                return
            records.setdefault(stream, []).append(_Record(invocation, action, stream, key, data))
            return
        bucket, key = action.bucket_name.render(message), action.key.render(message)
        try:
            self._put_object(action, bucket, key, data)
        except Exception as exc:
            counts["actions_failed"] += 1
            invocation.failures.append(_s3_failure(bucket, key, invocation.original_topic, _describe(exc)))
        else:
            counts["actions_ok"] += 1

    def _put_object(self, action: S3Action, bucket: str, key: str, body: bytes) -> None:
        if not bucket or not key:
            raise ValueError(f"the bucket name or key is empty (bucket {bucket!r}, key {key!r})")
        self._sink.put_object(bucket, key, body, canned_acl=action.canned_acl)

    def _put_records(self, stream: str, records: list[_Record], counts: dict[str, int]) -> None:
        for chunk in _chunks(records, self._max_batch):
            try:
                results = self._sink.put_records(stream, [KinesisRecord(r.data, r.partition_key) for r in chunk])
            except Exception as exc:
                reason = _describe(exc)
                for record in chunk:
                    counts["actions_failed"] += 1
                    record.invocation.failures.append(
                        _kinesis_failure(stream, record.invocation.original_topic, reason))
                continue
            for record, failure in zip(chunk, results, strict=True):
                if failure is not None:
                    counts["actions_failed"] += 1
                    record.invocation.failures.append(
                        _kinesis_failure(stream, record.invocation.original_topic, failure))
                else:
                    counts["actions_ok"] += 1

    def _run_error_action(self, invocation: _Invocation, counts: dict[str, int], problems: list[str]) -> None:
        rule = invocation.rule
        summary = "; ".join(f["errorMessage"] for f in invocation.failures)
        if rule.error_action is None:
            counts["dropped"] += 1
            problems.append(f"rule {rule.name}: message on {invocation.original_topic} lost: {summary} "
                            "(the rule has no error action)")
            return
        body = to_json(error_action_message(rule.name, invocation.original_topic, invocation.message.client_id,
                                            invocation.message.raw, invocation.failures))
        action, message = rule.error_action, invocation.message
        try:
            if isinstance(action, S3Action):
                self._put_object(action, action.bucket_name.render(message), action.key.render(message), body)
            else:
                stream = action.stream_name.render(message)
                key = str(uuid.uuid4()) if action.partition_key is None else action.partition_key.render(message)
                problem = _record_problem(stream, key, body)
                if problem:
                    raise ValueError(problem)
                self._sink.put_record(stream, KinesisRecord(body, key))
        except Exception as exc:
            counts["error_actions_failed"] += 1
            counts["dropped"] += 1
            problems.append(f"rule {rule.name}: message on {invocation.original_topic} lost: {summary}; "
                            f"its error action failed too: {_describe(exc)}")
        else:
            counts["error_actions"] += 1

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            _log.warning("%s", problem)
        if self._on_problem is None:
            return
        for problem in problems:
            with contextlib.suppress(Exception):  # a broken logger must not stop the rules
                self._on_problem(problem)


def _chunks(records: list[_Record], max_batch: int) -> list[list[_Record]]:
    """PutRecords-sized chunks: at most ``max_batch`` records and 5 MiB (data plus partition keys) each."""
    chunks: list[list[_Record]] = []
    current: list[_Record] = []
    size = 0
    for record in records:
        record_size = len(record.data) + len(record.partition_key.encode("utf-8"))
        if current and (len(current) >= max_batch or size + record_size > KINESIS_MAX_REQUEST_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(record)
        size += record_size
    if current:
        chunks.append(current)
    return chunks


def _record_problem(stream: str, partition_key: str, data: bytes) -> str | None:
    """Why Kinesis would refuse this record, checked before the call so one bad record cannot fail a batch."""
    if not stream:
        return "ValidationException: the stream name is empty"
    if not 1 <= len(partition_key) <= KINESIS_MAX_PARTITION_KEY:
        return (f"ValidationException: the partition key must be 1 to {KINESIS_MAX_PARTITION_KEY} characters, "
                f"not {len(partition_key)} (a substitution template that names a missing attribute renders "
                "an empty string)")
    if len(data) + len(partition_key.encode("utf-8")) > KINESIS_MAX_RECORD_BYTES:
        return "ValidationException: the record is larger than 1 MiB"
    return None


def _unrunnable(action: Action, reason: str) -> dict[str, str]:
    """The error-action failure of an action that could not run because the rule could not evaluate the message."""
    kind, resource = (("KinesisAction", action.stream_name.source) if isinstance(action, KinesisAction)
                      else ("S3Action", action.bucket_name.source))
    return {"failedAction": kind, "failedResource": resource,
            "errorMessage": f"Failed to evaluate the rule on the message: {reason}"}


def _kinesis_failure(stream: str, topic: str, reason: str) -> dict[str, str]:
    return {"failedAction": "KinesisAction", "failedResource": stream,
            "errorMessage": f"Failed to send message to Kinesis. The error received was {reason}. Message arrived "
                            f"on: {topic}, Action: kinesis, Stream: {stream}"}


def _s3_failure(bucket: str, key: str, topic: str, reason: str) -> dict[str, str]:
    return {"failedAction": "S3Action", "failedResource": bucket,
            "errorMessage": f"Failed to put S3 object. The error received was {reason}. Message arrived on: "
                            f"{topic}, Action: s3, Bucket: {bucket}, Key: \"{key}\""}


def error_action_message(rule_name: str, topic: str, client_id: str | None, payload: bytes,
                         failures: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The message an error action receives, in the format of "Error action message format": one per rule and
    message, with every failed action of the rule in ``failures``."""
    return {
        "ruleName": rule_name,
        "topic": topic,
        "cloudwatchTraceId": str(uuid.uuid4()),
        "clientId": client_id if client_id is not None else "n/a",
        "base64OriginalPayload": base64.b64encode(payload).decode("ascii"),
        "failures": [dict(f) for f in failures],
    }
