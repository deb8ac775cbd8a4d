"""The rules room's shape: ``iotsql`` is pure (no AWS SDK, no threads, no I/O modules) and
``iotpipe.local.rules`` exports one list of names, each loaded on first use."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import iotpipe.local.rules as rules

PACKAGE = Path(rules.__file__).parent
# What iotsql must never load: the AWS SDK, threads, sockets and processes (its work is a pure function of its
# inputs), and the template library.
FORBIDDEN = ("boto3", "botocore", "threading", "socket", "subprocess", "troposphere")


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one has the forbidden modules loaded); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_iotsql_imports_no_aws_sdk_no_threads_and_no_io() -> None:
    out = run_python(f"""
        import json, sys
        blocked = {FORBIDDEN!r}
        for name in blocked:
            sys.modules[name] = None  # importing it now raises ImportError
        from iotpipe.local.rules import iotsql
        query = iotsql.parse_sql("SELECT *, topic(2) AS device FROM 'sensor/+/data' WHERE value > 1")
        out = query.evaluate(b'{{"value": 2}}', topic="sensor/d1/data", client_id=None, now_ms=1)
        key = iotsql.compile_template("${{topic(2)}}-${{value}}").render(
            iotsql.parse_message(b'{{"value": 2}}', iotsql.SQL_2016, "sensor/d1/data", None, 1))
        for name in blocked:
            del sys.modules[name]  # the interpreter's own shutdown looks for threading
        engine_loaded = any(m.startswith("iotpipe.local.rules.") and ".iotsql" not in m for m in sys.modules)
        print(json.dumps([out, key, engine_loaded]))
    """)
    assert json.loads(out) == [{"value": 2, "device": "d1"}, "d1-2", False]


def test_every_iotsql_module_imports_only_the_standard_library_and_itself() -> None:
    allowed_first_party = ("iotpipe.errors", "iotpipe.local.rules.iotsql")
    for path in sorted((PACKAGE / "iotsql").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith(allowed_first_party), (path.name, name)
                assert top not in FORBIDDEN, (path.name, name)


def test_all_matches_the_type_checking_imports_and_every_name_resolves() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    typed = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    assert sorted(typed) == sorted(rules.__all__)
    for name, module in typed.items():
        assert getattr(rules, name) is getattr(importlib.import_module(str(module)), name), name


def test_no_module_of_the_room_is_over_800_lines() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 800} == {}
    assert {"engine.py", "model.py", "sink.py", "boto_actions.py", "iotsql/parser.py"} <= set(sizes)
