"""The Node twin's template: cfn-lint clean, no failed checkov check, same role; only Runtime and Code differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str
from click.testing import CliRunner

from iotpipe.cli import main
from iotpipe.cli.common import CliContext
from iotpipe.config import build_config
from iotpipe.lint import lint_template, run_checkov
from iotpipe.package import processor_artefact, read_zip_member
from iotpipe.render import render_template

NODE_SOURCE = Path(__file__).resolve().parents[2] / "handler" / "node" / "index.js"


def resources(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors
    return json.loads(json.dumps(template))["Resources"]


@pytest.fixture(scope="module")
def node_text() -> str:
    return render_template(build_config({}, "dev", {"processor.runtime": "nodejs24.x"}))


def test_node_template_is_cfn_lint_clean(node_text: str) -> None:
    assert [f"{f.line} {f.rule} {f.message}" for f in lint_template(node_text)] == []


def test_node_template_has_no_failed_checkov_check(node_text: str) -> None:
    report = run_checkov(node_text)
    assert report.failed == () and report.passed > 0


def test_only_runtime_and_code_differ_from_the_python_template(node_text: str) -> None:
    python = resources(render_template(build_config({}, "dev", {})))
    node = resources(node_text)
    assert node["DataProcessorRole"] == python["DataProcessorRole"]
    assert set(node) == set(python)
    for logical_id in python:
        if logical_id != "DataProcessorFunction":
            assert node[logical_id] == python[logical_id], logical_id
    differing = {key for key, value in node["DataProcessorFunction"]["Properties"].items()
                 if python["DataProcessorFunction"]["Properties"].get(key) != value}
    assert differing == {"Runtime", "Code"}
    assert node["DataProcessorFunction"]["Properties"]["Runtime"] == "nodejs24.x"
    artefact = processor_artefact("nodejs24.x")
    assert node["DataProcessorFunction"]["Properties"]["Code"]["S3Key"] == artefact.key
    assert read_zip_member(artefact.body, "index.js") == NODE_SOURCE.read_text(encoding="utf-8")


def test_cli_renders_the_node_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["render", "--runtime", "nodejs24.x"])
    assert result.exit_code == 0, result.output
    assert "Runtime: nodejs24.x" in result.stdout and processor_artefact("nodejs24.x").key in result.stdout
    inline = CliRunner().invoke(main, ["render", "--runtime", "nodejs24.x"],
                                obj=CliContext(overrides={"processor.packaging": "inline"}))
    assert inline.exit_code == 0, inline.output
    assert "function processBatch" in inline.stdout
