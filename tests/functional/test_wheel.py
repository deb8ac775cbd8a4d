"""The built package works on its own: sdist and wheel pass ``twine check``, and the wheel, installed into a fresh
venv outside the repository, does what the README's first minutes promise (render, lint, local up, simulate,
readings, local down). Package data missing from the wheel fails here.

Offline: the wheel is built without build isolation (the dev venv's setuptools), and the fresh venv
(``venv --without-pip``) gets iotpipe from the wheel alone (``pip --python <venv> install --no-deps``) and its
dependencies from the dev venv's site-packages through a ``.pth`` line. A directory a ``.pth`` adds has its own
``.pth`` files ignored, so the dev venv's editable iotpipe stays invisible; the test asserts the iotpipe imported
is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import iotpipe
from iotpipe.config import build_config
from iotpipe.render import render_template

ROOT = Path(__file__).resolve().parents[2]

# The wheel's dependencies, and those of its `local` and `lint` extras, are installed in the venv within the
# ranges the wheel declares (read from its metadata, inside the venv).
CHECK_REQUIREMENTS = """
import importlib.metadata as md, json, sys
from packaging.requirements import Requirement
problems = []
for text in md.requires("iotpipe") or []:
    req = Requirement(text)
    if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", "local", "lint")):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        problems.append(f"{req} missing")
        continue
    if not req.specifier.contains(version, prereleases=True):
        problems.append(f"{req} but {version}")
print(json.dumps({"problems": problems, "extras": md.metadata("iotpipe").get_all("Provides-Extra")}))
"""


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel of a copy of the repository (building writes build/ and egg-info beside the sources)."""
    work = tmp_path_factory.mktemp("dist")
    source = work / "source"
    for name in ("src", "handler"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("node_modules", "*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = work / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
                            "--outdir", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository with the built wheel installed."""
    directory = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    wheel = next(dist.glob("iotpipe-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    return directory


@pytest.fixture
def user_env(venv: Path, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment and working directory of a user of the venv: its bin first on PATH, no iotpipe.toml."""
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", AWS_DEFAULT_REGION="us-east-1",
               IOTPIPE_LOCAL_DIR=str(tmp_path / "local-state"))
    yield env, tmp_path
    run([str(venv / "bin" / "iotpipe"), "local", "down"], env, tmp_path, timeout=60)


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    names = sorted(path.name for path in dist.iterdir())
    assert names == [f"iotpipe-{iotpipe.__version__}-py3-none-any.whl", f"iotpipe-{iotpipe.__version__}.tar.gz"]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_wheel_alone_does_the_readmes_first_minutes(venv: Path, user_env: tuple[dict[str, str], Path]) -> None:
    env, cwd = user_env
    cli = str(venv / "bin" / "iotpipe")
    python = str(venv / "bin" / "python")

    where = run([python, "-c", "import iotpipe; print(iotpipe.__file__)"], env, cwd)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv) and not Path(where.stdout.strip()).is_relative_to(ROOT)
    requirements = json.loads(run([python, "-c", CHECK_REQUIREMENTS], env, cwd).stdout)
    assert requirements["problems"] == []
    assert {"local", "lint", "sql"} <= set(requirements["extras"])

    version = run([cli, "--version"], env, cwd)
    assert version.stdout.strip() == f"iotpipe {iotpipe.__version__} on Python {sys.version.split()[0]}"

    render = run([cli, "render", "--env", "dev", "-o", "TapStack.yml"], env, cwd)
    assert render.returncode == 0, render.stderr
    # the wheel renders what the source tree does for the built-in defaults (its handler sources included)
    assert (cwd / "TapStack.yml").read_text(encoding="utf-8") == render_template(build_config({}, "dev", {}))
    # iotpipe's own rules ship and load by module path (checkov, not iotpipe's code, is left out for time)
    lint = run([cli, "lint", "TapStack.yml", "--no-checkov", "--format", "sarif", "-o", "lint.sarif"], env, cwd)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "TapStack.yml: 0 blocking finding(s), 0 informational" in lint.stderr
    rendered = (cwd / "TapStack.yml").read_text(encoding="utf-8")
    broken = rendered.replace("      StreamEncryption:\n", "      Unused:\n", 1)
    (cwd / "broken.yml").write_text(broken, encoding="utf-8")
    lint = run([cli, "lint", "broken.yml", "--no-checkov"], env, cwd)
    assert lint.returncode == 1 and " E9104 SensorDataStream: " in lint.stdout

    up = run([cli, "local", "up", "--detach"], env, cwd, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    simulate = run([cli, "simulate", "--env", "local", "--count", "20", "--seed", "1"], env, cwd, timeout=120)
    assert simulate.returncode == 0, simulate.stdout + simulate.stderr
    stored: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    for _ in range(120):  # the processor stores a batch a moment after the broker takes it
        readings = run([cli, "readings", "sim-001", "--env", "local", "--output", "json"], env, cwd)
        assert readings.returncode == 0, readings.stdout + readings.stderr
        stored = json.loads(readings.stdout)
        if len(stored) >= 20 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(stored) >= 20
    down = run([cli, "local", "down"], env, cwd, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr


def test_the_wheel_holds_every_file_of_the_console_page(dist: Path) -> None:
    # the page works with no internet: every file it loads (its script, styles, the vendored chart library) must
    # be in the wheel, not only in the source tree
    import zipfile

    static = ROOT / "src" / "iotpipe" / "console" / "static"
    wanted = {f"iotpipe/console/static/{p.relative_to(static).as_posix()}" for p in static.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(next(dist.glob("iotpipe-*.whl"))) as wheel:
        shipped = set(wheel.namelist())
    assert wanted and "iotpipe/console/static/vendor/uPlot.iife.min.js" in wanted
    assert wanted - shipped == set()
