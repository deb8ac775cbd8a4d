"""Rendering is deterministic, and the handler ships inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

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
        IntrinsicsLoader.add_constructor(tag, lambda _loader, node: None)
    document = yaml.load(text, Loader=IntrinsicsLoader)
    assert document["Parameters"]["EnvironmentSuffix"]["Default"] == "qa"


def test_wheel_ships_the_handler_sources(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("iotpipe-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("iotpipe/handlers/python/index.py").decode("utf-8")
        names = archive.namelist()
    assert shipped == (ROOT / "handler" / "python" / "index.py").read_text(encoding="utf-8")
    assert not any("eval-data" in name or name.endswith(".csv") for name in names)
