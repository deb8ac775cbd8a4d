"""The contract lives in one module with stdlib imports only: no other source file spells a contract literal, and
both processors carry the same reading rules."""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iotpipe import contract, naming

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "iotpipe"
CONTRACT = SRC / "contract.py"
# Parts of the contract that must not appear even inside a longer string (a topic, the metric namespace).
SUBSTRINGS = (contract.TOPIC_ROOT + "/", contract.METRIC_NAMESPACE)


def contract_literals() -> set[str]:
    """Every string constant the contract module defines at module level (ids, names, keys, exports)."""
    values: set[str] = set()
    for name in dir(contract):
        value = getattr(contract, name)
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
    # used as such across the code: only the alarm and doctor read them as the contract's metric dimension. The
    # storage layouts are configuration values (`processor.layout`), compared as such where a layout matters.
    return values - {contract.TOPIC_ROOT, *contract.KINESIS_ACTION_TYPES, *contract.STORAGE_LAYOUTS}


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
    assert problems == [], "import these from iotpipe.contract instead:\n" + "\n".join(problems)


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


def test_the_contract_imports_the_standard_library_only() -> None:
    tree = ast.parse(CONTRACT.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= sys.stdlib_module_names | {"__future__"}


def test_importing_the_contract_loads_no_template_library() -> None:
    code = ("import sys, iotpipe.contract; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('troposphere', 'awacs', 'boto3')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_naming_keeps_the_contract_reachable_and_the_default_rule_name() -> None:
    assert naming.TABLE is contract.TABLE and naming.device_topic is contract.device_topic
    assert naming.DEFAULT_NAMES.rule_name_pattern() == contract.RULE_NAME_PATTERN
    assert naming.DEFAULT_NAMES.topic_filter() == contract.TOPIC_FILTER
    assert naming.DEFAULT_NAMES.topic_pattern() == contract.TOPIC_PATTERN


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("SENSOR_TYPE_PATTERN", ["temperature", "T", "a_1", "x" * 64], ["", "1abc", "_other", "a-b", "x" * 65]),
    ("DEVICE_ID_PATTERN", ["line-1", "a:b_c", "x" * 128], ["", "a b", "a/b", "x" * 129]),
    ("DEVICE_TIMESTAMP_PATTERN", ["2026-01-01T00:00:00Z", "x" * 64], ["", "x" * 65, "tab\there"]),
])
def test_the_patterns(name: str, good: list[str], bad: list[str]) -> None:
    pattern = getattr(contract, name)
    assert [text for text in good if not pattern.fullmatch(text)] == []
    assert [text for text in bad if pattern.fullmatch(text)] == []


def test_the_numbers_are_the_documented_ones() -> None:
    assert (contract.UNIT_MAX_CHARS, contract.MAX_READINGS_PER_BODY, contract.MAX_READINGS_PER_MESSAGE,
            contract.MAX_JSON_DEPTH, contract.MAX_SENSOR_TYPE_DIMENSIONS) == (32, 100, 1_000, 64, 20)
    assert contract.MIN_TIMESTAMP_MS == 946_684_800_000  # 2000-01-01T00:00:00Z
    assert contract.MAX_FUTURE_MS == 86_400_000 and contract.MAX_PACK_WINDOW_SECONDS == 3_600
    assert contract.VALUE_MIN_MAGNITUDE == 1e-130 and contract.VALUE_MAX_MAGNITUDE == 1e126
    document = (REPO / "docs" / "contract.md").read_text(encoding="utf-8")
    for text in ("`MAX_JSON_DEPTH` = 64", "`MAX_READINGS_PER_MESSAGE` = 1,000", "`MAX_READINGS_PER_RECORD` = 100",
                 "at most 32 code points"):
        assert text in document


