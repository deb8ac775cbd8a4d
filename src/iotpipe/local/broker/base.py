"""What the broker modules share: the spec, the device policy, the stats, the backend interface and the
constants (standard library only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iotpipe import contract
from iotpipe.errors import LocalError

if TYPE_CHECKING:
    from iotpipe.local.broker.tls import TlsFiles

OnMessage = Callable[[str, bytes, str | None], None]
OnFeedLost = Callable[[str], None]

KINDS = ("auto", "mosquitto", "amqtt")
FEED_TOPICS = ("#", "$aws/rules/#")
BASIC_INGEST_PREFIX = contract.BASIC_INGEST_PREFIX
# mosquitto is often in /usr/sbin, which is not on a normal user's PATH.
MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_MOSQUITTO = (
    "install it with `sudo apt-get install mosquitto` (or `brew install mosquitto`), or use --broker amqtt"
)
INSTALL_AMQTT = "install it with `pip install 'iotpipe[local]'`"
PORT_RETRIES = 3
LOG_TAIL_LINES = 15




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
class DevicePolicy:
    """The device policy the embedded broker enforces, as the template's SensorDevicePolicy does on AWS IoT.

    A client connects only with the client id of a registered thing (``is_registered``, called off the event
    loop on each CONNECT), publishes only to ``sensor/<client id>/data`` (with ``basic_ingest_rule``, as the
    template's policy with ``ingest.basic_ingest``: only to ``$aws/rules/<rule>/sensor/<client id>/data``),
    subscribes to and receives only ``sensor/<client id>/commands``.
    """

    is_registered: Callable[[str], bool]
    publish_topic: str = contract.device_topic("{client_id}")
    command_topic: str = contract.command_topic("{client_id}")
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



class Backend:
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



@dataclass(frozen=True)
class TlsListener:
    port: int
    files: TlsFiles
    client_ca_file: Path | None




def login(spec: BrokerSpec) -> tuple[str, str] | None:
    return (spec.username, spec.password) if spec.username is not None and spec.password is not None else None


def port_in_use_error(host: str, port: int | str) -> LocalError:
    return LocalError(
        f"MQTT port {port} on {host} is already in use; pick another with --mqtt-port PORT, or --mqtt-port 0 "
        "for a free one"
    )




def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"

