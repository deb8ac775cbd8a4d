"""The AWS IoT topic rule engine of ``iotpipe local``: moto stores topic rules but never runs them; this does.

It reads a deployed ``AWS::IoT::TopicRule`` (``rule_from_properties``), evaluates the subset of AWS IoT SQL the
pipeline needs and a little more (``parse_sql``), fills ``${...}`` substitution templates (``substitute``) and
runs the Kinesis and S3 actions and the error action against the emulated AWS (``RuleEngine``).

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
- Actions ``Kinesis`` and ``S3``; the error action (either kind) receives AWS's error-action message.

Topic filters follow the MQTT topics page: "A subscription to sensor/# receives messages published to sensor/,
sensor/temperature, sensor/temperature/room1, but not messages published to sensor" (MQTT 3.1.1 would match
``sensor`` too), and the FROM page: '#' matches "one or more" path elements. As in MQTT, a filter that starts
with a wildcard does not match topics starting with ``$``. Basic Ingest: a message on ``$aws/rules/<rule>/<topic>``
runs that rule only (its FROM is not consulted), and ``topic()`` sees ``<topic>`` without the prefix.

Non-JSON payloads (anything that is not a JSON object; an empty payload is ``{}``): ``SELECT *`` alone passes
the raw bytes through; attributes are Undefined; ``SELECT *`` with added items cannot be evaluated ("If you have
an empty or a JSON payload, the resulting payload can have data added using the rule"), so the message is counted
and reported, as AWS IoT logs it, and no action or error action runs.

Undefined follows the data types page: "in the object {"foo": null}, the key "foo" returns NULL, but the key
"bar" returns Undefined ... when serialized to JSON" an Undefined value is omitted, and "Undefined is converted
to an empty string when serialized by itself" (so a template naming a missing attribute renders ``""``).

Throughput: AWS's Kinesis action is one PutRecord per message; here a background thread coalesces the records
of ~50 ms into PutRecords calls of up to 500 records (invisible to the consumer: order per partition key is kept,
records go out in arrival order). A record that PutRecords reports failed, or a call that raises, goes to the
rule's error action; an error action that fails too is counted in :attr:`RuleEngine.stats` and reported.

Nothing the processors would accept is lost without a trace: a full queue makes ``on_message`` wait (the broker's
feed then pushes back on the broker) instead of dropping; every lost message is logged; a lone surrogate escape is
written back as an escape; a payload nested too deeply to parse goes to the error action; number literals keep
AWS IoT's Decimal (``_decimal``). docs/local.md, "What the rule engine never loses", has the details.
"""

from __future__ import annotations

import base64
import contextlib
import decimal
import functools
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from iotpipe import contract as naming
from iotpipe.errors import IotpipeError

SQL_2015 = "2015-10-08"
SQL_2016 = "2016-03-23"
SQL_VERSIONS = (SQL_2015, SQL_2016)
# "If this property isn't set, for example in an AWS CLI command or a CloudFormation template, 2015-10-08 is
# used" (Creating an AWS IoT rule).
DEFAULT_SQL_VERSION = SQL_2015
BASIC_INGEST_PREFIX = naming.BASIC_INGEST_PREFIX
KINESIS_MAX_RECORDS = 500
KINESIS_MAX_RECORD_BYTES = 1024 * 1024
KINESIS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
KINESIS_MAX_PARTITION_KEY = 256

_log = logging.getLogger(__name__)


class RuleError(IotpipeError):
    """A topic rule uses SQL, a function or an action that ``iotpipe local`` cannot run, or is malformed."""

    exit_code = 2


class RuleEvaluationError(IotpipeError):
    """A message could not be evaluated by a rule's SQL (AWS IoT logs it; no action and no error action run)."""


class _Undefined:
    """AWS IoT SQL's Undefined: not a value; omitted from JSON objects, ``""`` when serialized by itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()
_NO_CONSTANT: Any = object()


# ---------------------------------------------------------------------------------------------- messages

class _Message:
    """What an expression sees: the parsed payload, the topic the rule sees, the client id and the rule time.

    ``too_deep``: the payload nests deeper than Python's JSON parser goes, so it could not be parsed at all.
    """

    __slots__ = ("client_id", "doc", "is_json", "now_ms", "raw", "too_deep", "topic")

    def __init__(self, doc: Mapping[str, Any], is_json: bool, raw: bytes, topic: str, client_id: str | None,
                 now_ms: int, too_deep: bool = False) -> None:
        self.doc = doc
        self.is_json = is_json
        self.raw = raw
        self.topic = topic
        self.client_id = client_id
        self.now_ms = now_ms
        self.too_deep = too_deep


class PayloadTooDeepError(IotpipeError):
    """A JSON payload nests deeper than the rule engine can parse or re-encode (Python's recursion limit)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Data types: Decimal is "A Decimal with a precision of 34 digits, with a minimum non-zero magnitude of 1E-999
# and a maximum magnitude 9.999...E999". A literal in that range is kept at 34 digits (a double where it holds the
# same value: 71.2, 1e300), so 1e-400 stays 1E-400 rather than becoming 0. The page does not say what happens
# beyond that range: such a literal is passed through as it was written.
_DECIMAL = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN, Emin=-999_999, Emax=999_999)
_DECIMAL_MIN = Decimal("1E-999")
_DECIMAL_LIMIT = Decimal("1E1000")


