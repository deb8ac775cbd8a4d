"""The lint gate: cfn-lint and checkov findings in one format; exit 1 on a blocking one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpipe import lint as lint_module
from iotpipe.cli import build as build_module
from iotpipe.cli import main
from iotpipe.composition import compose
from iotpipe.config import load_config
from iotpipe.lint import Finding, blocking, lint_template
from iotpipe.render import render_template, to_yaml

KINESIS_ENCRYPTION_CHECK = "CKV_AWS_43"  # "Ensure Kinesis Stream is securely encrypted"


def first_line_of(text: str, logical_id: str) -> int:
    """1-based line of ``  <logical_id>:`` under Resources."""
    lines = text.splitlines()
    return lines.index(f"  {logical_id}:") + 1


@pytest.fixture(scope="module")
def dev_text() -> str:
    return render_template(load_config(None, "dev"))


@pytest.fixture(scope="module")
def unencrypted_stream_text() -> str:
    """The dev template with the seed's defect back: a stream without server-side encryption."""
    template = compose(load_config(None, "dev")).template
    del template.resources["SensorDataStream"].properties["StreamEncryption"]
    return to_yaml(template)


def test_dev_template_passes_both_tools(dev_text: str) -> None:
    findings = lint_template(dev_text, checkov=True)
    assert blocking(findings) == []
    assert {f.source for f in findings} == {"checkov"}  # only the reasoned skips, reported not blocking


def test_checkov_skip_is_reported_at_the_resource_with_its_reason(dev_text: str) -> None:
    findings = {f.rule: f for f in lint_template(dev_text, checkov=True)}
    skip = findings["CKV_AWS_18"]
    assert skip == Finding(
        source="checkov", rule="CKV_AWS_18", severity="informational",
        message="skipped: Ensure the S3 bucket has access logging enabled "
                "(This is the access-log bucket itself; logging it into itself would loop.)",
        path="Resources/RawDataAccessLogBucket", line=first_line_of(dev_text, "RawDataAccessLogBucket"),
        resource="RawDataAccessLogBucket", title="Ensure the S3 bucket has access logging enabled")


def test_failed_checkov_check_is_an_error_at_the_resource(unencrypted_stream_text: str) -> None:
    findings = lint_template(unencrypted_stream_text, checkov=True)
    failed = [f for f in blocking(findings) if f.source == "checkov"]
    assert failed == [Finding(source="checkov", rule=KINESIS_ENCRYPTION_CHECK, severity="error",
                              message="Ensure Kinesis Stream is securely encrypted",
                              path="Resources/SensorDataStream",
                              line=first_line_of(unencrypted_stream_text, "SensorDataStream"),
                              resource="SensorDataStream", title="Ensure Kinesis Stream is securely encrypted")]


def test_checkov_runs_only_when_asked(unencrypted_stream_text: str) -> None:
    # iotpipe's own cfn-lint rule E9104 finds the missing encryption without checkov.
    assert [(f.source, f.rule, f.path) for f in lint_template(unencrypted_stream_text)] == [
        ("cfn-lint", "E9104", "Resources/SensorDataStream")]


def misspelt_property(text: str) -> str:
    """``text`` with a property cfn-lint rejects (E3002) on the stream."""
    broken = text.replace("      RetentionPeriodHours: 24\n", "      RetentionPeriodHours: 24\n      ShardCountt: 1\n")
    assert broken != text
    return broken


def test_cfn_lint_findings_keep_their_format_next_to_checkov(dev_text: str) -> None:
    broken = misspelt_property(dev_text)
    cfn = [f for f in lint_template(broken, checkov=True) if f.source == "cfn-lint"]
    assert [(f.rule, f.severity, f.path) for f in cfn] == [
        ("E3002", "error", "Resources/SensorDataStream/Properties/ShardCountt")]
    assert cfn[0].line == broken.splitlines().index("      ShardCountt: 1") + 1


