"""docs/library.md (and the README and index snippets): every Python block runs, in order, and prints what its
comments say."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from iotpipe.local.emulator import moto_compat

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "library.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PRINT = re.compile(r"(^|[^\w.])print\(")


def blocks(text: str) -> list[str]:
    """The guide's Python code blocks, in order."""
    return BLOCK.findall(text)


def expected_output(code: str) -> list[str]:
    """What each ``print(...)`` of ``code`` should show: its trailing comment, or the comment line after it."""
    lines = code.splitlines()
    expected = []
    for index, line in enumerate(lines):
        if not PRINT.search(line):
            continue
        comment = line.split("  # ", 1)[1] if "  # " in line else lines[index + 1].strip().removeprefix("# ")
        expected.append(comment.strip())
    return expected


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    shutil.copy(ROOT / "iotpipe.toml", tmp_path / "iotpipe.toml")
    monkeypatch.chdir(tmp_path)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto_compat.apply(moto_compat.LIBRARY_KINDS)
    with mock_aws():
        yield tmp_path


def test_the_guide_has_a_block_for_every_step() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for heading in ("## A configuration", "## A composition", "### Change a property", "### Add a group of your own",
                    "### Replace a built-in group", "### Two pipelines in one template", "## Rendering",
                    "## Linting", "## Deploying"):
        assert heading in text, heading
    assert len(blocks(text)) >= 10


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("page", [GUIDE, ROOT / "README.md", ROOT / "docs" / "index.md"], ids=lambda p: p.name)
def test_every_block_runs_and_prints_what_it_says(monkeypatch: pytest.MonkeyPatch, page: Path) -> None:
    guide = types.ModuleType("library_guide")  # a real module: the guide's dataclasses look it up
    monkeypatch.setitem(sys.modules, guide.__name__, guide)
    namespace = guide.__dict__
    found = blocks(page.read_text(encoding="utf-8"))
    assert found, f"{page.name} has no Python block"
    for number, code in enumerate(found, start=1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
        shown = printed.getvalue().splitlines()
        wanted = expected_output(code)
        assert len(shown) == len(wanted), (number, shown, wanted)
        for line, comment in zip(shown, wanted, strict=True):
            assert comment.startswith(line), (number, line, comment)


def test_the_comparison_can_fail() -> None:
    assert expected_output('print(1 + 1)  # 3\nprint("x")\n# x\nblueprint = f(1)  # not a print\n') == ["3", "x"]
    assert not "3".startswith("2")