class _Literal(Decimal):
    """A number literal beyond AWS IoT's Decimal range: computes as its value, written as it was received."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> _Literal:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text


def _decimal(text: str) -> Any:
    """A JSON number with a fraction or exponent as the rules engine holds it: a float, a Decimal or a _Literal."""
    if len(text) < 16 and "e" not in text and "E" not in text:
        return float(text)  # at most 15 significant digits: a double holds them exactly
    exact = Decimal(text)
    if exact and not _DECIMAL_MIN <= abs(exact) < _DECIMAL_LIMIT:
        return _Literal(text)
    number = _DECIMAL.plus(exact)
    value = float(number)
    return value if math.isfinite(value) and Decimal(repr(value)) == number else number


def _number_2016(text: str) -> Any:
    # "With SQL V2 (2016-03-23), numeric values that are whole numbers, such as 10.0, are processed as an Int
    # value (10) instead of the expected Decimal value (10.0)" (Data types). Int has "34 digits maximum".
    value = _decimal(text)
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e34 else value
    if type(value) is Decimal and value == value.to_integral_value() and abs(value) < _INT_LIMIT:
        return int(value)
    return value


def _number_2015(text: str) -> Any:
    return _decimal(text)


_DECODERS = {
    SQL_2015: json.JSONDecoder(parse_float=_number_2015, parse_constant=_reject_constant).decode,
    SQL_2016: json.JSONDecoder(parse_float=_number_2016, parse_constant=_reject_constant).decode,
}


def parse_payload(payload: bytes, version: str = SQL_2016) -> dict[str, Any] | None:
    """The payload as the rules engine sees it: a JSON object, ``{}`` for an empty payload, None if not JSON.

    A payload that is valid JSON but not an object (``80``) is not JSON to the rules engine: the WHERE clause
    page calls ``80`` an "Incoming non-JSON payload"; and "If you have an empty or a JSON payload, the resulting
    payload can have data added using the rule" (Working with binary payloads). A payload nested too deeply to
    parse is None here too; the engine sends it to the error action (see ``RuleEngine``).
    """
    try:
        return _decode(payload, version)
    except RecursionError:
        return None


def _decode(payload: bytes, version: str) -> dict[str, Any] | None:
    """``parse_payload``, except that a payload nested too deeply for the parser raises RecursionError."""
    if not payload:
        return {}
    try:
        doc = _DECODERS[version](payload.decode("utf-8"))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _message(payload: bytes, version: str, topic: str, client_id: str | None, now_ms: int) -> _Message:
    try:
        doc = _decode(payload, version)
    except RecursionError:
        return _Message({}, False, payload, topic, client_id, now_ms, too_deep=True)
    return _Message(doc if doc is not None else {}, doc is not None, payload, topic, client_id, now_ms)


def _json_default(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _dumps_slow(value: Any) -> str:
    """JSON text for values json.dumps refuses: Decimals beyond float range (``1E+400``) written as numbers."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + _dumps_slow(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps_slow(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    return json.dumps(value, ensure_ascii=False)


_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(value: Any) -> bytes:
    """The outgoing payload as compact UTF-8 JSON (always valid JSON: no NaN, no Infinity).

    A lone surrogate (``"\\ud800"`` is valid JSON, and Python's and Node's parsers accept it) has no UTF-8 form:
    it is written back as the escape it arrived as. Raises :class:`PayloadTooDeepError` for a value nested too
    deeply to write.
    """
    try:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                              default=_json_default)
        except (TypeError, ValueError):
            text = _dumps_slow(value)
    except RecursionError:
        raise PayloadTooDeepError("the payload nests too deeply to be written as JSON again") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


# ---------------------------------------------------------------------------------------------- conversions
# The conversion tables of the Data types page and the operator tables of the Operators page.

_DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?([eE]-?\d+)?\Z")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _to_number(value: Any) -> Any:
    """To Decimal: numbers stay, strings matching ``^-?\\d+(\\.\\d+)?((?i)E-?\\d+)?$`` parse, the rest Undefined."""
    if _is_number(value):
        return value
    if isinstance(value, str) and _DECIMAL_TEXT.match(value):
        return int(value) if value.lstrip("-").isdigit() else float(value)
    return UNDEFINED


def _to_bool(value: Any) -> Any:
    """To Boolean: booleans stay; "true"/"false" in any case convert; everything else is Undefined."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return UNDEFINED


def _to_str(value: Any) -> Any:
    """To String: Null and Undefined give Undefined; arrays and objects are serialized to JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value) if not isinstance(value, float) else repr(value)
    if isinstance(value, list | dict):
        return to_json(value).decode("utf-8")
    return UNDEFINED


