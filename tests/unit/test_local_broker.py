"""The broker of ``iotpipe local``: mosquitto and amqtt on free loopback ports, real sockets, paho publishers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from iotpipe.errors import ConfigError, LocalError
from iotpipe.local import broker as broker_module
from iotpipe.local.broker import BrokerSpec, RunningBroker, mosquitto_config, resolve_kind, start_broker
from iotpipe.local.broker import mosquitto as mosquitto_module
from iotpipe.local.broker import running as running_module

KINDS = ("mosquitto", "amqtt")
Message = tuple[str, bytes, "str | None"]


class Inbox:
    """Collects what on_message receives; ``wait_for(n)`` waits (bounded) until n messages arrived."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, client_id: str | None) -> None:
        with self._cond:
            self.messages.append((topic, payload, client_id))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10) -> list[Message]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout=timeout_s)
            return list(self.messages)


def _publisher(port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def _close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _processes_using(path: Path) -> list[int]:
    """Live processes (not zombies) whose command line mentions ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., tuple[RunningBroker, Inbox]]]:
    """Starts brokers for a test and stops them all at its end."""
    running: list[RunningBroker] = []

    def start(kind: str, tls: tuple[int, Path | None] | None = None, **kwargs: object) -> tuple[RunningBroker, Inbox]:
        inbox = Inbox()
        workdir = tmp_path / f"{kind}-{len(running)}"
        spec = BrokerSpec(kind, tls_port=tls[0], client_ca_file=tls[1]) if tls else BrokerSpec(kind)
        broker = start_broker(spec, workdir, inbox, **kwargs)  # type: ignore[arg-type]
        running.append(broker)
        return broker, inbox

    yield start
    for broker in running:
        broker.stop()


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_message_published_right_after_start_reaches_on_message(kind: str, started) -> None:
    broker, inbox = started(kind)
    assert broker.kind == kind
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert broker.port > 0
    client = _publisher(broker.port, "press-7")
    try:
        client.publish("sensor/press-7/data", b'{"deviceId":"press-7","value":71.2}', qos=1).wait_for_publish(5)
        messages = inbox.wait_for(1)
    finally:
        _close(client)
    expected_client = "press-7" if kind == "amqtt" else None
    assert messages == [("sensor/press-7/data", b'{"deviceId":"press-7","value":71.2}', expected_client)]
    assert broker.stats.messages_forwarded == 1
    assert broker.stats.feed_connected


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_basic_ingest_topics_reach_on_message(kind: str, started) -> None:
    broker, inbox = started(kind)
    client = _publisher(broker.port, "press-8")
    try:
        client.publish("$aws/rules/SensorRule/sensor/press-8/data", b"{}", qos=1).wait_for_publish(5)
        client.publish("sensor/press-8/data", b"[]", qos=1).wait_for_publish(5)
        messages = inbox.wait_for(2)
    finally:
        _close(client)
    topics = [topic for topic, _, _ in messages]
    assert topics == ["$aws/rules/SensorRule/sensor/press-8/data", "sensor/press-8/data"]


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_burst_arrives_complete_and_in_order_per_topic(kind: str, started) -> None:
    broker, inbox = started(kind)
    clients = [_publisher(broker.port, f"dev-{n}") for n in range(3)]
    try:
        infos = [c.publish(f"sensor/dev-{n}/data", str(seq).encode(), qos=1)
                 for seq in range(300) for n, c in enumerate(clients)]
        for info in infos:
            info.wait_for_publish(10)
        messages = inbox.wait_for(900)
    finally:
        for c in clients:
            _close(c)
    assert len(messages) == 900
    for n in range(3):
        sequence = [int(payload) for topic, payload, _ in messages if topic == f"sensor/dev-{n}/data"]
        assert sequence == list(range(300))


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_an_exception_in_on_message_is_counted_and_the_feed_goes_on(kind: str, tmp_path: Path) -> None:
    seen: list[bytes] = []

    def on_message(_topic: str, payload: bytes, _client_id: str | None) -> None:
        if payload == b"bad":
            raise ValueError("cannot parse")
        seen.append(payload)

    broker = start_broker(BrokerSpec(kind), tmp_path, on_message)
    try:
        client = _publisher(broker.port, "dev-x")
        for body in (b"bad", b"good"):
            client.publish("sensor/dev-x/data", body, qos=1).wait_for_publish(5)
        _close(client)
        assert _wait_until(lambda: seen == [b"good"])
        stats = broker.stats
        assert (stats.callback_errors, stats.messages_forwarded) == (1, 1)
        assert stats.last_callback_error == "ValueError: cannot parse"
    finally:
        broker.stop()


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_stop_closes_the_port_and_is_idempotent(kind: str, tmp_path: Path) -> None:
    broker = start_broker(BrokerSpec(kind), tmp_path, Inbox())
    port, pid = broker.port, broker.pid
    assert broker.stats.broker_running
    broker.stop()
    broker.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert not broker.stats.broker_running
    assert not any(t.name in ("iotpipe-amqtt", "iotpipe-broker-feed") for t in threading.enumerate())
    if kind == "mosquitto":
        assert pid is not None
        assert not _alive(pid)
        assert _processes_using(tmp_path) == []
    else:
        assert pid is None


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_port_in_use_is_a_clear_error_and_leaves_no_process(kind: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalError, match=rf"MQTT port {port} on 127.0.0.1 is already in use.*--mqtt-port 0"):
            start_broker(BrokerSpec(kind, port=port), tmp_path, Inbox())
    assert _processes_using(tmp_path) == []
    assert not any(t.name in ("iotpipe-amqtt", "iotpipe-broker-feed") for t in threading.enumerate())


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_port_taken_during_start_is_reported_by_the_broker_itself(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the early check passes (someone binds the port just after it); the broker's own failure is recognised
    monkeypatch.setattr(running_module, "_ensure_port_free", lambda _host, _port: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalError, match=rf"MQTT port {port} on 127.0.0.1 is already in use"):
            start_broker(BrokerSpec(kind, port=port), tmp_path, Inbox())
    assert _processes_using(tmp_path) == []


@pytest.mark.mqtt
def test_a_free_port_lost_to_another_program_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = mosquitto_module.free_port
        monkeypatch.setattr(mosquitto_module, "free_port", lambda host: next(ports, None) or real(host))
        broker = start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox())
        try:
            assert broker.port != busy
            assert broker.stats.broker_running
        finally:
            broker.stop()


@pytest.mark.mqtt
def test_mosquitto_dying_at_start_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = mosquitto_module.mosquitto_config
    monkeypatch.setattr(mosquitto_module, "mosquitto_config",
                        lambda *args, **kwargs: real(*args, **kwargs) + "no_such_option 1\n")
    with pytest.raises(LocalError, match=r"mosquitto exited with code \d+ at start.*no_such_option"):
        start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox())
    assert _processes_using(tmp_path) == []


@pytest.mark.mqtt
def test_a_lost_feed_is_reported(tmp_path: Path) -> None:
    lost: list[str] = []
    broker = start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox(), on_feed_lost=lost.append)
    try:
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGKILL)
        assert _wait_until(lambda: bool(lost))
        stats = broker.stats
        assert stats.feed_disconnects == 1
        assert not stats.feed_connected
        assert not stats.broker_running
        assert stats.last_feed_error is not None and str(broker.port) in stats.last_feed_error
    finally:
        broker.stop()


@pytest.mark.mqtt
def test_mosquitto_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from iotpipe.local.broker import BrokerSpec, start_broker
        broker = start_broker(BrokerSpec("mosquitto"), Path({str(tmp_path)!r}), lambda *a: None)
        print(broker.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait(10)
    assert _wait_until(lambda: not _alive(pid), 5)
    assert _processes_using(tmp_path) == []


def test_resolve_kind_prefers_mosquitto_then_amqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(running_module, "mosquitto_binary", lambda: "/usr/sbin/mosquitto")
    monkeypatch.setattr(running_module, "amqtt_available", lambda: True)
    assert resolve_kind("auto") == "mosquitto"
    assert resolve_kind("amqtt") == "amqtt"
    monkeypatch.setattr(running_module, "mosquitto_binary", lambda: None)
    assert resolve_kind("auto") == "amqtt"


def test_missing_brokers_name_how_to_install_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(running_module, "mosquitto_binary", lambda: None)
    monkeypatch.setattr(running_module, "amqtt_available", lambda: False)
    with pytest.raises(LocalError, match=r"sudo apt-get install mosquitto"):
        start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox())
    with pytest.raises(LocalError, match=r"pip install 'iotpipe\[local\]'"):
        resolve_kind("amqtt")
    with pytest.raises(LocalError, match=r"sudo apt-get install mosquitto.*pip install 'iotpipe\[local\]'"):
        resolve_kind("auto")
    assert not any(t.name == "iotpipe-broker-feed" for t in threading.enumerate())


def test_an_unknown_kind_or_a_bad_port_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MQTT broker 'rabbitmq' is not known; choose one of auto, mosquitto"):
        start_broker(BrokerSpec("rabbitmq"), tmp_path, Inbox())
    with pytest.raises(ConfigError, match=r"MQTT port 70000 is out of range"):
        start_broker(BrokerSpec("auto", port=70000), tmp_path, Inbox())


def test_mosquitto_config_is_local_quiet_and_deep(tmp_path: Path) -> None:
    lines = mosquitto_config(18830, "127.0.0.1", tmp_path / "m.log").splitlines()
    for expected in ("listener 18830 127.0.0.1", "allow_anonymous true", "persistence false",
                     f"log_dest file {tmp_path / 'm.log'}", "sys_interval 0", "max_queued_messages 1000000"):
        assert expected in lines


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_port_held_by_another_broker_is_not_mistaken_for_ours(kind: str, started, tmp_path: Path) -> None:
    # the other broker answers MQTT on the port, so only the early bind check can tell it is not ours
    other, _ = started("mosquitto")
    with pytest.raises(LocalError, match=rf"MQTT port {other.port} on 127.0.0.1 is already in use"):
        start_broker(BrokerSpec(kind, port=other.port), tmp_path / "second", Inbox())
    assert _processes_using(tmp_path / "second") == []


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_a_stuck_on_message_fills_a_bounded_queue_and_does_not_hold_up_stop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(running_module, "FEED_QUEUE_SIZE", 3)
    release = threading.Event()
    broker = start_broker(BrokerSpec(kind), tmp_path, lambda *_: release.wait(30))
    try:
        client = _publisher(broker.port, "dev-s")
        for n in range(10):
            client.publish("sensor/dev-s/data", str(n).encode(), qos=0)
        # one message is inside on_message, two wait, the producer waits for room
        assert _wait_until(lambda: broker.stats.queue_depth == 3)
        time.sleep(0.3)
        assert (broker.stats.queue_depth, broker.stats.queue_high_water, broker.stats.messages_received) == (3, 3, 3)
        stopper = threading.Thread(target=broker.stop, kwargs={"timeout_s": 1})
        stopper.start()
        stopper.join(15)
        assert not stopper.is_alive()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), timeout=1):
            pass
        client.loop_stop()
    finally:
        release.set()
        broker.stop()


def _connect_result(port: int, client_id: str) -> tuple[mqtt.Client, str]:
    """Connect and wait for the CONNACK; returns the client (looping) and the reason code's text."""
    done = threading.Event()
    result: list[str] = []
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, reconnect_on_failure=False)

    def on_connect(_c: object, _u: object, _f: object, reason_code: object, _p: object) -> None:
        result.append(str(reason_code))
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    done.wait(5)
    return client, (result[0] if result else "no CONNACK")


