"""The simulation plan: validated options and the messages it sends, a pure function of its inputs and seed.

``--dry-run`` prints exactly what a real run would send.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iotpipe.config import Threshold
from iotpipe.devices import topic_for, validate_thing_name
from iotpipe.errors import ConfigError, ParameterError
from iotpipe.simulate.signals import SignalModel, device_rng

MAX_DEVICES = 200
MAX_RATE_HZ = 100.0
MAX_DURATION_S = 24 * 3600.0
MAX_MESSAGES = 1_000_000
FORMATS = ("single", "multi")
# IoT Core refuses a publish over 128 KB ("Message size", AWS IoT Core quotas); the processor quarantines a message
# of more than 1,000 readings (docs/contract.md, section 3).
MAX_MESSAGE_BYTES = 128 * 1024
MAX_READINGS_PER_MESSAGE = 1_000
# The longest text a simulated value can take in JSON (a double's repr), and the longest epoch-ms timestamp.
_WORST_VALUE = -1.2345678901234567e-100
_WORST_TIMESTAMP = 9_999_999_999_999


@dataclass(frozen=True)
class SimMessage:
    """One MQTT publish: when (seconds after start), by which device, on which topic, with what payload."""

    offset_s: float
    device_id: str
    topic: str
    payload: Mapping[str, Any]
    readings: int
    anomalies: int

    def as_dict(self) -> dict[str, Any]:
        """JSON object: the publish's offset, device, topic, payload and its reading and anomaly counts."""
        return {"offsetSeconds": self.offset_s, "deviceId": self.device_id, "topic": self.topic,
                "payload": dict(self.payload), "readings": self.readings, "anomalies": self.anomalies}

    def body(self) -> str:
        """The payload as compact JSON (what goes on the wire)."""
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class SimPlan:
    """What to simulate: devices, sensors, format, how many and how fast, anomaly probability, seed."""

    device_ids: tuple[str, ...]
    thresholds: tuple[tuple[str, Threshold], ...]
    rate_hz: float = 1.0
    count: int | None = None
    duration_s: float | None = None
    anomaly_rate: float = 0.0
    fmt: str = "single"
    seed: int | None = None
    batch: int = 1

    def as_dict(self) -> dict[str, Any]:
        """JSON object: the validated options, thresholds as ``{sensor: {min, max, unit}}``."""
        return {
            "deviceIds": list(self.device_ids),
            "thresholds": {name: {"min": t.min, "max": t.max, "unit": t.unit} for name, t in self.thresholds},
            "rateHz": self.rate_hz,
            "count": self.count,
            "durationSeconds": self.duration_s,
            "anomalyRate": self.anomaly_rate,
            "format": self.fmt,
            "seed": self.seed,
            "batch": self.batch,
        }