def _same(left: Any, right: Any) -> bool:
    """Equality of two defined values: numbers numerically, arrays in order, objects by keys; other types differ."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    if left is None and right is None:
        return True
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    return False  # "Mismatched type | Mismatched type | False"


def _equal(left: Any, right: Any) -> Any:
    if left is UNDEFINED or right is UNDEFINED:
        return UNDEFINED  # "Any value | Undefined | Undefined"
    return _same(left, right)


def _not_equal(left: Any, right: Any) -> Any:
    if left is UNDEFINED or right is UNDEFINED:
        return UNDEFINED
    return not _same(left, right)


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        # "Both operands are converted to a Decimal, and then compared"; anything else is Undefined.
        a, b = _to_number(left), _to_number(right)
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        return compare(a, b)

    return apply


def _and(left: Any, right: Any) -> Any:
    a, b = _to_bool(left), _to_bool(right)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED  # "Other value | Other value | Undefined"
    return a and b


def _or(left: Any, right: Any) -> Any:
    a, b = _to_bool(left), _to_bool(right)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return a or b


def _not(value: Any) -> Any:
    converted = _to_bool(value)
    return UNDEFINED if converted is UNDEFINED else not converted


def _whole(value: Any, version: str) -> Any:
    if version == SQL_2016 and isinstance(value, float) and value.is_integer() and abs(value) < 1e34:
        return int(value)
    return value


def _arithmetic(op: str, version: str) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        if op == "+" and (isinstance(left, str) or isinstance(right, str)):
            # "+": "Converts the right operand to a string and concatenates it to the end of the left operand".
            a_text, b_text = _to_str(left), _to_str(right)
            if a_text is UNDEFINED or b_text is UNDEFINED:
                return UNDEFINED
            return a_text + b_text
        a, b = _to_number(left), _to_number(right)
        if a is UNDEFINED or b is UNDEFINED or not (_finite(a) and _finite(b)):
            return UNDEFINED
        if isinstance(a, int) and isinstance(b, int):
            return _int_arithmetic(op, a, b)
        return _whole(_float_arithmetic(op, float(a), float(b)), version)

    return apply


def _finite(number: Any) -> bool:
    """Whether a number fits a double (JSON Decimals beyond it are kept as Decimal and not computed with)."""
    return math.isfinite(number) if isinstance(number, float) else abs(number) < _DOUBLE_MAX


_DOUBLE_MAX = Decimal("1.7976931348623157e308")
_INT_LIMIT = 10**34  # Data types: Int is "A discrete Int. 34 digits maximum."


def _int_arithmetic(op: str, a: int, b: int) -> Any:
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif b == 0:
        return UNDEFINED
    else:
        quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)  # Int / Int truncates toward zero
        result = quotient if op == "/" else a - b * quotient
    return result if abs(result) < _INT_LIMIT else _float_arithmetic(op, float(a), float(b))


def _float_arithmetic(op: str, a: float, b: float) -> Any:
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif b == 0:
        return UNDEFINED
    else:
        result = a / b if op == "/" else math.fmod(a, b)
    return result if math.isfinite(result) else UNDEFINED


def _negate(value: Any, version: str) -> Any:
    number = _to_number(value)
    return UNDEFINED if number is UNDEFINED else _whole(-number, version)


def _get(collection: Any, key: Any) -> Any:
    """``get``: an array or string by 0-based index (converted to Int), an object by string key."""
    if isinstance(collection, dict):
        return collection.get(key, UNDEFINED) if isinstance(key, str) else UNDEFINED
    if isinstance(collection, list | str):
        index = _to_number(key)
        if index is UNDEFINED:
            return UNDEFINED
        index = int(index)
        return collection[index] if 0 <= index < len(collection) else UNDEFINED
    return UNDEFINED


def _member_of(inner: Callable[[_Message], Any], key: str) -> Callable[[_Message], Any]:
    """``inner.key``: a member of an object; Undefined for a missing key or a value that is not an object."""
    def member(m: _Message) -> Any:
        value = inner(m)
        return value.get(key, UNDEFINED) if isinstance(value, Mapping) else UNDEFINED

    return member


# ---------------------------------------------------------------------------------------------- functions

Fn = Callable[[_Message], Any]


@dataclass(frozen=True)
class _Function:
    """A SQL function: argument counts, the first SQL version that has it, and its builder."""

    min_args: int
    max_args: int
    since: str
    build: Callable[[list[Expr], str], Fn]


def _topic_function(args: list[Expr], _version: str) -> Fn:
    if not args:
        return lambda m: m.topic
    arg = args[0]
    if arg.constant is not _NO_CONSTANT:
        number = _to_number(arg.constant)
        if number is UNDEFINED:
            return lambda _m: UNDEFINED
        index = int(number)

        def level(m: _Message) -> Any:
            # Out of range is Undefined: "Functions called with invalid arguments ... return Undefined".
            levels = m.topic.split("/")
            return levels[index - 1] if 1 <= index <= len(levels) else UNDEFINED

        return level
    arg_fn = arg.fn

    def dynamic_level(m: _Message) -> Any:
        number = _to_number(arg_fn(m))
        if number is UNDEFINED:
            return UNDEFINED
        levels = m.topic.split("/")
        return levels[int(number) - 1] if 1 <= int(number) <= len(levels) else UNDEFINED

    return dynamic_level


def _clientid_function(_args: list[Expr], _version: str) -> Fn:
    # "Returns the ID of the MQTT client sending the message, or n/a if the message wasn't sent over MQTT";
    # a broker that cannot tell who published gives None, which reads as n/a too.
    return lambda m: m.client_id if m.client_id is not None else "n/a"


def _concat(*values: Any) -> Any:
    if not values:
        return UNDEFINED
    if len(values) == 1:
        return values[0]
    if any(isinstance(v, list) for v in values):
        result: list[Any] = []
        for v in values:
            if isinstance(v, list):
                result.extend(v)
            elif v is not UNDEFINED:
                result.append(v)
        return result
    texts = [_to_str(v) for v in values]
    if any(t is UNDEFINED for t in texts) or not any(isinstance(v, str) for v in values):
        return UNDEFINED
    return "".join(texts)


def _string_function(apply: Callable[..., Any]) -> Callable[[list[Expr], str], Fn]:
    """A function of strings: non-string arguments take the standard conversion; Undefined in, Undefined out."""
    def build(args: list[Expr], _version: str) -> Fn:
        fns = [a.fn for a in args]

        def call(m: _Message) -> Any:
            texts = [_to_str(f(m)) for f in fns]
            return UNDEFINED if any(t is UNDEFINED for t in texts) else apply(*texts)

        return call

    return build


def _number_function(apply: Callable[[Any], Any]) -> Callable[[list[Expr], str], Fn]:
    def build(args: list[Expr], version: str) -> Fn:
        fn = args[0].fn

        def call(m: _Message) -> Any:
            number = _to_number(fn(m))
            if number is UNDEFINED or not _finite(number):
                return UNDEFINED
            return _whole(apply(float(number) if isinstance(number, Decimal) else number), version)

        return call

    return build


def _plain(apply: Callable[..., Any]) -> Callable[[list[Expr], str], Fn]:
    def build(args: list[Expr], _version: str) -> Fn:
        fns = [a.fn for a in args]
        if len(fns) == 1:
            only = fns[0]
            return lambda m: apply(only(m))
        return lambda m: apply(*(f(m) for f in fns))

    return build


def _round_half_away(value: Any) -> Any:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


_FUNCTIONS: dict[str, _Function] = {
    "topic": _Function(0, 1, SQL_2015, _topic_function),
    "timestamp": _Function(0, 0, SQL_2015, lambda _args, _v: lambda m: m.now_ms),
    "clientid": _Function(0, 0, SQL_2015, _clientid_function),
    "newuuid": _Function(0, 0, SQL_2015, lambda _args, _v: lambda _m: str(uuid.uuid4())),
    "sql_version": _Function(0, 0, SQL_2015, lambda _args, v: lambda _m: v),
    "concat": _Function(0, 64, SQL_2015, _plain(_concat)),
    "upper": _Function(1, 1, SQL_2015, _string_function(str.upper)),
    "lower": _Function(1, 1, SQL_2015, _string_function(str.lower)),
    "length": _Function(1, 1, SQL_2016, _string_function(len)),
    "startswith": _Function(2, 2, SQL_2015, _string_function(str.startswith)),
    "endswith": _Function(2, 2, SQL_2015, _string_function(str.endswith)),
    "replace": _Function(3, 3, SQL_2015, _string_function(str.replace)),
    "get": _Function(2, 2, SQL_2015, _plain(_get)),
    "isnull": _Function(1, 1, SQL_2015, _plain(lambda v: v is None)),
    "isundefined": _Function(1, 1, SQL_2016, _plain(lambda v: v is UNDEFINED)),
    "abs": _Function(1, 1, SQL_2015, _number_function(abs)),
    "ceil": _Function(1, 1, SQL_2015, _number_function(math.ceil)),
    "floor": _Function(1, 1, SQL_2015, _number_function(math.floor)),
    "round": _Function(1, 1, SQL_2015, _number_function(_round_half_away)),
}
SUPPORTED_FUNCTIONS = tuple(sorted(_FUNCTIONS))


# ---------------------------------------------------------------------------------------------- parsing

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


@dataclass(frozen=True)
class Expr:
    """A compiled expression: its closure, its source text, its constant value if it has one, its default name."""

    fn: Fn = field(repr=False, compare=False)
    text: str
    constant: Any = field(default=_NO_CONSTANT, repr=False, compare=False)
    default_name: str | None = None


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

        def evaluate(m: _Message) -> Any:
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

        def build(m: _Message) -> dict[str, Any]:
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
        return self.run(_message(payload, self.version, topic, client_id, now_ms))

    def run(self, message: _Message) -> dict[str, Any] | bytes | None:
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
            raise RuleError(f"the FROM topic filter in {where} must be enclosed in single quotes, as in "
                            f"FROM '{naming.TOPIC_FILTER}'")
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


# ---------------------------------------------------------------------------------------------- templates

@dataclass(frozen=True)
class Template:
    """A compiled substitution template: literal text and ``${expression}`` parts."""

    source: str
    parts: tuple[str | Expr, ...] = field(compare=False)

    def render(self, message: _Message) -> str:
        """The template with each expression replaced by its value as a string (Undefined and Null as "")."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                text = _to_str(part.fn(message))
                out.append("" if text is UNDEFINED else text)
        return "".join(out)


