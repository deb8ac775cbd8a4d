"""How commands present results: the one table writer, the one ``--output`` option, the one confirmation.

Every command that prints a table, CSV or JSON does it through this module, so all of them align, quote and
choose formats the same way (a test walks the click app and checks it).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

TABLE_FORMATS = ("table", "json")
CSV_FORMATS = (*TABLE_FORMATS, "csv")
# `json` is always one JSON document on stdout; a command that streams records also offers `jsonl` (JSON lines:
# one object per record, printed as it comes).
# `iotpipe logs` prints a stream of lines (one per event), not a table.
LINE_FORMATS = ("text", "json", "jsonl")
# `iotpipe simulate` prints a summary (a table), or with --dry-run the messages it would send.
STREAM_FORMATS = (*TABLE_FORMATS, "jsonl")

Align = Literal["<", ">"]


class OutputOption(click.Option):
    """The ``--output`` option; its own class so a test can tell it from a hand-made one."""


def output_choices(formats: Sequence[str] = TABLE_FORMATS,
                   help_text: str = "Result format on stdout.") -> Callable[[F], F]:
    """A ``--output`` option offering ``formats`` (the first is the default)."""
    return click.option("--output", "output", cls=OutputOption, type=click.Choice(list(formats)), default=formats[0],
                        show_default=True, help=help_text)


def output_option(func: F) -> F:
    """Add ``--output table|json``."""
    return output_choices()(func)


def format_table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]],
                 align: Sequence[Align] = ()) -> str:
    """Rows as a plain text table: columns two spaces apart, left-aligned unless ``align`` says ``>``.

    ``headers`` None prints the rows only (a key/value listing). Trailing spaces are dropped from every line.
    """
    cells = [[str(cell) for cell in row] for row in rows]
    head = [list(headers)] if headers is not None else []
    columns = max((len(row) for row in [*head, *cells]), default=0)
    widths = [max(len(row[i]) for row in [*head, *cells] if i < len(row)) for i in range(columns)]
    sides = list(align) + ["<"] * (columns - len(align))

    def line(row: Sequence[str]) -> str:
        return "  ".join(value.rjust(width) if side == ">" else value.ljust(width)
                         for value, width, side in zip(row, widths, sides, strict=False)).rstrip()

    return "\n".join(line(row) for row in [*head, *cells])


def write_table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], align: Sequence[Align] = ()) -> None:
    """Print :func:`format_table` on stdout."""
    click.echo(format_table(headers, rows, align))


def csv_cell(value: Any) -> Any:
    """A CSV cell: booleans as true/false (as JSON writes them), None as empty."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def format_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV with a header line, ``\\n`` line ends, no trailing newline."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue().rstrip("\n")


def format_json(data: Any, sort_keys: bool = True) -> str:
    """``data`` as indented JSON, keys sorted unless ``sort_keys`` is False (what JSON lacks, as its ``str``)."""
    return json.dumps(data, indent=2, sort_keys=sort_keys, default=str)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    click.echo(format_json(data))


def echo_json_line(data: Any) -> None:
    """Print ``data`` as one line of JSON on stdout (``--output jsonl``)."""
    click.echo(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str))


def write_records(records: Sequence[Mapping[str, Any]], fields: Sequence[str], output: str) -> None:
    """Records (``as_dict()`` results) on stdout as JSON (a list) or CSV with the columns ``fields``."""
    if output == "json":
        echo_json(list(records))
        return
    if output == "csv":
        click.echo(format_csv(fields, [[record.get(name) for name in fields] for record in records]))
        return
    raise ValueError(f"write_records writes json or csv, not {output!r}")


def is_interactive() -> bool:
    """True when stdin is a terminal, so the user can be asked to confirm."""
    return sys.stdin.isatty()


def require_consent(yes: bool, what: str) -> None:
    """Before any work: without ``--yes`` and without a terminal there is nobody to ask, so refuse (exit 2)."""
    if not yes and not is_interactive():
        raise click.UsageError(f"{what} needs confirmation and stdin is not a terminal; "
                               "pass --yes to confirm (e.g. in CI)")


def confirm(question: str, *, yes: bool, what: str) -> bool:
    """True when ``--yes`` was given or the user answers yes to ``question`` (on stderr, default no).

    Without ``--yes`` and without a terminal, a UsageError (exit 2) names ``what`` and ``--yes``; the caller
    does nothing when this returns False.
    """
    if yes:
        return True
    require_consent(yes, what)
    return click.confirm(question, default=False, err=True)
