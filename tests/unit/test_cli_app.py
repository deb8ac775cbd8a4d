"""The CLI group turns library and AWS client errors into one line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from iotpipe.aws import explain_aws_failure
from iotpipe.cli import main


def test_a_command_without_a_region_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    result = CliRunner().invoke(main, ["readings", "press-1", "--env", "dev"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: no AWS region: pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_original_exception(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    command = ["readings", "press-1", "--env", "dev"]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    result = CliRunner().invoke(main, argv)
    assert "Traceback" in result.stderr and "NoRegionError" in result.stderr
    assert result.exit_code == 1


@pytest.mark.parametrize("argv", [["--debug", "deploy", "--param", "Foo=1", "--yes"],
                                  ["deploy", "--param", "Foo=1", "--yes", "--debug"],
                                  ["deploy", "--param", "Foo", "--yes"]])
def test_debug_keeps_the_usage_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]) -> None:
    """Issue 12: `iotpipe --debug deploy --param Foo=1` exited 1; a config error is 2 with or without --debug."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*argv, "--env", "dev", "--endpoint-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2, result.stderr
    assert "Foo" in result.stderr.splitlines()[-1]


def test_client_errors_name_the_operation_code_and_message() -> None:
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "bad key"}}, "Query")
    assert explain_aws_failure(error) == "Query failed: ValidationException: bad key"


def test_other_exceptions_are_not_disguised() -> None:
    assert explain_aws_failure(ValueError("bug")) is None