@pytest.mark.mqtt
def test_the_device_policy_refuses_unregistered_client_ids(started) -> None:
    asked: list[str] = []

    def is_registered(client_id: str) -> bool:
        asked.append(client_id)
        if client_id == "broken":
            raise RuntimeError("registry unavailable")
        return client_id == "press-1"

    broker, _ = started("amqtt", policy=broker_module.DevicePolicy(is_registered))
    outcomes = {}
    for client_id in ("press-1", "intruder", "broken"):
        client, outcome = _connect_result(broker.port, client_id)
        outcomes[client_id] = outcome
        _close(client)
    assert outcomes["press-1"] == "Success"
    assert outcomes["intruder"] != "Success" and outcomes["intruder"] != "no CONNACK"
    assert outcomes["broken"] == outcomes["intruder"]
    assert asked == ["press-1", "intruder", "broken"]
    assert broker.stats.connections_refused == 2


@pytest.mark.mqtt
def test_the_device_policy_keeps_a_device_to_its_own_topics(started) -> None:
    policy = broker_module.DevicePolicy(lambda client_id: client_id in {"press-1", "press-2"})
    broker, inbox = started("amqtt", policy=policy)
    client, outcome = _connect_result(broker.port, "press-1")
    granted: list[list[str]] = []
    subscribed = threading.Event()

    def on_subscribe(_c: object, _u: object, _mid: object, codes: list[object], _p: object) -> None:
        granted.append([str(code) for code in codes])
        subscribed.set()

    client.on_subscribe = on_subscribe
    try:
        assert outcome == "Success"
        for topic in ("sensor/press-2/data", "$aws/rules/SensorRule/sensor/press-1/data", "sensor/press-1/data"):
            client.publish(topic, topic.encode(), qos=1).wait_for_publish(5)
        client.subscribe([("sensor/press-2/commands", 1), ("sensor/press-1/commands", 1)])
        assert subscribed.wait(5)
        messages = inbox.wait_for(1)
        time.sleep(0.2)
    finally:
        _close(client)
    assert inbox.messages == messages == [("sensor/press-1/data", b"sensor/press-1/data", "press-1")]
    assert broker.stats.publishes_denied == 2
    assert granted[0][0] != "Granted QoS 1" and granted[0][1] == "Granted QoS 1"