@functools.lru_cache(maxsize=256)
def compile_template(template: str, version: str = SQL_2016) -> Template:
    """Compile ``${...}`` substitution templates; RuleError naming an unsupported or malformed expression.

    "Because an expression in a substitution template is evaluated separately from the SELECT ... statement, you
    cannot reference an alias created using the AS clause" (Substitution templates): expressions see the
    original payload.
    """
    parts: list[str | Expr] = []
    pos = 0
    while True:
        start = template.find("${", pos)
        if start < 0:
            break
        end = _template_end(template, start + 2)
        inner = template[start + 2:end]
        if not inner.strip():
            raise RuleError(f"empty substitution template ${{}} in {template!r}; put an expression inside")
        parser = _Parser(inner, version, f"template {template!r}")
        expr = parser.expression()
        if not parser.at_end():
            raise parser.unexpected()
        if start > pos:
            parts.append(template[pos:start])
        parts.append(expr)
        pos = end + 1
    if pos < len(template):
        parts.append(template[pos:])
    return Template(template, tuple(parts))


def _template_end(template: str, pos: int) -> int:
    """Index of the '}' closing a template expression, skipping quoted strings and object literals."""
    depth = 0
    quote = ""
    while pos < len(template):
        char = template[pos]
        if quote:
            if char == "\\":
                pos += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return pos
            depth -= 1
        pos += 1
    raise RuleError(f"unterminated substitution template in {template!r}: '${{' without its '}}'")


