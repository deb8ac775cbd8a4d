"""What a moto patch is (a declaration: name, kind, tested range, upstream reference, how to install it) and the
recorder that installs it so it can be undone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from iotpipe.local.emulator.moto_compat.versions import MOTO, TestedRange

Kind = Literal["parity", "api", "speed"]
KINDS: tuple[Kind, ...] = ("parity", "api", "speed")
NOT_FILED = "not filed"
_MISSING = object()


class Recorder:
    """The attributes a patch replaces, each with its original (``_MISSING`` when the target had none of its own)
    and its replacement, in the order they were set."""

    def __init__(self) -> None:
        self.changes: list[tuple[Any, str, Any, Any]] = []

    def setattr(self, target: Any, name: str, value: Any) -> None:
        """Replace ``target.name`` with ``value``, remembering what ``target`` itself held before."""
        self.changes.append((target, name, vars(target).get(name, _MISSING), value))
        setattr(target, name, value)


def restore(changes: list[tuple[Any, str, Any, Any]]) -> None:
    """Put back each original, last change first (an attribute the target did not hold itself is removed, so
    it is inherited again)."""
    for target, name, original, _value in reversed(changes):
        if original is _MISSING:
            delattr(target, name)
        else:
            setattr(target, name, original)


def reinstate(changes: list[tuple[Any, str, Any, Any]]) -> None:
    """Set each replacement again, in the order it was first set."""
    for target, name, _original, value in changes:
        setattr(target, name, value)


@dataclass(frozen=True)
class Patch:
    """One change to moto, declared. ``kind``: ``parity`` (moto answers differently from AWS), ``api`` (moto lacks
    the API or resource) or ``speed`` (the same answers, faster); ``tested``: the moto releases it was tested on;
    ``upstream``: the moto issue or pull request, or ``not filed``; ``install``: patches moto through the recorder
    (None for a change made per client by :mod:`iotpipe.local.emulator.clients`, declared here to be listed)."""

    name: str
    kind: Kind
    summary: str
    install: Callable[[Recorder], None] | None
    upstream: str = NOT_FILED
    tested: TestedRange = MOTO

    @property
    def service(self) -> str:
        """The service part of the name (``cloudformation.list_imports`` -> ``cloudformation``)."""
        return self.name.split(".", 1)[0]
