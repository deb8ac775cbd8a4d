"""mosquitto as a child process in a session of its own, that dies with the supervisor, and its feed."""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from iotpipe.errors import LocalError
from iotpipe.local.broker.base import (
    FEED_TOPICS,
    INSTALL_MOSQUITTO,
    MOSQUITTO_FALLBACKS,
    PORT_RETRIES,
    Backend,
    BrokerSpec,
    TlsListener,
    log_tail,
    login,
    port_in_use_error,
)
from iotpipe.local.broker.feed import Dispatcher, FeedState
from iotpipe.local.broker.tls import TlsFiles, write_private
from iotpipe.local.processes import accepts_connections, connect_host, free_port, spawn, stop_process, wait_ready
from iotpipe.local.state import rotate_log


def mosquitto_binary() -> str | None:
    """The mosquitto executable: on PATH, or in an sbin directory where Debian puts it; None if absent."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_FALLBACKS if os.access(path, os.X_OK)), None)




def mosquitto_config(port: int, host: str, log_path: Path, tls: TlsListener | None = None,
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
    write_private(path, text.encode("utf-8"))


class _AddressInUse(Exception):
    pass


class _MosquittoBackend(Backend):
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
        stop_process(self.process, timeout_s)  # its process group: mosquitto runs in a session of its own


def start_mosquitto(
    spec: BrokerSpec,
    workdir: Path,
    dispatcher: Dispatcher,
    feed: FeedState,
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
            tls = TlsListener(tls_port, tls_files, spec.client_ca_file)
        try:
            return _launch_mosquitto(binary, spec.host, port, workdir, dispatcher, feed, ready_timeout_s, tls,
                                     login(spec))
        except _AddressInUse:
            # a free port we picked was taken before mosquitto bound it
            if fixed or attempt == attempts - 1:
                ports = [str(port)] + ([str(tls.port)] if tls else [])
                raise port_in_use_error(spec.host, " or ".join(ports)) from None
    raise AssertionError("unreachable")


def _free_port_except(host: str, taken: int) -> int:
    port = free_port(host)
    return port if port != taken else free_port(host)


def _launch_mosquitto(
    binary: str,
    host: str,
    port: int,
    workdir: Path,
    dispatcher: Dispatcher,
    feed: FeedState,
    ready_timeout_s: float,
    tls: TlsListener | None = None,
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
        process = spawn([binary, "-c", str(conf_path)], stdout=out, stderr=subprocess.STDOUT, new_session=True)
    backend = _MosquittoBackend(process, port, log_path)
    backend.tls_port = tls.port if tls else None
    try:
        deadline = time.monotonic() + ready_timeout_s
        _wait_listening(backend, host, port, out_path, deadline)
        if tls is not None:
            _wait_listening(backend, host, tls.port, out_path, deadline)
        backend.client = connect_feed(host, port, dispatcher, feed, deadline, backend, out_path, login)
        if not backend.running():
            raise _exited(backend, out_path)
        return backend
    except BaseException:
        backend.close(1)
        raise


def _logs(backend: _MosquittoBackend, out_path: Path) -> str:
    return f"{log_tail(out_path, 5)} | {log_tail(backend.log_path)}"


def _exited(backend: _MosquittoBackend, out_path: Path) -> Exception:
    """Why mosquitto exited at start: a port taken meanwhile (the caller retries another), else its log."""
    logs = _logs(backend, out_path)
    if "Address already in use" in logs:
        return _AddressInUse()
    return LocalError(
        f"mosquitto exited with code {backend.process.returncode} at start; its log: {logs} "
        f"(files in {out_path.parent})"
    )


def _wait_listening(backend: _MosquittoBackend, host: str, port: int, out_path: Path, deadline: float) -> None:
    wait_ready(lambda: accepts_connections(host, port), process=backend.process, deadline=deadline,
               exited=lambda: _exited(backend, out_path),
               timed_out=lambda: LocalError(f"mosquitto did not accept connections on {host}:{port} in time; its "
                                            f"log: {_logs(backend, out_path)}"))


def connect_feed(
    host: str,
    port: int,
    dispatcher: Dispatcher,
    feed: FeedState,
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
        client.connect(connect_host(host), port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise LocalError(f"the broker feed cannot connect to mosquitto on port {port}: {exc}") from None
    client.loop_start()
    try:
        while not subscribed.wait(0.05):
            if refused:
                raise LocalError(f"{refused[0]}; mosquitto log: {_logs(backend, out_path)}")
            if not backend.running():
                raise _exited(backend, out_path)
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

