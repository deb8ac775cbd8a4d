"""Simulated devices: realistic signals per sensor type, anomaly injection, and MQTT publishing.

The plan of messages is a pure function of its inputs (and ``seed``), so ``--dry-run`` shows exactly what a
real run would send. Publishing uses paho-mqtt, one client per device with the device id as client id, QoS 1;
TLS with the device certificates against AWS IoT, plain MQTT against a local broker.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from iotpipe.config import Threshold
from iotpipe.devices import topic_for, validate_thing_name
from iotpipe.errors import ConfigError, IotpipeError

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


class PublishError(IotpipeError):
    """The broker could not be reached or refused a device."""


@dataclass(frozen=True)
class SimMessage:
    """One MQTT publish: when (seconds after start), by which device, on which topic, with what payload."""

    offset_s: float
    device_id: str
    topic: str
    payload: Mapping[str, Any]
    readings: int
    anomalies: int

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


@dataclass(frozen=True)
class SimSummary:
    """What a run did."""

    sent: int
    failed: int
    readings: int
    anomalies_injected: int
    devices: int
    elapsed_s: float


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
        raise ConfigError(f"--rate {rate_hz} is out of range; use more than 0 and at most {MAX_RATE_HZ} Hz")
    if count is not None and duration_s is not None:
        raise ConfigError("give either --count or --duration, not both")
    if count is None and duration_s is None:
        duration_s = 60.0
    if count is not None and not 1 <= count <= MAX_MESSAGES:
        raise ConfigError(f"--count {count} is out of range; use 1 to {MAX_MESSAGES}")
    if duration_s is not None and not 0 < duration_s <= MAX_DURATION_S:
        raise ConfigError(
            f"--duration {duration_s} is out of range; use more than 0 and at most {MAX_DURATION_S:g} s"
        )
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ConfigError(f"--anomaly-rate {anomaly_rate} is out of range; use a probability from 0 to 1")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not allowed; choose single or multi")
    chosen = list(sensors) or sorted(thresholds)
    unknown = [name for name in chosen if name not in thresholds]
    if unknown:
        raise ConfigError(
            f"--sensor {', '.join(unknown)} has no threshold in the config; configured: "
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
        raise ConfigError(f"--batch {batch} is out of range; use 1 to {MAX_READINGS_PER_MESSAGE} samples per message")
    if batch == 1:
        return
    per_message = batch * (len(sensors) if fmt == "multi" else 1)
    if per_message > MAX_READINGS_PER_MESSAGE:
        raise ConfigError(f"--batch {batch} with {len(sensors)} sensors in --format multi makes {per_message} "
                          f"readings per message; the processor takes at most {MAX_READINGS_PER_MESSAGE}: lower "
                          "--batch or use --format single")
    device = max(device_ids, key=len)
    worst = {sensor: (_WORST_VALUE, False) for sensor in sensors}
    samples = [(_WORST_TIMESTAMP, worst)] * batch
    size = max(len(m.body().encode()) for m in _batched_payloads(device, samples, fmt, 0.0))
    if size > MAX_MESSAGE_BYTES:
        raise ConfigError(f"--batch {batch}: a message can reach {size} bytes, over IoT Core's 128 KB message "
                          "limit; lower --batch")


def simulated_device_ids(count: int, prefix: str = "sim") -> list[str]:
    """``count`` device ids ``<prefix>-001`` ... (valid thing names)."""
    if count < 1:
        raise ConfigError(f"--devices {count} is out of range; use at least 1")
    return [validate_thing_name(f"{prefix}-{index:03d}") for index in range(1, count + 1)]


def normal_band(threshold: Threshold) -> tuple[float, float]:
    """Where normal values stay: inside [min, max] with a margin; one-sided ranges get a plausible span."""
    lo, hi = threshold.min, threshold.max
    if lo is not None and hi is not None:
        width = hi - lo
        return (lo + 0.1 * width, hi - 0.1 * width) if width > 0 else (lo, hi)
    if hi is not None:
        width = abs(hi) or 1.0
        return (max(hi - width, 0.0) if hi > 0 else hi - width, hi - 0.1 * width)
    assert lo is not None  # config validation guarantees min or max
    width = abs(lo) or 1.0
    return (lo + 0.1 * width, lo + width)


def anomalous_value(threshold: Threshold, rng: random.Random) -> float:
    """A value strictly outside the threshold range (above max or below min), rounded like normal values."""
    lo, hi = threshold.min, threshold.max
    band_lo, band_hi = normal_band(threshold)
    width = max(band_hi - band_lo, 1.0)
    above = hi is not None and (lo is None or rng.random() < 0.5)
    if above:
        assert hi is not None
        value = round(hi + width * rng.uniform(0.05, 0.5), 2)
        return value if value > hi else math.nextafter(hi, math.inf)
    assert lo is not None
    value = round(lo - width * rng.uniform(0.05, 0.5), 2)
    return value if value < lo else math.nextafter(lo, -math.inf)


@dataclass
class SignalModel:
    """A sensor's signal over time: a model per sensor type, state kept between steps."""

    sensor_type: str
    threshold: Threshold
    rng: random.Random
    drift: float = 0.0
    wear: float = 0.0
    wear_steps_left: int = 0
    phase: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.phase = self.rng.uniform(0, 2 * math.pi)

    def step(self, t: float) -> float:
        """The next normal value at ``t`` seconds (inside the normal band)."""
        lo, hi = normal_band(self.threshold)
        width = hi - lo
        mid = (lo + hi) / 2
        if self.sensor_type == "temperature":
            # slow mean-reverting drift plus a slow cycle and a little noise
            self.drift = 0.98 * self.drift + self.rng.gauss(0, 0.03 * width)
            value = (
                mid
                + self.drift
                + 0.15 * width * math.sin(2 * math.pi * t / 3600 + self.phase)
                + self.rng.gauss(0, 0.02 * width)
            )
        elif self.sensor_type == "pressure":
            value = (
                mid
                + 0.3 * width * math.sin(2 * math.pi * t / 30 + self.phase)
                + self.rng.gauss(0, 0.03 * width)
            )
        elif self.sensor_type == "vibration":
            # low baseline; now and then a bearing starts wearing and the level creeps up, then is "replaced"
            if self.wear_steps_left == 0 and self.rng.random() < 0.01:
                self.wear_steps_left = self.rng.randint(20, 120)
            if self.wear_steps_left > 0:
                self.wear = min(self.wear + 0.01 * width, 0.7 * width)
                self.wear_steps_left -= 1
            else:
                self.wear = 0.0
            value = lo + 0.2 * width + self.wear + abs(self.rng.gauss(0, 0.05 * width))
        else:
            value = mid + self.rng.gauss(0, 0.1 * width)
        return round(min(max(value, lo), hi), 2)

    def sample(self, t: float, anomaly_rate: float) -> tuple[float, bool]:
        """The value at ``t``; with probability ``anomaly_rate`` an injected out-of-range value instead."""
        value = self.step(t)
        if anomaly_rate > 0 and self.rng.random() < anomaly_rate:
            return anomalous_value(self.threshold, self.rng), True
        return value, False


