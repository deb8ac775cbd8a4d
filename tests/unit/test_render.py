"""Rendering is deterministic, and the handler ships inside the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from iotpipe.config import build_config
from iotpipe.render import render_template

ROOT = Path(__file__).resolve().parents[2]


def test_two_renders_are_byte_identical() -> None:
    cfg = build_config({}, "dev", {})
    assert render_template(cfg) == render_template(build_config({}, "dev", {}))


def test_render_uses_short_form_intrinsics_and_parses_as_yaml() -> None:
    text = render_template(build_config({}, "qa", {}))
    assert "!Sub 'iot-raw-data-${AWS::AccountId}-${AWS::Region}-${EnvironmentSuffix}'" in text
    class IntrinsicsLoader(yaml.SafeLoader):
        """SafeLoader that reads CloudFormation's short-form tags as nothing (it must not touch SafeLoader)."""

    for tag in ("!Ref", "!Sub", "!GetAtt", "!Not", "!Equals", "!Join"):
        IntrinsicsLoader.add_constructor(tag, lambda _loader, _node: None)
    document = yaml.load(text, Loader=IntrinsicsLoader)
    assert document["Parameters"]["EnvironmentSuffix"]["Default"] == "qa"


def test_wheel_ships_the_handler_sources(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for name in ("src", "handler"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("node_modules", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("iotpipe-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(f"iotpipe/handlers/{name}").decode("utf-8")
                   for name in ("python/index.py", "node/index.js")}
        names = archive.namelist()
    for name, text in shipped.items():
        assert text == (ROOT / "handler" / name).read_text(encoding="utf-8"), name
    assert not any("eval-data" in name or name.endswith(".csv") for name in names)
    # a typed library (PEP 561), its version read from iotpipe.__version__
    import iotpipe

    assert "iotpipe/py.typed" in names
    # every package of the source tree ships (the list in pyproject.toml is explicit)
    packages = sorted(path.parent.relative_to(ROOT / "src").as_posix()
                      for path in (ROOT / "src" / "iotpipe").rglob("__init__.py"))
    assert [package for package in packages if f"{package}/__init__.py" not in names] == []
    assert wheel.name.startswith(f"iotpipe-{iotpipe.__version__}-")


def test_render_imports_neither_linter() -> None:
    """`iotpipe render` must stay well under a second as a whole process: cfn-lint (~0.5 s to import) and
    checkov are imported only by the commands that lint."""
    code = ("import sys; from click.testing import CliRunner; from iotpipe.cli import main; "
            "assert CliRunner().invoke(main, ['render']).exit_code == 0; "
            "print(sorted(m for m in ('cfnlint', 'checkov') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_write_atomically_ignores_a_planted_symlink_and_leaves_no_temporary(tmp_path: Path) -> None:
    """Issue 12: the temporary file was the predictable .<name>.tmp, and a symlink planted there was followed."""
    from iotpipe.render import write_atomically

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out" / "TapStack.yml"
    out.parent.mkdir()
    (out.parent / f".{out.name}.tmp").symlink_to(victim)
    write_atomically(out, "Resources: {}\n")
    assert victim.read_text() == "precious\n"
    assert out.read_text() == "Resources: {}\n" and not out.is_symlink()
    assert sorted(p.name for p in out.parent.iterdir()) == [f".{out.name}.tmp", out.name]  # only the planted link


def test_write_follows_a_symlink_at_the_path_and_keeps_the_link(tmp_path: Path) -> None:
    from iotpipe.render import write_atomically

    target = tmp_path / "real" / "TapStack.yml"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "TapStack.yml"
    link.symlink_to(target)
    write_atomically(link, "Resources: {}\n")
    # Was: the link was replaced by a regular file and the target kept the old text.
    assert link.is_symlink() and target.read_text() == "Resources: {}\n"


def test_write_goes_through_to_a_character_device(tmp_path: Path) -> None:
    import stat

    from iotpipe.render import write_atomically

    # A link to /dev/null: the old code replaced the link (never the device itself, even as root, in this test).
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    write_atomically(link, "Resources: {}\n")
    assert link.is_symlink() and stat.S_ISCHR(Path("/dev/null").stat().st_mode)


def test_write_goes_through_to_a_fifo(tmp_path: Path) -> None:
    import os
    import threading

    from iotpipe.render import write_atomically

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomically(fifo, "Resources: {}\n")
    reader.join(timeout=10)
    assert received == [b"Resources: {}\n"]
    assert fifo.is_fifo()


def test_write_refuses_a_directory_behind_a_symlink(tmp_path: Path) -> None:
    from iotpipe.errors import TemplateError
    from iotpipe.render import write_atomically

    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    with pytest.raises(TemplateError, match="is a directory"):
        write_atomically(tmp_path / "link", "x")
