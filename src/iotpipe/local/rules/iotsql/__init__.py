"""AWS IoT SQL as the local rule engine runs it: pure (no threads, no AWS SDK, no I/O), stdlib only.

Its modules: ``values`` (Undefined, payloads, JSON, conversions and operators), ``functions``, ``parser``
(statements, expressions, topic filters) and ``templates`` (substitution templates).

What is supported, each rule from the AWS IoT SQL reference (AWS IoT Core developer guide):

- ``SELECT *``, ``expression AS name``, several items (``SELECT *, 15 as speed`` adds to the payload), nested
  attributes ``a.b``, literals (numbers, strings in single or double quotes, ``true``/``false``/``null``; object
  and array literals with SQL 2016-03-23 only: "Literals are available only when using SQL version 2016-03-23 or
  later"), arithmetic ``+ - * / %``, comparisons ``= <> < <= > >=``, ``AND``/``OR``/``NOT``, parentheses and a
  simple ``CASE v WHEN t THEN r ... ELSE e END``.
- ``FROM 'filter'`` with ``+`` and ``#``; without FROM a rule is reachable by Basic Ingest only ("the FROM clause
  is optional ... for rules that are only triggered using the Basic Ingest feature").
- ``WHERE``: "If the WHERE clause evaluates to true, the rule actions are performed. Otherwise, the rule actions
  are not performed"; it "is evaluated first, to determine if SELECT is evaluated".
- Functions: ``topic([n])``, ``timestamp()``, ``clientid()``, ``newuuid()``, ``sql_version()``, ``concat``,
  ``upper``, ``lower``, ``get``, ``isNull``, ``isUndefined``, ``length``, ``startswith``, ``endswith``,
  ``replace``, ``abs``, ``ceil``, ``floor``, ``round``. Anything else (another function, ``JOIN``, nested
  ``SELECT``, ``SELECT VALUE``, ``LIKE``, ``IN``, ...) is a :class:`RuleError` naming it when the rule is read.
"""

from iotpipe.local.rules.iotsql.errors import PayloadTooDeepError, RuleError, RuleEvaluationError
from iotpipe.local.rules.iotsql.functions import SUPPORTED_FUNCTIONS
from iotpipe.local.rules.iotsql.parser import Query, parse_sql
from iotpipe.local.rules.iotsql.templates import Template, compile_template, substitute
from iotpipe.local.rules.iotsql.values import (
    DEFAULT_SQL_VERSION,
    SQL_2015,
    SQL_2016,
    SQL_VERSIONS,
    UNDEFINED,
    Expr,
    Message,
    parse_message,
    parse_payload,
    to_json,
)

__all__ = [
    "DEFAULT_SQL_VERSION", "SQL_2015", "SQL_2016", "SQL_VERSIONS", "SUPPORTED_FUNCTIONS", "UNDEFINED", "Expr",
    "Message", "PayloadTooDeepError", "Query", "RuleError", "RuleEvaluationError", "Template", "compile_template",
    "parse_message", "parse_payload", "parse_sql", "substitute", "to_json",
]
