"""The parser of AWS IoT SQL: statements (``parse_sql``), expressions, and the FROM clause's topic filters.

Topic filters follow the MQTT topics page: "A subscription to sensor/# receives messages published to sensor/,
sensor/temperature, sensor/temperature/room1, but not messages published to sensor" (MQTT 3.1.1 would match
``sensor`` too), and the FROM page: '#' matches "one or more" path elements. As in MQTT, a filter that starts
with a wildcard does not match topics starting with ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iotpipe.local.rules.iotsql.errors import PayloadTooDeepError, RuleError, RuleEvaluationError
from iotpipe.local.rules.iotsql.functions import _FUNCTIONS, SUPPORTED_FUNCTIONS
from iotpipe.local.rules.iotsql.values import (
    _NO_CONSTANT,
    SQL_2016,
    SQL_VERSIONS,
    UNDEFINED,
    Expr,
    Fn,
    Message,
    _and,
    _arithmetic,
    _equal,
    _member_of,
    _negate,
    _not,
    _not_equal,
    _number_2015,
    _number_2016,
    _or,
    _ordering,
    _same,
    _to_bool,
    parse_message,
)

# ---------------------------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|<=|>=|!=|==|[=<>+\-*/%(),.\[\]{}:])
""", re.VERBOSE | re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_KEYWORDS = frozenset({"SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "TRUE", "FALSE", "NULL", "CASE",
                       "WHEN", "THEN", "ELSE", "END"})
_COMPARISONS = {"=": _equal, "<>": _not_equal}


@dataclass(frozen=True)
class _Token:
    kind: str  # num, str, name, op, end
    text: str
    pos: int
    value: Any = None

    def is_keyword(self, word: str) -> bool:
        return self.kind == "name" and self.text.upper() == word

    def is_op(self, op: str) -> bool:
        return self.kind == "op" and self.text == op


