"""The MQTT broker of ``iotpipe local``: mosquitto (a child process) or amqtt (embedded), and the feed.

``start_broker`` starts a broker on a loopback port and a *feed* that hands every published message to
``on_message(topic, payload, client_id)`` on one dispatcher thread, in arrival order (so in order per topic),
including the basic-ingest topics ``$aws/rules/...`` that a ``#`` subscription does not match.

- **mosquitto** runs as a child process in its own process group, with ``PR_SET_PDEATHSIG`` so it cannot outlive
  a killed parent. The feed is an internal paho client subscribed at QoS 1 to ``#`` and ``$aws/rules/#``; it
  cannot see who published, so ``client_id`` is ``None``.
- **amqtt** (``pip install 'iotpipe[local]'``) runs in-process on its own event loop thread; a broker plugin
  feeds messages with the publisher's client id (AWS IoT SQL ``clientid()``). ``$aws/rules/...`` publishes, which
  amqtt would refuse (it closes the connection of a client publishing to a ``$`` topic), are fed to the rule
  engine and, like AWS IoT basic ingest, not delivered to subscribers. With a ``DevicePolicy`` it enforces the
  template's device policy: registered things only, each publishing to its own ``sensor/<thing>/data``.

TLS (``BrokerSpec.tls_port``): a second listener with a server certificate from a local CA kept in
``<workdir>/tls/ca.pem`` (devices verify the broker with it; ``RunningBroker.ca_file``). With ``client_ca_file`` a
client must present a certificate that bundle trusts. The embedded broker trusts a certificate listed in the
bundle as it is (partial chain), so the certificates ``iotpipe device register`` gets from moto work: moto signs
them with the device's own key under an issuer ("Moto") that has no CA certificate. mosquitto cannot do that
(it needs a chain to a CA in the bundle), so with moto's certificates use the embedded broker.

Credentials (``BrokerSpec.username`` and ``password``, which ``iotpipe local`` makes random per run): the broker
then refuses anonymous clients and any other password (mosquitto: ``allow_anonymous false`` and a password file of
PBKDF2-SHA512 hashes written here, no ``mosquitto_passwd`` needed; amqtt: an auth plugin), and the feed logs in
with them under a random client id, so no other client can take over its session.

Default for ``auto``: mosquitto when it is installed, amqtt otherwise. ``make bench-broker`` on the 2-core
development machine (4 paho publisher processes, ~120-byte JSON, 20,000 messages per row; four runs while other
work kept the load average between 1 and 8, hence the ranges), delivered to ``on_message``, none lost:

=========================  ==================  ==================
row                        mosquitto + feed    amqtt (in-process)
=========================  ==================  ==================
full speed, QoS 0          8,400-17,700 /s     3,700-7,400 /s
full speed, QoS 1          4,900-7,100 /s      2,600-3,500 /s
paced 2,000/s QoS 1: p50   0.3-0.7 ms          0.6-480 ms
paced 2,000/s QoS 1: p99   1.3 ms-1.3 s        44 ms-1.6 s
CPU per 1,000 msgs, QoS 1  57-120 ms (full),   174-240 ms (full),
                           123-190 ms (paced)  229-290 ms (paced)
=========================  ==================  ==================

The pipeline's target (>= 2,000 readings/s and >= 1,000 single-reading msgs/s end to end, the broker sharing 2
cores with moto and the processor) is a CPU budget: at 2,000 msgs/s QoS 1 mosquitto and its feed take 0.25-0.4
of a core (mosquitto itself ~0.06; the rest is the Python feed), amqtt 0.45-0.6 of a core, all of it in the
pipeline's own process and under its GIL; in every run amqtt delivered about half of mosquitto's rate at full
speed and had the worse tail latency at 2,000/s. amqtt stays the fallback (``pip install 'iotpipe[local]'``, no
system package) and the choice when a rule needs ``clientid()`` or the device policy is to be enforced.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import errno
import functools
import getpass
import hashlib
import hmac
import importlib.util
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from iotpipe import contract as naming
from iotpipe.errors import ConfigError, LocalError
from iotpipe.local.state import rotate_log

OnMessage = Callable[[str, bytes, str | None], None]
OnFeedLost = Callable[[str], None]

KINDS = ("auto", "mosquitto", "amqtt")
FEED_TOPICS = ("#", "$aws/rules/#")
BASIC_INGEST_PREFIX = naming.BASIC_INGEST_PREFIX
FEED_QUEUE_SIZE = 100_000
# mosquitto is often in /usr/sbin, which is not on a normal user's PATH.
MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_MOSQUITTO = (
    "install it with `sudo apt-get install mosquitto` (or `brew install mosquitto`), or use --broker amqtt"
)
INSTALL_AMQTT = "install it with `pip install 'iotpipe[local]'`"
PORT_RETRIES = 3
LOG_TAIL_LINES = 15

_log = logging.getLogger(__name__)
# amqtt logs warnings (e.g. undelivered internal broadcasts at shutdown); without this, Python's last-resort
# handler would print them on stderr of any program that has not configured logging
logging.getLogger("amqtt").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class BrokerSpec:
    """Which broker to run and where: ``kind`` auto|mosquitto|amqtt, ``port`` 0 = a free port.

    ``tls_port``: also a TLS listener (0 = a free port; None = none), with a server certificate from a local CA
    made in the workdir. ``client_ca_file``: TLS clients must then present a certificate this PEM bundle trusts.
    ``username`` and ``password``: the only client login the broker accepts (None: anonymous clients).
    """

    kind: str = "auto"
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int | None = None
    client_ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TlsFiles:
    """The local CA (devices verify the broker with ``ca_cert``) and the broker's certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class DevicePolicy:
    """The device policy the embedded broker enforces, as the template's SensorDevicePolicy does on AWS IoT.

    A client connects only with the client id of a registered thing (``is_registered``, called off the event
    loop on each CONNECT), publishes only to ``sensor/<client id>/data`` (with ``basic_ingest_rule``, as the
    template's policy with ``ingest.basic_ingest``: only to ``$aws/rules/<rule>/sensor/<client id>/data``),
    subscribes to and receives only ``sensor/<client id>/commands``.
    """

    is_registered: Callable[[str], bool]
    publish_topic: str = naming.device_topic("{client_id}")
    command_topic: str = naming.command_topic("{client_id}")
    basic_ingest_rule: str | None = None

    def allows(self, action: str, client_id: str, topic: str) -> bool:
        """Whether ``client_id`` may ``action`` (publish | subscribe | receive) on ``topic``."""
        if action == "publish":
            own = self.publish_topic.format(client_id=client_id)
            if self.basic_ingest_rule:
                own = f"{BASIC_INGEST_PREFIX}{self.basic_ingest_rule}/{own}"
            return topic == own
        return topic == self.command_topic.format(client_id=client_id)


