"""Running a plan: send its messages on schedule through a publisher and count the acknowledgements."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from iotpipe.errors import ConfigError
from iotpipe.simulate.certificates import DeviceCredentials
from iotpipe.simulate.mqtt import BrokerTarget, MqttPublisher, Publisher
from iotpipe.simulate.plan import SimMessage, SimPlan, messages


@dataclass(frozen=True)
class SimSummary:
    """What a run did."""

    sent: int
    failed: int
    readings: int
    anomalies_injected: int
    devices: int
    elapsed_s: float
    interrupted: bool = False  # stopped by Ctrl-C: the counts are what was sent until then
    failed_readings: int = 0  # readings of a failing sensor after its failure started (the ground truth's rows)
    start_ms: int = 0  # the first message's timestamp: with the plan, it gives the ground truth

    def as_dict(self) -> dict[str, Any]:
        """JSON object: messages acknowledged and not, readings sent, anomalies injected, devices, seconds,
        whether Ctrl-C stopped the run, failed readings sent, and the run's start (epoch ms)."""
        return {"sent": self.sent, "failed": self.failed, "readings": self.readings,
                "anomaliesInjected": self.anomalies_injected, "devices": self.devices,
                "elapsedSeconds": self.elapsed_s, "interrupted": self.interrupted,
                "failedReadings": self.failed_readings, "startMs": self.start_ms}


def run(
    plan: SimPlan,
    publisher: Publisher,
    *,
    start_ms: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int, int], None] | None = None,
    ack_timeout_s: float = 10.0,
    progress_every_s: float = 1.0,
) -> SimSummary:
    """Send the plan's messages on schedule and wait for their acknowledgements; a summary at the end.

    Acknowledgements are collected as they come in; whatever is still unacknowledged ``ack_timeout_s``
    after the last send counts as failed. Ctrl-C (KeyboardInterrupt) stops sending: the messages already
    published get at most :data:`INTERRUPT_ACK_S` to be acknowledged, and the summary says ``interrupted``.
    """
    started = clock()
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    pending: list[Callable[[float], bool]] = []
    sent = failed = readings = anomalies = faults = 0
    last_progress = started
    interrupted = False
    try:
        try:
            for message in _sent_on_schedule(plan, start, started, clock, sleep):
                pending.append(publisher.publish(message))
                readings += message.readings
                anomalies += message.anomalies
                faults += len(message.faults)
                if len(pending) >= 1000:
                    ok, missing = _reap(pending)
                    sent, failed, pending = sent + ok, failed + len(missing), []
                if on_progress is not None and clock() - last_progress >= progress_every_s:
                    last_progress = clock()
                    on_progress(sent + len(pending), failed)
        except KeyboardInterrupt:
            interrupted = True
            ack_timeout_s = min(ack_timeout_s, INTERRUPT_ACK_S)
        deadline = clock() + ack_timeout_s
        for wait in pending:
            if wait(max(deadline - clock(), 0.0)):
                sent += 1
            else:
                failed += 1
    finally:
        publisher.close()
    return SimSummary(
        sent=sent,
        failed=failed,
        readings=readings,
        anomalies_injected=anomalies,
        devices=len(plan.device_ids),
        elapsed_s=round(clock() - started, 3),
        interrupted=interrupted,
        failed_readings=faults,
        start_ms=start,
    )


# After Ctrl-C the user wants out: outstanding acknowledgements get this long at most.
INTERRUPT_ACK_S = 2.0


def _sent_on_schedule(plan: SimPlan, start_ms: int, started: float, clock: Callable[[], float],
                      sleep: Callable[[float], None]) -> Iterator[SimMessage]:
    """The plan's messages, each when its offset is due."""
    for message in messages(plan, start_ms):
        delay = started + message.offset_s - clock()
        if delay > 0:
            sleep(delay)
        yield message


def _reap(pending: list[Callable[[float], bool]]) -> tuple[int, list[Callable[[float], bool]]]:
    """Count acknowledged handles (bounded wait each); the rest are returned as not acknowledged."""
    ok, missing = 0, []
    for wait in pending:
        if wait(5.0):
            ok += 1
        else:
            missing.append(wait)
    return ok, missing


def run_simulation(
    plan: SimPlan,
    *,
    broker: BrokerTarget | None = None,
    credentials: Sequence[DeviceCredentials] = (),
    on_progress: Callable[[int, int], None] | None = None,
    ack_timeout_s: float = 10.0,
    basic_ingest_rule: str | None = None,
) -> SimSummary:
    """Connect one client per device (plain ``broker`` or TLS ``credentials``) and run ``plan``; with
    ``basic_ingest_rule`` the devices publish to that rule's Basic Ingest topics."""
    targets: dict[str, BrokerTarget | DeviceCredentials]
    if broker is not None:
        targets = {device: broker for device in plan.device_ids}
    else:
        by_id = {item.device_id: item for item in credentials}
        missing = [device for device in plan.device_ids if device not in by_id]
        if missing:
            raise ConfigError(f"no credentials for {', '.join(missing)}; use --cert-dir with their files")
        targets = {device: by_id[device] for device in plan.device_ids}
    publisher = MqttPublisher.connect(targets, basic_ingest_rule=basic_ingest_rule)
    return run(plan, publisher, on_progress=on_progress, ack_timeout_s=ack_timeout_s)
