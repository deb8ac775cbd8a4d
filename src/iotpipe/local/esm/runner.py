"""The Kinesis event source mapping of ``iotpipe local``: polls a stream's shards and invokes the function the way
Lambda does, without Docker and with whole batches.

Semantics follow the AWS Lambda developer guide ("Using Lambda with Kinesis", "Configuring partial batch
response with Kinesis", "Retain discarded batch records"); the choices that rest on it quote it next to the code
(:mod:`iotpipe.local.esm.policy` for what happens to a failed batch). Two deliberate local limits: one batch per
shard at a time (``ParallelizationFactor`` 1; a larger factor is read and kept in
:attr:`~iotpipe.local.esm.spec.MappingSpec.parallelization_factor` but not used, which keeps the per-shard order
stricter than Lambda's per-partition-key order), and the checkpoint lives in memory, so a restarted runner starts
again from ``StartingPosition`` unless it is handed the checkpoints of the runner it replaces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from iotpipe.local.clients import Clients
from iotpipe.local.esm.context import Invoker, MappingContext, MappingStats
from iotpipe.local.esm.shard import ShardWorker
from iotpipe.local.esm.spec import MappingSpec

log = logging.getLogger(__name__)


class MappingRunner:
    """Polls every shard of the mapping's stream and delivers batches to ``invoke`` with Lambda's semantics."""

    def __init__(self, spec: MappingSpec, clients: Clients, invoke: Invoker, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 poll_interval_s: float = 0.2, retry_backoff_s: float = 0.2,
                 discovery_interval_s: float = 5.0, resume_from: Mapping[str, str | None] | None = None,
                 reader: Callable[[Any], Any] = lambda client: client) -> None:
        # reader: makes a fresh Kinesis client the shard reader's own (the supervisor passes the emulator's
        # cheaper GetRecords parsing); never applied to a client that may be shared.
        # resume_from: the checkpoints() of a runner this one replaces (a redeploy that keeps the mapping): Lambda
        # keeps a mapping's position across updates, so those shards carry on after their last record done.
        self.spec = spec
        self._resume_from = dict(resume_from or {})
        self._clients = clients
        self._reader = reader
        self._context = MappingContext(spec, clients, invoke, clock=clock, sleep=sleep,
                                       poll_interval_s=poll_interval_s, retry_backoff_s=retry_backoff_s)
        self._discovery_interval_s = discovery_interval_s
        self._shards: dict[str, ShardWorker] = {}
        self._threads: list[threading.Thread] = []
        self._shard_threads: dict[str, threading.Thread] = {}
        self._watcher: threading.Thread | None = None
        self._kinesis: Any = None

    # -- public ---------------------------------------------------------------------------------------------------

    @property
    def stats(self) -> MappingStats:
        """A snapshot of the counters."""
        return self._context.stats

    @property
    def running(self) -> bool:
        """True while a polling thread is alive."""
        return any(thread.is_alive() for thread in self._threads)

    def dead_threads(self) -> list[str]:
        """The names of the polling threads that ended while they still had work: the shard watcher, or the
        poller of a shard that is not finished. Empty for a runner that was never started or was stopped."""
        if not self._threads or self._context.stopped:
            return []
        dead = [] if self._watcher is None or self._watcher.is_alive() else [self._watcher.name]
        for shard_id, thread in list(self._shard_threads.items()):
            worker = self._shards.get(shard_id)
            if not thread.is_alive() and worker is not None and not worker.finished:
                dead.append(thread.name)
        return dead

    def checkpoints(self) -> dict[str, str | None]:
        """Per shard, the sequence number of the last record done with (None before the first)."""
        return {worker.shard_id: worker.checkpoint for worker in self._ordered()}

    def start(self) -> None:
        """Poll in the background: one thread per shard, plus one that finds new shards (resharding)."""
        if not self.spec.enabled or self._threads:
            return
        self._context.resume()
        for worker in self._discover():
            self._start_thread(worker)
        watcher = self._watcher = threading.Thread(target=self._watch_shards, name="esm-shards", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def stop(self, timeout_s: float = 5) -> None:
        """Stop polling; waits at most ``timeout_s`` for in-flight invocations. Records not yet done stay
        unprocessed (they are not checkpointed)."""
        self._context.stop()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def run_once(self, *, window: bool = False) -> int:
        """Poll every shard once and deliver what is there, batch after batch, without waiting for more (unless
        ``window``: then each batch waits up to MaximumBatchingWindowInSeconds to fill). Returns the records done
        with (processed, sent to the destination, or discarded)."""
        if not self.spec.enabled:
            return 0
        self._discover()
        done = 0
        for worker in self._ordered():
            while not self._context.stopped and self._parents_done(worker):
                count = worker.poll(window=window)
                done += count
                if count == 0:
                    break
        return done

    # -- shards ---------------------------------------------------------------------------------------------------

    def _kinesis_client(self) -> Any:
        if self._kinesis is None:
            self._kinesis = self._clients.client("kinesis")
        return self._kinesis

    def _discover(self) -> list[ShardWorker]:
        """Workers for shards not seen before; shards found after the first look start at TRIM_HORIZON, since
        all their records came after the start."""
        first_look = not self._shards
        paginator = self._kinesis_client().get_paginator("list_shards")
        new: list[ShardWorker] = []
        for page in paginator.paginate(StreamARN=self.spec.stream_arn):
            for shard in page["Shards"]:
                shard_id = shard["ShardId"]
                ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                if shard_id in self._shards:
                    self._shards[shard_id].ending = ending
                    continue
                parents = {shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key)}
                worker = ShardWorker(self._context, shard_id, parents, self._reader_client(),
                                      position=self.spec.starting_position if first_look else "TRIM_HORIZON",
                                      ending=ending, checkpoint=self._resume_from.get(shard_id))
                # Anchor the iterator now, so LATEST means "after start", not "after the first poll".
                worker.open()
                self._shards[shard_id] = worker
                new.append(worker)
        return new

    def _reader_client(self) -> Any:
        """A Kinesis client for one shard's reads: a fresh one from a ClientFactory gets the cheaper GetRecords
        parsing; a client that may be shared (any other ``clients``, e.g. a cache) is used as it is."""
        from iotpipe.aws import ClientFactory

        client = self._clients.client("kinesis")
        return self._reader(client) if isinstance(self._clients, ClientFactory) else client

    def _ordered(self) -> list[ShardWorker]:
        """The shards in shard id order (parents before their children)."""
        return [worker for _, worker in sorted(list(self._shards.items()))]

    def _parents_done(self, worker: ShardWorker) -> bool:
        """A child's records come after its parents': it waits until they are finished."""
        return all(parent not in self._shards or self._shards[parent].finished for parent in worker.parents)

    def _start_thread(self, worker: ShardWorker) -> None:
        thread = threading.Thread(target=self._poll_shard, args=(worker,), name=f"esm-{worker.shard_id}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)
        self._shard_threads[worker.shard_id] = thread

    def _watch_shards(self) -> None:
        while not self._context.pause(self._discovery_interval_s):
            try:
                for worker in self._discover():
                    self._start_thread(worker)
            except Exception:
                self._context.count(poll_errors=1)
                log.exception("listing the shards of %s failed; trying again", self.spec.stream_arn)

    def _poll_shard(self, worker: ShardWorker) -> None:
        failures = 0
        while not self._context.stopped and not worker.finished:
            if not self._parents_done(worker):
                self._context.pause(self._context.poll_interval_s)
                continue
            try:
                count = worker.poll(window=True)
                failures = 0
            except Exception:
                failures += 1
                self._context.count(poll_errors=1)
                log.exception("polling %s failed; trying again", worker.shard_id)
                self._context.pause(self._context.backoff(failures))
                continue
            if count == 0 and not worker.pending:
                self._context.pause(self._context.poll_interval_s)
