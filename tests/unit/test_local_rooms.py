"""The rooms of ``iotpipe local`` stay rooms: each imports only itself and the shared modules (the supervisor is the
one module that wires rooms together), and no module grows past 800 lines (docs/development.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import iotpipe.local

LOCAL = Path(iotpipe.local.__file__).parent
SHARED = {"processes", "state", "stack", "clients", "health"}
ROOMS = ("broker", "esm", "functions")


def _local_imports(path: Path) -> set[str]:
    """The ``iotpipe.local`` modules that ``path`` imports, by their first name below ``iotpipe.local``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("iotpipe.local."):
                found.add(name.split(".")[2])
    return found


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_imports_itself_and_the_shared_modules_only(room: str) -> None:
    imported = set().union(*(_local_imports(path) for path in (LOCAL / room).glob("*.py")))
    assert imported - SHARED - {room} == set()


def test_the_shared_modules_import_no_room() -> None:
    for name in SHARED:
        assert _local_imports(LOCAL / f"{name}.py") & set(ROOMS) == set(), name


@pytest.mark.parametrize("path", sorted([*(LOCAL / room for room in ROOMS), LOCAL / "supervisor.py",
                                         *(LOCAL / f"{name}.py" for name in SHARED)]), ids=lambda p: p.name)
def test_no_module_of_these_rooms_is_over_800_lines(path: Path) -> None:
    for module in sorted(path.glob("*.py")) if path.is_dir() else [path]:
        assert len(module.read_text(encoding="utf-8").splitlines()) <= 800, module