def substitute(template: str, *, message: Mapping[str, Any], topic: str, client_id: str | None,
               now_ms: int, version: str = SQL_2016) -> str:
    """Fill ``${expr}`` templates (``topic(n)``, ``timestamp()``, ``newuuid()``, ``clientid()``, attributes of
    ``message``, operators) as AWS IoT does for action parameters."""
    compiled = compile_template(template, version)
    return compiled.render(_Message(message, True, b"", topic, client_id, now_ms))


# ---------------------------------------------------------------------------------------------- rules

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


# ---------------------------------------------------------------------------------------------- engine

@dataclass(frozen=True)
class RuleEngineStats:
    """A snapshot of the engine's counters.

    ``messages_in``: ``on_message`` calls. ``unrouted``: messages no enabled rule's FROM matched (AWS ignores
    them too). ``matched``: (message, rule) pairs whose WHERE held, so the actions ran; ``filtered``: pairs whose
    WHERE was false or Undefined. ``sql_failed``: pairs the SQL could not evaluate: a non-JSON payload where
    the SQL adds to ``*`` (dropped), or JSON nested too deeply to parse (each action counted failed, the message
    sent to the error action). ``actions_ok`` / ``actions_failed``: action runs (one Kinesis record, one S3
    object). ``error_actions`` / ``error_actions_failed``: error-action messages delivered / not delivered.
    ``dropped``: (message, rule) pairs lost, each also logged and given to ``on_problem``: SQL that could not
    evaluate a payload that is not JSON, failed actions with no working error action, an unknown or disabled
    Basic Ingest rule. ``backpressured``: messages ``on_message`` held until the full queue had room.
    ``pending``: messages queued and not yet processed.
    """

    messages_in: int = 0
    unrouted: int = 0
    matched: int = 0
    filtered: int = 0
    sql_failed: int = 0
    actions_ok: int = 0
    actions_failed: int = 0
    error_actions: int = 0
    error_actions_failed: int = 0
    dropped: int = 0
    backpressured: int = 0
    pending: int = 0


_COUNTERS = tuple(f for f in RuleEngineStats.__dataclass_fields__ if f != "pending")


@dataclass
class _Invocation:
    """One rule run on one message, and the failures of its actions."""

    rule: TopicRule
    message: _Message
    original_topic: str
    failures: list[dict[str, str]]


@dataclass
class _Record:
    invocation: _Invocation
    action: KinesisAction
    stream: str
    partition_key: str
    data: bytes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        error = response["Error"]
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"


