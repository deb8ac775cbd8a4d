"""The functions of AWS IoT SQL the local rule engine runs, as builders of closures over a :class:`Message`."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from iotpipe.local.rules.iotsql.values import (
    _NO_CONSTANT,
    SQL_2015,
    SQL_2016,
    UNDEFINED,
    Expr,
    Fn,
    Message,
    _finite,
    _get,
    _to_number,
    _to_str,
    _whole,
)


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

        def level(m: Message) -> Any:
            # Out of range is Undefined: "Functions called with invalid arguments ... return Undefined".
            levels = m.topic.split("/")
            return levels[index - 1] if 1 <= index <= len(levels) else UNDEFINED

        return level
    arg_fn = arg.fn

    def dynamic_level(m: Message) -> Any:
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

        def call(m: Message) -> Any:
            texts = [_to_str(f(m)) for f in fns]
            return UNDEFINED if any(t is UNDEFINED for t in texts) else apply(*texts)

        return call

    return build


def _number_function(apply: Callable[[Any], Any]) -> Callable[[list[Expr], str], Fn]:
    def build(args: list[Expr], version: str) -> Fn:
        fn = args[0].fn

        def call(m: Message) -> Any:
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