def build_plan(
    device_ids: Sequence[str],
    thresholds: Mapping[str, Threshold],
    *,
    sensors: Sequence[str] = (),
    rate_hz: float = 1.0,
    count: int | None = None,
    duration_s: float | None = None,
    anomaly_rate: float = 0.0,
    fmt: str = "single",
    seed: int | None = None,
    batch: int = 1,
) -> SimPlan:
    """Validate the simulation options and return a plan; ConfigError names the bad option.

    ``batch`` > 1 sends that many samples (timestamps) per message in the samples form.
    """
    if not device_ids:
        raise ConfigError("no devices to simulate: use --devices N (or a --cert-dir with registered devices)")
    if len(device_ids) > MAX_DEVICES:
        raise ConfigError(f"--devices {len(device_ids)} is too many; at most {MAX_DEVICES}")
    for device_id in device_ids:
        validate_thing_name(device_id)
    if not 0 < rate_hz <= MAX_RATE_HZ:
        raise ParameterError("rate_hz", rate_hz, f"is out of range; use more than 0 and at most {MAX_RATE_HZ} Hz")
    if count is not None and duration_s is not None:
        raise ConfigError("give either --count or --duration, not both")
    if count is None and duration_s is None:
        duration_s = 60.0
    if count is not None and not 1 <= count <= MAX_MESSAGES:
        raise ParameterError("count", count, f"is out of range; use 1 to {MAX_MESSAGES}")
    if duration_s is not None and not 0 < duration_s <= MAX_DURATION_S:
        raise ParameterError(
            "duration_s", duration_s, f"is out of range; use more than 0 and at most {MAX_DURATION_S:g} s"
        )
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ParameterError("anomaly_rate", anomaly_rate, "is out of range; use a probability from 0 to 1")
    if fmt not in FORMATS:
        raise ParameterError("fmt", fmt, "is not allowed; choose single or multi")
    chosen = list(sensors) or sorted(thresholds)
    unknown = [name for name in chosen if name not in thresholds]
    if unknown:
        raise ParameterError(
            "sensors", ", ".join(unknown), f"has no threshold in the config; configured: "
            f"{', '.join(sorted(thresholds))}"
        )
    _check_batch(batch, fmt, chosen, device_ids)
    if (
        duration_s is not None
        and -(-_ticks(duration_s, rate_hz) // batch) * len(device_ids) * (1 if fmt == "multi" else len(chosen))
        > MAX_MESSAGES
    ):
        raise ConfigError(
            f"that many messages exceed the limit of {MAX_MESSAGES}; lower --duration or --rate"
        )
    return SimPlan(
        device_ids=tuple(device_ids),
        thresholds=tuple((name, thresholds[name]) for name in chosen),
        rate_hz=rate_hz,
        count=count,
        duration_s=duration_s,
        anomaly_rate=anomaly_rate,
        fmt=fmt,
        seed=seed,
        batch=batch,
    )


def _check_batch(batch: int, fmt: str, sensors: Sequence[str], device_ids: Sequence[str]) -> None:
    """A batched message must stay within what the processor takes and IoT Core accepts: at most 1,000 readings
    and 128 KB, measured on the largest message the plan can make (longest device id, longest values)."""
    if not 1 <= batch <= MAX_READINGS_PER_MESSAGE:
        raise ParameterError("batch", batch,
                             f"is out of range; use 1 to {MAX_READINGS_PER_MESSAGE} samples per message")
    if batch == 1:
        return
    per_message = batch * (len(sensors) if fmt == "multi" else 1)
    if per_message > MAX_READINGS_PER_MESSAGE:
        raise ParameterError("batch", batch, f"with {len(sensors)} sensors in the multi format makes {per_message} "
                             f"readings per message; the processor takes at most {MAX_READINGS_PER_MESSAGE}: send "
                             "fewer samples per message, or one reading per message (the single format)")
    device = max(device_ids, key=len)
    worst = {sensor: (_WORST_VALUE, False) for sensor in sensors}
    samples = [(_WORST_TIMESTAMP, worst)] * batch
    size = max(len(m.body().encode()) for m in _batched_payloads(device, samples, fmt, 0.0))
    if size > MAX_MESSAGE_BYTES:
        raise ParameterError("batch", batch, f"makes messages of up to {size} bytes, over IoT Core's 128 KB "
                             "message limit; send fewer samples per message")


def simulated_device_ids(count: int, prefix: str = "sim") -> list[str]:
    """``count`` device ids ``<prefix>-001`` ... (valid thing names)."""
    if count < 1:
        raise ConfigError(f"--devices {count} is out of range; use at least 1")
    return [validate_thing_name(f"{prefix}-{index:03d}") for index in range(1, count + 1)]


def messages(plan: SimPlan, start_ms: int) -> Iterator[SimMessage]:
    """The messages of ``plan`` in send order; timestamps are ``start_ms`` plus each message's offset."""
    models = {
        (device, sensor): SignalModel(sensor, threshold, device_rng(plan.seed, device, sensor))
        for device in plan.device_ids
        for sensor, threshold in plan.thresholds
    }
    units = {sensor: threshold.unit for sensor, threshold in plan.thresholds}
    sent = 0
    limit = plan.count if plan.count is not None else MAX_MESSAGES
    ticks = _ticks(plan.duration_s, plan.rate_hz) if plan.duration_s is not None else MAX_MESSAGES
    held: dict[str, list[tuple[int, dict[str, tuple[float, bool]]]]] = {device: [] for device in plan.device_ids}
    # A batch holds one epoch-aligned period of `batch` ticks (at 1 Hz, --batch 60 is each wall-clock minute),
    # as a device buffering its readings would send them: the period then matches the packed layout's window,
    # which gets one item per sensor instead of two halves. The first period of a run may be partial.
    period_ms = max(1, round(plan.batch * 1000 / plan.rate_hz))
    for tick in range(ticks):
        offset = tick / plan.rate_hz
        timestamp = start_ms + round(offset * 1000)
        period_ends = (start_ms + round((tick + 1) / plan.rate_hz * 1000)) // period_ms != timestamp // period_ms
        for device in plan.device_ids:
            samples = {
                sensor: models[device, sensor].sample(offset, plan.anomaly_rate)
                for sensor, _ in plan.thresholds
            }
            if plan.batch == 1:
                batch = _payloads(device, samples, units, timestamp, plan.fmt, offset)
            else:  # held until its period ends (or the run does), sent when its last sample is taken
                held[device].append((timestamp, samples))
                if not period_ends and len(held[device]) < plan.batch and tick + 1 < ticks:
                    continue
                batch, held[device] = _batched_payloads(device, held[device], plan.fmt, offset), []
            for message in batch:
                if sent >= limit:
                    return
                sent += 1
                yield message


def _payloads(
    device: str,
    samples: Mapping[str, tuple[float, bool]],
    units: Mapping[str, str],
    timestamp: int,
    fmt: str,
    offset: float,
) -> Iterator[SimMessage]:
    topic = topic_for(device)
    if fmt == "multi":
        payload = {
            "deviceId": device,
            "timestamp": timestamp,
            "readings": {sensor: value for sensor, (value, _) in samples.items()},
        }
        yield SimMessage(
            offset,
            device,
            topic,
            payload,
            len(samples),
            sum(1 for _, anomalous in samples.values() if anomalous),
        )
        return
    for sensor, (value, anomalous) in samples.items():
        single: dict[str, Any] = {
            "deviceId": device,
            "sensorType": sensor,
            "value": value,
            "timestamp": timestamp,
        }
        if units.get(sensor):
            single["unit"] = units[sensor]
        yield SimMessage(offset, device, topic, single, 1, int(anomalous))


def _batched_payloads(
    device: str,
    samples: Sequence[tuple[int, Mapping[str, tuple[float, bool]]]],
    fmt: str,
    offset: float,
) -> Iterator[SimMessage]:
    """Several timestamps per message (the samples form): with ``multi`` one message per device, each sample
    holding every sensor; with ``single`` one message per sensor. Units are left to the thresholds' (the
    processor stores the same), which keeps a sample small."""
    topic = topic_for(device)
    sensors = list(samples[0][1]) if samples else []
    if fmt == "multi":
        payload = {"deviceId": device, "samples": [
            {"timestamp": timestamp, "readings": {sensor: value for sensor, (value, _) in values.items()}}
            for timestamp, values in samples]}
        yield SimMessage(offset, device, topic, payload, len(samples) * len(sensors),
                         sum(anomalous for _, values in samples for _, anomalous in values.values()))
        return
    for sensor in sensors:
        single = {"deviceId": device, "samples": [{"timestamp": timestamp, "sensorType": sensor,
                                                    "value": values[sensor][0]} for timestamp, values in samples]}
        yield SimMessage(offset, device, topic, single, len(samples),
                         sum(values[sensor][1] for _, values in samples))


def _ticks(duration_s: float | None, rate_hz: float) -> int:
    return max(1, math.floor((duration_s or 0) * rate_hz + 1e-9))
