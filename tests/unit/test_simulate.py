"""Simulation plans, signal models, anomaly injection and the send loop (with a recording publisher)."""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iotpipe import simulate
from iotpipe.config import SEED_THRESHOLDS, Threshold
from iotpipe.errors import ConfigError

THRESHOLDS = {**SEED_THRESHOLDS, "humidity": Threshold(min=20.0, max=None, unit="%")}
START = 1_790_000_000_000
REPO_CONFIG = Path(__file__).parents[2] / "iotpipe.toml"


def _outside(sensor: str, value: float, thresholds: dict[str, Threshold] = THRESHOLDS) -> bool:
    t = thresholds[sensor]
    return (t.min is not None and value < t.min) or (t.max is not None and value > t.max)


def _plan(**kwargs: object) -> simulate.SimPlan:
    options: dict = {"count": 300, "rate_hz": 1.0, "seed": 7, **kwargs}
    devices = options.pop("devices", ["sim-001"])
    return simulate.build_plan(devices, THRESHOLDS, **options)


def test_same_seed_same_messages_other_seed_other_values() -> None:
    first = [m.body() for m in simulate.messages(_plan(anomaly_rate=0.1), START)]
    again = [m.body() for m in simulate.messages(_plan(anomaly_rate=0.1), START)]
    other = [m.body() for m in simulate.messages(_plan(anomaly_rate=0.1, seed=8), START)]
    assert first == again
    assert first != other


def test_values_of_a_device_do_not_depend_on_other_devices() -> None:
    alone = [m.body() for m in simulate.messages(_plan(devices=["sim-002"]), START)]
    together = [m.body() for m in simulate.messages(_plan(devices=["sim-001", "sim-002"], count=600), START)
                if json.loads(m.body())["deviceId"] == "sim-002"]
    assert together == alone


def test_single_payload_format_is_the_contract() -> None:
    msgs = list(simulate.messages(_plan(devices=["a-1", "b_2"], count=12, rate_hz=2.0), START))
    assert len(msgs) == 12
    for message in msgs:
        payload = json.loads(message.body())
        assert set(payload) == {"deviceId", "sensorType", "value", "timestamp", "unit"}
        assert message.topic == f"sensor/{payload['deviceId']}/data"
        assert payload["unit"] == THRESHOLDS[payload["sensorType"]].unit
        assert isinstance(payload["value"], float)
        assert isinstance(payload["timestamp"], int)
    # each device sends every sensor at each tick; ticks are 1/rate apart
    assert [json.loads(m.body())["timestamp"] for m in msgs] == [START] * 8 + [START + 500] * 4
    assert {json.loads(m.body())["sensorType"] for m in msgs} == set(THRESHOLDS)


def test_multi_payload_format_is_the_contract() -> None:
    msgs = list(simulate.messages(_plan(fmt="multi", count=3), START))
    for index, message in enumerate(msgs):
        payload = json.loads(message.body())
        assert set(payload) == {"deviceId", "timestamp", "readings"}
        assert payload["deviceId"] == "sim-001"
        assert payload["timestamp"] == START + 1000 * index
        assert set(payload["readings"]) == set(THRESHOLDS)
        assert message.readings == len(THRESHOLDS)


def test_batch_sends_several_timestamps_per_message_in_the_samples_form() -> None:
    plan = simulate.build_plan(["sim-001"], THRESHOLDS, duration_s=7.0, rate_hz=1.0, seed=7, fmt="multi", batch=3)
    start = START - START % 3000  # the start of a 3 s period
    msgs = list(simulate.messages(plan, start))
    payloads = [json.loads(m.body()) for m in msgs]
    assert [len(p["samples"]) for p in payloads] == [3, 3, 1]  # the last batch goes out when the run ends
    assert [s["timestamp"] for p in payloads for s in p["samples"]] == [start + 1000 * i for i in range(7)]
    assert all(set(s["readings"]) == set(THRESHOLDS) for p in payloads for s in p["samples"])
    assert [m.readings for m in msgs] == [12, 12, 4]
    assert [m.offset_s for m in msgs] == [2.0, 5.0, 6.0]  # sent when the batch's last sample is taken
    # the same values as one message per timestamp: batching changes the envelope only
    unbatched = [json.loads(m.body()) for m in simulate.messages(
        simulate.build_plan(["sim-001"], THRESHOLDS, duration_s=7.0, rate_hz=1.0, seed=7, fmt="multi"), start)]
    assert [s["readings"] for p in payloads for s in p["samples"]] == [p["readings"] for p in unbatched]


