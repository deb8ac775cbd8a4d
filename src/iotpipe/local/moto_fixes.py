"""Moved to :mod:`iotpipe.local.emulator.moto_compat` (declared patches by service and kind, with undo); kept so
callers of the old path still work: :func:`apply` applies every kind, as it did."""

from __future__ import annotations

from iotpipe.local.emulator.moto_compat import ALL_KINDS, Applied
from iotpipe.local.emulator.moto_compat import apply as _apply
from iotpipe.local.emulator.moto_compat.kinesis import arrival_seconds

__all__ = ["apply", "arrival_seconds"]


def apply() -> Applied:
    """Every declared moto patch, in this process (those already applied are left as they are)."""
    return _apply(ALL_KINDS)
