"""The errors of AWS IoT SQL: a rule that cannot be run, a message a rule cannot evaluate."""

from __future__ import annotations

from iotpipe.errors import IotpipeError


class RuleError(IotpipeError):
    """A topic rule uses SQL, a function or an action that ``iotpipe local`` cannot run, or is malformed."""

    exit_code = 2


class RuleEvaluationError(IotpipeError):
    """A message could not be evaluated by a rule's SQL (AWS IoT logs it; no action and no error action run)."""


class PayloadTooDeepError(IotpipeError):
    """A JSON payload nests deeper than the rule engine can parse or re-encode (Python's recursion limit)."""
