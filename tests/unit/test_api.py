"""The public API: what ``import iotpipe`` offers, its version and its type information."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import iotpipe

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_in_all_resolves_to_its_documented_object() -> None:
    from iotpipe.composition import Composition, compose
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


def test_compose_is_the_function_whichever_module_was_imported_first() -> None:
    code = ("import iotpipe.render, iotpipe.composition, iotpipe; from iotpipe.composition import Composition; "
            "print(callable(iotpipe.compose), iotpipe.compose.__name__, Composition.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "compose", "Composition"]


def test_no_module_shares_a_public_name() -> None:
    # A submodule is bound on its package by name when imported, so a module named like a public function
    # would replace it (iotpipe.compose was such a module).
    modules = {path.stem for path in (ROOT / "src" / "iotpipe").iterdir()
               if path.suffix == ".py" or (path / "__init__.py").is_file()}
    assert modules & set(iotpipe._EXPORTS) == set()


def _type_checking_imports() -> dict[str, str]:
    """name -> module of each import in iotpipe/__init__.py's ``if TYPE_CHECKING:`` block."""
    tree = ast.parse((ROOT / "src" / "iotpipe" / "__init__.py").read_text(encoding="utf-8"))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1
    found: dict[str, str] = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
            found[alias.name] = node.module
    return found


def test_the_public_names_are_listed_once() -> None:
    assert iotpipe.__all__ == ["__version__", *iotpipe._EXPORTS]
    assert _type_checking_imports() == iotpipe._EXPORTS
    for name, module in iotpipe._EXPORTS.items():
        assert getattr(importlib.import_module(module), name) is getattr(iotpipe, name), name
