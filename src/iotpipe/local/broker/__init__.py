"""The broker room of ``iotpipe local``: mosquitto (a child process) or amqtt (embedded), and the feed that hands
what devices publish to the rule engine.

``start_broker`` (:mod:`~iotpipe.local.broker.running`) starts a broker on a loopback port and a *feed*
(:mod:`~iotpipe.local.broker.feed`) that hands every published message to ``on_message(topic, payload,
client_id)`` on one dispatcher thread, in arrival order (so in order per topic), including the basic-ingest topics
``$aws/rules/...`` that a ``#`` subscription does not match.

- **mosquitto** (:mod:`~iotpipe.local.broker.mosquitto`) runs as a child process in its own process group,
  started by :func:`iotpipe.local.processes.spawn` so it cannot outlive a killed parent. The feed is an internal
  paho client subscribed at QoS 1 to ``#`` and ``$aws/rules/#``; it cannot see who published, so ``client_id``
  is ``None``.
- **amqtt** (:mod:`~iotpipe.local.broker.amqtt`, ``pip install 'iotpipe[local]'``) runs in-process on its own
  event loop thread; a broker plugin feeds messages with the publisher's client id (AWS IoT SQL ``clientid()``).
  ``$aws/rules/...`` publishes, which amqtt would refuse (it closes the connection of a client publishing to a
  ``$`` topic), are fed to the rule engine and, like AWS IoT basic ingest, not delivered to subscribers. With a
  ``DevicePolicy`` it enforces the template's device policy: registered things only, each publishing to its own
  ``sensor/<thing>/data``.

TLS (``BrokerSpec.tls_port``, :mod:`~iotpipe.local.broker.tls`): a second listener with a server certificate from
a local CA kept in ``<workdir>/tls/ca.pem`` (devices verify the broker with it; ``RunningBroker.ca_file``). With
``client_ca_file`` a client must present a certificate that bundle trusts. The embedded broker trusts a
certificate listed in the bundle as it is (partial chain), so the certificates ``iotpipe device register`` gets
from moto work: moto signs them with the device's own key under an issuer ("Moto") that has no CA certificate.
mosquitto cannot do that (it needs a chain to a CA in the bundle), so with moto's certificates use the embedded
broker.

Credentials (``BrokerSpec.username`` and ``password``, which ``iotpipe local`` makes random per run): the broker
then refuses anonymous clients and any other password (mosquitto: ``allow_anonymous false`` and a password file of
PBKDF2-SHA512 hashes written here, no ``mosquitto_passwd`` needed; amqtt: an auth plugin), and the feed logs in
with them under a random client id, so no other client can take over its session.

Default for ``auto``: mosquitto when it is installed, amqtt otherwise. Measured with ``make bench-broker``,
mosquitto and its feed delivered about twice amqtt's rate at full speed, with the better tail latency and about
half the CPU per message (the figures are in ``docs/benchmarks.md``, kept current there, not in code). amqtt stays
the fallback (``pip install 'iotpipe[local]'``, no system package) and the choice when a rule needs
``clientid()`` or the device policy is to be enforced.
"""

from __future__ import annotations

from iotpipe.local.broker.amqtt import amqtt_available, amqtt_config
from iotpipe.local.broker.base import KINDS, BrokerSpec, BrokerStats, DevicePolicy, OnFeedLost, OnMessage
from iotpipe.local.broker.mosquitto import mosquitto_binary, mosquitto_config, mosquitto_password_line
from iotpipe.local.broker.running import FEED_QUEUE_SIZE, RunningBroker, resolve_kind, start_broker
from iotpipe.local.broker.tls import TlsFiles, ensure_tls_files

__all__ = [
    "FEED_QUEUE_SIZE",
    "KINDS",
    "BrokerSpec",
    "BrokerStats",
    "DevicePolicy",
    "OnFeedLost",
    "OnMessage",
    "RunningBroker",
    "TlsFiles",
    "amqtt_available",
    "amqtt_config",
    "ensure_tls_files",
    "mosquitto_binary",
    "mosquitto_config",
    "mosquitto_password_line",
    "resolve_kind",
    "start_broker",
]
