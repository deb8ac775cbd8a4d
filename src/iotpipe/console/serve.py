"""Serving the console: a listening socket, the page's URL with its token, and uvicorn in a thread of its own
(how ``iotpipe local up`` serves it beside the pipeline; ``iotpipe console`` serves it in the foreground)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from iotpipe.errors import ConfigError

DEFAULT_PORT = 8765  # the console's port unless told otherwise (taken: a free one)


def console_url(host: str, port: int, token: str) -> str:
    """The page's address with its token (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); ConfigError naming the fix when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, or --port 0 "
                          "for a free one") from None
    sock.listen(128)
    return sock


def bind_preferred(host: str, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on ``host:port``, or on a free port of ``host`` when ``port`` is taken (another console,
    say): for a port nobody asked for by name."""
    try:
        return bind(host, port)
    except ConfigError:
        return bind(host, 0)


def uvicorn_server(app: Any) -> Any:
    """The uvicorn server the console runs on: quiet, no access log (the URL carries the token), no lifespan."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                         timeout_graceful_shutdown=2))


@dataclass
class ServedConsole:
    """A console served in a thread: its ``url`` (with the token) until :meth:`stop`."""

    url: str
    server: Any
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket; idempotent."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()


def serve_in_thread(data: Any, sock: socket.socket) -> ServedConsole:
    """Serve the console of ``data`` (a ``ConsoleData``) on the listening ``sock`` in a daemon thread, with a new
    token. The fleet is read when the page first asks, not before."""
    from iotpipe.console.app import Settings, create_app, new_token

    host, actual = sock.getsockname()[:2]
    token = new_token()
    server = uvicorn_server(create_app(data, Settings(token=token, bind_host=host, port=actual)))
    # uvicorn captures signals only in the main thread: the owner's Ctrl-C handling stays as it is
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console", daemon=True)
    thread.start()
    return ServedConsole(console_url(host, actual, token), server, thread, sock)
