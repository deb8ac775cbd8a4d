"""examples/ci: the workflow and the GitLab job install the current release and their iotpipe steps run as
written (in a user's repository with a committed template), producing the report their upload step reads."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from click.testing import CliRunner

import iotpipe
from iotpipe.cli import main
from iotpipe.config import build_config
from iotpipe.render import render_template

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


def github_steps() -> tuple[dict, list[str]]:
    workflow = yaml.safe_load((EXAMPLES / "iotpipe-lint.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["lint"]["steps"]
    return workflow, [step["run"] for step in steps if "run" in step]


def gitlab_steps() -> tuple[dict, list[str]]:
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text(encoding="utf-8"))["iotpipe-lint"]
    return job, list(job["script"])


def run_iotpipe_lines(lines: list[str], variables: dict[str, str]) -> list[str]:
    """Run each ``iotpipe ...`` line (variables expanded as the shell would) in the current directory; the pip
    lines back."""
    installs = []
    for line in lines:
        for name, value in variables.items():
            line = line.replace(f'"${name}"', value)
        argv = shlex.split(line)
        if argv[0] == "pip":
            installs.append(line)
            continue
        assert argv[0] == "iotpipe", line
        result = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
    return installs


@pytest.fixture
def user_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "TapStack.yml").write_text(render_template(build_config({}, "dev", {})),
                                                         encoding="utf-8")
    return tmp_path


def test_the_github_workflow_renders_lints_and_uploads_valid_sarif(user_repo: Path) -> None:
    workflow, lines = github_steps()
    assert workflow["permissions"]["security-events"] == "write"
    upload = next(step for step in workflow["jobs"]["lint"]["steps"]
                  if str(step.get("uses", "")).startswith("github/codeql-action/upload-sarif@"))
    assert upload["if"] == "${{ !cancelled() }}"  # findings are uploaded when the gate fails too
    installs = run_iotpipe_lines(lines, workflow["env"])
    assert installs == [f"pip install 'iotpipe[lint]=={iotpipe.__version__}'"]
    sarif = json.loads((user_repo / upload["with"]["sarif_file"]).read_text(encoding="utf-8"))
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["tool"]["driver"]["name"] == "iotpipe lint"


def test_the_gitlab_job_writes_the_junit_report_it_declares(user_repo: Path) -> None:
    job, lines = gitlab_steps()
    installs = run_iotpipe_lines(lines, job["variables"])
    assert installs == [f"pip install 'iotpipe[lint]=={iotpipe.__version__}'"]
    report = ElementTree.parse(user_repo / job["artifacts"]["reports"]["junit"]).getroot()
    assert report.find("testsuite") is not None and job["artifacts"]["when"] == "always"
