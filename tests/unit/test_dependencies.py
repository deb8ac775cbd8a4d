"""The dependency policy: tested upper bounds, a lock for the dev/CI environment, and the moto check at start."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from iotpipe.errors import LocalError
from iotpipe.local.emulator.moto_compat import kinesis as moto_kinesis
from iotpipe.local.emulator.moto_compat import versions

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
_EXTRAS = [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
ALL_REQUIREMENTS = [Requirement(r) for r in [*PROJECT["dependencies"], *_EXTRAS]]

# Packages whose internals iotpipe patches (moto, botocore, amqtt, waitress serving moto's app) or whose
# behaviour its tests pin (template output, lint findings, SQL dialects, checkov's findings).
PATCHED_OR_PINNED = {"moto", "botocore", "amqtt", "waitress", "troposphere", "awacs", "cfn-lint", "duckdb",
                     "sqlglot", "checkov", "paho-mqtt", "boto3", "click"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _name(requirement: Requirement) -> str:
    return re.sub(r"[-_.]+", "-", requirement.name).lower()


@pytest.mark.parametrize("requirement", ALL_REQUIREMENTS, ids=str)
def test_every_patched_or_pinned_dependency_has_an_upper_bound(requirement: Requirement) -> None:
    if _name(requirement) not in PATCHED_OR_PINNED:
        return
    uppers = [s for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=")]
    lowers = [s for s in requirement.specifier if s.operator in (">", ">=", "==", "~=")]
    assert uppers, f"{requirement} has no upper bound"
    assert lowers, f"{requirement} has no lower bound"


def test_the_lock_pins_every_dependency_inside_its_bounds() -> None:
    pins = _pins()
    for requirement in ALL_REQUIREMENTS:
        assert _name(requirement) in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(Version(pins[_name(requirement)]), prereleases=True), \
            f"constraints.txt pins {requirement.name}=={pins[_name(requirement)]} outside {requirement}"


def test_the_moto_bound_in_pyproject_is_the_range_checked_at_start() -> None:
    motos = [r for r in ALL_REQUIREMENTS if _name(r) == "moto"]
    assert len(motos) == 2  # the local and dev extras
    for requirement in motos:
        assert str(requirement.specifier) == str(Requirement(f"moto{versions.MOTO.specifier}").specifier)


def test_the_installed_moto_is_the_tested_one() -> None:
    installed = versions.installed_version("moto")
    assert installed is not None and versions.MOTO.contains(installed)


@pytest.mark.parametrize(("version", "inside"), [
    ("5.2.4", False), ("5.2.5", True), ("5.2.6", True), ("5.2.7", False), ("5.2.7.dev1", False),
    ("5.3.0", False), ("6.0", False),
])
def test_the_range_contains_exactly_the_tested_releases(version: str, inside: bool) -> None:
    assert versions.MOTO.contains(version) is inside


def test_an_untested_moto_is_refused_in_one_line_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(versions.ALLOW_UNTESTED, raising=False)
    with pytest.raises(LocalError) as caught:
        versions.check_tested(version="5.3.0")
    message = str(caught.value)
    assert "\n" not in message
    assert "moto 5.3.0" in message and ">=5.2.5,<5.2.7" in message
    assert caught.value.exit_code == 2
    versions.check_tested(version="5.2.6")  # inside: no error
    monkeypatch.setenv(versions.ALLOW_UNTESTED, "1")
    versions.check_tested(version="5.3.0")  # on purpose (make test-latest)


def test_a_missing_moto_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "installed_version", lambda _package: None)
    with pytest.raises(LocalError) as caught:
        versions.check_tested()
    assert str(caught.value) == "moto is not installed, and iotpipe local needs it: pip install 'iotpipe[local]'"


def test_local_up_refuses_an_untested_moto_before_starting_anything(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from iotpipe.local import supervisor as pipeline

    monkeypatch.delenv(versions.ALLOW_UNTESTED, raising=False)
    monkeypatch.setattr(versions, "installed_version", lambda _package: "9.0.0")
    started: list[str] = []
    monkeypatch.setattr(pipeline.LocalPipeline, "_start_broker", lambda _self: started.append("broker"))
    with pytest.raises(LocalError, match=r"moto 9\.0\.0"):
        pipeline.LocalPipeline(pipeline.LocalOptions(directory=tmp_path)).start()
    assert started == []
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize("created_at", [
    1_700_000_000.25,  # moto <= 5.2.5: epoch seconds
    datetime(2023, 11, 14, 22, 13, 20, 250000),  # moto 5.2.6: naive UTC
    datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC),
])
def test_a_records_arrival_reads_as_epoch_seconds_in_every_moto_form(created_at: object) -> None:
    assert moto_kinesis.arrival_seconds(SimpleNamespace(created_at=created_at)) == pytest.approx(1_700_000_000.25)


def _latest_requirements() -> object:
    spec = importlib.util.spec_from_file_location("latest_requirements", ROOT / "scripts" / "latest_requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["latest_requirements"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("requirement", "expected"), [
    ("moto[server]>=5.2.5,<5.2.7", "moto[server]>=5.2.5"),
    ("cfn-lint>=1.20,<1.59", "cfn-lint>=1.20"),
    ("paho-mqtt>=2.0,<3", "paho-mqtt>=2.0"),
    ("wheel", "wheel"),
])
def test_make_test_latest_drops_every_upper_bound(requirement: str, expected: str) -> None:
    assert _latest_requirements().unbounded(requirement) == expected  # type: ignore[attr-defined]
