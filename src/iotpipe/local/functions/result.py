"""What one invocation of a function returned (standard library only: failures and the mapping runner use it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InvokeResult:
    """What one invocation of the function returned."""

    function_error: str | None  # None: the invocation succeeded; else e.g. "Unhandled" (raised) or "TimedOut"
    payload: Any = None  # the function's JSON return value (a dict with batchItemFailures, or None)
