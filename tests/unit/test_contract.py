"""The contract lives in one module: no other source file spells a contract literal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from iotpipe import naming

SRC = Path(__file__).resolve().parents[2] / "src" / "iotpipe"
CONTRACT = SRC / "naming.py"
# Parts of the contract that must not appear even inside a longer string (a topic, the metric namespace).
SUBSTRINGS = (naming.TOPIC_ROOT + "/", naming.METRIC_NAMESPACE)


def contract_literals() -> set[str]:
    """Every string constant the contract module defines at module level (ids, names, keys, exports)."""
    values: set[str] = set()
    for name in dir(naming):
        value = getattr(naming, name)
        if not name.isupper():
            continue
        if isinstance(value, str):
            values.add(value)
        elif isinstance(value, tuple):
            values.update(item for item in value if isinstance(item, str))
        elif isinstance(value, dict):
            values.update(item for item in value.values() if isinstance(item, str))
    # The topic's first level alone is an ordinary word ("sensor"); it is checked as "sensor/" in any string. The
    # rule action's type names are AWS's words (boto3's `kinesis` client, the IoT rule engine's action names),
    # used as such across the code: only the alarm and doctor read them as the contract's metric dimension.
    return values - {naming.TOPIC_ROOT, *naming.KINESIS_ACTION_TYPES}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (prose may name a key; code may not)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def repeated_literals(path: Path, literals: set[str], root: Path = SRC) -> list[str]:
    """``file:line 'literal'`` for each contract literal a source file spells outside docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        if text in literals or any(part in text for part in SUBSTRINGS):
            problems.append(f"{path.relative_to(root)}:{node.lineno} {text!r}")
    return problems


def test_the_contract_literals_are_the_ones_the_issue_names() -> None:
    literals = contract_literals()
    assert {"SensorDataTableName", "AnomaliesByDay", "IoT/Manufacturing", "sensor/+/data",
            "sensor/{deviceId}/data", "RawDataBucket", "PipelineKey"} <= literals


def test_no_source_file_repeats_a_contract_literal() -> None:
    literals = contract_literals()
    problems = [problem for path in sorted(SRC.rglob("*.py")) if path != CONTRACT
                for problem in repeated_literals(path, literals)]
    assert problems == [], "import these from iotpipe.naming instead:\n" + "\n".join(problems)


@pytest.mark.parametrize("code", ['TABLE = "SensorDataTableName"\n', 'topic = f"sensor/{device}/data"\n',
                                  'NS = "IoT/Manufacturing"\n', 'index = "AnomaliesByDay"\n'])
def test_the_check_catches_a_repeated_literal(tmp_path: Path, code: str) -> None:
    source = tmp_path / "probe.py"
    source.write_text(code, encoding="utf-8")
    found = repeated_literals(source, contract_literals(), tmp_path)
    assert len(found) == 1 and found[0].startswith("probe.py:1 ")


def test_a_docstring_may_name_a_key(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text('"""Reads SensorDataTableName for sensor/<id>/data."""\nTABLE = "SensorDataTableName"\n',
                      encoding="utf-8")
    assert repeated_literals(source, contract_literals(), tmp_path) == ["probe.py:2 'SensorDataTableName'"]
