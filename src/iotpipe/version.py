"""Which iotpipe this is, for a bug report: the release, and in a clone the git commit it runs from."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from iotpipe import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class VersionInfo:
    """The release, the commit of the clone iotpipe runs from ("" for an installed wheel), whether that clone has
    uncommitted changes, and the Python it runs on."""

    version: str
    commit: str
    modified: bool
    python: str

    def describe(self) -> str:
        """``iotpipe 0.4.0 (git 1a2b3c4, modified) on Python 3.11.7``; no git part for an installed release."""
        source = f" (git {self.commit}{', modified' if self.modified else ''})" if self.commit else ""
        return f"iotpipe {self.version}{source} on Python {self.python}"


def version_info(package_dir: Path = PACKAGE_DIR) -> VersionInfo:
    """The version of the iotpipe whose package is ``package_dir``.

    The commit is read only when the package is the ``src/iotpipe`` of a git work tree (a clone, or an editable
    install of one): a wheel installed into a venv that happens to sit inside a clone is a release, not that
    clone's commit.
    """
    commit, modified = _git_commit(package_dir)
    return VersionInfo(__version__, commit, modified, platform.python_version())


def _git_commit(package_dir: Path) -> tuple[str, bool]:
    root = package_dir.parent.parent
    if package_dir.parent.name != "src" or not (root / ".git").exists():
        return "", False
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "", False
    return head, bool(changes)


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    return result.stdout.strip()