def test_batches_follow_epoch_aligned_periods_like_the_packed_windows() -> None:
    # --rate 1 --batch 60 started 45 s into a minute: the first message holds that minute's last 15 samples,
    # the next ones a whole minute each, so each lands in one packed item per sensor
    minute = START - START % 60_000
    plan = simulate.build_plan(["sim-001"], THRESHOLDS, duration_s=180.0, rate_hz=1.0, seed=7, fmt="multi", batch=60)
    payloads = [json.loads(m.body()) for m in simulate.messages(plan, minute + 45_000)]
    assert [len(p["samples"]) for p in payloads] == [15, 60, 60, 45]
    assert [{s["timestamp"] // 60_000 for s in p["samples"]} for p in payloads] == [
        {minute // 60_000 + n} for n in range(4)]


def test_batch_in_single_format_is_one_message_per_sensor() -> None:
    plan = simulate.build_plan(["sim-001"], THRESHOLDS, count=4, rate_hz=2.0, seed=7, batch=5, anomaly_rate=1.0)
    msgs = list(simulate.messages(plan, START - START % 2500))
    payloads = [json.loads(m.body()) for m in msgs]
    assert sorted(s["sensorType"] for p in payloads for s in p["samples"][:1]) == sorted(THRESHOLDS)
    assert all(set(p) == {"deviceId", "samples"} and len(p["samples"]) == 5 for p in payloads)
    assert [s["timestamp"] for s in payloads[0]["samples"]] == [START - START % 2500 + 500 * i for i in range(5)]
    assert [(m.readings, m.anomalies) for m in msgs] == [(5, 5)] * 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": 0}, "batch=0 is out of range; use 1 to 1000"),
    ({"batch": 300, "fmt": "multi"}, "makes 1200 readings per message; the processor takes at most 1000"),
])
def test_a_batch_over_the_processor_limit_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate.build_plan(["sim-001"], THRESHOLDS, count=1, **kwargs)


def test_a_batch_over_iot_cores_message_limit_is_refused_before_sending() -> None:
    long_names = {"s" + "x" * 63: Threshold(min=0.0, max=1.0, unit="u")}
    plan = simulate.build_plan(["sim-001"], long_names, count=1, batch=800)
    (message,) = simulate.messages(plan, START)
    assert len(message.body()) < simulate.MAX_MESSAGE_BYTES
    with pytest.raises(ConfigError, match=r"^batch=1000 makes messages of up to \d+ bytes, over IoT Core's 128 KB"):
        simulate.build_plan(["sim-001"], long_names, count=1, batch=1000)


def test_without_injection_every_value_is_inside_its_threshold() -> None:
    msgs = list(simulate.messages(_plan(count=20000, rate_hz=10.0), START))
    values = [json.loads(m.body()) for m in msgs]
    assert not [v for v in values if _outside(v["sensorType"], v["value"])]
    assert sum(m.anomalies for m in msgs) == 0


def test_injected_anomalies_are_outside_and_counted() -> None:
    msgs = list(simulate.messages(_plan(count=20000, anomaly_rate=0.05), START))
    flagged = [m for m in msgs if m.anomalies]
    for message in msgs:
        payload = json.loads(message.body())
        assert _outside(payload["sensorType"], payload["value"]) == bool(message.anomalies)
    share = len(flagged) / len(msgs)
    assert 0.04 < share < 0.06  # binomial sd at n=20000 is 0.0015; this is a 6-sigma band


def test_anomaly_rate_one_puts_every_value_out_of_range() -> None:
    msgs = list(simulate.messages(_plan(fmt="multi", count=500, anomaly_rate=1.0), START))
    for message in msgs:
        readings = json.loads(message.body())["readings"]
        assert all(_outside(sensor, value) for sensor, value in readings.items())
    assert sum(m.anomalies for m in msgs) == 500 * len(THRESHOLDS)


def test_anomaly_on_a_tight_range_is_still_strictly_outside() -> None:
    tight = {"level": Threshold(min=1.0, max=1.0, unit="m")}
    plan = simulate.build_plan(["tank-1"], tight, count=200, anomaly_rate=1.0, seed=1)
    for message in simulate.messages(plan, START):
        assert _outside("level", json.loads(message.body())["value"], tight)


def _series(sensor: str, count: int, rate: float = 1.0) -> list[float]:
    plan = _plan(sensors=[sensor], count=count, rate_hz=rate)
    return [json.loads(m.body())["value"] for m in simulate.messages(plan, START)]


@pytest.mark.parametrize("sensor", ["temperature", "pressure", "vibration", "humidity"])
def test_a_healthy_sensor_holds_a_steady_level_with_small_noise(sensor: str) -> None:
    values = _series(sensor, 600)
    low, high = simulate.normal_band(THRESHOLDS[sensor])
    assert all(low <= value <= high for value in values)
    # noise of 1 % of the band: a detector learns the level within its probation
    assert 0.005 * (high - low) < statistics.stdev(values) < 0.02 * (high - low)
    assert abs(statistics.mean(values[:300]) - statistics.mean(values[300:])) < 0.005 * (high - low)


def test_machines_differ_in_level() -> None:
    plan = _plan(sensors=["temperature"], devices=[f"sim-{i:03d}" for i in range(1, 9)], count=80)
    means: dict[str, list[float]] = {}
    for message in simulate.messages(plan, START):
        means.setdefault(message.device_id, []).append(json.loads(message.body())["value"])
    levels = sorted(statistics.mean(values) for values in means.values())
    low, high = simulate.normal_band(THRESHOLDS["temperature"])
    assert levels[-1] - levels[0] > 0.1 * (high - low)


class _Noiseless(random.Random):
    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:  # noqa: ARG002  (the signature overridden)
        return mu


def test_the_daily_rhythm_is_slow() -> None:
    model = simulate.SignalModel("temperature", THRESHOLDS["temperature"], _Noiseless(1))  # the rhythm alone
    day = [model.step(hour * 3600.0) for hour in range(25)]
    low, high = simulate.normal_band(THRESHOLDS["temperature"])
    assert 0.03 * (high - low) < max(day) - min(day) <= 0.041 * (high - low)
    assert abs(day[0] - day[24]) < 0.002 * (high - low)  # back where it was a day later


def _failing(failure: str, count: int = 400, healthy_s: float = 200.0) -> tuple[list[float], set[int], int]:
    """A failing temperature sensor at 1 Hz: its values, the timestamps the ground truth lists, the width."""
    plan = _plan(sensors=["temperature"], count=count, failure=failure, healthy_s=healthy_s)
    values = [json.loads(m.body())["value"] for m in simulate.messages(plan, START)]
    truth = {timestamp for _, _, timestamp, _ in simulate.ground_truth(plan, START)}
    low, high = simulate.normal_band(THRESHOLDS["temperature"])
    return values, truth, int(high - low)


def test_level_shift_moves_the_level_at_the_failure() -> None:
    values, truth, width = _failing("level-shift")
    assert abs(statistics.mean(values[200:]) - statistics.mean(values[:200])) > 0.13 * width
    assert truth == {START + 1000 * i for i in range(200, 400)}


def test_drift_creeps_from_the_failure() -> None:
    values, truth, width = _failing("drift")
    assert abs(statistics.mean(values[190:200]) - statistics.mean(values[:200])) < 0.01 * width
    assert abs(statistics.mean(values[390:]) - statistics.mean(values[:200])) > 0.9 * width * 0.002 * 190
    assert min(truth) == START + 200_000


def test_spikes_are_rare_and_listed_one_by_one() -> None:
    values, truth, width = _failing("spike")
    mean = statistics.mean(values[:200])
    jumps = {START + 1000 * i for i, value in enumerate(values) if abs(value - mean) > 0.1 * width}
    assert jumps == truth
    assert 2 <= len(truth) <= 30 and min(truth) >= START + 200_000


def test_variance_grows_after_the_failure() -> None:
    values, _, _ = _failing("variance")
    assert statistics.stdev(values[300:]) > 5 * statistics.stdev(values[:200])


def test_flatline_repeats_the_last_healthy_value() -> None:
    values, truth, _ = _failing("flatline")
    assert set(values[199:]) == {values[199]}
    assert len(set(values[:200])) > 50
    assert len(truth) == 200


@pytest.mark.parametrize(("failure", "preset"), [
    ("level-shift", "onset"), ("spike", "onset"), ("variance", "onset"),
    # a slow drift raises the deviation a little a reading: `onset` sees it once its short mean's deviation passes
    # the recent peak by a share of the series' tail (before the tail it never did), `sustained` on every reading
    ("drift", "onset"), ("drift", "sustained"),
    # a stuck sensor repeats its last value: the flat-line rule (a run longer than any the series has had)
    ("flatline", "onset"), ("flatline", "sustained"),
])
def test_the_processors_detector_finds_the_failure_and_nothing_before_it(failure: str, preset: str) -> None:
    from iotpipe.detect import load_processor

    index = load_processor()
    values, truth, _ = _failing(failure, count=800, healthy_s=450.0)  # past either preset's probation
    scored, _ = index.detect_series(((START + 1000 * i, v) for i, v in enumerate(values)),
                                    index.DETECTOR_PRESETS[preset])
    flagged = {START + 1000 * i for i, s in enumerate(scored) if s.score >= index.DEFAULT_SENSITIVITY}
    assert flagged
    assert min(flagged) >= min(truth)  # no false alarm on the healthy signal
    assert min(flagged) - min(truth) <= 60_000  # and found within a minute (a drift took 290 s before the tail)


def test_only_the_failing_devices_sensor_fails() -> None:
    plan = _plan(devices=["sim-001", "sim-002"], count=None, duration_s=30.0, fmt="multi", failure="spike",
                 healthy_s=10.0, failure_sensor="pressure")
    rows = list(simulate.ground_truth(plan, START))
    assert rows and {(device, sensor, failure) for device, sensor, _, failure in rows} == \
        {("sim-001", "pressure", "spike")}
    assert plan.failing_devices == ("sim-001",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"failure": "melt"}, "^failure="),
    ({"failure": "drift", "failing_devices": 2}, "^failing_devices="),
    ({"failure": "drift", "failure_sensor": "rpm"}, "^failure_sensor="),
    ({"failure": "drift", "healthy_s": -1.0}, "^healthy_s="),
    ({"failure": "drift", "count": None, "duration_s": 10.0}, "never start"),
])
def test_failure_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _plan(**kwargs)


