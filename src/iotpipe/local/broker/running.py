"""Starting a broker of either kind with its feed, and the running broker: address, stats, stop."""

from __future__ import annotations

import atexit
import errno
import threading
from pathlib import Path

from iotpipe.errors import ConfigError, LocalError
from iotpipe.local.broker.amqtt import amqtt_available, start_amqtt
from iotpipe.local.broker.base import (
    INSTALL_AMQTT,
    INSTALL_MOSQUITTO,
    KINDS,
    Backend,
    BrokerSpec,
    BrokerStats,
    DevicePolicy,
    OnFeedLost,
    OnMessage,
    port_in_use_error,
)
from iotpipe.local.broker.feed import Dispatcher, FeedState
from iotpipe.local.broker.mosquitto import mosquitto_binary, start_mosquitto
from iotpipe.local.broker.tls import TlsFiles, ensure_tls_files
from iotpipe.local.processes import bind_error, connect_host

FEED_QUEUE_SIZE = 100_000


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

    mosquitto dies with this process (:func:`iotpipe.local.processes.spawn`), whichever thread calls this.
    Raises LocalError when the port is in use, the kind is not
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
    dispatcher = Dispatcher(on_message, FEED_QUEUE_SIZE)
    feed = FeedState(on_feed_lost)
    backend: Backend
    try:
        if kind == "mosquitto":
            backend = start_mosquitto(spec, workdir, dispatcher, feed, ready_timeout_s, tls)
        else:
            backend = start_amqtt(spec, dispatcher, feed, ready_timeout_s, policy, tls)
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
        backend: Backend,
        dispatcher: Dispatcher,
        feed: FeedState,
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
        return f"mqtt://{connect_host(self.host)}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        """``mqtts://host:tls_port`` when there is a TLS listener (verify it with ``ca_file``)."""
        return f"mqtts://{connect_host(self.host)}:{self.tls_port}" if self.tls_port else None

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




def _ensure_port_free(host: str, port: int, *, tls: bool = False) -> None:
    """LocalError when ``host:port`` cannot be bound (as the broker would bind it, with SO_REUSEADDR)."""
    exc = bind_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRINUSE:
        if tls:
            raise LocalError(f"MQTT TLS port {port} on {host} is already in use; pick another TLS port, "
                             "or 0 for a free one")
        raise port_in_use_error(host, port)
    raise LocalError(f"cannot listen on {host}:{port} for MQTT: {exc.strerror}; check --mqtt-host")


