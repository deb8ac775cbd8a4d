"""``iotpipe --version`` says which release a bug report is about, and in a clone which commit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from click.testing import CliRunner

import iotpipe
from iotpipe.cli import main
from iotpipe.version import VersionInfo, version_info

ROOT = Path(__file__).resolve().parents[2]


def test_version_in_a_clone_names_the_release_and_the_commit() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert re.fullmatch(rf"iotpipe {re.escape(iotpipe.__version__)} \(git {head}(, modified)?\) on Python 3\.\d+\.\d+",
                        result.stdout.strip()), result.stdout


def test_an_installed_package_is_a_release_even_inside_a_clone(tmp_path: Path) -> None:
    """A wheel in a venv that sits inside a clone (site-packages/iotpipe) does not report the clone's commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    package = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "iotpipe"
    package.mkdir(parents=True)
    info = version_info(package)
    assert (info.commit, info.modified) == ("", False)
    assert info.describe() == f"iotpipe {iotpipe.__version__} on Python {info.python}"


def test_describe_says_when_the_clone_has_changes() -> None:
    assert VersionInfo("0.4.0", "1a2b3c4", True, "3.11.7").describe() == (
        "iotpipe 0.4.0 (git 1a2b3c4, modified) on Python 3.11.7")


def test_the_changelog_has_the_current_release_and_an_unreleased_section() -> None:
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]"
    assert re.fullmatch(rf"## \[{re.escape(iotpipe.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}", headings[1])