def test_without_a_failure_no_ground_truth() -> None:
    assert list(simulate.ground_truth(_plan(), START)) == []


def test_duration_bounds_the_number_of_messages() -> None:
    plan = _plan(count=None, duration_s=5.0, rate_hz=2.0, devices=["a", "b"], fmt="multi")
    assert len(list(simulate.messages(plan, START))) == 5 * 2 * 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 5, "duration_s": 5.0}, "not both"),
    ({"rate_hz": 0.0}, "^rate_hz="),
    ({"rate_hz": 1000.0}, "^rate_hz="),
    ({"anomaly_rate": 1.5}, "^anomaly_rate="),
    ({"count": 0}, "^count="),
    ({"count": None, "duration_s": 10 * 86400.0}, "^duration_s="),
    ({"sensors": ["torque"]}, "torque"),
    ({"devices": ["bad/id"]}, "is not valid"),
    ({"devices": [f"d{i}" for i in range(201)]}, "too many"),
    ({"fmt": "xml"}, "^fmt="),
])
def test_bad_options_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _plan(**kwargs)


class RecordingPublisher:
    """Stands in for the MQTT clients: records messages, acknowledges all but the ids listed as lost."""

    def __init__(self, lost: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.sent: list[simulate.SimMessage] = []
        self.lost = lost
        self.closed = False

    def publish(self, message: simulate.SimMessage) -> Callable[[float], bool]:
        index = len(self.sent)
        self.sent.append(message)
        return lambda _timeout: index not in self.lost

    def close(self) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_run_sends_on_schedule_and_summarises() -> None:
    plan = _plan(devices=["a", "b"], count=12, rate_hz=2.0, anomaly_rate=0.3)
    publisher, clock = RecordingPublisher(lost={3, 7}), FakeClock()
    summary = simulate.run(plan, publisher, start_ms=START, clock=clock, sleep=clock.sleep)

    expected = list(simulate.messages(plan, START))
    assert [m.body() for m in publisher.sent] == [m.body() for m in expected]
    assert summary.sent == 10
    assert summary.failed == 2
    assert summary.readings == 12
    assert summary.anomalies_injected == sum(m.anomalies for m in expected)
    assert publisher.closed
    assert sum(clock.sleeps) == pytest.approx(expected[-1].offset_s)


def test_run_closes_the_clients_when_publishing_fails() -> None:
    class Broken(RecordingPublisher):
        def publish(self, _message: simulate.SimMessage) -> Callable[[float], bool]:
            raise OSError("connection reset")

    publisher = Broken()
    with pytest.raises(OSError):
        simulate.run(_plan(count=3), publisher, start_ms=START)
    assert publisher.closed


def test_publisher_sends_to_the_basic_ingest_topic_when_configured() -> None:
    sent: list[str] = []

    class Client:
        def publish(self, topic: str, *_payload: object, **_options: object) -> object:
            sent.append(topic)
            return type("Info", (), {"rc": 0})()

    message = next(iter(simulate.messages(_plan(count=1), START)))
    simulate.MqttPublisher({message.device_id: Client()}).publish(message)
    simulate.MqttPublisher({message.device_id: Client()}, "SensorDataRule_prod").publish(message)
    assert sent == [f"sensor/{message.device_id}/data",
                    f"$aws/rules/SensorDataRule_prod/sensor/{message.device_id}/data"]


@pytest.mark.parametrize(("url", "host", "port"), [("mqtt://127.0.0.1:1884", "127.0.0.1", 1884),
                                                    ("mqtt://broker.local", "broker.local", 1883)])
def test_parse_broker_url(url: str, host: str, port: int) -> None:
    assert simulate.parse_broker_url(url) == simulate.BrokerTarget(host, port)


def test_parse_broker_url_reads_a_login() -> None:
    target = simulate.parse_broker_url("mqtt://iotpipe-a1:p%40ss:word@127.0.0.1:1884")
    assert target == simulate.BrokerTarget("127.0.0.1", 1884, "iotpipe-a1", "p@ss:word")
    assert "p@ss" not in repr(target)
    assert target.as_dict() == {"host": "127.0.0.1", "port": 1884, "username": "iotpipe-a1", "passwordSet": True}


@pytest.mark.parametrize("url", ["tcp://x:1", "mqtt://", "mqtt://x:notaport", "127.0.0.1:1883"])
def test_parse_broker_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError, match="--broker"):
        simulate.parse_broker_url(url)