@dataclass(frozen=True)
class BrokerStats:
    """A snapshot of the broker and its feed.

    ``messages_received``: handed to the dispatcher; ``messages_forwarded``: ``on_message`` returned;
    ``callback_errors``: ``on_message`` raised (the message is counted here, not forwarded);
    ``feed_disconnects``: the feed lost the broker unexpectedly (mosquitto only; it reconnects by itself).
    """

    kind: str
    messages_received: int
    messages_forwarded: int
    callback_errors: int
    last_callback_error: str | None
    queue_depth: int
    queue_high_water: int
    feed_connected: bool
    feed_disconnects: int
    last_feed_error: str | None
    broker_running: bool
    connections_refused: int = 0
    publishes_denied: int = 0


def resolve_kind(kind: str) -> str:
    """``auto`` -> mosquitto when installed, else amqtt when importable; LocalError when the kind is missing."""
    if kind not in KINDS:
        raise ConfigError(f"MQTT broker {kind!r} is not known; choose one of {', '.join(KINDS)}")
    if kind == "mosquitto":
        if mosquitto_binary() is None:
            raise LocalError(f"the mosquitto broker is not installed (not on PATH): {INSTALL_MOSQUITTO}")
        return kind
    if kind == "amqtt":
        if not amqtt_available():
            raise LocalError(f"the amqtt broker is not installed: {INSTALL_AMQTT}")
        return kind
    if mosquitto_binary() is not None:
        return "mosquitto"
    if amqtt_available():
        return "amqtt"
    raise LocalError(
        f"no MQTT broker is installed: for mosquitto (preferred) {INSTALL_MOSQUITTO}; for the embedded one, "
        f"{INSTALL_AMQTT}"
    )


