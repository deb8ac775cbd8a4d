"""`iotpipe simulate` against a real mosquitto broker on a free loopback port (plain and TLS with client certs)."""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.devices import DeviceFiles, RegisteredDevice, connection_settings

pytestmark = pytest.mark.mqtt

CONFIG = """
[defaults.thresholds.temperature]
min = 10
max = 80
unit = "celsius"

[defaults.thresholds.spindle_speed]
min = 1000
max = 3000
unit = "rpm"
"""
THRESHOLDS = {"temperature": (10, 80, "celsius"), "pressure": (30, 150, "psi"), "vibration": (None, 5, "mm/s"),
              "spindle_speed": (1000, 3000, "rpm")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start_broker(tmp_path: Path, extra: str = "") -> Iterator[Broker]:
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (CI does this in .ci/run)")
    port = _free_port()
    log = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    # run as the current user: started as root, mosquitto would switch to "mosquitto", which cannot read
    # pytest's 0700 tmp directories
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"user {getpass.getuser()}\nlog_dest stdout\nlog_type all\nconnection_messages true\n{extra}")
    log_handle = log.open("wb")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"mosquitto exited: {log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("mosquitto did not listen within 10 s")
        yield Broker(port, log, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log_handle.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from _start_broker(tmp_path)


@dataclass
class Subscriber:
    client: Any
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # let any extra (unexpected) message arrive so the count check can catch it
        with self.lock:
            return list(self.messages)


def _subscribe(port: int, tls: dict[str, str] | None = None) -> Iterator[Subscriber]:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
    subscriber = Subscriber(client)
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        with subscriber.lock:
            subscriber.messages.append((message.topic, json.loads(message.payload)))

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe("sensor/+/data", qos=1)
    if tls:
        client.tls_set(**tls)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "subscriber did not get SUBACK"
        yield subscriber
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    yield from _subscribe(broker.port)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "iotpipe.toml").write_text(CONFIG)
    monkeypatch.chdir(work)
    return work


def _outside(sensor: str, value: float) -> bool:
    low, high, _ = THRESHOLDS[sensor]
    return (low is not None and value < low) or (high is not None and value > high)


def _without_timestamp(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "timestamp"}


@pytest.mark.usefixtures("workdir")
def test_simulate_sends_n_contract_messages_one_client_per_device(broker: Broker, subscriber: Subscriber) -> None:
    count, seed, rate = 200, 42, 0.25
    args = ["simulate", "--devices", "3", "--rate", "50", "--count", str(count), "--seed", str(seed),
            "--anomaly-rate", str(rate)]
    result = CliRunner().invoke(main, [*args, "--broker", f"mqtt://127.0.0.1:{broker.port}"])
    assert result.exit_code == 0, result.output + result.stderr
    received = subscriber.wait_for(count)
    assert len(received) == count

    devices = {"sim-001", "sim-002", "sim-003"}
    for topic, payload in received:
        assert set(payload) == {"deviceId", "sensorType", "value", "timestamp", "unit"}
        assert topic == f"sensor/{payload['deviceId']}/data"
        assert payload["unit"] == THRESHOLDS[payload["sensorType"]][2]
        assert isinstance(payload["timestamp"], int) and abs(payload["timestamp"] - time.time() * 1000) < 600_000
    assert {payload["deviceId"] for _, payload in received} == devices
    assert {payload["sensorType"] for _, payload in received} == set(THRESHOLDS)  # config adds spindle_speed

    anomalous = sum(_outside(p["sensorType"], p["value"]) for _, p in received)
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"sent {count}, failed 0, readings {count}, anomalies injected {anomalous} ")
    assert abs(anomalous / count - rate) < 0.1  # fixed seed: this share is the same on every run

    # the same seed prints the same payloads with --dry-run (timestamps aside), per device in order
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0
    expected = [json.loads(line) for line in dry.stdout.splitlines()]
    for device in devices:
        assert [_without_timestamp(p) for _, p in received if p["deviceId"] == device] == \
            [_without_timestamp(p) for p in expected if p["deviceId"] == device]

    # one MQTT connection per device, each with the device id as client id
    connected = set(re.findall(r"New client connected from \S+ as (\S+)", broker.log_text()))
    assert devices <= connected
    assert "progress" not in result.stdout and "simulating 3 device(s)" in result.stderr