def test_load_cert_dir_reads_connection_files(tmp_path: Path) -> None:
    (tmp_path / "press-07.cert.pem").write_text("cert")
    (tmp_path / "press-07.private.key").write_text("key")
    (tmp_path / "press-07.json").write_text(json.dumps({
        "clientId": "press-07", "endpoint": "abc-ats.iot.us-east-1.amazonaws.com", "port": 8883,
        "certificateFile": "press-07.cert.pem", "privateKeyFile": "press-07.private.key"}))
    (loaded,) = simulate.load_cert_dir(tmp_path)
    assert loaded.device_id == "press-07"
    assert loaded.endpoint == "abc-ats.iot.us-east-1.amazonaws.com"
    assert loaded.private_key == tmp_path / "press-07.private.key"
    assert loaded.ca_file is None


def test_load_cert_dir_names_a_missing_key(tmp_path: Path) -> None:
    (tmp_path / "press-07.cert.pem").write_text("cert")
    (tmp_path / "press-07.json").write_text(json.dumps({
        "clientId": "press-07", "endpoint": "e", "port": 8883,
        "certificateFile": "press-07.cert.pem", "privateKeyFile": "press-07.private.key"}))
    with pytest.raises(ConfigError, match=r"press-07\.private\.key"):
        simulate.load_cert_dir(tmp_path)