def _tokenize(text: str, where: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            hint = " (unterminated string?)" if char in "'\"" else ""
            raise RuleError(f"unsupported character {char!r} at position {pos} of {where}{hint}")
        kind = match.lastgroup or ""
        if kind != "ws":
            chunk = match.group()
            value = _ESCAPE.sub(r"\1", chunk[1:-1]) if kind == "str" else None
            tokens.append(_Token(kind, chunk, pos, value))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent over AWS IoT SQL; each rule returns an :class:`Expr` with a precompiled closure."""

    def __init__(self, text: str, version: str, where: str) -> None:
        self.text = text
        self.version = version
        self.where = where
        self.tokens = _tokenize(text, where)
        self.index = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def accept_keyword(self, word: str) -> bool:
        if self.peek().is_keyword(word):
            self.advance()
            return True
        return False

    def accept_op(self, op: str) -> bool:
        if self.peek().is_op(op):
            self.advance()
            return True
        return False

    def expect_op(self, op: str, context: str) -> None:
        if not self.accept_op(op):
            raise self.unexpected(f"expected '{op}' {context}")

    def unexpected(self, expectation: str = "") -> RuleError:
        token = self.peek()
        if token.kind == "end":
            return RuleError(f"{self.where} ends too early{': ' + expectation if expectation else ''}")
        detail = f" ({expectation})" if expectation else ""
        return RuleError(f"unsupported construct {token.text!r} at position {token.pos} of {self.where}{detail}; "
                         "iotpipe local runs SELECT <items> [FROM '<topic filter>'] [WHERE <condition>]")

    def unsupported(self, construct: str, fix: str) -> RuleError:
        return RuleError(f"{construct} is not supported by the iotpipe local rule engine ({self.where}); {fix}")

    def source(self, start: _Token) -> str:
        return self.text[start.pos:self.peek().pos].strip() if self.peek().pos > start.pos else start.text

    def needs_2016(self, construct: str) -> None:
        if self.version != SQL_2016:
            raise RuleError(f"{construct} needs AwsIotSqlVersion {SQL_2016} ({self.where} is {self.version}); "
                            f"set AwsIotSqlVersion: '{SQL_2016}'")

    # -- expressions, lowest precedence first: OR < AND < NOT < comparison < + - < * / % < unary < postfix
    def expression(self) -> Expr:
        return self.or_expression()

    def or_expression(self) -> Expr:
        start = self.peek()
        left = self.and_expression()
        while self.accept_keyword("OR"):
            left = self.binary(_or, left, self.and_expression(), start)
        return left

    def and_expression(self) -> Expr:
        start = self.peek()
        left = self.not_expression()
        while self.accept_keyword("AND"):
            left = self.binary(_and, left, self.not_expression(), start)
        return left

    def not_expression(self) -> Expr:
        start = self.peek()
        if self.accept_keyword("NOT"):
            operand = self.not_expression().fn
            return Expr(lambda m: _not(operand(m)), self.source(start))
        return self.comparison()

    def comparison(self) -> Expr:
        start = self.peek()
        left = self.additive()
        while True:
            token = self.peek()
            if token.is_op("!=") or token.is_op("=="):
                raise RuleError(f"operator {token.text} at position {token.pos} of {self.where} is not AWS IoT "
                                f"SQL; use {'<>' if token.text == '!=' else '='}")
            if token.kind != "op" or token.text not in ("=", "<>", "<", "<=", ">", ">="):
                return left
            self.advance()
            left = self.binary(self.comparison_operator(token.text), left, self.additive(), start)

    @staticmethod
    def comparison_operator(op: str) -> Callable[[Any, Any], Any]:
        if op in _COMPARISONS:
            return _COMPARISONS[op]
        return _ordering({"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                          ">=": lambda a, b: a >= b}[op])

    def additive(self) -> Expr:
        start = self.peek()
        left = self.multiplicative()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.advance().text
            left = self.binary(_arithmetic(op, self.version), left, self.multiplicative(), start)
        return left

    def multiplicative(self) -> Expr:
        start = self.peek()
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/", "%"):
            op = self.advance().text
            left = self.binary(_arithmetic(op, self.version), left, self.unary(), start)
        return left

    def unary(self) -> Expr:
        start = self.peek()
        if self.accept_op("-"):
            operand = self.unary()
            version = self.version
            if operand.constant is not _NO_CONSTANT:
                value = _negate(operand.constant, version)
                return Expr(lambda _m: value, self.source(start), value)
            inner = operand.fn
            return Expr(lambda m: _negate(inner(m), version), self.source(start))
        return self.postfix()

    def postfix(self) -> Expr:
        start = self.peek()
        expr = self.primary()
        while self.accept_op("."):
            token = self.advance()
            if token.kind != "name":
                raise RuleError(f"attribute name expected after '.' at position {token.pos} of {self.where}; "
                                "for names with digits or hyphens use get(object, 'name')")
            expr = Expr(_member_of(expr.fn, token.text), self.source(start), default_name=token.text)
        if self.peek().is_op("["):
            raise self.unsupported("indexing with [ ]", "use get(array, index)")
        return expr

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "num":
            self.advance()
            number = int(token.text) if token.text.isdigit() else (
                _number_2016(token.text) if self.version == SQL_2016 else _number_2015(token.text))
            return Expr(lambda _m: number, token.text, number)
        if token.kind == "str":
            self.advance()
            text = token.value
            return Expr(lambda _m: text, token.text, text)
        if token.kind == "name":
            return self.name(token)
        if self.accept_op("("):
            inner = self.expression()
            self.expect_op(")", "to close '('")
            return inner
        if token.is_op("["):
            return self.array_literal()
        if token.is_op("{"):
            return self.object_literal()
        if token.is_op("*"):
            raise self.unsupported("'*' outside the SELECT list (as in encode(*, ...))",
                                   "select * on its own or name attributes")
        raise self.unexpected("an expression was expected")

    def name(self, token: _Token) -> Expr:
        word = token.text.upper()
        if word in ("TRUE", "FALSE", "NULL"):
            self.advance()
            constant = {"TRUE": True, "FALSE": False, "NULL": None}[word]
            return Expr(lambda _m: constant, token.text, constant)
        if word == "CASE":
            return self.case()
        if word == "SELECT":
            raise self.unsupported("a nested SELECT (nested object query)", "select attributes directly")
        if word in _KEYWORDS:
            raise self.unexpected("an expression was expected")
        self.advance()
        if self.peek().is_op("("):
            return self.call(token)
        key = token.text
        return Expr(lambda m: m.doc.get(key, UNDEFINED), key, default_name=key)

    def call(self, token: _Token) -> Expr:
        name = token.text.lower()
        function = _FUNCTIONS.get(name)
        if function is None:
            raise RuleError(f"function {token.text}() in {self.where} is not supported by the iotpipe local rule "
                            f"engine (it supports {', '.join(f + '()' for f in SUPPORTED_FUNCTIONS)}); "
                            "rewrite the rule without it")
        if function.since == SQL_2016:
            self.needs_2016(f"function {token.text}()")
        self.expect_op("(", "")
        args: list[Expr] = []
        if not self.accept_op(")"):
            while True:
                args.append(self.expression())
                if self.accept_op(")"):
                    break
                if not self.accept_op(","):
                    raise self.unexpected(f"expected ',' or ')' to close {token.text}(")
        if not function.min_args <= len(args) <= function.max_args:
            wanted = (str(function.min_args) if function.min_args == function.max_args
                      else f"{function.min_args} to {function.max_args}")
            raise RuleError(f"function {token.text}() in {self.where} takes {wanted} argument(s), not {len(args)}")
        return Expr(function.build(args, self.version), self.source(token))

    def case(self) -> Expr:
        start = self.advance()
        if self.peek().is_keyword("WHEN"):
            raise self.unsupported("CASE WHEN <condition> (a searched CASE)", "use CASE <value> WHEN <value> THEN")
        subject = self.expression().fn
        branches: list[tuple[Fn, Fn]] = []
        while self.accept_keyword("WHEN"):
            test = self.expression().fn
            if not self.accept_keyword("THEN"):
                raise self.unexpected("THEN expected")
            branches.append((test, self.expression().fn))
        if not branches:
            raise self.unexpected("CASE needs at least one WHEN")
        otherwise = self.expression().fn if self.accept_keyword("ELSE") else (lambda _m: UNDEFINED)
        if not self.accept_keyword("END"):
            raise self.unexpected("END expected to close CASE")

        def evaluate(m: Message) -> Any:
            value = subject(m)
            if value is UNDEFINED:
                return UNDEFINED  # "If v is Undefined, the result of the case statement is Undefined"
            for test, result in branches:
                candidate = test(m)
                if candidate is not UNDEFINED and _same(value, candidate):
                    return result(m)
            return otherwise(m)

        return Expr(evaluate, self.source(start))

    def array_literal(self) -> Expr:
        start = self.advance()
        self.needs_2016("an array literal")
        items: list[Fn] = []
        if not self.accept_op("]"):
            while True:
                items.append(self.expression().fn)
                if self.accept_op("]"):
                    break
                self.expect_op(",", "between array items")
        return Expr(lambda m: [v for v in (f(m) for f in items) if v is not UNDEFINED], self.source(start))

    def object_literal(self) -> Expr:
        start = self.advance()
        self.needs_2016("an object literal")
        members: list[tuple[str, Fn]] = []
        if not self.accept_op("}"):
            while True:
                key = self.advance()
                if key.kind != "str":
                    raise RuleError(f"object literal keys must be quoted strings (position {key.pos} of "
                                    f"{self.where})")
                self.expect_op(":", "after an object literal key")
                members.append((key.value, self.expression().fn))
                if self.accept_op("}"):
                    break
                self.expect_op(",", "between object literal members")

        def build(m: Message) -> dict[str, Any]:
            out = {}
            for k, f in members:
                v = f(m)
                if v is not UNDEFINED:
                    out[k] = v
            return out

        return Expr(build, self.source(start))

    def binary(self, apply: Callable[[Any, Any], Any], left: Expr, right: Expr, start: _Token) -> Expr:
        lf, rf = left.fn, right.fn
        if left.constant is not _NO_CONSTANT and right.constant is not _NO_CONSTANT:
            value = apply(left.constant, right.constant)
            return Expr(lambda _m: value, self.source(start), value)
        return Expr(lambda m: apply(lf(m), rf(m)), self.source(start))

    def at_end(self) -> bool:
        return self.peek().kind == "end"


# ---------------------------------------------------------------------------------------------- topic filters

def _compile_topic_filter(topic_filter: str, sql: str) -> Callable[[str], bool]:
    """A matcher for an MQTT topic filter, as AWS IoT documents it (MQTT topics, Topic filters)."""
    levels = topic_filter.split("/")
    problems = [level for level in levels if level not in ("+", "#") and ("+" in level or "#" in level)]
    if not topic_filter or problems or "#" in levels[:-1]:
        raise RuleError(f"FROM '{topic_filter}' in `{sql}` is not a valid topic filter: '+' and '#' must fill a "
                        "whole level and '#' must be the last level")
    if "+" not in levels and "#" not in levels:
        return lambda topic: topic == topic_filter
    multi = levels[-1] == "#"
    fixed = tuple(levels[:-1] if multi else levels)
    count = len(fixed)
    # MQTT 3.1.1 4.7.2: a filter starting with a wildcard does not match topics starting with '$'.
    guard_dollar = not fixed or fixed[0] == "+"

    def matches(topic: str) -> bool:
        if guard_dollar and topic.startswith("$"):
            return False
        parts = topic.split("/")
        if multi:
            # "A subscription to sensor/# receives messages published to sensor/, sensor/temperature,
            # sensor/temperature/room1, but not messages published to sensor" (MQTT topics, Topic filters).
            if len(parts) <= count:
                return False
        elif len(parts) != count:
            return False
        return all(level in ("+", part) for part, level in zip(parts, fixed, strict=False))

    return matches


# ---------------------------------------------------------------------------------------------- queries

_WHERE = re.compile(r"\s+WHERE\b", re.IGNORECASE)


def _never(_topic: str) -> bool:
    return False


@dataclass(frozen=True)
class Query:
    """A parsed rule SQL statement; ``matches`` and ``evaluate`` run precompiled closures."""

    sql: str
    version: str
    topic_filter: str | None
    select_all: bool
    items: tuple[tuple[str, Expr], ...]
    where: Expr | None
    _matches: Callable[[str], bool] = field(default=_never, repr=False, compare=False)

    def matches(self, topic: str) -> bool:
        """Whether a message published on ``topic`` triggers this rule through its FROM topic filter."""
        return self._matches(topic)

    def evaluate(self, payload: bytes, *, topic: str, client_id: str | None,
                 now_ms: int) -> dict[str, Any] | bytes | None:
        """The outgoing payload: a JSON object, or the raw payload (``SELECT *`` of a non-JSON payload), or
        None when WHERE is false or Undefined. ``topic`` is what ``topic()`` sees (no Basic Ingest prefix).

        Raises :class:`RuleEvaluationError` when the payload is not JSON and the SQL adds items to ``*``:
        "If you have an empty or a JSON payload, the resulting payload can have data added using the rule"
        (Working with binary payloads); for other payloads AWS IoT logs an error and runs no action.
        """
        return self.run(parse_message(payload, self.version, topic, client_id, now_ms))

    def run(self, message: Message) -> dict[str, Any] | bytes | None:
        """``evaluate`` on an already parsed message (the engine parses each payload once for all rules).

        Raises :class:`PayloadTooDeepError` when the payload nests too deeply to parse and the SQL needs more than
        to pass it through (``SELECT *`` alone still does).
        """
        if message.too_deep and (self.where is not None or self.items or not self.select_all):
            raise PayloadTooDeepError("the payload nests too deeply for the iotpipe local rule engine to parse "
                                      f"(Python's recursion limit), so `{self.sql}` cannot be evaluated on it")
        if self.where is not None and _to_bool(self.where.fn(message)) is not True:
            return None
        if self.select_all:
            if not message.is_json:
                if self.items:
                    raise RuleEvaluationError(
                        "the payload is not a JSON object, so SELECT * cannot have items added to it "
                        f"(`{self.sql}`); publish JSON, or select * alone to pass the payload through")
                return message.raw
            out = dict(message.doc)
        else:
            out = {}
        for name, expr in self.items:
            value = expr.fn(message)
            if value is UNDEFINED:
                out.pop(name, None)  # Undefined is not representable in JSON: the key is absent
            else:
                out[name] = value
        return out


def parse_sql(sql: str, version: str = SQL_2016) -> Query:
    """Parse a rule's SQL for AWS IoT SQL ``version``; RuleError naming any construct the engine cannot run."""
    if version not in SQL_VERSIONS:
        raise RuleError(f"AwsIotSqlVersion {version!r} is not supported by iotpipe local (it runs "
                        f"{' and '.join(SQL_VERSIONS)}); set AwsIotSqlVersion: '{SQL_2016}'")
    where = f"`{sql}`"
    parser = _Parser(sql, version, where)
    if not parser.accept_keyword("SELECT"):
        raise parser.unexpected("a rule's SQL starts with SELECT")
    if parser.peek().is_keyword("DISTINCT"):
        raise parser.unsupported("SELECT DISTINCT", "select without DISTINCT")
    if parser.peek().is_keyword("VALUE") and _starts_expression(parser.peek(1)):
        raise parser.unsupported("SELECT VALUE", "select named items into a JSON object")
    select_all = False
    items: list[tuple[str, Expr]] = []
    while True:
        if parser.accept_op("*"):
            select_all = True
        else:
            items.append(_select_item(parser))
        if not parser.accept_op(","):
            break
    topic_filter = None
    matcher: Callable[[str], bool] = _never
    if parser.accept_keyword("FROM"):
        token = parser.advance()
        if token.kind != "str":
            written = _WHERE.split(sql[token.pos:], maxsplit=1)[0].strip() or "topic/subtopic"
            raise RuleError(f"the FROM topic filter in {where} must be enclosed in single quotes, as in "
                            f"FROM '{written}'")
        topic_filter = token.value
        matcher = _compile_topic_filter(topic_filter, sql)
    where_expr = parser.expression() if parser.accept_keyword("WHERE") else None
    if not parser.at_end():
        raise parser.unexpected()
    return Query(sql, version, topic_filter, select_all, tuple(items), where_expr, matcher)


def _starts_expression(token: _Token) -> bool:
    """Whether ``token`` can start an expression, telling ``SELECT VALUE x`` from an attribute named value."""
    if token.kind in ("num", "str"):
        return True
    if token.kind == "name":
        return token.text.upper() not in _KEYWORDS or token.text.upper() in ("TRUE", "FALSE", "NULL", "CASE",
                                                                              "NOT")
    return token.kind == "op" and token.text in ("(", "[", "{")


def _select_item(parser: _Parser) -> tuple[str, Expr]:
    expr = parser.expression()
    if parser.accept_keyword("AS"):
        token = parser.advance()
        if token.kind != "name" or token.text.upper() in _KEYWORDS:
            raise RuleError(f"AS must be followed by a name (position {token.pos} of {parser.where})")
        if parser.peek().is_op("."):
            raise parser.unsupported(f"a dotted alias AS {token.text}.…", "alias with a plain name")
        return token.text, expr
    if expr.default_name is None:
        raise RuleError(f"give `{expr.text}` in {parser.where} a name with AS, as in `{expr.text} AS name`")
    return expr.default_name, expr
