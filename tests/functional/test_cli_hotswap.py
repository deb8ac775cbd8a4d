"""``iotpipe deploy --hotswap`` / ``--watch`` through the real CLI against a moto server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

import iotpipe.cli.hotswap as cli_hotswap
import iotpipe.deploy.hotswap as hotswap_lib
import iotpipe.package as package
from iotpipe.cli import main

REGION = "us-east-1"
STACK = "iotpipe-dev"
FUNCTION = "iot-data-processor-dev"


def write_config(tmp_path: Path, body: str = "[env.dev]\n") -> Path:
    path = tmp_path / "iotpipe.toml"
    path.write_text(body)
    return path


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_config(tmp_path)


def run(endpoint: str, config: Path, *args: str, env: str = "dev") -> Result:
    argv = [*args, "--env", env, "--config", str(config), "--endpoint-url", endpoint, "--region", REGION]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def lambda_client(endpoint: str) -> Any:
    return boto3.client("lambda", region_name=REGION, endpoint_url=endpoint)


def edit_handler(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """The processor's source as if the developer had saved an edit (the checkout's file is left alone)."""
    original = package.handler_source

    def edited(runtime: str) -> str:
        return original(runtime) + f"\n# {marker}\n"

    monkeypatch.setattr(package, "handler_source", edited)


def deploy(endpoint: str, config: Path, env: str = "dev") -> None:
    result = run(endpoint, config, "deploy", "--yes", env=env)
    assert result.exit_code == 0, result.stderr


def test_hotswap_updates_only_the_code_and_warns_about_drift(moto_endpoint: str, config: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(moto_endpoint, config)
    before = lambda_client(moto_endpoint).get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"]
    edit_handler(monkeypatch, "edited once")
    result = run(moto_endpoint, config, "deploy", "--hotswap")
    assert result.exit_code == 0, result.stderr
    after = lambda_client(moto_endpoint).get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"]
    expected = hotswap_lib.code_sha256(package.processor_artefact("python3.13").body)
    assert before != after == expected  # the function holds exactly the new zip
    assert f"Hotswapped {FUNCTION} (CodeSha256 {expected}) in " in result.stdout
    assert "drifts from its template until the next full `iotpipe deploy --env dev`" in result.stderr
    # no change set: CloudFormation's template still names the old code, which the next deploy reconciles
    summaries = boto3.client("cloudformation", region_name=REGION, endpoint_url=moto_endpoint).list_change_sets(
        StackName=STACK)["Summaries"]
    assert all(s["ExecutionStatus"] != "AVAILABLE" for s in summaries)
    diff = run(moto_endpoint, config, "diff")
    assert "DataProcessorFunction" in diff.stdout


def test_hotswap_without_code_change_says_so(moto_endpoint: str, config: Path) -> None:
    deploy(moto_endpoint, config)
    result = run(moto_endpoint, config, "deploy", "--hotswap")
    assert result.exit_code == 0, result.stderr
    assert "No code changes" in result.stdout


def test_hotswap_refuses_when_more_than_code_changed(moto_endpoint: str, tmp_path: Path, config: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(moto_endpoint, config)
    before = lambda_client(moto_endpoint).get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"]
    write_config(tmp_path, "[env.dev]\n[env.dev.processor]\nbatch_size = 50\n")
    edit_handler(monkeypatch, "edited")
    result = run(moto_endpoint, config, "deploy", "--hotswap")
    assert result.exit_code == 1
    assert "more than the processor's code changed" in result.stderr
    assert "run a full `iotpipe deploy --env dev`" in result.stderr
    after = lambda_client(moto_endpoint).get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"]
    assert after == before


def test_hotswap_refuses_a_stack_with_termination_protection(moto_endpoint: str, config: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    deploy(moto_endpoint, config)
    boto3.client("cloudformation", region_name=REGION, endpoint_url=moto_endpoint).update_termination_protection(
        StackName=STACK, EnableTerminationProtection=True)
    edit_handler(monkeypatch, "edited")
    result = run(moto_endpoint, config, "deploy", "--hotswap")
    assert result.exit_code == 1
    assert "stack iotpipe-dev has termination protection" in result.stderr and "production" in result.stderr


def test_hotswap_refuses_an_env_named_prod(moto_endpoint: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, "[env.prod]\n")
    result = run(moto_endpoint, config, "deploy", "--hotswap", env="prod")
    assert result.exit_code == 1
    assert "hotswap refused: env prod is named as a production env" in result.stderr
    assert "without --hotswap" in result.stderr


def test_watch_hotswaps_after_a_save(moto_endpoint: str, config: Path, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    deploy(moto_endpoint, config)
    source = tmp_path / "index.py"
    source.write_text(package.handler_source("python3.13"))
    monkeypatch.setattr(cli_hotswap, "handler_path", lambda _runtime: source)
    monkeypatch.setattr(package, "handler_source", lambda _runtime: source.read_text())
    monkeypatch.setattr(cli_hotswap, "WATCH_MAX_CHANGES", 1)
    monkeypatch.setattr(cli_hotswap, "WATCH_MAX_POLLS", 40)
    monkeypatch.setattr(cli_hotswap, "WATCH_INTERVAL_S", 0.05)
    saves = iter(range(3))

    def save_then_sleep(_seconds: float) -> None:
        if next(saves, None) == 1:
            source.write_text(source.read_text() + "\n# saved in the editor\n")

    monkeypatch.setattr(cli_hotswap, "WATCH_SLEEP", save_then_sleep)
    result = run(moto_endpoint, config, "deploy", "--watch")
    assert result.exit_code == 0, result.stderr
    assert "No code changes" in result.stdout  # the first pass: nothing saved yet
    assert f"Hotswapped {FUNCTION}" in result.stdout  # after the save
    sha = lambda_client(moto_endpoint).get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"]
    assert sha == hotswap_lib.code_sha256(package.processor_artefact("python3.13").body)


def test_hotswap_of_inline_code_sends_the_source_zipped(moto_endpoint: str, tmp_path: Path, config: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[env.dev]\n[env.dev.processor]\npackaging = "inline"\n')
    deploy(moto_endpoint, config)
    edit_handler(monkeypatch, "edited inline")
    result = run(moto_endpoint, config, "deploy", "--hotswap", "--output", "json")
    assert result.exit_code == 0, result.stderr
    expected = hotswap_lib.code_sha256(package.deterministic_zip(
        {"index.py": package.handler_source("python3.13").encode("utf-8")}))
    assert f'"codeSha256": "{expected}"' in result.stdout
    assert lambda_client(moto_endpoint).get_function(
        FunctionName=FUNCTION)["Configuration"]["CodeSha256"] == expected


def test_hotswap_with_no_execute_is_a_usage_error(config: Path) -> None:
    result = run("http://127.0.0.1:9", config, "deploy", "--hotswap", "--no-execute")
    assert result.exit_code == 2
    assert "use `iotpipe diff`" in result.stderr