def test_load_cert_dir_without_devices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="register devices first"):
        simulate.load_cert_dir(tmp_path)


def test_ctrl_c_stops_sending_and_the_summary_counts_what_was_sent() -> None:
    plan = _plan(devices=["a"], count=10, rate_hz=1.0)
    publisher, clock = RecordingPublisher(lost={1}), FakeClock()

    def sleep(seconds: float) -> None:
        if len(publisher.sent) >= 3:
            raise KeyboardInterrupt
        clock.sleep(seconds)

    summary = simulate.run(plan, publisher, start_ms=START, clock=clock, sleep=sleep)
    assert summary.interrupted and summary.as_dict()["interrupted"] is True
    assert summary.sent + summary.failed == len(publisher.sent) < 10
    assert summary.failed == 1 and summary.readings == len(publisher.sent)
    assert publisher.closed


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from iotpipe.cli import main

    return CliRunner().invoke(main, ["simulate", *args])


def test_dry_run_output_json_is_one_document_and_jsonl_a_line_per_message(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ("--dry-run", "--devices", "2", "--count", "4", "--seed", "1")
    document = json.loads(_cli(*args, "--output", "json").stdout)
    assert isinstance(document, list) and len(document) == 4
    assert {item["deviceId"] for item in document} == {"sim-001", "sim-002"}
    assert all(item["payload"]["deviceId"] == item["deviceId"] for item in document)
    lines = _cli(*args, "--output", "jsonl").stdout.splitlines()
    def untimed(item: dict[str, Any]) -> dict[str, Any]:  # each run starts at its own "now"
        return {**item, "payload": {k: v for k, v in item["payload"].items() if k != "timestamp"}}

    assert [untimed(json.loads(line)) for line in lines] == [untimed(item) for item in document]
    bodies = _cli(*args).stdout.splitlines()
    assert len(bodies) == 4 and all(json.loads(body)["deviceId"].startswith("sim-") for body in bodies)


def test_ctrl_c_in_simulate_prints_what_was_sent_and_exits_130(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stopped = simulate.SimSummary(sent=5, failed=0, readings=5, anomalies_injected=0, devices=1, elapsed_s=2.5,
                                  interrupted=True)
    monkeypatch.setattr(simulate, "run_simulation", lambda *_args, **_kwargs: stopped)
    result = _cli("--broker", "mqtt://127.0.0.1:1", "--count", "10")
    assert result.exit_code == 130
    assert result.stdout.startswith("interrupted: sent 5, failed 0")


def test_ctrl_c_while_connecting_exits_130_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def interrupted(*_args: object, **_kwargs: object) -> simulate.SimSummary:
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate, "run_simulation", interrupted)
    result = _cli("--broker", "mqtt://127.0.0.1:1", "--count", "10")
    assert result.exit_code == 130 and "stopped by Ctrl-C" in result.stderr


def test_cli_writes_the_ground_truth_of_the_messages_it_sends(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from iotpipe.cli import main

    truth = tmp_path / "truth.csv"
    result = CliRunner().invoke(main, [
        "simulate", "--dry-run", "--devices", "2", "--rate", "10", "--duration", "30", "--format", "multi",
        "--failure", "level-shift", "--healthy-for", "20", "--ground-truth", str(truth), "--output", "jsonl",
        "--seed", "3", "--config", str(REPO_CONFIG)])
    assert result.exit_code == 0, result.output
    sent = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    faults = {(m["deviceId"], sensor, timestamp) for m in sent for sensor, timestamp in m["faults"]}
    lines = truth.read_text().splitlines()
    assert lines[0] == "deviceId,sensorType,timestamp,failure"
    rows = [line.split(",") for line in lines[1:]]
    assert {(device, sensor, int(timestamp)) for device, sensor, timestamp, _ in rows} == faults
    assert len(rows) == 100 and {(device, sensor, f) for device, sensor, _, f in rows} == \
        {("sim-001", "pressure", "level-shift")}
    first = min(int(timestamp) for _, _, timestamp, _ in rows)
    assert first == sent[0]["payload"]["timestamp"] + 20_000


def test_cli_ground_truth_needs_a_failure(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from iotpipe.cli import main

    result = CliRunner().invoke(main, ["simulate", "--dry-run", "--ground-truth", str(tmp_path / "t.csv"),
                                       "--config", str(REPO_CONFIG)])
    assert result.exit_code == 2
    assert "--failure" in result.output
    assert not (tmp_path / "t.csv").exists()
