"""The CLI group turns library and AWS client errors into one line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, NoRegionError
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
    assert result.stderr.strip() == (
        "Error: no AWS region: pass --region, set region in iotpipe.toml, or export AWS_DEFAULT_REGION")


def test_debug_shows_the_original_exception(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    result = CliRunner().invoke(main, ["--debug", "readings", "press-1", "--env", "dev"])
    assert isinstance(result.exception, NoRegionError)


def test_client_errors_name_the_operation_code_and_message() -> None:
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "Query")
    assert explain_aws_failure(error) == "Query failed: AccessDenied: not allowed"


def test_other_exceptions_are_not_disguised() -> None:
    assert explain_aws_failure(ValueError("bug")) is None