def mosquitto_binary() -> str | None:
    """The mosquitto executable: on PATH, or in an sbin directory where Debian puts it; None if absent."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_FALLBACKS if os.access(path, os.X_OK)), None)


def amqtt_available() -> bool:
    """Whether the amqtt package can be imported."""
    return importlib.util.find_spec("amqtt") is not None


def start_broker(
    spec: BrokerSpec,
    workdir: Path,
    on_message: OnMessage,
    *,
    ready_timeout_s: float = 5,
    on_feed_lost: OnFeedLost | None = None,
    policy: DevicePolicy | None = None,
) -> RunningBroker:
    """Start the broker of ``spec`` and its feed; return once a message published now reaches ``on_message``.

    ``on_message(topic, payload, client_id)`` runs on one dispatcher thread, in arrival order; an exception in
    it is counted in ``stats`` and does not stop the feed. ``on_feed_lost(reason)`` is called (on the feed's
    thread) when the feed loses the broker unexpectedly. Config and log files go to ``workdir``. ``policy``
    (amqtt only) refuses clients that are not registered things and drops publishes outside their own topic.

    mosquitto dies with the thread that started it (``PR_SET_PDEATHSIG``): call this from a thread that lives
    as long as the broker, such as the main thread. Raises LocalError when the port is in use, the kind is not
    installed, or the broker dies at start (with the end of its log); nothing is left running on failure.
    """
    _validate(spec)
    kind = resolve_kind(spec.kind)
    if policy is not None and kind != "amqtt":
        raise LocalError(
            f"enforcing the device policy needs the embedded broker, not {kind}: use --broker amqtt "
            f"({INSTALL_AMQTT} if it is missing)"
        )
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalError(f"cannot create the broker's directory {workdir}: {exc.strerror}") from None
    if spec.port:
        _ensure_port_free(spec.host, spec.port)
    if spec.tls_port:
        _ensure_port_free(spec.host, spec.tls_port, tls=True)
    tls = ensure_tls_files(workdir / "tls", spec.host) if spec.tls_port is not None else None
    dispatcher = _Dispatcher(on_message, FEED_QUEUE_SIZE)
    feed = _FeedState(on_feed_lost)
    backend: _Backend
    try:
        if kind == "mosquitto":
            backend = _start_mosquitto(spec, workdir, dispatcher, feed, ready_timeout_s, tls)
        else:
            backend = _start_amqtt(spec, dispatcher, feed, ready_timeout_s, policy, tls)
    except BaseException:
        dispatcher.close(0)
        raise
    return RunningBroker(kind, spec.host, backend.port, backend, dispatcher, feed, tls)


class RunningBroker:
    """A started broker and its feed; ``stop()`` ends both (also at interpreter exit if not called)."""

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        backend: _Backend,
        dispatcher: _Dispatcher,
        feed: _FeedState,
        tls: TlsFiles | None = None,
    ) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.tls_port: int | None = backend.tls_port
        self.ca_file: Path | None = tls.ca_cert if tls else None
        self._backend = backend
        self._dispatcher = dispatcher
        self._feed = feed
        self._stop_lock = threading.Lock()
        self._stopped = False
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for ``iotpipe simulate --broker``."""
        return f"mqtt://{_connect_host(self.host)}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        """``mqtts://host:tls_port`` when there is a TLS listener (verify it with ``ca_file``)."""
        return f"mqtts://{_connect_host(self.host)}:{self.tls_port}" if self.tls_port else None

    @property
    def pid(self) -> int | None:
        """mosquitto's process id; None for the embedded broker."""
        return self._backend.pid

    @property
    def stats(self) -> BrokerStats:
        """Counters of the feed and dispatcher, and whether the broker still runs."""
        received, forwarded, errors, last_error, high_water = self._dispatcher.counters()
        connected, disconnects, last_feed_error = self._feed.snapshot()
        refused, denied = self._backend.policy_counts()
        return BrokerStats(
            kind=self.kind,
            messages_received=received,
            messages_forwarded=forwarded,
            callback_errors=errors,
            last_callback_error=last_error,
            queue_depth=self._dispatcher.depth(),
            queue_high_water=high_water,
            feed_connected=connected and not self._stopped,
            feed_disconnects=disconnects,
            last_feed_error=last_feed_error,
            broker_running=not self._stopped and self._backend.running(),
            connections_refused=refused,
            publishes_denied=denied,
        )

    def stop(self, timeout_s: float = 3) -> None:
        """Stop the feed and the broker, deliver what is queued (within ``timeout_s``); idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self.stop)
        self._feed.closing = True
        # a producer waiting for room must not hold up the broker's shutdown
        self._dispatcher.closing = True
        try:
            self._backend.close(timeout_s)
        finally:
            self._dispatcher.close(timeout_s)

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# --- dispatcher and feed state ----------------------------------------------------------------------------


_STOP = object()


class _Dispatcher:
    """One thread calling ``on_message`` in the order messages arrived.

    The queue is bounded: past ``maxsize`` waiting messages the producer (paho's thread, or amqtt's event loop)
    waits, which pushes back on the broker, until ``stop`` begins. Each counter has a single writer thread (the
    one producer, or the dispatcher), so none needs a lock; a C ``SimpleQueue`` keeps the hand-over cheap.
    """

    def __init__(self, on_message: OnMessage, maxsize: int) -> None:
        self._on_message = on_message
        self._maxsize = maxsize
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._received = self._done = self._forwarded = self._errors = self._high_water = 0
        self._last_error: str | None = None
        self.closing = False
        self._thread = threading.Thread(target=self._run, name="iotpipe-broker-feed", daemon=True)
        self._thread.start()

    def put(self, topic: str, payload: bytes, client_id: str | None) -> None:
        """Queue one message; called from one producer thread only."""
        depth = self._received - self._done
        while depth >= self._maxsize and not self.closing and self._thread.is_alive():
            time.sleep(0.001)
            depth = self._received - self._done
        self._queue.put((topic, payload, client_id))
        self._received += 1
        if depth + 1 > self._high_water:
            self._high_water = depth + 1

    def depth(self) -> int:
        """Messages waiting for ``on_message``."""
        return max(self._received - self._done, 0)

    def counters(self) -> tuple[int, int, int, str | None, int]:
        """received, forwarded, callback errors, last callback error, queue high water."""
        return self._received, self._forwarded, self._errors, self._last_error, self._high_water

    def close(self, timeout_s: float) -> None:
        """Let the thread finish what is queued, up to ``timeout_s``; it is a daemon if it cannot."""
        self.closing = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            topic, payload, client_id = item
            try:
                self._on_message(topic, payload, client_id)
            except Exception as exc:  # the consumer's bug must not stop the feed; it is counted and logged
                _log.exception("on_message failed for a message on %s", topic)
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            else:
                self._forwarded += 1
            finally:
                self._done += 1


class _FeedState:
    """Whether the feed is connected, how often it was lost, and who to tell."""

    def __init__(self, on_feed_lost: OnFeedLost | None) -> None:
        self._on_feed_lost = on_feed_lost
        self._lock = threading.Lock()
        self.connected = False
        self.disconnects = 0
        self.last_error: str | None = None
        self.closing = False

    def up(self) -> None:
        """The feed is connected and subscribed."""
        with self._lock:
            self.connected = True

    def lost(self, reason: str) -> None:
        """The feed lost the broker; counted and reported unless the broker is being stopped."""
        with self._lock:
            was_connected, self.connected = self.connected, False
            if self.closing or not was_connected:
                return
            self.disconnects += 1
            self.last_error = reason
        _log.warning("MQTT broker feed lost: %s", reason)
        if self._on_feed_lost is not None:
            try:
                self._on_feed_lost(reason)
            except Exception:
                _log.exception("on_feed_lost failed")

    def snapshot(self) -> tuple[bool, int, str | None]:
        """connected, disconnects, last error."""
        with self._lock:
            return self.connected, self.disconnects, self.last_error


class _Backend:
    """What RunningBroker needs from a broker implementation."""

    port: int
    pid: int | None = None
    tls_port: int | None = None

    def policy_counts(self) -> tuple[int, int]:
        """Connections refused and publishes denied by the device policy."""
        return 0, 0

    def running(self) -> bool:
        """Whether the broker still serves."""
        raise NotImplementedError

    def close(self, timeout_s: float) -> None:
        """Stop the feed and the broker; leave no process or thread serving."""
        raise NotImplementedError


# --- helpers ----------------------------------------------------------------------------------------------


def _validate(spec: BrokerSpec) -> None:
    for name, port in (("MQTT port", spec.port), ("MQTT TLS port", spec.tls_port)):
        if port is None and name == "MQTT TLS port":
            continue
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"{name} {port!r} is out of range; use 1 to 65535, or 0 for a free port")
    if spec.port and spec.port == spec.tls_port:
        raise ConfigError(f"MQTT port and MQTT TLS port are both {spec.port}; give them different ports")
    if (spec.username is None) != (spec.password is None) or spec.username == "" or ":" in (spec.username or ""):
        raise ConfigError("give the MQTT username and password together (a username without ':'), or neither")
    if spec.client_ca_file is not None:
        if spec.tls_port is None:
            raise ConfigError("a client CA file needs a TLS listener: give a TLS port too (0 for a free one)")
        if not Path(spec.client_ca_file).is_file():
            raise ConfigError(f"client CA file {spec.client_ca_file} does not exist; give a PEM bundle of the "
                              "certificates (or their CAs) that devices may present")
    if not spec.host or any(ch.isspace() for ch in spec.host):
        raise ConfigError(f"MQTT host {spec.host!r} is not valid; use an address such as 127.0.0.1")


def _login(spec: BrokerSpec) -> tuple[str, str] | None:
    return (spec.username, spec.password) if spec.username is not None and spec.password is not None else None


def _connect_host(host: str) -> str:
    # a wildcard listener is reached on loopback
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _port_in_use(host: str, port: int | str) -> LocalError:
    return LocalError(
        f"MQTT port {port} on {host} is already in use; pick another with --mqtt-port PORT, or --mqtt-port 0 "
        "for a free one"
    )


def _ensure_port_free(host: str, port: int, *, tls: bool = False) -> None:
    """LocalError when ``host:port`` cannot be bound (as the broker would bind it, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                if tls:
                    raise LocalError(f"MQTT TLS port {port} on {host} is already in use; pick another TLS port, "
                                     "or 0 for a free one") from None
                raise _port_in_use(host, port) from None
            raise LocalError(f"cannot listen on {host}:{port} for MQTT: {exc.strerror}; check --mqtt-host") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


# --- TLS ---------------------------------------------------------------------------------------------------

CA_DAYS = 825
SERVER_DAYS = 90


def ensure_tls_files(directory: Path, host: str) -> TlsFiles:
    """The local CA (made once, kept in ``directory``) and a fresh server certificate for ``host``.

    The server certificate names ``localhost``, ``127.0.0.1``, ``::1`` and ``host``, so clients can verify the
    broker's name against ``ca.pem``. Keys are EC P-256, written owner-only.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key_path = directory / "ca.key"
    now = _utcnow()
    ca_cert = ca_key = None
    if files.ca_cert.exists() and ca_key_path.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
        except ValueError:
            ca_cert = ca_key = None
        if ca_cert is not None and ca_cert.not_valid_after_utc < now + _days(SERVER_DAYS):
            ca_cert = None
    if ca_cert is None or ca_key is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate("iotpipe local CA", ca_key, None, None, CA_DAYS, ())
        _write_private(ca_key_path, _key_pem(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = ("localhost", "127.0.0.1", "::1", _connect_host(host), host)
    server_cert = _certificate("iotpipe local broker", server_key, ca_cert, ca_key, SERVER_DAYS, names)
    _write_private(files.server_key, _key_pem(server_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return files


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _days(days: int) -> Any:
    import datetime as dt

    return dt.timedelta(days=days)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _certificate(
    common_name: str, key: Any, issuer_cert: Any, issuer_key: Any, days: int, names: tuple[str, ...]
) -> Any:
    """A CA certificate (no issuer: self-signed) or a server certificate for ``names`` signed by the issuer."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotpipe local")])
    is_ca = issuer_cert is None
    now = _utcnow()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if is_ca else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _days(1))
        .not_valid_after(now + _days(days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        alt_names: list[x509.GeneralName] = []
        for name in dict.fromkeys(n for n in names if n and n not in ("0.0.0.0", "::")):
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        builder = (builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(key if is_ca else issuer_key, hashes.SHA256())


# --- mosquitto --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TlsListener:
    port: int
    files: TlsFiles
    client_ca_file: Path | None


def mosquitto_config(port: int, host: str, log_path: Path, tls: _TlsListener | None = None,
                     password_file: Path | None = None) -> str:
    """The mosquitto.conf of a local broker: a listener (and a TLS one), no persistence or $SYS; anonymous, or
    only the users of ``password_file``."""
    lines = [
        f"listener {port} {host}",
        *(["allow_anonymous false", f"password_file {password_file}"] if password_file else
          ["allow_anonymous true"]),
        "persistence false",
        f"log_dest file {log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        # no $SYS topics: nothing subscribes to them and they would wake the broker for nothing
        "sys_interval 0",
        # a burst to the feed (QoS 1) queues in the broker instead of being dropped
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "max_inflight_messages 1000",
        "set_tcp_nodelay true",
    ]
    with contextlib.suppress(KeyError, OSError):
        # started as root, mosquitto would switch to user "mosquitto", which may not read or write workdir
        lines.append(f"user {getpass.getuser()}")
    if tls is not None:
        lines += [
            f"listener {tls.port} {host}",
            f"certfile {tls.files.server_cert}",
            f"keyfile {tls.files.server_key}",
            f"cafile {tls.client_ca_file or tls.files.ca_cert}",
            f"require_certificate {'true' if tls.client_ca_file else 'false'}",
        ]
    return "\n".join(lines) + "\n"


MOSQUITTO_PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for its $7$ (PBKDF2-SHA512) hashes


def mosquitto_password_line(username: str, password: str, salt: bytes | None = None) -> str:
    """A line of a mosquitto (2.0+) password file: ``user:$7$<iterations>$<salt>$<PBKDF2-SHA512 hash>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_PBKDF2_ITERATIONS)
    return (f"{username}:$7${MOSQUITTO_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def _write_private_text(path: Path, text: str) -> None:
    _write_private(path, text.encode("utf-8"))


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        # the parent may have died between fork and prctl: then nobody would send the signal
        if os.getppid() != parent:
            os._exit(1)

    return hook


class _AddressInUse(Exception):
    pass


class _MosquittoBackend(_Backend):
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.pid = process.pid
        self.log_path = log_path
        self.client: Any = None

    def running(self) -> bool:
        return self.process.poll() is None

    def close(self, timeout_s: float) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            with contextlib.suppress(Exception):
                self.client.loop_stop()
        _kill_process_group(self.process, timeout_s)


def _kill_process_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL after ``timeout_s``, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # mosquitto never forks; once it is reaped its pid (and group id) may belong to someone else: leave it be


def _start_mosquitto(
    spec: BrokerSpec,
    workdir: Path,
    dispatcher: _Dispatcher,
    feed: _FeedState,
    ready_timeout_s: float,
    tls_files: TlsFiles | None,
) -> _MosquittoBackend:
    binary = mosquitto_binary()
    if binary is None:
        raise LocalError(f"the mosquitto broker is not installed (not on PATH): {INSTALL_MOSQUITTO}")
    fixed = spec.port and (tls_files is None or spec.tls_port)
    attempts = 1 if fixed else PORT_RETRIES
    for attempt in range(attempts):
        port = spec.port or free_port(spec.host)
        tls = None
        if tls_files is not None:
            tls_port = spec.tls_port or _free_port_except(spec.host, port)
            tls = _TlsListener(tls_port, tls_files, spec.client_ca_file)
        try:
            return _launch_mosquitto(binary, spec.host, port, workdir, dispatcher, feed, ready_timeout_s, tls,
                                     _login(spec))
        except _AddressInUse:
            # a free port we picked was taken before mosquitto bound it
            if fixed or attempt == attempts - 1:
                ports = [str(port)] + ([str(tls.port)] if tls else [])
                raise _port_in_use(spec.host, " or ".join(ports)) from None
    raise AssertionError("unreachable")


def _free_port_except(host: str, taken: int) -> int:
    port = free_port(host)
    return port if port != taken else free_port(host)


def _launch_mosquitto(
    binary: str,
    host: str,
    port: int,
    workdir: Path,
    dispatcher: _Dispatcher,
    feed: _FeedState,
    ready_timeout_s: float,
    tls: _TlsListener | None = None,
    login: tuple[str, str] | None = None,
) -> _MosquittoBackend:
    log_path = workdir / "mosquitto.log"
    out_path = workdir / "mosquitto.out"
    conf_path = workdir / "mosquitto.conf"
    rotate_log(log_path)  # the previous runs' broker logs stay, as aws.log's do
    out_path.unlink(missing_ok=True)
    password_file = workdir / "mosquitto.passwd" if login else None
    if login and password_file:
        _write_private_text(password_file, mosquitto_password_line(*login) + "\n")
    _write_private_text(conf_path, mosquitto_config(port, host, log_path, tls, password_file))
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent_hook(),  # only prctl and getppid run in the child
            close_fds=True,
        )
    backend = _MosquittoBackend(process, port, log_path)
    backend.tls_port = tls.port if tls else None
    try:
        deadline = time.monotonic() + ready_timeout_s
        _wait_listening(backend, host, port, out_path, deadline)
        if tls is not None:
            _wait_listening(backend, host, tls.port, out_path, deadline)
        backend.client = _connect_feed(host, port, dispatcher, feed, deadline, backend, out_path, login)
        if not backend.running():
            _raise_exited(backend, out_path)
        return backend
    except BaseException:
        backend.close(1)
        raise


def _logs(backend: _MosquittoBackend, out_path: Path) -> str:
    return f"{_tail(out_path, 5)} | {_tail(backend.log_path)}"


def _raise_exited(backend: _MosquittoBackend, out_path: Path) -> None:
    logs = _logs(backend, out_path)
    if "Address already in use" in logs:
        raise _AddressInUse()
    raise LocalError(
        f"mosquitto exited with code {backend.process.returncode} at start; its log: {logs} "
        f"(files in {out_path.parent})"
    )


def _wait_listening(backend: _MosquittoBackend, host: str, port: int, out_path: Path, deadline: float) -> None:
    while True:
        if not backend.running():
            _raise_exited(backend, out_path)
        try:
            with socket.create_connection((_connect_host(host), port), timeout=0.2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LocalError(
                f"mosquitto did not accept connections on {host}:{port} in time; its log: "
                f"{_logs(backend, out_path)}"
            )
        time.sleep(0.02)


def _connect_feed(
    host: str,
    port: int,
    dispatcher: _Dispatcher,
    feed: _FeedState,
    deadline: float,
    backend: _MosquittoBackend,
    out_path: Path,
    login: tuple[str, str] | None = None,
) -> Any:
    """The internal paho subscriber: QoS 1 on ``#`` and ``$aws/rules/#``, ready when both are granted."""
    import paho.mqtt.client as mqtt

    subscribed = threading.Event()
    refused: list[str] = []
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        # random: a client connecting with the feed's id would take over its session (and its queued messages)
        client_id=f"iotpipe-local-feed-{secrets.token_hex(12)}",
        protocol=mqtt.MQTTv311,
        # a persistent session: after a reconnect mosquitto delivers the QoS 1 messages it queued meanwhile
        clean_session=False,
    )
    if login is not None:
        client.username_pw_set(*login)
    client.reconnect_delay_set(min_delay=1, max_delay=5)

    def on_connect(client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            refused.append(f"the broker refused the feed: {reason_code}")
            return
        client.subscribe([(topic, 1) for topic in FEED_TOPICS])

    def on_subscribe(_client: Any, _userdata: Any, _mid: Any, reason_codes: Any, _props: Any) -> None:
        if any(code.is_failure for code in reason_codes):
            refused.append(f"the broker refused the feed's subscriptions: {[str(c) for c in reason_codes]}")
            return
        feed.up()
        subscribed.set()

    def on_disconnect(_client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        feed.lost(f"feed disconnected from mosquitto on port {port}: {reason_code}")

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        # a retained copy comes from (re)subscribing, not from a publish: the live publish was already fed, and
        # AWS IoT rules do not fire on retained messages either
        if not message.retain:
            dispatcher.put(message.topic, message.payload, None)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    try:
        client.connect(_connect_host(host), port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise LocalError(f"the broker feed cannot connect to mosquitto on port {port}: {exc}") from None
    client.loop_start()
    try:
        while not subscribed.wait(0.05):
            if refused:
                raise LocalError(f"{refused[0]}; mosquitto log: {_logs(backend, out_path)}")
            if not backend.running():
                _raise_exited(backend, out_path)
            if time.monotonic() > deadline:
                raise LocalError(
                    f"the broker feed was not subscribed to mosquitto on port {port} in time; its log: "
                    f"{_logs(backend, out_path)}"
                )
    except BaseException:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        raise
    return client


# --- amqtt ------------------------------------------------------------------------------------------------


class _AmqttBackend(_Backend):
    def __init__(self, loop: Any, thread: threading.Thread, broker: Any, port: int) -> None:
        self.loop = loop
        self.thread = thread
        self.broker = broker
        self.port = port

    def policy_counts(self) -> tuple[int, int]:
        return int(self.broker.refused), int(self.broker.denied)

    def running(self) -> bool:
        return self.thread.is_alive() and str(self.broker.transitions.state) == "started"

    def close(self, timeout_s: float) -> None:
        import asyncio

        if self.thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop)
            try:
                future.result(timeout=max(timeout_s, 0.1))
            except Exception:
                # amqtt's shutdown can hang on a session whose reader never finishes cancelling: close the
                # listener and every connection, and cancel what is left, so that stop() still frees the port
                _log.warning("amqtt did not shut down cleanly; closing its connections", exc_info=True)
                future.cancel()
                forced = asyncio.run_coroutine_threadsafe(self.broker.force_close(), self.loop)
                with contextlib.suppress(Exception):
                    forced.result(timeout=2)
        _stop_loop(self.loop, self.thread, timeout_s)


def _stop_loop(loop: Any, thread: threading.Thread, timeout_s: float) -> None:
    if thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(max(timeout_s, 0.1))
    if not thread.is_alive():
        loop.close()


@functools.cache
def _amqtt_classes() -> dict[str, type]:
    """The broker subclass and the plugins, by name (amqtt is imported only when used)."""
    import asyncio

    from amqtt.broker import Broker
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin

    class IotBroker(Broker):
        """amqtt, plus AWS IoT basic ingest: ``$aws/rules/...`` publishes go to the feed, not to subscribers."""

        feed: Callable[[str, bytes, str | None], None] | None = None
        policy: DevicePolicy | None = None
        login: tuple[str, str] | None = None
        writers: set[Any]
        # written on the event loop thread only
        refused = 0
        denied = 0

        async def stream_connected(self, reader: Any, writer: Any, listener_name: str) -> None:
            if not hasattr(self, "writers"):
                self.writers = set()
            self.writers.add(writer)
            try:
                await super().stream_connected(reader, writer, listener_name)
            finally:
                self.writers.discard(writer)

        async def force_close(self) -> None:
            """Close the listeners and abort every connection; cancel the broker's other tasks."""
            for server in self._servers.values():
                server.instance.close()
            for writer in list(getattr(self, "writers", ())):
                writer.transport.abort()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        @staticmethod
        def _create_ssl_context(listener: Any) -> ssl.SSLContext:
            context = Broker._create_ssl_context(listener)
            if listener.get("cafile"):
                # a device certificate listed in the bundle is trusted as it is: moto issues certificates
                # under an issuer name ("Moto") with no CA certificate anywhere, so no chain could be built
                context.verify_mode = ssl.CERT_REQUIRED
                context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            else:
                context.verify_mode = ssl.CERT_NONE
            return context

        async def _handle_message_delivery(self, client_session: Any, handler: Any, wait_deliver: Any) -> bool:
            message = wait_deliver.result()
            topic = getattr(message, "topic", None)
            if topic and topic.startswith(BASIC_INGEST_PREFIX) and "#" not in topic and "+" not in topic:
                allowed = await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH)
                if allowed and self.feed is not None:
                    self.feed(topic, bytes(message.data or b""), client_session.client_id)
                return True
            return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    class FeedPlugin(BasePlugin):
        """Hands every message the broker will distribute to the feed, with its publisher's client id."""

        broker: IotBroker | None = None

        async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
            if self.broker is not None and self.broker.feed is not None:
                self.broker.feed(message.topic, bytes(message.data or b""), client_id)

    class PolicyAuthPlugin(BaseAuthPlugin):
        """Refuses a CONNECT whose client id is not a registered thing."""

        broker: IotBroker | None = None

        async def authenticate(self, *, session: Any) -> bool | None:
            broker = self.broker
            if broker is None or broker.policy is None:
                return None
            client_id = str(session.client_id or "")
            try:
                registered = bool(await asyncio.get_running_loop().run_in_executor(
                    None, broker.policy.is_registered, client_id))
            except Exception:
                _log.exception("device policy: checking client id %r failed; refusing it", client_id)
                registered = False
            if not registered:
                broker.refused += 1
                _log.warning("device policy: refused client id %r (not a registered thing)", client_id)
            return registered

    class PasswordAuthPlugin(BaseAuthPlugin):
        """Refuses a CONNECT without the broker's one username and password (when it has them)."""

        broker: IotBroker | None = None

        async def authenticate(self, *, session: Any) -> bool | None:
            login = self.broker.login if self.broker is not None else None
            if login is None:
                return None
            given = (str(session.username or ""), str(session.password or ""))
            accepted = all(hmac.compare_digest(a.encode(), b.encode()) for a, b in zip(given, login, strict=True))
            if not accepted and self.broker is not None:
                self.broker.refused += 1
            return accepted

    class PolicyTopicPlugin(BaseTopicPlugin):
        """Allows publish, subscribe and receive only on the client's own topics."""

        broker: IotBroker | None = None

        async def topic_filtering(
            self, *, session: Any = None, topic: str | None = None, action: Any = None
        ) -> bool | None:
            broker = self.broker
            if broker is None or broker.policy is None or session is None:
                return None
            allowed = broker.policy.allows(str(action), str(session.client_id), topic or "")
            if not allowed and action == Action.PUBLISH:
                broker.denied += 1
                _log.warning("device policy: %s may not publish to %s", session.client_id, topic)
            return allowed

    return {"broker": IotBroker, "feed": FeedPlugin, "auth": PolicyAuthPlugin, "topic": PolicyTopicPlugin,
            "password": PasswordAuthPlugin}


_PLUGIN_NAMES = {"_AmqttFeedPlugin": "feed", "_AmqttPolicyAuthPlugin": "auth", "_AmqttPolicyTopicPlugin": "topic",
                 "_AmqttPasswordAuthPlugin": "password"}


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path; these classes exist only once amqtt is imported
    if name in _PLUGIN_NAMES:
        return _amqtt_classes()[_PLUGIN_NAMES[name]]
    raise AttributeError(name)


def amqtt_config(
    host: str,
    port: int,
    *,
    policy: bool = False,
    tls: _TlsListener | None = None,
) -> dict[str, Any]:
    """amqtt's configuration: a TCP listener (and a TLS one), anonymous clients, the feed (and policy) plugins."""
    plugins: dict[str, Any] = {
        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        f"{__name__}._AmqttFeedPlugin": {},
        f"{__name__}._AmqttPasswordAuthPlugin": {},
    }
    if policy:
        plugins[f"{__name__}._AmqttPolicyAuthPlugin"] = {}
        plugins[f"{__name__}._AmqttPolicyTopicPlugin"] = {}
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if tls is not None:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{host}:{tls.port}",
            "ssl": True,
            "certfile": str(tls.files.server_cert),
            "keyfile": str(tls.files.server_key),
            "cafile": str(tls.client_ca_file) if tls.client_ca_file else None,
        }
    return {"listeners": listeners, "plugins": plugins}


def _start_amqtt(
    spec: BrokerSpec,
    dispatcher: _Dispatcher,
    feed: _FeedState,
    ready_timeout_s: float,
    policy: DevicePolicy | None,
    tls_files: TlsFiles | None = None,
) -> _AmqttBackend:
    import asyncio

    if not amqtt_available():
        raise LocalError(f"the amqtt broker is not installed: {INSTALL_AMQTT}")
    classes = _amqtt_classes()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="iotpipe-amqtt", daemon=True)
    thread.start()

    async def start() -> Any:
        tls = _TlsListener(spec.tls_port or 0, tls_files, spec.client_ca_file) if tls_files else None
        config = amqtt_config(spec.host, spec.port, policy=policy is not None, tls=tls)
        broker = classes["broker"](config, loop=loop)
        broker.feed = dispatcher.put
        broker.policy = policy
        broker.login = _login(spec)
        for plugin in broker.plugins_manager.plugins:
            if isinstance(plugin, (classes["feed"], classes["auth"], classes["topic"], classes["password"])):
                cast(Any, plugin).broker = broker
        await broker.start()
        return broker

    future = asyncio.run_coroutine_threadsafe(start(), loop)
    try:
        broker = future.result(timeout=ready_timeout_s)
    except BaseException as exc:
        future.cancel()
        _stop_loop(loop, thread, 1)
        if _is_address_in_use(exc):
            raise _port_in_use(spec.host, spec.port) from None
        if isinstance(exc, TimeoutError):
            raise LocalError(f"the amqtt broker did not start within {ready_timeout_s:g} s") from None
        if isinstance(exc, Exception):
            raise LocalError(f"the amqtt broker could not start: {exc}") from None
        raise
    servers = broker._servers
    backend = _AmqttBackend(loop, thread, broker, int(servers["default"].instance.sockets[0].getsockname()[1]))
    if "tls" in servers:
        backend.tls_port = int(servers["tls"].instance.sockets[0].getsockname()[1])
    feed.up()
    return backend


def _is_address_in_use(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
