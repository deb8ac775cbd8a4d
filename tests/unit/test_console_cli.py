"""``iotpipe console``'s own small parts: the URL it prints and the socket it binds."""

from __future__ import annotations

import pytest

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
