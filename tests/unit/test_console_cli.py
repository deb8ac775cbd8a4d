"""``iotpipe console``'s own small parts: the URL it prints and the socket it binds."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import iotpipe.cli.console as console_cli
from iotpipe.cli import main
from iotpipe.cli.console import bind, console_url
from iotpipe.errors import ConfigError


def test_the_url_carries_the_token_and_brackets_an_ipv6_host() -> None:
    assert console_url("127.0.0.1", 8765, "abc") == "http://127.0.0.1:8765/?token=abc"
    assert console_url("::1", 8765, "abc") == "http://[::1]:8765/?token=abc"


def test_port_zero_picks_a_free_port_and_a_taken_one_names_the_fix() -> None:
    first = bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        assert port > 0
        with pytest.raises(ConfigError, match="--port 0"):
            bind("127.0.0.1", port)
    finally:
        first.close()


def test_the_browser_is_started_with_a_private_file_not_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # a command line shows in every local user's ps: the browser gets the address of a page only the user reads
    opened: list[str] = []
    seen: dict[str, Any] = {}

    def serve(_server: Any, **_kwargs: Any) -> None:
        page = Path(opened[0].removeprefix("file://"))
        seen.update(mode=stat.S_IMODE(page.stat().st_mode), text=page.read_text(), page=page)

    monkeypatch.setattr(console_cli.webbrowser, "open", opened.append)
    monkeypatch.setattr(console_cli, "_warm", lambda _data: None)  # no read of a stack here
    monkeypatch.setattr("uvicorn.Server.run", serve)
    result = CliRunner().invoke(main, ["console", "--env", "dev", "--port", "0", "--region", "us-east-1"])

    assert result.exit_code == 0, result.output
    url = result.stdout.splitlines()[0]
    assert "?token=" in url and len(opened) == 1 and opened[0].startswith("file:///")
    assert "token" not in opened[0]
    assert seen["mode"] == 0o600 and f'content="0;url={url}"' in seen["text"]
    assert not seen["page"].exists()  # removed when the console stops


def test_a_taken_default_port_gives_a_free_one_and_a_named_port_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    # `iotpipe local up` serves a console on 8765 too: `iotpipe console` without --port must still start
    import socket

    from iotpipe.console.serve import DEFAULT_PORT, bind_preferred

    holder = socket.socket()
    try:
        with contextlib.suppress(OSError):  # held here, or by something else: taken either way
            holder.bind(("127.0.0.1", DEFAULT_PORT))
            holder.listen(1)
        chosen = bind_preferred("127.0.0.1")
        try:
            assert chosen.getsockname()[1] not in (0, DEFAULT_PORT)
        finally:
            chosen.close()
        served: list[Any] = []
        monkeypatch.setattr(console_cli, "_warm", lambda _data: None)
        monkeypatch.setattr("uvicorn.Server.run",
                            lambda _server, **kwargs: served.append(kwargs["sockets"][0].getsockname()[1]))
        result = CliRunner().invoke(main, ["console", "--env", "dev", "--no-browser", "--region", "us-east-1"])
        assert result.exit_code == 0, result.output
        port = int(result.stdout.splitlines()[0].split(":")[2].split("/")[0])
        assert port not in (0, DEFAULT_PORT) and served == [port]
        named = CliRunner().invoke(main, ["console", "--env", "dev", "--no-browser", "--region", "us-east-1",
                                          "--port", str(DEFAULT_PORT)])
        assert named.exit_code == 2 and "--port 0" in named.output  # asked for by name: refused, with the fix
    finally:
        holder.close()
