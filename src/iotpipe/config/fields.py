"""Field validation: a dataclass field carries its rule (range, choices, pattern) in metadata, checked by its
type's ``__post_init__``, and a read-only mapping for the thresholds."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import field
from typing import Any

from iotpipe.errors import ConfigError


def _opt(default: Any, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[Any, ...] | None = None, pattern: re.Pattern[str] | None = None,
         doc: str = "") -> Any:
    """A dataclass field carrying its validation rule in metadata."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "doc": doc}
    return field(default=default, metadata=meta)


class FieldError(ConfigError):
    """A field of a config type has a bad value; ``field`` is its dotted name inside the object that raised.

    The TOML loader puts the file section in front (``env.prod.processor.batch_size``); built in Python, the
    message starts with the type's section (``processor.batch_size``).
    """

    def __init__(self, field_name: str, problem: str, owner: str = "") -> None:
        where = field_name or owner
        super().__init__(f"{where}: {problem}" if where else problem)
        self.field = field_name
        self.problem = problem


def _validate_fields(obj: Any, section: str) -> None:
    """Check every field of the dataclass ``obj`` against its type and the rule in its metadata (the one place
    config values are checked); ints given for float fields become floats."""
    hints = typing.get_type_hints(type(obj))
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        name = f"{section}.{spec.name}" if section else spec.name
        problem = _type_problem(value, hints[spec.name]) or _rule_problem(value, spec.metadata)
        if problem:
            raise FieldError(name, problem)
        if hints[spec.name] in (float, float | None) and isinstance(value, int):
            object.__setattr__(obj, spec.name, float(value))


def _type_problem(value: Any, expected: Any) -> str | None:
    allowed = typing.get_args(expected) or (expected,)
    ok = any(
        (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is type(None) and value is None)
        or (kind in (str, bool) and type(value) is kind)
        for kind in allowed
    )
    if not ok:
        names = " or ".join(getattr(kind, "__name__", str(kind)) for kind in allowed if kind is not type(None))
        return f"expected {names}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    return None


def _rule_problem(value: Any, rule: Mapping[str, Any]) -> str | None:
    lo, hi, choices, pattern = rule.get("lo"), rule.get("hi"), rule.get("choices"), rule.get("pattern")
    if choices is not None and value not in choices:
        return f"{value!r} is not allowed; choose one of {', '.join(map(str, choices))}"
    if isinstance(value, int) and not isinstance(value, bool) and not _fits_float(value):
        return (f"a {len(str(abs(value)))}-digit number is out of range"
                + (f"; allowed {lo} to {hi}" if lo is not None or hi is not None else ""))
    if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        return f"{value!r} is out of range; allowed {lo} to {hi}"
    if pattern is not None and not pattern.fullmatch(value):
        return f"{value!r} is not valid{'; ' + rule['doc'] if rule.get('doc') else ''}"
    return None


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


class ReadOnlyMap(Mapping[str, Any]):
    """A read-only, hashable mapping (sorted by key), so a frozen config stays hashable and comparable."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, Any] = dict(sorted(pairs))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __repr__(self) -> str:
        return f"ReadOnlyMap({self._items!r})"
