"""The public API: what ``import iotpipe`` offers, its version and its type information."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import iotpipe

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_in_all_resolves_to_its_documented_object() -> None:
    from iotpipe.compose import Composition, compose
    from iotpipe.config import PipelineConfig, load_config
    from iotpipe.lint import lint_template
    from iotpipe.naming import Names

    assert iotpipe.__all__[0] == "__version__"
    for name in iotpipe.__all__:
        assert getattr(iotpipe, name) is not None, name
    assert (iotpipe.compose, iotpipe.Composition, iotpipe.Names) == (compose, Composition, Names)
    assert (iotpipe.PipelineConfig, iotpipe.load_config, iotpipe.lint_template) == (
        PipelineConfig, load_config, lint_template)
    assert {"render_template", "to_yaml", "plan_deploy", "execute_plan", "load_blueprint"} <= set(iotpipe.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        iotpipe.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("iotpipe.no_such_thing resolved")


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "iotpipe.__version__"}
    assert iotpipe.__version__ == importlib.metadata.version("iotpipe")


def test_py_typed_ships_as_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["iotpipe"]
    assert (ROOT / "src" / "iotpipe" / "py.typed").is_file()


def test_import_iotpipe_loads_no_template_library() -> None:
    # The CLI and iotpipe local's workers import the package; the names load on first use.
    code = "import sys, iotpipe; print('troposphere' in sys.modules, 'boto3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_compose_stays_the_function_whichever_module_was_imported_first() -> None:
    code = ("import iotpipe.render, iotpipe; from iotpipe.compose import Composition; "
            "print(callable(iotpipe.compose), iotpipe.compose.__name__, Composition.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "compose", "Composition"]