def test_cfn_lint_metadata_advice_stays_ignored() -> None:
    assert "I4010" in lint_module.IGNORED_RULES


# ---------------------------------------------------------------- the CLI

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_exits_1_on_a_failed_checkov_check(tmp_path: Path, unencrypted_stream_text: str) -> None:
    path = write(tmp_path, unencrypted_stream_text)
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1, result.output
    line = first_line_of(unencrypted_stream_text, "SensorDataStream")
    assert f"{path}:{line} {KINESIS_ENCRYPTION_CHECK} Ensure Kinesis Stream is securely encrypted" in result.stdout
    assert "2 blocking finding(s)" in result.stderr  # checkov CKV_AWS_43 and iotpipe's E9104


def test_cli_without_checkov_lets_cfn_lint_decide(tmp_path: Path, unencrypted_stream_text: str) -> None:
    path = write(tmp_path, unencrypted_stream_text)
    result = CliRunner().invoke(main, ["lint", str(path), "--no-checkov"])
    assert result.exit_code == 1, result.output
    line = first_line_of(unencrypted_stream_text, "SensorDataStream")
    assert result.stdout.startswith(f"{path}:{line} E9104 SensorDataStream: AWS::Kinesis::Stream without encryption")
    assert KINESIS_ENCRYPTION_CHECK not in result.stdout


def test_cli_says_when_checkov_is_missing(tmp_path: Path, unencrypted_stream_text: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lint_module, "checkov_available", lambda: False)
    monkeypatch.setattr(build_module, "checkov_available", lambda: False)
    result = CliRunner().invoke(main, ["lint", str(write(tmp_path, unencrypted_stream_text))])
    assert result.exit_code == 1, result.output  # cfn-lint with iotpipe's rules still blocks it (E9104)
    # the hint names the extra, which a wheel install can follow (not an editable install of a clone)
    assert "checkov is not installed (pip install 'iotpipe[lint]'): only cfn-lint ran" in result.stderr
    assert "-e" not in result.stderr
    assert " E9104 " in result.stdout and KINESIS_ENCRYPTION_CHECK not in result.stdout


def test_cli_json_lists_both_tools_in_one_format(tmp_path: Path, unencrypted_stream_text: str) -> None:
    broken = misspelt_property(unencrypted_stream_text)
    path = write(tmp_path, broken)
    result = CliRunner().invoke(main, ["lint", str(path), "--output", "json"])
    assert result.exit_code == 1, result.output
    findings = json.loads(result.stdout)
    assert {f["source"] for f in findings} == {"cfn-lint", "checkov"}
    assert all(set(f) == {"source", "rule", "severity", "message", "path", "line", "resource", "title", "help_uri",
                          "file"} for f in findings)
    assert {"file": str(path), "source": "checkov", "rule": KINESIS_ENCRYPTION_CHECK, "severity": "error",
            "message": "Ensure Kinesis Stream is securely encrypted", "path": "Resources/SensorDataStream",
            "line": first_line_of(broken, "SensorDataStream"), "resource": "SensorDataStream",
            "title": "Ensure Kinesis Stream is securely encrypted", "help_uri": ""} in findings
    e9104 = next(f for f in findings if f["rule"] == "E9104")
    assert e9104["resource"] == "SensorDataStream" and e9104["title"] == "Data stores are encrypted at rest"
    assert e9104["help_uri"] == "docs/security.md#iotpipes-own-lint-rules"


def test_cli_lints_the_rendered_env_by_default() -> None:
    result = CliRunner().invoke(main, ["lint", "--env", "dev"])
    assert result.exit_code == 0, result.output
    # The informational findings are checkov checks skipped in the template's Metadata, each with its reason.
    assert "0 blocking finding(s), 8 informational (checkov 8)" in result.stderr
    skipped = [line for line in result.stdout.splitlines() if " skipped: " in line]
    assert len(skipped) == 8 and all(line.endswith(")") and " (" in line for line in skipped)
