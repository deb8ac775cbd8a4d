"""Seeing detection work on ``iotpipe local``, as a user would: ``local up``, ``simulate`` three devices of which
one's pressure shifts its level inside the static bounds, then ``anomalies`` and the alarm topic: the learned
detector (``rule`` ``model``) flags the failing series after its failure starts, nothing else, and the processor
sends one notification for that episode.

Not seed-dependent: the level shift is 15 noise deviations (``iotpipe.simulate.signals``), and the test deploys a
sensitivity of 0.9 (a novel deviation of 6 spreads) where the default 0.5 (2 spreads) still lets a healthy series'
noise raise an alarm after its probation for a few seeds (2 series of 270 over 30 seeds; 31 before the recent
peak was learned during probation). ``test_the_failure_stands_out_whatever_the_seed`` runs the processor's own
detector over the simulated series of 30 seeds and checks the margin on both sides; the local run uses one fixed
seed."""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from iotpipe.archive import load_processor
from iotpipe.config import build_config
from iotpipe.simulate.signals import SignalModel, device_rng
from local_run import cli, local_workdir, stored_readings

SENSITIVITY = 0.9
CONFIG = f"""
[env.local.processor]
batch_size = 100
batching_window_seconds = 1

[env.local.thresholds.temperature]
sensitivity = {SENSITIVITY}

[env.local.thresholds.pressure]
sensitivity = {SENSITIVITY}

[env.local.thresholds.vibration]
sensitivity = {SENSITIVITY}
"""
DEVICES = ("sim-001", "sim-002", "sim-003")
RATE_HZ, HEALTHY_S, DURATION_S = 20, 10.0, 15
REPO = Path(__file__).resolve().parents[2]


def test_the_failure_stands_out_whatever_the_seed() -> None:
    """The processor's detector over what ``simulate`` sends (the local run's devices, rate and failure) for 30
    seeds: no healthy reading reaches the sensitivity, and the failing series does after its failure starts."""
    index = load_processor(REPO / "handler" / "python" / "index.py")
    thresholds = build_config({}, "local", {}).thresholds
    healthy_peak, failing_low, alarmed_at_default = 0.0, 1.0, 0
    for seed in range(30):
        for device in DEVICES:
            for sensor, threshold in thresholds.items():
                failing = (device, sensor) == ("sim-001", "pressure")
                model = SignalModel(sensor, threshold, device_rng(seed, device, sensor),
                                    "level-shift" if failing else None, HEALTHY_S)
                points = [(i * 1000 // RATE_HZ, model.step(i / RATE_HZ)) for i in range(DURATION_S * RATE_HZ)]
                scores = [s.score for s in index.detect_series(points, index.DETECTOR_PRESETS["onset"])[0]]
                onset = int(HEALTHY_S * RATE_HZ)
                healthy = scores[:onset] if failing else scores
                healthy_peak = max(healthy_peak, *healthy)
                alarmed_at_default += max(healthy) >= index.DEFAULT_SENSITIVITY
                if failing:
                    failing_low = min(failing_low, max(scores[onset:]))
    assert healthy_peak < SENSITIVITY <= failing_low, (healthy_peak, failing_low)
    # at the default sensitivity a healthy series seldom alarms once its probation ends (11 of the 270 here: 150
    # readings are a young series, whose tail is still an estimate; 2 before the tail, which scored NAB 4 points
    # lower; 31 when the recent peak started from 0 at the end of probation)
    assert alarmed_at_default <= 15, alarmed_at_default


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from local_workdir(tmp_path, monkeypatch, CONFIG)


def alarm_inbox(info: dict[str, Any], topic_arn: str) -> tuple[Any, str]:
    """An SQS queue of the emulator subscribed to the alarm topic, as an e-mail address would be."""
    credentials = {"endpoint_url": info["awsEndpoint"], "region_name": "us-east-1",
                   "aws_access_key_id": info["awsAccessKeyId"], "aws_secret_access_key": info["awsSecretAccessKey"]}
    sqs, sns = boto3.client("sqs", **credentials), boto3.client("sns", **credentials)
    queue = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return sqs, queue


def received(sqs: Any, queue: str) -> list[dict[str, Any]]:
    """Every notification in the queue (SNS envelopes), read until it is empty (bounded)."""
    messages: list[dict[str, Any]] = []
    for _ in range(100):
        page = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not page:
            break
        messages += [json.loads(m["Body"]) for m in page]
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                                                          for n, m in enumerate(page)])
    return messages


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")
def test_a_failing_sensor_is_flagged_by_the_model_and_notified_once(workdir: Path) -> None:
    started = cli("local", "up", "--detach", "--output", "json")
    assert started.returncode == 0, started.stderr
    info: dict[str, Any] = json.loads(started.stdout)
    outputs = json.loads(cli("outputs", "--env", "local", "--output", "json").stdout)
    sqs, inbox = alarm_inbox(info, outputs["AlarmTopicArn"])
    # 20 samples a second for 15 s: 200 healthy samples (past the 150 readings of probation), then 100 with
    # pressure's level shifted on sim-001
    simulated = cli("simulate", "--env", "local", "--devices", str(len(DEVICES)), "--format", "multi", "--rate",
                    str(RATE_HZ), "--duration", str(DURATION_S), "--failure", "level-shift", "--seed", "4",
                    "--ground-truth", "truth.csv", "--output", "json")
    assert simulated.returncode == 0, simulated.stderr
    summary = json.loads(simulated.stdout)
    assert summary["failed"] == 0 and summary["readings"] == 3 * 300 * 3
    with (workdir / "truth.csv").open(newline="") as handle:
        truth = list(csv.DictReader(handle))
    assert len(truth) == summary["failedReadings"] == 100
    assert {(row["deviceId"], row["sensorType"], row["failure"]) for row in truth} == \
        {("sim-001", "pressure", "level-shift")}
    failure_start = min(int(row["timestamp"]) for row in truth)

    deadline = time.monotonic() + 180
    count = stored_readings(info, outputs["SensorDataTableName"])
    while count < summary["readings"] and time.monotonic() < deadline:
        time.sleep(1)
        count = stored_readings(info, outputs["SensorDataTableName"])
    assert count == summary["readings"]

    listed = cli("anomalies", "--env", "local", "--since", "1h", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    anomalies = json.loads(listed.stdout)
    assert anomalies, "the level shift was not flagged"
    assert {(a["deviceId"], a["sensorType"], a["rule"]) for a in anomalies} == {("sim-001", "pressure", "model")}
    assert all(a["timestamp"] >= failure_start and a["score"] >= SENSITIVITY for a in anomalies)
    assert all(a["expectedLow"] < a["expectedHigh"] for a in anomalies)
    # One episode (its anomalies are seconds apart, episode_quiet is an hour): one notification, of its first one.
    # The processor publishes it before it writes the state of the batch that stored those readings.
    notifications = [n for n in received(sqs, inbox) if " anomaly: " in n.get("Subject", "")]
    assert [n["Subject"].split("] ", 1)[1] for n in notifications] == ["anomaly: sim-001 pressure"]
    first = min(anomalies, key=lambda a: a["timestamp"])
    assert "Rule:     model (expected " in notifications[0]["Message"]
    assert f"Value:    {first['value']:g} psi" in notifications[0]["Message"]
    assert cli("local", "down").returncode == 0
