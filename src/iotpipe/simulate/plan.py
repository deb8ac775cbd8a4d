"""The simulation plan: validated options and the messages it sends, a pure function of its inputs and seed.

``--dry-run`` prints exactly what a real run would send.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotpipe import contract
from iotpipe.config import Threshold
from iotpipe.devices import topic_for, validate_thing_name
from iotpipe.errors import ConfigError, ParameterError
from iotpipe.simulate.signals import FAILURES, SignalModel, device_rng

MAX_DEVICES = 200
MAX_RATE_HZ = 100.0
MAX_DURATION_S = 24 * 3600.0
MAX_MESSAGES = 1_000_000
FORMATS = ("single", "multi")
# IoT Core refuses a publish over 128 KB ("Message size", AWS IoT Core quotas); the processor quarantines a message
# of more than 1,000 readings (docs/contract.md, section 3).
MAX_MESSAGE_BYTES = 128 * 1024
MAX_READINGS_PER_MESSAGE = contract.MAX_READINGS_PER_MESSAGE
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
    faults: tuple[tuple[str, int], ...] = ()  # (sensor, timestamp) of each failed reading: the ground truth

    def as_dict(self) -> dict[str, Any]:
        """JSON object: the publish's offset, device, topic, payload, its reading and anomaly counts, and its
        failed readings as ``[sensor, timestamp]`` pairs."""
        return {"offsetSeconds": self.offset_s, "deviceId": self.device_id, "topic": self.topic,
                "payload": dict(self.payload), "readings": self.readings, "anomalies": self.anomalies,
                "faults": [list(fault) for fault in self.faults]}

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
    failure: str | None = None  # one of FAILURES
    failing_devices: tuple[str, ...] = ()
    failure_sensor: str | None = None
    healthy_s: float = 0.0  # seconds before the failure starts

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
            "failure": self.failure,
            "failingDevices": list(self.failing_devices),
            "failureSensor": self.failure_sensor,
            "healthySeconds": self.healthy_s,
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
    failure: str | None = None,
    failing_devices: int = 1,
    failure_sensor: str | None = None,
    healthy_s: float | None = None,
) -> SimPlan:
    """Validate the simulation options and return a plan; ConfigError names the bad option.

    ``batch`` > 1 sends that many samples (timestamps) per message in the samples form. With ``failure`` the
    first ``failing_devices`` devices' ``failure_sensor`` (default: the first sensor) fails that way after
    ``healthy_s`` seconds (default: :data:`HEALTHY_SAMPLES` samples, the detector's default probation and some).
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
    healthy = _check_failure(failure, failing_devices, failure_sensor, healthy_s, chosen, device_ids, rate_hz,
                             duration_s)
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
        failure=failure,
        failing_devices=tuple(device_ids[:failing_devices]) if failure else (),
        failure_sensor=(failure_sensor or chosen[0]) if failure else None,
        healthy_s=healthy,
    )


# The default healthy period in samples: the detector's default probation (150 readings) and a margin to learn.
HEALTHY_SAMPLES = 200


def _check_failure(failure: str | None, failing_devices: int, sensor: str | None, healthy_s: float | None,
                   sensors: Sequence[str], device_ids: Sequence[str], rate_hz: float,
                   duration_s: float | None) -> float:
    """The healthy period in seconds; ParameterError names a failure option that does not fit the plan."""
    if failure is None:
        return 0.0
    if failure not in FAILURES:
        raise ParameterError("failure", failure, f"is not a failure mode; choose {', '.join(FAILURES)}")
    if not 1 <= failing_devices <= len(device_ids):
        raise ParameterError("failing_devices", failing_devices,
                             f"is out of range; use 1 to {len(device_ids)} (the simulated devices)")
    if sensor is not None and sensor not in sensors:
        raise ParameterError("failure_sensor", sensor, f"is not simulated; choose one of {', '.join(sensors)}")
    healthy = HEALTHY_SAMPLES / rate_hz if healthy_s is None else healthy_s
    if healthy < 0:
        raise ParameterError("healthy_s", healthy, "is negative; use 0 or more seconds")
    if duration_s is not None and healthy >= duration_s:
        raise ParameterError("healthy_s", healthy, f"is not before the run's end ({duration_s:g} s): the failure "
                             "would never start; lengthen --duration or shorten --healthy-for")
    return healthy


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
    worst = {sensor: (_WORST_VALUE, False, False) for sensor in sensors}
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
        (device, sensor): SignalModel(
            sensor, threshold, device_rng(plan.seed, device, sensor),
            plan.failure if device in plan.failing_devices and sensor == plan.failure_sensor else None,
            plan.healthy_s)
        for device in plan.device_ids
        for sensor, threshold in plan.thresholds
    }
    units = {sensor: threshold.unit for sensor, threshold in plan.thresholds}
    sent = 0
    limit = plan.count if plan.count is not None else MAX_MESSAGES
    ticks = _ticks(plan.duration_s, plan.rate_hz) if plan.duration_s is not None else MAX_MESSAGES
    held: dict[str, list[tuple[int, dict[str, Sample]]]] = {device: [] for device in plan.device_ids}
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
                sensor: (*models[device, sensor].sample(offset, plan.anomaly_rate), models[device, sensor].faulty)
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