class RuleEngine:
    """Runs topic rules on published messages against the emulated AWS, in a background thread.

    ``on_message`` queues (thread-safe); the thread evaluates each message against the rules and sends Kinesis
    records in PutRecords calls of up to ``max_batch`` records every ~``flush_interval_s``. The queue holds at most
    ``max_pending`` messages: past that ``on_message`` waits for room (the broker's feed then stops acknowledging,
    which pushes back on the broker) rather than drop. Each lost message (and each failed error action) is logged
    as a warning of this module's logger and given to ``on_problem`` as one line.
    """

    def __init__(self, rules: Sequence[TopicRule], clients: Any, *, clock_ms: Callable[[], int] = _now_ms,
                 flush_interval_s: float = 0.05, max_batch: int = KINESIS_MAX_RECORDS,
                 max_pending: int = 200_000, on_problem: Callable[[str], None] | None = None) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleError(f"topic rule names must be unique; {', '.join(duplicates)} appear more than once")
        if not 1 <= max_batch <= KINESIS_MAX_RECORDS:
            raise RuleError(f"max_batch must be between 1 and {KINESIS_MAX_RECORDS}, not {max_batch}")
        self._rules = tuple(rules)
        self._by_name = {rule.name: rule for rule in rules}
        self._clients = clients
        self._service_clients: dict[str, Any] = {}
        self._clock_ms = clock_ms
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._on_problem = on_problem
        self._routes: dict[str, tuple[TopicRule, ...]] = {}
        self._queue: deque[tuple[str, bytes, str | None, int]] = deque()
        lock = threading.Lock()
        self._condition = threading.Condition(lock)  # the thread waits for messages
        self._room = threading.Condition(lock)  # producers wait for room in the queue
        self._processing = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="iotpipe-rule-engine", daemon=True)
        self._thread.start()

    # -- public
    def on_message(self, topic: str, payload: bytes, client_id: str | None) -> None:
        """Queue a published message for the rules (thread-safe).

        With ``max_pending`` messages waiting it blocks until the thread takes them: the broker's feed calls this
        before it acknowledges, so a stalled emulator holds the broker back instead of losing messages. After
        ``close()`` it runs the rules on what is queued and on this message itself.
        """
        item = (topic, bytes(payload), client_id, self._clock_ms())
        with self._condition:
            self._counts["messages_in"] += 1
            if len(self._queue) >= self._max_pending and not self._closed:
                self._counts["backpressured"] += 1
                self._condition.notify()  # the thread must not linger over a full queue
                while len(self._queue) >= self._max_pending and not self._closed:
                    self._room.wait(1.0)
            if not self._closed:
                self._queue.append(item)
                if len(self._queue) == 1 or len(self._queue) >= min(self._max_batch, self._max_pending):
                    self._condition.notify()
                return
        with self._processing:
            problems = self._process([*self._take(), item])
        self._report(problems)

    def flush(self) -> None:
        """Deliver everything queued so far (waits for a batch in flight; for tests and shutdown)."""
        with self._processing:
            problems = self._process(self._take())
        self._report(problems)  # outside the lock: on_problem may call back into the engine

    def close(self) -> None:
        """Deliver what is queued, then stop the thread; idempotent. Later messages are run by ``on_message``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            self._room.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=120)
        self.flush()

    @property
    def stats(self) -> RuleEngineStats:
        """A consistent snapshot of the counters (and how many messages wait in the queue)."""
        with self._condition:
            return RuleEngineStats(**self._counts, pending=len(self._queue))

    @property
    def alive(self) -> bool:
        """True while the engine's thread runs (or it was closed on purpose): messages queued now will be sent."""
        return self._closed or self._thread.is_alive()

    @property
    def rules(self) -> tuple[TopicRule, ...]:
        """The rules this engine runs."""
        return self._rules

    # -- the thread
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    self._condition.wait(timeout=0.5)
                if self._closed and not self._queue:
                    return
                # Linger to coalesce records into fewer PutRecords calls, unless a full batch is waiting.
                deadline = time.monotonic() + self._flush_interval_s
                while len(self._queue) < min(self._max_batch, self._max_pending) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
            with self._processing:
                try:
                    problems = self._process(self._take())
                except Exception as exc:  # never let the thread die: report and keep serving
                    problems = [f"rule engine batch failed: {_describe(exc)}"]
            self._report(problems)

    def _take(self) -> list[tuple[str, bytes, str | None, int]]:
        with self._condition:
            items = list(self._queue)
            self._queue.clear()
            self._room.notify_all()
        return items

    # -- processing (always under self._processing)
    def _process(self, items: list[tuple[str, bytes, str | None, int]]) -> list[str]:
        """Run the rules on ``items``; the problems to report (one line per lost message)."""
        if not items:
            return []
        counts = dict.fromkeys(_COUNTERS, 0)
        problems: list[str] = []
        invocations: list[_Invocation] = []
        records: dict[str, list[_Record]] = {}
        for topic, payload, client_id, now in items:
            self._evaluate(topic, payload, client_id, now, counts, problems, invocations, records)
        for stream, stream_records in records.items():
            self._put_records(stream, stream_records, counts)
        for invocation in invocations:
            if invocation.failures:
                self._run_error_action(invocation, counts, problems)
        with self._condition:
            for key, value in counts.items():
                self._counts[key] += value
        return problems

    def _targets(self, topic: str) -> tuple[TopicRule, ...]:
        routes = self._routes.get(topic)
        if routes is None:
            if len(self._routes) >= 10_000:
                self._routes.clear()
            routes = tuple(r for r in self._rules if not r.disabled and r.query.matches(topic))
            self._routes[topic] = routes
        return routes

    def _evaluate(self, topic: str, payload: bytes, client_id: str | None, now: int, counts: dict[str, int],
                  problems: list[str], invocations: list[_Invocation], records: dict[str, list[_Record]]) -> None:
        ingest = basic_ingest_target(topic)
        if ingest is not None:
            rule = self._by_name.get(ingest[0])
            if rule is None or rule.disabled:
                counts["dropped"] += 1
                state = "does not exist" if rule is None else "is disabled"
                problems.append(f"message on Basic Ingest topic {topic} dropped: rule {ingest[0]} {state}")
                return
            targets: tuple[TopicRule, ...] = (rule,)
            rule_topic = ingest[1]
        else:
            targets = self._targets(topic)
            rule_topic = topic
        if not targets:
            counts["unrouted"] += 1
            return
        parsed: dict[str, _Message] = {}
        for rule in targets:
            version = rule.query.version
            message = parsed.get(version)
            if message is None:
                message = parsed[version] = _message(payload, version, rule_topic, client_id, now)
            try:
                out = rule.query.run(message)
                data = None if out is None else out if isinstance(out, bytes) else to_json(out)
            except RuleEvaluationError as exc:
                # A payload that is not JSON: no error action. "The error handling covered in this topic is for
                # rule actions. To debug SQL issues ... set up AWS IoT logging" (Error handling); here the log
                # and on_problem are that log.
                counts["sql_failed"] += 1
                counts["dropped"] += 1
                problems.append(f"rule {rule.name}: message on {topic} dropped: {exc}")
                continue
            except Exception as exc:  # PayloadTooDeepError, or anything else a strange payload provokes
                # JSON the processors would take (and quarantine) but this engine cannot evaluate or write again:
                # its actions cannot run, so it goes where AWS sends a message whose actions failed, the error
                # action, rather than vanish.
                counts["sql_failed"] += 1
                reason = str(exc) if isinstance(exc, PayloadTooDeepError) else _describe(exc)
                invocation = _Invocation(rule, message, topic, [_unrunnable(action, reason) for action in rule.actions])
                counts["actions_failed"] += len(invocation.failures)
                invocations.append(invocation)
                continue
            if data is None:
                counts["filtered"] += 1
                continue
            counts["matched"] += 1
            invocation = _Invocation(rule, message, topic, [])
            invocations.append(invocation)
            for action in rule.actions:
                try:
                    self._start_action(action, invocation, data, counts, records)
                except Exception as exc:  # a template that cannot render must not take the batch down
                    counts["actions_failed"] += 1
                    invocation.failures.append({"failedAction": type(action).__name__, "failedResource": "",
                                                "errorMessage": f"Failed to run the action: {_describe(exc)}"})

    def _start_action(self, action: Action, invocation: _Invocation, data: bytes, counts: dict[str, int],
                      records: dict[str, list[_Record]]) -> None:
        message = invocation.message
        if isinstance(action, KinesisAction):
            stream = action.stream_name.render(message)
            # Not stated in the pages we read: without a PartitionKey a random one spreads records over shards.
            key = str(uuid.uuid4()) if action.partition_key is None else action.partition_key.render(message)
            problem = _record_problem(stream, key, data)
            if problem:
                counts["actions_failed"] += 1
                invocation.failures.append(_kinesis_failure(stream, invocation.original_topic, problem))
                return
            records.setdefault(stream, []).append(_Record(invocation, action, stream, key, data))
            return
        bucket, key = action.bucket_name.render(message), action.key.render(message)
        try:
            self._put_object(action, bucket, key, data)
        except Exception as exc:
            counts["actions_failed"] += 1
            invocation.failures.append(_s3_failure(bucket, key, invocation.original_topic, _describe(exc)))
        else:
            counts["actions_ok"] += 1

    def _client(self, service: str) -> Any:
        client = self._service_clients.get(service)
        if client is None:
            client = self._service_clients[service] = self._clients.client(service)
        return client

    def _put_object(self, action: S3Action, bucket: str, key: str, body: bytes) -> None:
        if not bucket or not key:
            raise ValueError(f"the bucket name or key is empty (bucket {bucket!r}, key {key!r})")
        extra = {"ACL": action.canned_acl} if action.canned_acl else {}
        self._client("s3").put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def _put_records(self, stream: str, records: list[_Record], counts: dict[str, int]) -> None:
        for chunk in _chunks(records, self._max_batch):
            try:
                response = self._client("kinesis").put_records(
                    StreamName=stream, Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in chunk])
                results = response["Records"]
            except Exception as exc:
                reason = _describe(exc)
                for record in chunk:
                    counts["actions_failed"] += 1
                    record.invocation.failures.append(
                        _kinesis_failure(stream, record.invocation.original_topic, reason))
                continue
            for record, result in zip(chunk, results, strict=True):
                if "ErrorCode" in result:
                    counts["actions_failed"] += 1
                    reason = f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}"
                    record.invocation.failures.append(
                        _kinesis_failure(stream, record.invocation.original_topic, reason))
                else:
                    counts["actions_ok"] += 1

    def _run_error_action(self, invocation: _Invocation, counts: dict[str, int], problems: list[str]) -> None:
        rule = invocation.rule
        summary = "; ".join(f["errorMessage"] for f in invocation.failures)
        if rule.error_action is None:
            counts["dropped"] += 1
            problems.append(f"rule {rule.name}: message on {invocation.original_topic} lost: {summary} "
                            "(the rule has no error action)")
            return
        body = to_json(error_action_message(rule.name, invocation.original_topic, invocation.message.client_id,
                                            invocation.message.raw, invocation.failures))
        action, message = rule.error_action, invocation.message
        try:
            if isinstance(action, S3Action):
                self._put_object(action, action.bucket_name.render(message), action.key.render(message), body)
            else:
                stream = action.stream_name.render(message)
                key = str(uuid.uuid4()) if action.partition_key is None else action.partition_key.render(message)
                problem = _record_problem(stream, key, body)
                if problem:
                    raise ValueError(problem)
                self._client("kinesis").put_record(StreamName=stream, PartitionKey=key, Data=body)
        except Exception as exc:
            counts["error_actions_failed"] += 1
            counts["dropped"] += 1
            problems.append(f"rule {rule.name}: message on {invocation.original_topic} lost: {summary}; "
                            f"its error action failed too: {_describe(exc)}")
        else:
            counts["error_actions"] += 1

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            _log.warning("%s", problem)
        if self._on_problem is None:
            return
        for problem in problems:
            with contextlib.suppress(Exception):  # a broken logger must not stop the rules
                self._on_problem(problem)


