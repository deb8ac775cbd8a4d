"""``iotpipe render`` and ``iotpipe lint`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.config import build_config
from iotpipe.render import render_template

BROKEN_TEMPLATE = """AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 'soon'
      NoSuchProperty: 1
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no iotpipe.toml here: built-in defaults
    return CliRunner()


def test_render_to_stdout_is_the_library_render(runner: CliRunner) -> None:
    result = runner.invoke(main, ["render", "--env", "dev"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_template(build_config({}, "dev", {}))


def test_render_to_file_and_runtime_override(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out" / "stack.yml"
    result = runner.invoke(main, ["render", "--env", "qa", "-o", str(out), "--runtime", "python3.12"])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "Runtime: python3.12" in text and "Default: qa" in text
    assert result.stdout == ""


def test_bad_config_exits_2_naming_the_key_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "iotpipe.toml").write_text("[env.dev.processor]\nbatch_size = 20000\n", encoding="utf-8")
    out = tmp_path / "stack.yml"
    result = runner.invoke(main, ["render", "--env", "dev", "-o", str(out)])
    assert result.exit_code == 2
    assert "env.dev.processor.batch_size: 20000 is out of range" in result.stderr
    assert not out.exists()


def test_unknown_env_name_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["render", "--env", "Prod_1"])
    assert result.exit_code == 2 and "not a valid environment name" in result.stderr


def test_lint_of_the_rendered_template_passes(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "stack.yml"
    path.write_text(render_template(build_config({}, "dev", {})), encoding="utf-8")
    result = runner.invoke(main, ["lint", str(path)])
    assert result.exit_code == 0, result.output


def test_lint_reports_findings_as_file_line_rule_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN_TEMPLATE, encoding="utf-8")
    result = runner.invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line]
    assert any(line.startswith(f"{path}:6 E3012") for line in lines), lines
    assert any(" E3002 " in line and "NoSuchProperty" in line for line in lines), lines


def test_lint_json_output_parses(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN_TEMPLATE, encoding="utf-8")
    result = runner.invoke(main, ["lint", str(path), "--output", "json"])
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    assert {f["rule"] for f in findings if f["source"] == "cfn-lint"} >= {"E3012", "E3002"}
    assert all({"source", "rule", "severity", "message", "path", "line"} <= set(f) for f in findings)


def test_lint_of_a_missing_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["lint", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("command", ["render", "lint"])
def test_help_shows_examples(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Examples:" in result.stdout and f"iotpipe {command}" in result.stdout


def test_render_check_passes_on_a_current_template_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "templates" / "TapStack.yml"
    assert runner.invoke(main, ["render", "--env", "dev", "-o", str(out)]).exit_code == 0
    before = out.stat().st_mtime_ns
    result = runner.invoke(main, ["render", "--env", "dev", "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert f"{out} is current for --env dev" in result.stderr
    assert out.stat().st_mtime_ns == before and result.stdout == ""


def test_render_check_fails_on_a_template_stale_for_its_config(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "TapStack.yml"
    assert runner.invoke(main, ["render", "--env", "dev", "-o", str(out)]).exit_code == 0
    committed = out.read_text(encoding="utf-8")
    (tmp_path / "iotpipe.toml").write_text("[env.dev.processor]\nmemory_mb = 1024\n", encoding="utf-8")
    result = runner.invoke(main, ["render", "--env", "dev", "-o", str(out), "--check"])
    assert result.exit_code == 1, result.output
    assert f"{out} is stale: 2 line(s) differ from what iotpipe renders for its config" in result.stderr
    assert "+      MemorySize: 1024" in result.stderr
    assert f"re-render it: iotpipe render --env dev -o {out}" in result.stderr
    assert out.read_text(encoding="utf-8") == committed  # --check never writes


def test_render_check_of_a_missing_file_fails_and_without_a_file_is_a_usage_error(runner: CliRunner,
                                                                                   tmp_path: Path) -> None:
    result = runner.invoke(main, ["render", "-o", str(tmp_path / "nope.yml"), "--check"])
    assert result.exit_code == 1 and "nope.yml does not exist" in result.stderr
    result = runner.invoke(main, ["render", "--check"])
    assert result.exit_code == 2 and "--check compares a rendered template with a file" in result.stderr