def test_the_device_policy_needs_the_embedded_broker(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match=r"device policy needs the embedded broker, not mosquitto: use --broker amqtt"):
        start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox(), policy=broker_module.DevicePolicy(lambda _: True))


# --- TLS ----------------------------------------------------------------------------------------------------


def _client_ca_and_device(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA (PEM bundle for client_ca_file) and a device certificate and key it issued."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, device_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test device CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    device = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "press-1")]))
              .issuer_name(ca_name).public_key(device_key.public_key()).serial_number(2)
              .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
              .sign(ca_key, hashes.SHA256()))
    paths = directory / "client-ca.pem", directory / "press-1.pem", directory / "press-1.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(device.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(device_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


def _moto_device_certificates(directory: Path, count: int) -> list[tuple[Path, Path]]:
    """Certificates and keys as ``iotpipe device register`` gets them from moto's CreateKeysAndCertificate."""
    import boto3
    from moto import mock_aws

    directory.mkdir(parents=True, exist_ok=True)
    pairs = []
    with mock_aws():
        iot = boto3.client("iot", region_name="us-east-1")
        for n in range(count):
            made = iot.create_keys_and_certificate(setAsActive=True)
            cert, key = directory / f"moto-{n}.pem", directory / f"moto-{n}.key"
            cert.write_text(made["certificatePem"])
            key.write_text(made["keyPair"]["PrivateKey"])
            pairs.append((cert, key))
    return pairs