def _chunks(records: list[_Record], max_batch: int) -> list[list[_Record]]:
    """PutRecords-sized chunks: at most ``max_batch`` records and 5 MiB (data plus partition keys) each."""
    chunks: list[list[_Record]] = []
    current: list[_Record] = []
    size = 0
    for record in records:
        record_size = len(record.data) + len(record.partition_key.encode("utf-8"))
        if current and (len(current) >= max_batch or size + record_size > KINESIS_MAX_REQUEST_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(record)
        size += record_size
    if current:
        chunks.append(current)
    return chunks


def _record_problem(stream: str, partition_key: str, data: bytes) -> str | None:
    """Why Kinesis would refuse this record, checked before the call so one bad record cannot fail a batch."""
    if not stream:
        return "ValidationException: the stream name is empty"
    if not 1 <= len(partition_key) <= KINESIS_MAX_PARTITION_KEY:
        return (f"ValidationException: the partition key must be 1 to {KINESIS_MAX_PARTITION_KEY} characters, "
                f"not {len(partition_key)} (a substitution template that names a missing attribute renders "
                "an empty string)")
    if len(data) + len(partition_key.encode("utf-8")) > KINESIS_MAX_RECORD_BYTES:
        return "ValidationException: the record is larger than 1 MiB"
    return None


def _unrunnable(action: Action, reason: str) -> dict[str, str]:
    """The error-action failure of an action that could not run because the rule could not evaluate the message."""
    kind, resource = (("KinesisAction", action.stream_name.source) if isinstance(action, KinesisAction)
                      else ("S3Action", action.bucket_name.source))
    return {"failedAction": kind, "failedResource": resource,
            "errorMessage": f"Failed to evaluate the rule on the message: {reason}"}


def _kinesis_failure(stream: str, topic: str, reason: str) -> dict[str, str]:
    return {"failedAction": "KinesisAction", "failedResource": stream,
            "errorMessage": f"Failed to send message to Kinesis. The error received was {reason}. Message arrived "
                            f"on: {topic}, Action: kinesis, Stream: {stream}"}


def _s3_failure(bucket: str, key: str, topic: str, reason: str) -> dict[str, str]:
    return {"failedAction": "S3Action", "failedResource": bucket,
            "errorMessage": f"Failed to put S3 object. The error received was {reason}. Message arrived on: "
                            f"{topic}, Action: s3, Bucket: {bucket}, Key: \"{key}\""}


def error_action_message(rule_name: str, topic: str, client_id: str | None, payload: bytes,
                         failures: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The message an error action receives, in the format of "Error action message format": one per rule and
    message, with every failed action of the rule in ``failures``."""
    return {
        "ruleName": rule_name,
        "topic": topic,
        "cloudwatchTraceId": str(uuid.uuid4()),
        "clientId": client_id if client_id is not None else "n/a",
        "base64OriginalPayload": base64.b64encode(payload).decode("ascii"),
        "failures": [dict(f) for f in failures],
    }


__all__ = [
    "BASIC_INGEST_PREFIX", "DEFAULT_SQL_VERSION", "SQL_VERSIONS", "SUPPORTED_FUNCTIONS", "UNDEFINED", "Action",
    "Expr", "KinesisAction", "PayloadTooDeepError", "Query", "RuleEngine", "RuleEngineStats", "RuleError",
    "RuleEvaluationError", "S3Action", "Template", "TopicRule", "basic_ingest_target", "compile_template",
    "error_action_message", "parse_payload", "parse_sql", "rule_from_properties", "substitute", "to_json",
]
