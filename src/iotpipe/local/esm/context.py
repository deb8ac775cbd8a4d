"""What the shards of one mapping share: its spec and counters, the stop signal, the clock, the function and the
on-failure destination. The one interface a shard worker (:mod:`iotpipe.local.esm.shard`) uses; the runner owns
it and reads the same counters."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from iotpipe.errors import AwsError
from iotpipe.local.clients import Clients
from iotpipe.local.esm.policy import RECORD_AGE_EXCEEDED, Attempt
from iotpipe.local.esm.records import InvokeOutcome, StreamRecord, failure_object_key, failure_record, lambda_event
from iotpipe.local.esm.spec import MappingSpec

log = logging.getLogger(__name__)

DESTINATION_ATTEMPTS = 5
_MAX_BACKOFF_S = 5.0


class Invoker(Protocol):
    """Invokes the function synchronously with one Kinesis event; called from one thread per shard, never twice at
    once for the same shard."""

    def __call__(self, event: dict[str, Any]) -> InvokeOutcome:
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
class _InvokerBroke:
    function_error: str
    payload: Any = None


class MappingContext:
    """Shared by the shard workers of one mapping (each in its own thread): thread-safe."""

    def __init__(self, spec: MappingSpec, clients: Clients, invoke: Invoker, *, clock: Callable[[], float],
                 sleep: Callable[[float], None], poll_interval_s: float, retry_backoff_s: float) -> None:
        self.spec = spec
        self.poll_interval_s = poll_interval_s
        self._clients = clients
        self._invoke = invoke
        self._clock = clock
        self._sleep = sleep
        self._retry_backoff_s = retry_backoff_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys((f.name for f in fields(MappingStats)), 0)
        self._destination_client: Any = None
        self._queue_url: str | None = None

    # -- stop, time, counters -------------------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called (and not :meth:`resume`)."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask every worker to stop; a pause in progress returns at once."""
        self._stop.set()

    def resume(self) -> None:
        """Let workers run again (a runner started after a stop)."""
        self._stop.clear()

    def now(self) -> float:
        """The mapping's clock, epoch seconds."""
        return self._clock()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped."""
        if self._sleep is time.sleep:
            # The stop event's wait instead of a sleep, so stop() interrupts a long batching window or backoff.
            return self._stop.wait(max(0.0, seconds))
        if not self._stop.is_set() and seconds > 0:
            self._sleep(seconds)
        return self._stop.is_set()

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first): doubling, at most 5 s."""
        return float(min(_MAX_BACKOFF_S, self._retry_backoff_s * 2 ** max(0, attempt - 1)))

    def count(self, **deltas: int) -> None:
        """Add ``deltas`` to the :class:`MappingStats` counters of the same names."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    @property
    def stats(self) -> MappingStats:
        """A snapshot of the counters."""
        with self._lock:
            return MappingStats(**self._counts)

    # -- the function and the destination -------------------------------------------------------------------------

    def invoke(self, records: Sequence[StreamRecord]) -> InvokeOutcome:
        """Invoke the function with ``records``, counted; an invoker that raises is a function error."""
        self.count(invocations=1, records_delivered=len(records))
        try:
            result = self._invoke(lambda_event(records))
        except Exception as exc:
            # The invoker itself broke (not the function): treat it as a function error so the batch is retried
            # within the mapping's limits rather than lost or retried forever.
            log.exception("invoking %s failed", self.spec.function_name)
            result = _InvokerBroke(function_error=f"Unhandled ({type(exc).__name__})")
        if result.function_error is not None:
            self.count(function_errors=1)
        return result

    def give_up(self, records: Sequence[StreamRecord], *, condition: str, attempt: Attempt) -> bool:
        """Hand discarded ``records`` to the on-failure destination (or count them discarded when there is none);
        False when stopped before the destination took them; AwsError when it refused them
        DESTINATION_ATTEMPTS times (the records then stay unprocessed, to be delivered again)."""
        expired = len(records) if condition == RECORD_AGE_EXCEEDED else 0
        destination = self.spec.on_failure_destination
        if destination is None:
            log.warning("%s: %d records of %s (%s..%s) discarded (%s) and no on-failure destination is set",
                        self.spec.function_name, len(records), records[0].shard_id, records[0].sequence_number,
                        records[-1].sequence_number, condition)
            self.count(discarded=len(records), records_expired=expired)
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
                self.count(destination_errors=1)
                if failures >= DESTINATION_ATTEMPTS:
                    raise AwsError(f"the on-failure destination {destination} refused a failed batch of "
                                   f"{records[0].shard_id} {failures} times ({exc}); its records stay unprocessed "
                                   "and are delivered again: check that the queue or topic exists") from exc
                log.warning("sending a failed batch to %s failed (%s); trying again", destination, exc)
                if self.pause(self.backoff(failures)):
                    return False
        self.count(sent_to_destination=len(records), batches_to_destination=1, records_expired=expired)
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
