"""``.pre-commit-hooks.yaml``: the hooks work as a user's ``repo:`` entry, through ``pre-commit try-repo``.

pre-commit installs this repository into a fresh hook virtualenv with ``pip install .``. Offline, pip is told
to take nothing from an index (``PIP_NO_INDEX``, ``PIP_NO_DEPS``, no build isolation) and the hook env sees
the dev venv's site-packages through ``PYTHONPATH`` for iotpipe's dependencies only: a path on ``PYTHONPATH``
has its ``.pth`` files ignored, so the dev venv's editable iotpipe is invisible and the hooks run the iotpipe
that pip built from the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from iotpipe.config import build_config
from iotpipe.render import render_template

ROOT = Path(__file__).resolve().parents[2]
UNENCRYPTED_BUCKET = "Resources:\n  Logs:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: team-logs\n"
ENCRYPTED_BUCKET = UNENCRYPTED_BUCKET + (
    "      BucketEncryption:\n        ServerSideEncryptionConfiguration:\n"
    "          - ServerSideEncryptionByDefault:\n              SSEAlgorithm: AES256\n")
VPC_JSON = '{"Resources": {"Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}}}}\n'


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
                   check=True, capture_output=True)


def try_repo(user_repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1",
           "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
           "PYTHONPATH": sysconfig.get_paths()["purelib"], "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--all-files"], cwd=user_repo,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's repository: iotpipe.toml changed since templates/TapStack.yml was rendered, an unencrypted bucket
    in another stack, a clean JSON stack, and a YAML file outside templates/ that is no template."""
    repo = tmp_path / "user"
    (repo / "templates").mkdir(parents=True)
    (repo / "templates" / "TapStack.yml").write_text(render_template(build_config({}, "dev", {})), encoding="utf-8")
    (repo / "iotpipe.toml").write_text("[env.dev.processor]\nmemory_mb = 1024\n", encoding="utf-8")
    (repo / "templates" / "app.yml").write_text(UNENCRYPTED_BUCKET, encoding="utf-8")
    (repo / "templates" / "network.json").write_text(VPC_JSON, encoding="utf-8")
    (repo / "docs").mkdir()
    (repo / "docs" / "mkdocs.yml").write_text("site_name: not a template\n", encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "stacks")
    return repo


def test_the_hooks_fail_on_findings_and_a_stale_template_then_pass(user_repo: Path, tmp_path: Path) -> None:
    result = try_repo(user_repo, tmp_path / "pre-commit-home")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "iotpipe lint" in output and "iotpipe render --check" in output
    # iotpipe-lint: the templates under templates/ only, each one judged; a foreign stack gets iotpipe's rule
    assert "templates/app.yml:2 E9104 Logs: AWS::S3::Bucket without encryption at rest" in output
    assert "templates/network.json: 0 blocking finding(s)" in output
    assert "templates/TapStack.yml: 0 blocking finding(s)" in output
    assert "mkdocs.yml" not in output
    # iotpipe-render-check: the committed template is stale for the changed iotpipe.toml
    assert "templates/TapStack.yml is stale: 2 line(s) differ" in output
    assert "re-render it: iotpipe render --env dev -o templates/TapStack.yml" in output

    (user_repo / "templates" / "app.yml").write_text(ENCRYPTED_BUCKET, encoding="utf-8")
    (user_repo / "templates" / "TapStack.yml").write_text(
        render_template(build_config({"env": {"dev": {"processor": {"memory_mb": 1024}}}}, "dev", {})),
        encoding="utf-8")
    git(user_repo, "commit", "-q", "-a", "-m", "fixed")
    result = try_repo(user_repo, tmp_path / "pre-commit-home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Passed") == 2
