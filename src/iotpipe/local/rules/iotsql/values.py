"""Values of AWS IoT SQL: the message an expression sees, the payload as the rules engine parses it, JSON output,
Undefined, and the conversion and operator tables of the Data types and Operators pages.

Non-JSON payloads (anything that is not a JSON object; an empty payload is ``{}``): ``SELECT *`` alone passes
the raw bytes through; attributes are Undefined; ``SELECT *`` with added items cannot be evaluated ("If you have
an empty or a JSON payload, the resulting payload can have data added using the rule"), so the message is counted
and reported, as AWS IoT logs it, and no action or error action runs.

Undefined follows the data types page: "in the object {"foo": null}, the key "foo" returns NULL, but the key
"bar" returns Undefined ... when serialized to JSON" an Undefined value is omitted, and "Undefined is converted
to an empty string when serialized by itself" (so a template naming a missing attribute renders ``""``).
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from iotpipe.local.rules.iotsql.errors import PayloadTooDeepError

SQL_2015 = "2015-10-08"
SQL_2016 = "2016-03-23"
SQL_VERSIONS = (SQL_2015, SQL_2016)
# "If this property isn't set, for example in an AWS CLI command or a CloudFormation template, 2015-10-08 is
# used" (Creating an AWS IoT rule).
DEFAULT_SQL_VERSION = SQL_2015


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

class Message:
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


def parse_message(payload: bytes, version: str, topic: str, client_id: str | None, now_ms: int) -> Message:
    try:
        doc = _decode(payload, version)
    except RecursionError:
        return Message({}, False, payload, topic, client_id, now_ms, too_deep=True)
    return Message(doc if doc is not None else {}, doc is not None, payload, topic, client_id, now_ms)


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


def _member_of(inner: Callable[[Message], Any], key: str) -> Callable[[Message], Any]:
    """``inner.key``: a member of an object; Undefined for a missing key or a value that is not an object."""
    def member(m: Message) -> Any:
        value = inner(m)
        return value.get(key, UNDEFINED) if isinstance(value, Mapping) else UNDEFINED

    return member


# ---------------------------------------------------------------------------------------------- expressions

Fn = Callable[[Message], Any]


@dataclass(frozen=True)
class Expr:
    """A compiled expression: its closure, its source text, its constant value if it has one, its default name."""

    fn: Fn = field(repr=False, compare=False)
    text: str
    constant: Any = field(default=_NO_CONSTANT, repr=False, compare=False)
    default_name: str | None = None
