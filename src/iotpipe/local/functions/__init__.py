"""The functions room of ``iotpipe local``: the deployed Lambda functions run as Lambda runs them.

``spec`` (what the deployed template says of a function), ``runner`` (a pool of warm worker processes per
function), ``framing`` (the one wire format between the runner and its workers), ``worker`` and ``worker.js`` (the
Python and Node.js bootstraps the workers run), ``follower`` (saved handler edits picked up) and ``telemetry``
(the functions' output into CloudWatch Logs and metrics). Kept free of imports beyond the standard library here:
every Python worker imports this package before its handler.
"""

from __future__ import annotations

from iotpipe.local.functions.result import InvokeResult

__all__ = ["InvokeResult"]
