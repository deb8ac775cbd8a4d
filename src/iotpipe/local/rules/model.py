"""The rule model: a deployed ``AWS::IoT::TopicRule`` read into a :class:`TopicRule` (its parsed SQL, its actions as
data with compiled substitution templates), and the rule a Basic Ingest topic names.

iotpipe local runs the actions ``Kinesis`` and ``S3``; the error action (either kind) receives AWS's error-action
message. Anything else is a :class:`RuleError` naming it when the rule is read. Basic Ingest: a message on
``$aws/rules/<rule>/<topic>`` runs that rule only (its FROM is not consulted), and ``topic()`` sees ``<topic>``
without the prefix (``basic_ingest_target``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iotpipe import contract
from iotpipe.local.rules.iotsql import DEFAULT_SQL_VERSION, Query, RuleError, Template, compile_template, parse_sql

BASIC_INGEST_PREFIX = contract.BASIC_INGEST_PREFIX


@dataclass(frozen=True)
class KinesisAction:
    """The Kinesis action: one record per message into ``stream_name`` keyed by ``partition_key``."""

    stream_name: Template
    partition_key: Template | None
    role_arn: str | None = None


@dataclass(frozen=True)
class S3Action:
    """The S3 action: the message (or, as error action, the error message) as one object."""

    bucket_name: Template
    key: Template
    canned_acl: str | None = None
    role_arn: str | None = None


Action = KinesisAction | S3Action


@dataclass(frozen=True)
class TopicRule:
    """A topic rule as deployed: its name, parsed SQL, whether it is disabled, actions and error action."""

    name: str
    query: Query
    disabled: bool
    actions: tuple[Action, ...]
    error_action: Action | None


_ACTION_KEYS = {
    "Kinesis": ({"StreamName"}, {"StreamName", "PartitionKey", "RoleArn"}),
    "S3": ({"BucketName", "Key"}, {"BucketName", "Key", "CannedAcl", "RoleArn", "KmsKeyArn"}),
}


def rule_from_properties(properties: Mapping[str, Any], *, name: str | None = None) -> TopicRule:
    """A TopicRule from an ``AWS::IoT::TopicRule`` resource's Properties (intrinsic functions resolved).

    ``name`` is used when the properties have no RuleName. Raises RuleError naming the first thing the local
    engine cannot run: unsupported SQL, SQL version, action kind or an unresolved value.
    """
    rule_name = properties.get("RuleName", name)
    if not isinstance(rule_name, str) or not rule_name:
        raise RuleError("a topic rule has no RuleName; give the AWS::IoT::TopicRule a RuleName")
    payload = properties.get("TopicRulePayload")
    if not isinstance(payload, Mapping):
        raise RuleError(f"topic rule {rule_name} has no TopicRulePayload")
    try:
        sql = payload.get("Sql")
        if not isinstance(sql, str) or not sql.strip():
            raise RuleError("TopicRulePayload.Sql is missing or not a string")
        version = payload.get("AwsIotSqlVersion", DEFAULT_SQL_VERSION)
        query = parse_sql(sql, str(version))
        actions = payload.get("Actions", [])
        if not isinstance(actions, list) or not actions:
            raise RuleError("TopicRulePayload.Actions must list at least one action")
        error_action = payload.get("ErrorAction")
        return TopicRule(
            name=rule_name,
            query=query,
            disabled=_flag(payload.get("RuleDisabled", False)),
            actions=tuple(_action(a, query.version, f"Actions[{i}]") for i, a in enumerate(actions)),
            error_action=None if error_action is None else _action(error_action, query.version, "ErrorAction"),
        )
    except RuleError as exc:
        raise RuleError(f"topic rule {rule_name}: {exc}") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RuleError(f"RuleDisabled must be true or false, not {value!r}")


def _action(spec: Any, version: str, where: str) -> Action:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise RuleError(f"{where} must hold exactly one action kind, not {spec!r}")
    ((kind, params),) = spec.items()
    if kind not in _ACTION_KEYS:
        raise RuleError(f"{where}: the {kind} action is not supported by iotpipe local (it runs Kinesis and "
                        "S3 actions); remove it or test that rule against AWS")
    required, known = _ACTION_KEYS[kind]
    if not isinstance(params, Mapping):
        raise RuleError(f"{where}: {kind} must be a mapping of its properties")
    missing = sorted(required - params.keys())
    unknown = sorted(params.keys() - known)
    if missing or unknown:
        problem = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise RuleError(f"{where}: {kind} action has {problem} (it takes {', '.join(sorted(known))})")
    for key, value in params.items():
        if not isinstance(value, str):
            raise RuleError(f"{where}: {kind}.{key} is {value!r}, not a string; resolve intrinsic functions first")
    if kind == "Kinesis":
        key_template = params.get("PartitionKey")
        return KinesisAction(compile_template(params["StreamName"], version),
                             None if key_template is None else compile_template(key_template, version),
                             params.get("RoleArn"))
    return S3Action(compile_template(params["BucketName"], version), compile_template(params["Key"], version),
                    params.get("CannedAcl"), params.get("RoleArn"))


def basic_ingest_target(topic: str) -> tuple[str, str] | None:
    """``(rule name, topic the rule sees)`` for a Basic Ingest topic ``$aws/rules/<rule>/<topic>``, else None.

    "The initial prefix of the topic ($aws/rules/rule-name) is not available to the topic() function"
    (topic(Decimal)): ``$aws/rules/BuildingManager/Buildings/Building5/...`` gives ``topic(3)`` = "Floor2".
    """
    if not topic.startswith(BASIC_INGEST_PREFIX):
        return None
    name, _, rest = topic[len(BASIC_INGEST_PREFIX):].partition("/")
    return name, rest
