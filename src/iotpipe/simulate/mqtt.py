"""MQTT transport: paho-mqtt, one client per device (the device id as client id), QoS 1.

TLS with the device certificates against AWS IoT, plain MQTT against a local broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from iotpipe.devices import topic_for
from iotpipe.errors import ConfigError, IotpipeError
from iotpipe.simulate.certificates import DeviceCredentials
from iotpipe.simulate.plan import SimMessage


class PublishError(IotpipeError):
    """The broker could not be reached or refused a device."""


@dataclass(frozen=True)
class BrokerTarget:
    """A plain MQTT broker (``--broker mqtt://[user:password@]host:port``), with its login if it needs one."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON object: host, port and the login's user (whether there is a password, never the password)."""
        return {"host": self.host, "port": self.port, "username": self.username,
                "passwordSet": self.password is not None}


def parse_broker_url(url: str) -> BrokerTarget:
    """``mqtt://[user:password@]host[:port]`` -> BrokerTarget (default port 1883); ConfigError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ConfigError(f"--broker {url!r} is not valid; use mqtt://host:port or mqtt://user:password@host:port "
                          "(plain MQTT, no TLS)")
    try:
        port = parsed.port or 1883
    except ValueError:
        raise ConfigError(f"--broker {url!r} has an invalid port") from None
    username = unquote(parsed.username) if parsed.username is not None else None
    password = unquote(parsed.password) if parsed.password is not None else None
    return BrokerTarget(parsed.hostname, port, username, password)


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
        if target.tls:
            client.tls_set(
                ca_certs=str(target.ca_file) if target.ca_file else None,
                certfile=str(target.certificate),
                keyfile=str(target.private_key),
            )
        elif target.username is not None:
            client.username_pw_set(target.username, target.password)
        host, port = target.endpoint, target.port
    else:
        host, port = target.host, target.port
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
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
