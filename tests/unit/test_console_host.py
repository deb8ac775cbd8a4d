"""``iotpipe console --host``: a host other than loopback warns before anything listens (the socket is never
bound here: tests listen on loopback only)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import iotpipe.cli.console as console_cli
from iotpipe.cli import main
from iotpipe.errors import ConfigError


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("10.1.2.3", True), ("127.0.0.1", False),
                                              ("::1", False)])
def test_a_host_other_than_loopback_warns_that_the_token_is_all_that_guards_it(
        host: str, warned: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    bound: list[str] = []

    def refuse(address: str, _port: int) -> None:
        bound.append(address)
        raise ConfigError("stopped before listening (test)")

    monkeypatch.setattr(console_cli, "bind", refuse)
    monkeypatch.setattr(console_cli, "bind_preferred", lambda address: refuse(address, 0))  # no --port given
    result = CliRunner().invoke(main, ["console", "--env", "dev", "--host", host, "--no-browser",
                                       "--region", "us-east-1"])

    assert result.exit_code == 2 and bound == [host]
    assert ("is not a loopback address" in result.stderr) is warned
    assert ("token in its URL is all that guards it" in result.stderr) is warned