def _tls_publish(broker: RunningBroker, client_id: str, cert: Path | None, key: Path | None) -> str:
    """Connect over TLS (verifying the broker against its local CA and name) and publish once; the outcome."""
    assert broker.tls_port is not None and broker.ca_file is not None
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, reconnect_on_failure=False)
    client.tls_set(ca_certs=str(broker.ca_file), certfile=str(cert) if cert else None,
                   keyfile=str(key) if key else None)
    connected = threading.Event()
    result: list[str] = []
    client.on_connect = lambda _c, _u, _f, code, _p: (result.append(str(code)), connected.set())
    try:
        client.connect("127.0.0.1", broker.tls_port, keepalive=30)
    except OSError as exc:  # ssl.SSLError is an OSError: the handshake failed
        return f"handshake failed: {exc}"
    client.loop_start()
    try:
        if not connected.wait(3):
            return "no CONNACK"
        if result[0] == "Success":
            client.publish(f"sensor/{client_id}/data", b"over tls", qos=1).wait_for_publish(5)
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_tls_with_client_certificates(kind: str, started, tmp_path: Path) -> None:
    client_ca, device_cert, device_key = _client_ca_and_device(tmp_path / "pki")
    broker, inbox = started(kind, tls=(0, client_ca))
    assert broker.tls_url == f"mqtts://127.0.0.1:{broker.tls_port}"
    assert broker.tls_port != broker.port
    assert _tls_publish(broker, "press-1", device_cert, device_key) == "Success"
    expected_client = "press-1" if kind == "amqtt" else None
    assert inbox.wait_for(1) == [("sensor/press-1/data", b"over tls", expected_client)]
    assert _tls_publish(broker, "press-2", None, None) != "Success"
    time.sleep(0.2)
    assert len(inbox.messages) == 1


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_tls_without_client_certificates(kind: str, started) -> None:
    broker, inbox = started(kind, tls=(0, None))
    assert _tls_publish(broker, "press-3", None, None) == "Success"
    assert inbox.wait_for(1) == [("sensor/press-3/data", b"over tls", "press-3" if kind == "amqtt" else None)]


