"""The AWS IoT topic rule engine of ``iotpipe local``: moto stores topic rules but never runs them; this does.

It reads a deployed ``AWS::IoT::TopicRule`` (``rule_from_properties``, :mod:`~iotpipe.local.rules.model`),
evaluates the subset of AWS IoT SQL the pipeline needs and a little more (``parse_sql``, the pure
:mod:`~iotpipe.local.rules.iotsql` package), fills ``${...}`` substitution templates (``substitute``) and runs the
Kinesis and S3 actions and the error action (``RuleEngine``, :mod:`~iotpipe.local.rules.engine`) through an
action sink (:mod:`~iotpipe.local.rules.sink`; ``BotoActions`` of :mod:`~iotpipe.local.rules.boto_actions` is
the one that calls AWS).

The names below are loaded on first use, so that importing :mod:`iotpipe.local.rules.iotsql` (no threads, no AWS
SDK) does not load the engine through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public names of the room: the one list. The TYPE_CHECKING imports below give them their types (a test checks
# that they name the same), ``__getattr__`` loads them.
__all__ = [
    "BASIC_INGEST_PREFIX", "DEFAULT_SQL_VERSION", "SQL_VERSIONS", "SUPPORTED_FUNCTIONS", "UNDEFINED", "Action",
    "ActionError", "ActionSink", "BotoActions", "Expr", "KinesisAction", "KinesisRecord", "PayloadTooDeepError",
    "Query", "RuleEngine", "RuleEngineStats", "RuleError", "RuleEvaluationError", "S3Action", "Template",
    "TopicRule", "basic_ingest_target", "compile_template", "error_action_message", "parse_payload", "parse_sql",
    "rule_from_properties", "substitute", "to_json",
]
# Where ``__getattr__`` looks, in order: the pure SQL first, so its names never load the engine.
_MODULES = ("iotsql", "model", "sink", "engine", "boto_actions")
_MISSING = object()

if TYPE_CHECKING:
    from iotpipe.local.rules.boto_actions import BotoActions
    from iotpipe.local.rules.engine import RuleEngine, RuleEngineStats, error_action_message
    from iotpipe.local.rules.iotsql import (
        DEFAULT_SQL_VERSION,
        SQL_VERSIONS,
        SUPPORTED_FUNCTIONS,
        UNDEFINED,
        Expr,
        PayloadTooDeepError,
        Query,
        RuleError,
        RuleEvaluationError,
        Template,
        compile_template,
        parse_payload,
        parse_sql,
        substitute,
        to_json,
    )
    from iotpipe.local.rules.model import (
        BASIC_INGEST_PREFIX,
        Action,
        KinesisAction,
        S3Action,
        TopicRule,
        basic_ingest_target,
        rule_from_properties,
    )
    from iotpipe.local.rules.sink import ActionError, ActionSink, KinesisRecord


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, _MISSING)
            if value is not _MISSING:
                globals()[name] = value  # the next lookup finds it without this function
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