@pytest.mark.usefixtures("workdir")
def test_simulate_multi_format(broker: Broker, subscriber: Subscriber) -> None:
    result = CliRunner().invoke(main, ["simulate", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--count", "10",
                                       "--rate", "50", "--format", "multi", "--seed", "1", "--anomaly-rate", "0",
                                       "--output", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # SimSummary.as_dict()
    assert (summary["sent"], summary["failed"], summary["readings"], summary["anomaliesInjected"],
            summary["devices"]) == (10, 0, 10 * len(THRESHOLDS), 0, 1)
    received = subscriber.wait_for(10)
    assert len(received) == 10
    for topic, payload in received:
        assert topic == "sensor/sim-001/data"
        assert set(payload) == {"deviceId", "timestamp", "readings"}
        assert set(payload["readings"]) == set(THRESHOLDS)
        assert not any(_outside(sensor, value) for sensor, value in payload["readings"].items())


@pytest.mark.usefixtures("workdir")
def test_simulate_without_a_broker_is_a_clear_error() -> None:
    port = _free_port()
    result = CliRunner().invoke(main, ["simulate", "--broker", f"mqtt://127.0.0.1:{port}", "--count", "1"])
    assert result.exit_code == 1
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr


# --- TLS with device certificates (what --cert-dir does against AWS IoT) -------------------------------


def _pki(base: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a device certificate, all PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def cert(subject: str, public: Any, issuer: str, signer: Any, ca: bool,
             san: x509.SubjectAlternativeName | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(public).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def pem_key(k: Any) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key, server_key, device_key = key(), key(), key()
    ca = cert("test-ca", ca_key.public_key(), "test-ca", ca_key, True)
    server = cert("127.0.0.1", server_key.public_key(), "test-ca", ca_key, False,
                  x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    device = cert("press-07", device_key.public_key(), "test-ca", ca_key, False)
    pem = serialization.Encoding.PEM
    return {"ca": write(base / "ca.pem", ca.public_bytes(pem)),
            "server_cert": write(base / "server.pem", server.public_bytes(pem)),
            "server_key": write(base / "server.key", pem_key(server_key)),
            "device_cert": write(base / "press-07.cert.pem", device.public_bytes(pem)),
            "device_key": write(base / "press-07.private.key", pem_key(device_key))}


@pytest.mark.usefixtures("workdir")
def test_simulate_cert_dir_uses_tls_with_the_device_certificate(tmp_path: Path) -> None:
    pki_dir, cert_dir = tmp_path / "pki", tmp_path / "certs"
    pki_dir.mkdir()
    cert_dir.mkdir()
    pki = _pki(pki_dir)
    shutil.copy(pki["device_cert"], cert_dir / "press-07.cert.pem")
    shutil.copy(pki["device_key"], cert_dir / "press-07.private.key")
    shutil.copy(pki["ca"], cert_dir / "ca.pem")
    extra = (f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
             "require_certificate true\nuse_identity_as_username true\n")
    broker_iter = _start_broker(tmp_path, extra)
    broker = next(broker_iter)
    try:
        # the connection file exactly as `iotpipe device register` writes it (plus a private CA for this test)
        files = DeviceFiles(cert_dir / "press-07.cert.pem", cert_dir / "press-07.private.key",
                            cert_dir / "press-07.json")
        registered = RegisteredDevice("press-07", "arn", "c1", "arn:cert", "policy", "127.0.0.1", broker.port,
                                      "sensor/press-07/data", files)
        (cert_dir / "press-07.json").write_text(json.dumps({**connection_settings(registered), "caFile": "ca.pem"}))
        tls = {"ca_certs": str(pki["ca"]), "certfile": str(pki["device_cert"]), "keyfile": str(pki["device_key"])}
        sub_iter = _subscribe(broker.port, tls)
        subscriber = next(sub_iter)
        try:
            result = CliRunner().invoke(main, ["simulate", "--cert-dir", str(cert_dir), "--count", "5",
                                               "--rate", "50", "--seed", "3"])
            assert result.exit_code == 0, result.output
            received = subscriber.wait_for(5)
        finally:
            sub_iter.close()
    finally:
        broker_iter.close()
    assert [topic for topic, _ in received] == ["sensor/press-07/data"] * 5
    assert {payload["deviceId"] for _, payload in received} == {"press-07"}
    assert re.search(r"New client connected from \S+ as press-07 .*u'press-07'", broker.log_text())


@pytest.mark.usefixtures("workdir")
def test_simulate_cert_dir_refused_without_a_trusted_certificate(tmp_path: Path) -> None:
    pki_dir, cert_dir = tmp_path / "pki", tmp_path / "certs"
    pki_dir.mkdir()
    cert_dir.mkdir()
    pki = _pki(pki_dir)
    other = _pki(tmp_path)  # a device certificate from a CA the broker does not trust
    shutil.copy(other["device_cert"], cert_dir / "press-07.cert.pem")
    shutil.copy(other["device_key"], cert_dir / "press-07.private.key")
    shutil.copy(pki["ca"], cert_dir / "ca.pem")
    extra = (f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
             "require_certificate true\n")
    broker_iter = _start_broker(tmp_path / "pki", extra)
    broker = next(broker_iter)
    try:
        (cert_dir / "press-07.json").write_text(json.dumps({
            "clientId": "press-07", "endpoint": "127.0.0.1", "port": broker.port, "caFile": "ca.pem",
            "certificateFile": "press-07.cert.pem", "privateKeyFile": "press-07.private.key"}))
        result = CliRunner().invoke(main, ["simulate", "--cert-dir", str(cert_dir), "--count", "1"])
    finally:
        broker_iter.close()
    assert result.exit_code == 1
    assert f"device press-07: 127.0.0.1:{broker.port} refused the connection" in result.stderr
    assert "certificate is active" in result.stderr


def test_a_device_registered_for_a_local_broker_publishes_to_it(broker: Broker, subscriber: Subscriber,
                                                                tmp_path: Path) -> None:
    # `device register --env local` used to write AWS IoT's (moto's) TLS endpoint: simulate --cert-dir could not
    # connect. With the local broker's URL the connection file points there, without TLS.
    import boto3
    from moto import mock_aws

    from iotpipe import devices, simulate

    certs = tmp_path / "certs"
    with mock_aws():
        iot = boto3.client("iot", region_name="us-east-1")
        iot.create_policy(policyName="SensorDevicePolicy-local", policyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
        devices.register_device(iot, thing_name="press-01", policy_name="SensorDevicePolicy-local", out_dir=certs,
                                environment="local", broker_url=f"mqtt://127.0.0.1:{broker.port}")
    settings = json.loads((certs / "press-01.json").read_text())
    assert (settings["endpoint"], settings["port"]) == ("127.0.0.1", broker.port)
    assert settings["broker"] == {"url": f"mqtt://127.0.0.1:{broker.port}", "tls": False}
    credentials = simulate.load_cert_dir(certs)
    assert [c.tls for c in credentials] == [False]
    from iotpipe.config import SEED_THRESHOLDS

    plan = simulate.build_plan(["press-01"], {"temperature": SEED_THRESHOLDS["temperature"]}, count=3, rate_hz=50)
    summary = simulate.run_simulation(plan, credentials=credentials, ack_timeout_s=5)
    assert (summary.sent, summary.failed) == (3, 0)
    assert [topic for topic, _payload in subscriber.wait_for(3)] == ["sensor/press-01/data"] * 3


@pytest.mark.mqtt
def test_devices_registered_for_iotpipe_local_log_in_with_the_runs_credentials(tmp_path: Path) -> None:
    # iotpipe local's broker takes only its run's login, which changes every run and is never in a connection
    # file: simulate --cert-dir adds the running one's to the files that point at it.
    import boto3
    from moto import mock_aws

    from iotpipe import devices, simulate
    from iotpipe.config import SEED_THRESHOLDS
    from iotpipe.local.broker import BrokerSpec, start_broker

    received: list[str] = []
    login = ("iotpipe-run-1", "p4ss-of-the-run")
    with start_broker(BrokerSpec("mosquitto", username=login[0], password=login[1]), tmp_path / "broker",
                      lambda topic, _payload, _client: received.append(topic)) as broker:
        certs = tmp_path / "certs"
        with mock_aws():
            iot = boto3.client("iot", region_name="us-east-1")
            iot.create_policy(policyName="SensorDevicePolicy-local", policyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect",
                                                         "Resource": "*"}]}))
            devices.register_device(iot, thing_name="press-02", policy_name="SensorDevicePolicy-local",
                                    out_dir=certs, environment="local", broker_url=broker.url)
        assert "p4ss-of-the-run" not in (certs / "press-02.json").read_text()
        plan = simulate.build_plan(["press-02"], {"temperature": SEED_THRESHOLDS["temperature"]}, count=2,
                                   rate_hz=50)
        without = simulate.load_cert_dir(certs)
        with pytest.raises(simulate.PublishError):  # the broker refuses a device without the run's login
            simulate.run_simulation(plan, credentials=without, ack_timeout_s=5)
        logged_in = simulate.with_login(without, broker.url, *login)
        summary = simulate.run_simulation(plan, credentials=logged_in, ack_timeout_s=5)
        assert (summary.sent, summary.failed) == (2, 0)
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["sensor/press-02/data"] * 2
    assert simulate.with_login(without, "mqtt://127.0.0.1:1", *login) == without  # another broker's: unchanged