@pytest.mark.mqtt
def test_the_embedded_broker_trusts_the_moto_certificates_it_is_given(started, tmp_path: Path) -> None:
    (listed_cert, listed_key), (other_cert, other_key) = _moto_device_certificates(tmp_path / "devices", 2)
    bundle = tmp_path / "registered.pem"
    bundle.write_text(listed_cert.read_text())
    broker, inbox = started("amqtt", tls=(0, bundle))
    assert _tls_publish(broker, "press-1", listed_cert, listed_key) == "Success"
    assert _tls_publish(broker, "press-9", other_cert, other_key) != "Success"
    assert inbox.wait_for(1) == [("sensor/press-1/data", b"over tls", "press-1")]
    time.sleep(0.2)
    assert len(inbox.messages) == 1


def test_the_local_ca_is_kept_and_the_server_certificate_names_the_host(tmp_path: Path) -> None:
    from cryptography import x509

    first = broker_module.ensure_tls_files(tmp_path, "127.0.0.1")
    ca_pem = first.ca_cert.read_bytes()
    second = broker_module.ensure_tls_files(tmp_path, "192.0.2.10")
    assert second.ca_cert.read_bytes() == ca_pem
    assert first.server_key.stat().st_mode & 0o077 == 0
    server = x509.load_pem_x509_certificate(second.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_pem)
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "192.0.2.10"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_tls_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a client CA file needs a TLS listener"):
        start_broker(BrokerSpec("auto", client_ca_file=tmp_path / "x.pem"), tmp_path, Inbox())
    with pytest.raises(ConfigError, match=r"client CA file .*missing.pem does not exist"):
        start_broker(BrokerSpec("auto", tls_port=0, client_ca_file=tmp_path / "missing.pem"), tmp_path, Inbox())
    with pytest.raises(ConfigError, match=r"both 18830; give them different ports"):
        start_broker(BrokerSpec("auto", port=18830, tls_port=18830), tmp_path, Inbox())


@pytest.mark.mqtt
def test_the_feed_comes_back_after_losing_its_connection_without_replaying_retained_messages(started) -> None:
    lost: list[str] = []
    broker, inbox = started("mosquitto", on_feed_lost=lost.append)
    client = _publisher(broker.port, "press-4")
    try:
        # QoS 0: a QoS 1 copy whose PUBACK the drop cut off would be redelivered, a legitimate duplicate
        client.publish("sensor/press-4/data", b"retained", qos=0, retain=True).wait_for_publish(5)
        inbox.wait_for(1)
        feed_client = broker._backend.client  # type: ignore[attr-defined]
        feed_client.socket().shutdown(socket.SHUT_RDWR)  # the connection drops under the feed
        assert _wait_until(lambda: broker.stats.feed_disconnects == 1 and broker.stats.feed_connected)
        client.publish("sensor/press-4/data", b"after", qos=1).wait_for_publish(5)
        inbox.wait_for(2)
        time.sleep(0.3)
    finally:
        _close(client)
    assert [payload for _, payload, _ in inbox.messages] == [b"retained", b"after"]
    assert len(lost) == 1


