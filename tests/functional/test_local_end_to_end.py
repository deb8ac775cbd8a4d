"""End to end on free ports: ``iotpipe local up --detach`` -> register a device -> publish with paho over the
socket, bad records included -> readings in DynamoDB, quarantine and raw archive in S3, ``logs`` and ``metrics``
show the batch -> ``local down`` leaves no process. Once with the Python processor, once with the Node twin."""

from __future__ import annotations

import gzip
import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result

from iotpipe.cli import main
from iotpipe.local.processes import process_alive
from iotpipe.local.state import STATE_DIR_VARIABLE, LocalState, read_state
from waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (make install)")

CONFIG = """
[env.local.processor]
runtime = "{runtime}"
batch_size = 100
batching_window_seconds = 1
"""
DEVICE = "press-7"


def iotpipe(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(tmp_path / "state"))
    yield tmp_path
    subprocess.run([sys.executable, "-c", "from iotpipe.cli import main; main()", "local", "down"],
                   env={**os.environ}, capture_output=True, timeout=30, check=False)


def up(workdir: Path, runtime: str, extra: str = "") -> dict[str, Any]:
    (workdir / "iotpipe.toml").write_text(CONFIG.format(runtime=runtime) + extra)
    started = subprocess.run(
        [sys.executable, "-c", "from iotpipe.cli import main; main()", "local", "up", "--detach", "--output", "json"],
        env={**os.environ}, capture_output=True, text=True, timeout=180, check=False)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)  # type: ignore[no-any-return]


def running() -> LocalState:
    """The state file of the run under test (the working directory's ``state``), with its credentials."""
    state = read_state(Path("state").absolute())
    assert state is not None
    return state


def aws(service: str) -> Any:
    """A client of the run's emulator with the run's access key (the only one it accepts)."""
    state = running()
    return boto3.client(service, endpoint_url=state.aws_endpoint, region_name="us-east-1",
                        aws_access_key_id=state.aws_access_key_id, aws_secret_access_key=state.aws_secret_access_key)