# contract name -> the processors' name for the same rule
HANDLER_NAMES = {
    "DEVICE_ID_PATTERN": "DEVICE_ID_PATTERN",
    "SENSOR_TYPE_PATTERN": "SENSOR_TYPE_PATTERN",
    "DEVICE_TIMESTAMP_PATTERN": "DEVICE_TIMESTAMP_PATTERN",
    "UNIT_MAX_CHARS": "UNIT_MAX_CHARS",
    "MAX_READINGS_PER_BODY": "MAX_READINGS_PER_RECORD",
    "MAX_READINGS_PER_MESSAGE": "MAX_READINGS_PER_MESSAGE",
    "MAX_JSON_DEPTH": "MAX_JSON_DEPTH",
    "VALUE_MIN_MAGNITUDE": "NUMBER_MIN_MAGNITUDE",
    "VALUE_MAX_MAGNITUDE": "NUMBER_MAX_MAGNITUDE",
    "MIN_TIMESTAMP_MS": "MIN_TIMESTAMP_MS",
    "MAX_FUTURE_MS": "MAX_FUTURE_MS",
    "MAX_ARRIVAL_MS": "MAX_ARRIVAL_MS",
    "MAX_SENSOR_TYPE_DIMENSIONS": "MAX_SENSOR_TYPE_DIMENSIONS",
    "STORAGE_LAYOUTS": "STORAGE_LAYOUTS",
    "MAX_PACK_WINDOW_SECONDS": "MAX_PACK_WINDOW_SECONDS",
}


def _anchored(pattern: str) -> str:
    """A pattern used with fullmatch, written with its anchors (as the contract and the Node twin write it)."""
    return pattern if pattern.startswith("^") else f"^{pattern}$"


def _contract_value(name: str) -> Any:
    value = getattr(contract, name)
    return value.pattern if isinstance(value, re.Pattern) else value


def python_handler_constants() -> dict[str, Any]:
    """The module-level constants of handler/python/index.py (patterns as their text), read without running it."""
    tree = ast.parse((REPO / "handler" / "python" / "index.py").read_text(encoding="utf-8"))
    found: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "re.compile":
            found[node.targets[0].id] = _anchored(ast.literal_eval(value.args[0]))
            continue
        try:
            found[node.targets[0].id] = ast.literal_eval(value)
        except ValueError:
            continue
    return found


_JS_CONST = re.compile(r"^const ([A-Z][A-Z0-9_]*) = (.+?);(?: //.*)?$", re.M)


def node_handler_constants() -> dict[str, Any]:
    """The top-level constants of handler/node/index.js that are numbers, regular expressions or string lists."""
    found: dict[str, Any] = {}
    for name, text in _JS_CONST.findall((REPO / "handler" / "node" / "index.js").read_text(encoding="utf-8")):
        if re.fullmatch(r"-?[0-9_.]+(?:e-?[0-9]+)?", text):
            found[name] = float(text.replace("_", ""))
        elif text.startswith("/") and text.endswith("/"):
            found[name] = text[1:-1]
        elif text.startswith("[") and "'" in text:
            found[name] = tuple(re.findall(r"'([^']*)'", text))
    return found


@pytest.mark.parametrize(("twin", "read"), [("python", python_handler_constants), ("node", node_handler_constants)])
def test_the_processors_carry_the_contracts_reading_rules(twin: str, read: Any) -> None:
    constants = read()
    differ = {}
    for name, theirs in HANDLER_NAMES.items():
        ours = _contract_value(name)
        value = constants.get(theirs)
        equal = (math.isclose(value, ours, rel_tol=0) if isinstance(ours, int | float) and value is not None
                 else value == ours)
        if not equal:
            differ[theirs] = (value, ours)
    assert differ == {}, f"{twin} processor's copies differ from iotpipe.contract (theirs, ours)"


@pytest.mark.parametrize("path", ["handler/python/index.py", "handler/node/index.js"])
def test_the_processors_emit_the_contracts_metric_names(path: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    assert [name for name in contract.METRIC_NAMES if f"'{name}'" not in text and f'"{name}"' not in text] == []


def test_the_config_and_sql_use_the_contracts_rules() -> None:
    from iotpipe import config, sql

    assert config.SENSOR_TYPE_PATTERN is contract.SENSOR_TYPE_PATTERN
    assert config.STORAGE_LAYOUTS is contract.STORAGE_LAYOUTS
    assert sql.SENSOR_TYPE_PATTERN is contract.SENSOR_TYPE_PATTERN
    assert sql.MAX_READINGS_PER_MESSAGE == contract.MAX_READINGS_PER_MESSAGE