def _login_result(port: int, client_id: str, login: tuple[str, str] | None) -> str:
    """The CONNACK's reason (or why there was none) for a connect with ``login`` (None: anonymous)."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311)
    if login is not None:
        client.username_pw_set(*login)
    answered = threading.Event()
    result: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(str(reason))
        answered.set()

    def on_disconnect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(f"disconnected: {reason}")
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        answered.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else "no answer"


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", KINDS)
def test_with_a_login_anonymous_and_wrong_passwords_are_refused(kind: str, tmp_path: Path) -> None:
    if kind == "mosquitto" and broker_module.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    inbox = Inbox()
    spec = BrokerSpec(kind, username="iotpipe-a1b2", password="s3cret-p4ss")
    with start_broker(spec, tmp_path / kind, inbox) as broker:
        assert _login_result(broker.port, "anonymous-1", None) != "Success"
        assert _login_result(broker.port, "wrong-1", ("iotpipe-a1b2", "guess")) != "Success"
        assert _login_result(broker.port, "wrong-2", ("someone", "s3cret-p4ss")) != "Success"
        assert _login_result(broker.port, "right-1", ("iotpipe-a1b2", "s3cret-p4ss")) == "Success"
        publisher = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="press-1",
                                protocol=mqtt.MQTTv311)
        publisher.username_pw_set("iotpipe-a1b2", "s3cret-p4ss")
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        try:
            publisher.publish("sensor/press-1/data", b"{}", qos=1).wait_for_publish(10)
            assert [topic for topic, _, _ in inbox.wait_for(1)] == ["sensor/press-1/data"]  # the feed logged in
        finally:
            _close(publisher)
    if kind == "mosquitto":
        for name in ("mosquitto.conf", "mosquitto.passwd"):
            assert (tmp_path / kind / name).stat().st_mode & 0o077 == 0
        assert "s3cret-p4ss" not in (tmp_path / kind / "mosquitto.passwd").read_text()


def test_mosquitto_password_lines_are_pbkdf2_sha512() -> None:
    line = broker_module.mosquitto_password_line("user", "password", salt=b"\0" * 12)
    user, _, hashed = line.partition(":")
    assert user == "user"
    assert hashed.startswith("$7$101$AAAAAAAAAAAAAAAA$")
    assert mosquitto_config(1883, "127.0.0.1", Path("/x.log"), password_file=Path("/p")).count(
        "allow_anonymous false\npassword_file /p\n") == 1
    assert "allow_anonymous true" in mosquitto_config(1883, "127.0.0.1", Path("/x.log"))


@pytest.mark.mqtt
def test_the_feeds_client_id_cannot_be_guessed(started: Callable[..., tuple[RunningBroker, Inbox]]) -> None:
    if broker_module.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    first, _ = started("mosquitto")
    second, _ = started("mosquitto")
    ids = [broker._backend.client._client_id.decode() for broker in (first, second)]  # type: ignore[attr-defined]
    assert ids[0] != ids[1]
    assert all(str(os.getpid()) not in client_id for client_id in ids)


def test_a_username_needs_a_password() -> None:
    with pytest.raises(ConfigError, match="username and password together"):
        start_broker(BrokerSpec("amqtt", username="u"), Path("/nonexistent"), Inbox())


@pytest.mark.mqtt
def test_mosquittos_log_of_the_previous_run_is_kept(tmp_path: Path) -> None:
    first = start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox())
    first.stop()
    first_log = (tmp_path / "mosquitto.log").read_text(encoding="utf-8")
    assert first_log  # mosquitto logs its start
    second = start_broker(BrokerSpec("mosquitto"), tmp_path, Inbox())
    second.stop()
    assert (tmp_path / "mosquitto.1.log").read_text(encoding="utf-8") == first_log
    assert (tmp_path / "mosquitto.log").exists()
