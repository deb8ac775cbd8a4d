"""Substitution templates: ``${expression}`` inside an action's parameters, evaluated against the message."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iotpipe.local.rules.iotsql.errors import RuleError
from iotpipe.local.rules.iotsql.parser import _Parser
from iotpipe.local.rules.iotsql.values import SQL_2016, UNDEFINED, Expr, Message, _to_str


@dataclass(frozen=True)
class Template:
    """A compiled substitution template: literal text and ``${expression}`` parts."""

    source: str
    parts: tuple[str | Expr, ...] = field(compare=False)

    def render(self, message: Message) -> str:
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
    return compiled.render(Message(message, True, b"", topic, client_id, now_ms))