# A sensor's sample: its value, whether it is an injected out-of-range value, whether it is a failed reading.
Sample = tuple[float, bool, bool]


def _payloads(
    device: str,
    samples: Mapping[str, Sample],
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
            "readings": {sensor: value for sensor, (value, _, _) in samples.items()},
        }
        yield SimMessage(
            offset,
            device,
            topic,
            payload,
            len(samples),
            sum(1 for _, anomalous, _ in samples.values() if anomalous),
            tuple((sensor, timestamp) for sensor, (_, _, faulty) in samples.items() if faulty),
        )
        return
    for sensor, (value, anomalous, faulty) in samples.items():
        single: dict[str, Any] = {
            "deviceId": device,
            "sensorType": sensor,
            "value": value,
            "timestamp": timestamp,
        }
        if units.get(sensor):
            single["unit"] = units[sensor]
        yield SimMessage(offset, device, topic, single, 1, int(anomalous), ((sensor, timestamp),) if faulty else ())


def _batched_payloads(
    device: str,
    samples: Sequence[tuple[int, Mapping[str, Sample]]],
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
            {"timestamp": timestamp, "readings": {sensor: value for sensor, (value, _, _) in values.items()}}
            for timestamp, values in samples]}
        yield SimMessage(offset, device, topic, payload, len(samples) * len(sensors),
                         sum(anomalous for _, values in samples for _, anomalous, _ in values.values()),
                         tuple((sensor, timestamp) for timestamp, values in samples
                               for sensor, (_, _, faulty) in values.items() if faulty))
        return
    for sensor in sensors:
        single = {"deviceId": device, "samples": [{"timestamp": timestamp, "sensorType": sensor,
                                                    "value": values[sensor][0]} for timestamp, values in samples]}
        yield SimMessage(offset, device, topic, single, len(samples),
                         sum(values[sensor][1] for _, values in samples),
                         tuple((sensor, timestamp) for timestamp, values in samples if values[sensor][2]))


def _ticks(duration_s: float | None, rate_hz: float) -> int:
    return max(1, math.floor((duration_s or 0) * rate_hz + 1e-9))


def ground_truth(plan: SimPlan, start_ms: int, sent: int | None = None) -> Iterator[tuple[str, str, int, str]]:
    """The failed readings of ``plan`` started at ``start_ms`` as ``(device, sensor, timestamp, failure)``, in
    send order; ``sent`` limits them to the first that many messages (a run stopped early)."""
    if plan.failure is None:
        return
    for index, message in enumerate(messages(plan, start_ms)):
        if sent is not None and index >= sent:
            return
        for sensor, timestamp in message.faults:
            yield message.device_id, sensor, timestamp, plan.failure


def write_ground_truth(path: str | Path, rows: Iterable[tuple[str, str, int, str]]) -> int:
    """Write ``rows`` (from :func:`ground_truth`) as CSV ``deviceId,sensorType,timestamp,failure``; their number.

    Written to a temporary file renamed into place: an interrupted write leaves no half file.
    """
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    count = 0
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("deviceId", "sensorType", "timestamp", "failure"))
        for row in rows:
            writer.writerow(row)
            count += 1
    temporary.replace(target)
    return count