def connack(mqtt_url: str, login: tuple[str, str] | None) -> str:
    """The broker's answer to a CONNECT with ``login`` (None: anonymous)."""
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="visitor")
    if login is not None:
        client.username_pw_set(*login)
    answers: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.put(str(reason))
    client.connect(host, int(port))
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def publish(mqtt_url: str, device: str, payloads: list[bytes]) -> None:
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
    client.username_pw_set(running().mqtt_username, running().mqtt_password)
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(f"sensor/{device}/data", payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def gz_lines(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    lines = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            lines += [json.loads(line) for line in body.decode().splitlines()]
    return lines


@pytest.mark.parametrize("runtime", ["python3.13", "nodejs22.x"])
def test_local_pipeline_end_to_end(workdir: Path, runtime: str) -> None:
    if runtime.startswith("nodejs") and shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    info = up(workdir, runtime)
    assert set(info) >= {"env", "awsEndpoint", "mqtt", "stackName"}
    assert info["env"] == "local" and info["awsEndpoint"].startswith("http://127.0.0.1:")
    state = read_state(workdir / "state")
    assert state is not None and process_alive(state.pid)
    # yours alone: random credentials, printed and kept in a 0600 file; the emulator and the broker refuse others
    assert info["awsAccessKeyId"] == state.aws_access_key_id and info["mqttPassword"] == state.mqtt_password
    assert info["awsAccessKeyId"] != "local" and info["mqttUsername"] and info["awsSecretAccessKey"]
    opened = [f"{path} {path.stat().st_mode & 0o777:o}" for path in [workdir / "state", *(workdir / "state").rglob("*")]
              if path.stat().st_mode & 0o077]
    assert opened == []  # every file of the run is 0600, every folder 0700
    assert (workdir / "state" / "state.json").exists() and (workdir / "state" / "broker").is_dir()
    with pytest.raises(ClientError, match="UnrecognizedClientException"):
        boto3.client("dynamodb", endpoint_url=info["awsEndpoint"], region_name="us-east-1",
                     aws_access_key_id="local", aws_secret_access_key="local").list_tables()
    assert connack(info["mqtt"], None) == "Not authorized"
    assert connack(info["mqtt"], (info["mqttUsername"], "guess")) == "Not authorized"

    registered = iotpipe("device", "register", DEVICE, "--env", "local", "--out-dir", str(workdir / "certs"))
    assert registered.exit_code == 0, registered.output

    now = int(time.time() * 1000)
    good = [{"deviceId": DEVICE, "sensorType": "temperature", "value": 20.0 + i, "timestamp": now + i}
            for i in range(20)]
    good.append({"deviceId": DEVICE, "sensorType": "pressure", "value": 400.0, "timestamp": now + 100})  # anomaly
    # JSON that the processor rejects. (A payload that is not JSON never reaches the stream: AWS IoT cannot add
    # receivedAt to it, so the rule fails and runs no action; the rule engine tests cover that.)
    bad = [json.dumps({"deviceId": DEVICE, "sensorType": "temperature", "value": "hot"}).encode(),
           json.dumps({"deviceId": DEVICE, "sensorType": "temperature"}).encode(),
           json.dumps({"deviceId": "someone-else", "sensorType": "temperature", "value": 1.0}).encode()]
    publish(info["mqtt"], DEVICE, [json.dumps(p).encode() for p in good] + bad)

    def stored() -> list[dict[str, Any]] | None:
        found = iotpipe("readings", DEVICE, "--env", "local", "--since", "1h", "--limit", "100", "--output", "json")
        assert found.exit_code == 0, found.output
        rows = json.loads(found.stdout)
        return rows if len(rows) >= len(good) else None

    rows = wait_until(stored, 60, "every valid reading in DynamoDB")
    assert sorted((r["sensorType"], r["value"]) for r in rows) == sorted((p["sensorType"], p["value"]) for p in good)
    assert [r["status"] for r in rows if r["value"] == 400.0] == ["ANOMALY"]

    anomalies = iotpipe("anomalies", "--env", "local", "--since", "1h", "--output", "json")
    assert anomalies.exit_code == 0, anomalies.output
    assert [(a["deviceId"], a["value"]) for a in json.loads(anomalies.stdout)] == [(DEVICE, 400.0)]
    listed = iotpipe("device", "list", "--env", "local", "--output", "json")
    assert listed.exit_code == 0, listed.output
    assert DEVICE in listed.stdout
    assert iotpipe("status", "--env", "local").exit_code == 0

    outputs = json.loads(iotpipe("outputs", "--env", "local", "--output", "json").stdout)
    s3 = aws("s3")
    bucket = outputs["RawDataBucketName"]
    quarantined = wait_until(lambda: gz_lines(s3, bucket, "quarantine/"), 20, "quarantine objects")
    assert len(quarantined) == len(bad)
    assert sorted(json.loads(line["data"])["deviceId"] for line in quarantined) == [DEVICE, DEVICE, "someone-else"]
    assert all(line["reason"] for line in quarantined)
    archived = gz_lines(s3, bucket, "raw/")
    assert len({line["sequenceNumber"] for line in archived}) == len(good) + len(bad)

    logs = wait_until(lambda: (r := iotpipe("logs", "--env", "local", "--since", "10m")).exit_code == 0
                      and "RequestId" in r.stdout and r.stdout, 20, "the batch in the function's logs")
    assert "START RequestId" in logs
    assert "error running docker" not in logs  # moto's own Kinesis trigger is off: the mapping runner delivers
    metrics = wait_until(lambda: json.loads(iotpipe("metrics", "--env", "local", "--since", "10m", "--output",
                                                    "json").stdout)["totals"].get("SensorReadingsProcessed"),
                         20, "SensorReadingsProcessed in metrics")
    assert metrics == len(good)

    doctor = iotpipe("doctor", "--env", "local", "--no-drift", "--output", "json")
    rows = {row["check"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert doctor.exit_code == 0, [row for row in rows.values() if row["status"] == "fail"]
    assert rows["topic rule"] == {"check": "topic rule", "status": "pass", "action": "",
                                  "detail": "SensorDataRule_local runs in iotpipe local's rule engine"}
    assert rows["readings processed (1 h)"]["detail"] == str(len(good))  # once, not per dimension set

    if runtime.startswith("python"):
        redeploy_simulate_and_destroy(workdir, info["mqtt"])

    down = iotpipe("local", "down")
    assert down.exit_code == 0, down.output
    assert not process_alive(state.pid)
    assert not any(process_alive(pid) for pid in state.child_pids)
    assert read_state(workdir / "state") is None
    assert "not running" in iotpipe("local", "down").stdout


def test_local_pipeline_packed_layout_with_batched_messages(workdir: Path) -> None:
    up(workdir, "python3.13", '\n[env.local.storage]\nlayout = "packed"\n')
    simulated = iotpipe("simulate", "--env", "local", "--devices", "2", "--format", "multi", "--batch", "10",
                        "--count", "4", "--rate", "50", "--seed", "3", "--anomaly-rate", "0.05")
    assert simulated.exit_code == 0, simulated.output
    # 2 devices x 2 messages of up to 10 samples (the first holds the rest of its 200 ms period) x 3 sensors
    assert "sent 4, failed 0, readings " in simulated.stdout
    sent = int(simulated.stdout.split("readings ")[1].split(",")[0])
    injected = int(simulated.stdout.split("anomalies injected ")[1].split()[0])
    assert 66 <= sent <= 120

    def readings_of(device: str) -> list[dict[str, Any]] | None:
        found = iotpipe("readings", device, "--env", "local", "--since", "1h", "--limit", "1000", "--output", "json")
        assert found.exit_code == 0, found.output
        rows = json.loads(found.stdout)
        return rows if len(rows) >= sent // 2 else None

    rows = [row for device in ("sim-001", "sim-002") for row in wait_until(lambda d=device: readings_of(d), 60,
                                                                            f"the readings of {device}")]
    assert len(rows) == sent and len({(r["deviceId"], r["timestamp"], r["sensorType"]) for r in rows}) == sent
    assert sum(r["status"] == "ANOMALY" for r in rows) == injected
    outputs = json.loads(iotpipe("outputs", "--env", "local", "--output", "json").stdout)
    dynamodb = aws("dynamodb")
    items = [item for item in dynamodb.scan(TableName=outputs["SensorDataTableName"])["Items"]
             if item["sk"]["S"] != "#detector"]  # the detector's state item of each device (contract 12)
    packed = [item for item in items if "#packed#" in item["sk"]["S"]]
    # one item per device, sensor and minute a message touched, plus one per anomaly
    assert packed and len(items) == len(packed) + injected <= 2 * 2 * 3 * 2 + injected
    assert sum(len(item["readings"]["S"].split(",")) for item in packed) == sent - injected
    assert iotpipe("local", "down").exit_code == 0


def redeploy_simulate_and_destroy(workdir: Path, mqtt_url: str) -> None:
    """A config change deployed with ``iotpipe deploy`` reaches the running pipeline; ``simulate`` finds the
    broker; ``destroy`` removes the stack."""
    config = workdir / "iotpipe.toml"
    # The redeploy also turns Basic Ingest on: simulate then publishes to $aws/rules/<rule>/sensor/<id>/data,
    # which the rule engine routes to that rule with topic(2) still the device id.
    config.write_text(config.read_text() + "\n[env.local.thresholds.temperature]\nmax = 25\n"
                      "\n[env.local.ingest]\nbasic_ingest = true\n")
    log = workdir / "state" / "local.log"
    wired_before = log.read_text().count("event source mapping(s)")
    deployed = iotpipe("deploy", "--env", "local", "--yes")
    assert deployed.exit_code == 0, deployed.output
    wait_until(lambda: log.read_text().count("event source mapping(s)") > wired_before, 20,
               "the running pipeline to pick up the new deployment")
    publish(mqtt_url, "oven-9", [json.dumps({"deviceId": "oven-9", "sensorType": "temperature", "value": 30.0,
                                             "timestamp": int(time.time() * 1000)}).encode()])
    simulated = iotpipe("simulate", "--env", "local", "--devices", "1", "--device-prefix", "oven", "--sensor",
                        "temperature", "--count", "5", "--rate", "20", "--seed", "1")
    assert simulated.exit_code == 0, simulated.output
    assert "sent 5, failed 0" in simulated.stdout
    assert "on $aws/rules/SensorDataRule_local/sensor/<device>/data" in simulated.output

    def readings_of(device: str, count: int) -> Callable[[], list[dict[str, Any]] | None]:
        def check() -> list[dict[str, Any]] | None:
            found = iotpipe("readings", device, "--env", "local", "--since", "1h", "--output", "json")
            rows = json.loads(found.stdout) if found.exit_code == 0 else []
            return rows if len(rows) == count else None
        return check

    (judged,) = wait_until(readings_of("oven-9", 1), 60, "a reading judged by the redeployed threshold")
    assert (judged["status"], judged["reason"]) == ("ANOMALY", "above max 25")  # normal under the old max of 80
    # Stored, not quarantined: topic(2) of the Basic Ingest publish is the device id, as the payload says.
    wait_until(readings_of("oven-001", 5), 60, "the simulated readings (Basic Ingest)")
    # The redeployed mapping resumed where the old one stopped: no record was read (and archived) twice.
    outputs = json.loads(iotpipe("outputs", "--env", "local", "--output", "json").stdout)
    state = read_state(workdir / "state")
    assert state is not None
    s3 = aws("s3")
    sequences = [line["sequenceNumber"] for line in gz_lines(s3, outputs["RawDataBucketName"], "raw/")]
    assert len(sequences) == len(set(sequences)) == 24 + 1 + 5

    revoked = iotpipe("device", "revoke", DEVICE, "--env", "local", "--yes")  # its certificate holds the policy
    assert revoked.exit_code == 0, revoked.output
    destroyed = iotpipe("destroy", "--env", "local", "--yes")
    assert destroyed.exit_code == 0, destroyed.output
    assert "does not exist" in iotpipe("outputs", "--env", "local").stderr
    state = read_state(workdir / "state")
    assert state is not None
    assert_nothing_left()


def assert_nothing_left() -> None:
    """The stack's delete removed what it created (the artefacts bucket is iotpipe's own, outside the stack)."""
    def client(service: str) -> Any:
        return aws(service)

    assert client("dynamodb").list_tables()["TableNames"] == []
    assert client("kinesis").list_streams()["StreamNames"] == []
    assert client("lambda").list_functions()["Functions"] == []
    assert client("sqs").list_queues().get("QueueUrls", []) == []
    assert client("sns").list_topics()["Topics"] == []
    assert client("iot").list_policies()["policies"] == []
    assert client("iot").list_things()["things"] == []
    assert [b["Name"] for b in client("s3").list_buckets()["Buckets"]] == ["iotpipe-artefacts-123456789012-us-east-1"]
    assert client("logs").describe_log_groups()["logGroups"] == []
    assert client("iam").list_roles()["Roles"] == []
