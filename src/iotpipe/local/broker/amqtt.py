"""amqtt embedded in this process, on its own event loop thread: the feed, login and device policy as plugins."""

from __future__ import annotations

import contextlib
import errno
import functools
import hmac
import importlib.util
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from iotpipe.errors import LocalError
from iotpipe.local.broker.base import (
    BASIC_INGEST_PREFIX,
    INSTALL_AMQTT,
    Backend,
    BrokerSpec,
    DevicePolicy,
    TlsListener,
    login,
    port_in_use_error,
)
from iotpipe.local.broker.feed import Dispatcher, FeedState
from iotpipe.local.broker.tls import TlsFiles

_log = logging.getLogger(__name__)
# amqtt logs warnings (e.g. undelivered internal broadcasts at shutdown); without this, Python's last-resort
# handler would print them on stderr of any program that has not configured logging
logging.getLogger("amqtt").addHandler(logging.NullHandler())


def amqtt_available() -> bool:
    """Whether the amqtt package can be imported."""
    return importlib.util.find_spec("amqtt") is not None




class _AmqttBackend(Backend):
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
    tls: TlsListener | None = None,
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


def start_amqtt(
    spec: BrokerSpec,
    dispatcher: Dispatcher,
    feed: FeedState,
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
        tls = TlsListener(spec.tls_port or 0, tls_files, spec.client_ca_file) if tls_files else None
        config = amqtt_config(spec.host, spec.port, policy=policy is not None, tls=tls)
        broker = classes["broker"](config, loop=loop)
        broker.feed = dispatcher.put
        broker.policy = policy
        broker.login = login(spec)
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
            raise port_in_use_error(spec.host, spec.port) from None
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