def messages(plan: SimPlan, start_ms: int) -> Iterator[SimMessage]:
    """The messages of ``plan`` in send order; timestamps are ``start_ms`` plus each message's offset."""
    models = {
        (device, sensor): SignalModel(sensor, threshold, _rng(plan.seed, device, sensor))
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


def _rng(seed: int | None, device: str, sensor: str) -> random.Random:
    # One generator per device and sensor: the values do not depend on how many others are simulated.
    return random.Random(f"{seed}:{device}:{sensor}") if seed is not None else random.Random()


def _ticks(duration_s: float | None, rate_hz: float) -> int:
    return max(1, math.floor((duration_s or 0) * rate_hz + 1e-9))


# --- publishing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerTarget:
    """A plain MQTT broker (``--broker mqtt://host:port``)."""

    host: str
    port: int


@dataclass(frozen=True)
class DeviceCredentials:
    """A registered device's TLS connection, read from the connection file ``device register`` wrote."""

    device_id: str
    endpoint: str
    port: int
    certificate: Path
    private_key: Path
    ca_file: Path | None


def parse_broker_url(url: str) -> BrokerTarget:
    """``mqtt://host[:port]`` -> BrokerTarget (default port 1883); ConfigError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ConfigError(f"--broker {url!r} is not valid; use mqtt://host:port (plain MQTT, no TLS)")
    try:
        port = parsed.port or 1883
    except ValueError:
        raise ConfigError(f"--broker {url!r} has an invalid port") from None
    return BrokerTarget(parsed.hostname, port)


def load_cert_dir(cert_dir: str | Path) -> list[DeviceCredentials]:
    """The devices in ``cert_dir``: every ``<id>.json`` connection file with its certificate and key."""
    base = Path(cert_dir)
    if not base.is_dir():
        raise ConfigError(
            f"--cert-dir {base} is not a directory; register devices first: "
            "iotpipe device register DEVICE_ID --out-dir " + str(base)
        )
    devices = []
    for path in sorted(base.glob("*.json")):
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
            device_id = validate_thing_name(str(settings["clientId"]))
            ca_name = settings.get("caFile")
            credentials = DeviceCredentials(
                device_id=device_id,
                endpoint=str(settings["endpoint"]),
                port=int(settings["port"]),
                certificate=base / settings["certificateFile"],
                private_key=base / settings["privateKeyFile"],
                ca_file=base / ca_name if ca_name else _default_ca(base),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a device connection file ({exc}); it is written by iotpipe device register"
            ) from None
        missing = [str(p) for p in (credentials.certificate, credentials.private_key) if not p.exists()]
        if missing:
            raise ConfigError(f"{path}: missing {', '.join(missing)}")
        devices.append(credentials)
    if not devices:
        raise ConfigError(
            f"--cert-dir {base} has no device connection files (*.json); register devices first"
        )
    return devices


def _default_ca(base: Path) -> Path | None:
    # AWS IoT ATS endpoints chain to Amazon Root CA 1, which system trust stores carry; a local copy wins.
    candidate = base / "AmazonRootCA1.pem"
    return candidate if candidate.exists() else None


class Publisher(Protocol):
    """Sends one message; returns a handle whose ``wait(timeout)`` says whether it was acknowledged."""

    def publish(self, message: SimMessage) -> Callable[[float], bool]: ...

    def close(self) -> None: ...


class MqttPublisher:
    """One paho-mqtt client per device (client id = device id), QoS 1, each with its network thread."""

    def __init__(self, clients: Mapping[str, Any], basic_ingest_rule: str | None = None) -> None:
        self._clients = dict(clients)
        self._rule = basic_ingest_rule

    @classmethod
    def connect(
        cls, targets: Mapping[str, BrokerTarget | DeviceCredentials], *, timeout_s: float = 10.0,
        basic_ingest_rule: str | None = None,
    ) -> MqttPublisher:
        """Connect a client per device and wait for each CONNACK; PublishError when one fails.

        With ``basic_ingest_rule`` every message goes to that rule's Basic Ingest topic instead of its own.
        """
        clients: dict[str, Any] = {}
        try:
            for device_id, target in targets.items():
                clients[device_id] = _connect_client(device_id, target, timeout_s)
        except BaseException:
            cls(clients).close()
            raise
        return cls(clients, basic_ingest_rule)

    def topic(self, message: SimMessage) -> str:
        """Where ``message`` is published: its topic, or the Basic Ingest topic of the configured rule."""
        return topic_for(message.device_id, self._rule) if self._rule else message.topic

    def publish(self, message: SimMessage) -> Callable[[float], bool]:
        """Publish at QoS 1; the returned callable waits up to its timeout for the PUBACK."""
        info = self._clients[message.device_id].publish(self.topic(message), message.body(), qos=1)

        def wait(timeout: float) -> bool:
            if info.rc != 0:
                return False
            try:
                info.wait_for_publish(timeout=timeout)
            except (RuntimeError, ValueError):
                return False
            return bool(info.is_published())

        return wait

    def close(self) -> None:
        """Disconnect every client and stop its thread."""
        for client in self._clients.values():
            try:
                client.disconnect()
            finally:
                client.loop_stop()


def _connect_client(device_id: str, target: BrokerTarget | DeviceCredentials, timeout_s: float) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=device_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    connected = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        result["reason"] = reason_code
        connected.set()

    def on_disconnect(_client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        # e.g. the broker rejected the TLS client certificate after the handshake: fail now, not at the timeout
        if not connected.is_set():
            result["reason"] = f"disconnected before CONNACK: {reason_code}"
            connected.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    if isinstance(target, DeviceCredentials):
        client.tls_set(
            ca_certs=str(target.ca_file) if target.ca_file else None,
            certfile=str(target.certificate),
            keyfile=str(target.private_key),
        )
        host, port = target.endpoint, target.port
    else:
        host, port = target.host, target.port
    try:
        client.connect(host, port, keepalive=60)
    except (OSError, ValueError) as exc:
        raise PublishError(
            f"device {device_id}: cannot connect to {host}:{port}: {exc}; check the broker "
            "address, that it is running and reachable"
        ) from None
    client.loop_start()
    if not connected.wait(timeout_s) or getattr(result.get("reason"), "is_failure", True):
        client.loop_stop()
        reason = result.get("reason", f"no CONNACK within {timeout_s:g} s")
        raise PublishError(
            f"device {device_id}: {host}:{port} refused the connection ({reason}); for AWS IoT "
            "check the certificate is active and the device policy is attached"
        )
    return client


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
    after the last send counts as failed.
    """
    started = clock()
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    pending: list[Callable[[float], bool]] = []
    sent = failed = readings = anomalies = 0
    last_progress = started
    try:
        for message in messages(plan, start):
            delay = started + message.offset_s - clock()
            if delay > 0:
                sleep(delay)
            pending.append(publisher.publish(message))
            readings += message.readings
            anomalies += message.anomalies
            if len(pending) >= 1000:
                ok, missing = _reap(pending)
                sent, failed, pending = sent + ok, failed + len(missing), []
            if on_progress is not None and clock() - last_progress >= progress_every_s:
                last_progress = clock()
                on_progress(sent + len(pending), failed)
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
    )


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
