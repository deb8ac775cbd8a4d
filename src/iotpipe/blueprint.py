"""Blueprints: a user's callable that receives the default :class:`~iotpipe.composition.Composition` and returns a
customised one (a property changed, a group added or replaced). ``--blueprint`` on ``render``, ``lint``, ``diff``
and ``deploy`` names one as ``package.module:callable`` or ``path/to/file.py:callable``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from troposphere import Template

from iotpipe.composition import Composition
from iotpipe.errors import BlueprintError

SPEC_HELP = "give module:callable (e.g. mypkg.blueprints:customise) or path/to/file.py:callable"
_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


@dataclass(frozen=True)
class Blueprint:
    """A loaded blueprint: the spec it was named by and the callable."""

    spec: str
    function: Callable[[Composition], Composition]

    def apply(self, composition: Composition) -> Composition:
        """Call the blueprint on ``composition``; BlueprintError if it fails or returns something else."""
        try:
            result = self.function(composition)
        except SystemExit as exc:  # else render, lint, diff and deploy would exit 0 having done nothing
            raise BlueprintError(f"blueprint {self.spec} called sys.exit({exc.code!r}) instead of returning a "
                                 "Composition; return the composition, or raise an exception to stop") from None
        except Exception as exc:
            raise BlueprintError(f"blueprint {self.spec} raised {type(exc).__name__}: {exc}; fix the blueprint "
                                 "(--debug shows the traceback)") from exc
        if not isinstance(result, Composition):
            raise BlueprintError(f"blueprint {self.spec} returned {type(result).__name__}, not a Composition; "
                                 "return the composition it was given (changed) or one made by iotpipe.compose()")
        if not isinstance(result.template, Template):
            raise BlueprintError(f"blueprint {self.spec} returned a Composition whose template is "
                                 f"{type(result.template).__name__}; keep a troposphere Template at .template")
        _check_json(self.spec, result.template)
        return result


def _check_json(spec: str, template: Template) -> None:
    """BlueprintError naming the resource (or output, parameter) whose properties are not JSON: a set, a datetime
    or any object troposphere does not know would fail the render with a TypeError traceback."""
    sections = (("resource", template.resources), ("output", template.outputs), ("parameter", template.parameters))
    for kind, items in sections:
        for name, item in items.items():
            try:
                body = item.to_dict()
            except Exception:  # a validation error is the render's to report, in its own words
                continue
            try:
                json.dumps(body)
            except (TypeError, ValueError) as exc:
                raise BlueprintError(f"blueprint {spec} gave {kind} {name} a value that is not JSON ({exc}); set "
                                     "strings, numbers, booleans, lists, dicts or troposphere objects "
                                     "(Ref, GetAtt, Sub)") from None


def load_blueprint(spec: str) -> Blueprint:
    """Import the blueprint named by ``spec`` (``module:callable`` or ``path/to/file.py:callable``)."""
    target, _, attribute = spec.rpartition(":")
    if not target or not _ATTRIBUTE.fullmatch(attribute):
        raise BlueprintError(f"blueprint {spec!r} is not a blueprint spec; {SPEC_HELP}")
    module = _load_file(spec, Path(target)) if _is_path(target) else _load_module(spec, target)
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise BlueprintError(f"blueprint {spec}: {getattr(module, '__name__', target)} has no attribute "
                                 f"{attribute!r}; define it, or name an existing callable after the colon")
        found = getattr(found, part)
    if not callable(found):
        raise BlueprintError(f"blueprint {spec}: {attribute} is a {type(found).__name__}, not callable; name a "
                             "function that takes a Composition and returns one")
    return Blueprint(spec, found)


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target or not _MODULE.fullmatch(target)


def _load_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise BlueprintError(f"blueprint {spec}: file {path} does not exist; check the path (relative to the "
                             "current directory)")
    name = "iotpipe_blueprint_" + re.sub(r"\W", "_", path.stem)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise BlueprintError(f"blueprint {spec}: {path} cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered first, as an import would be: dataclasses and pickling look the module up by name.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise BlueprintError(f"blueprint {spec}: importing {path} raised {type(exc).__name__}: {exc}; fix the "
                             "file (--debug shows the traceback)") from exc
    return module


def _load_module(spec: str, name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise BlueprintError(f"blueprint {spec}: no module named {exc.name!r}; install it, run from the "
                                 "directory that holds it, or give path/to/file.py:callable") from exc
        raise BlueprintError(f"blueprint {spec}: importing {name} raised ModuleNotFoundError: {exc}; install "
                             "what it needs") from exc
    except (Exception, SystemExit) as exc:
        raise BlueprintError(f"blueprint {spec}: importing {name} raised {type(exc).__name__}: {exc}; fix the "
                             "module (--debug shows the traceback)") from exc

