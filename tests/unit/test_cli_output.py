"""The CLI's shared presentation: one table writer, one --output option, one confirmation, one command list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import iotpipe.cli.output as cli_output
from iotpipe.cli import main
from iotpipe.cli.app import COMMANDS
from iotpipe.cli.output import (
    CSV_FORMATS,
    LINE_FORMATS,
    STREAM_FORMATS,
    TABLE_FORMATS,
    OutputOption,
    format_csv,
    format_table,
)

CLI_DIR = Path(cli_output.__file__).parent
# Commands that already offered CSV keep it; `logs` prints a stream of lines, not a table.
WITH_CSV = {"readings", "anomalies", "sql"}
LINE_STREAMS = {"logs"}
# `simulate` prints a summary, or with --dry-run a stream of messages: it offers jsonl too.
STREAMS = {"simulate"}


def _walk(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from _walk(command, f"{prefix}{name} ")


def _output_option(command: click.Command) -> click.Parameter | None:
    return next((p for p in command.params if "--output" in getattr(p, "opts", ())), None)


def test_every_output_option_is_the_shared_one_with_the_same_choices() -> None:
    with_output = {}
    for path, command in _walk(main):
        option = _output_option(command)
        if option is None:
            continue
        assert isinstance(option, OutputOption), f"{path} defines --output by hand"
        assert isinstance(option.type, click.Choice)
        with_output[path] = tuple(option.type.choices)
    expected = {path: (CSV_FORMATS if path in WITH_CSV else LINE_FORMATS if path in LINE_STREAMS
                       else STREAM_FORMATS if path in STREAMS else TABLE_FORMATS) for path in with_output}
    assert with_output == expected
    # every command that shows results as a table or a listing offers --output
    assert {"readings", "anomalies", "metrics", "device list", "device register", "device revoke", "outputs",
            "status", "diff", "deploy", "destroy", "doctor", "lint", "cost", "sql", "local status",
            "local up"} <= set(with_output)


@pytest.mark.parametrize("path", sorted(p.name for p in CLI_DIR.glob("*.py") if p.name != "output.py"))
def test_only_the_writer_formats_tables_csv_and_prompts(path: str) -> None:
    source = (CLI_DIR / path).read_text(encoding="utf-8")
    # column widths computed from the content, CSV, prompts and hand-made --output options live in output.py only
    for marker in ("max(len(", "import csv", "csv.", "click.confirm", "isatty", '"--output"'):
        assert marker not in source, f"cli/{path} uses {marker}; use iotpipe.cli.output instead"


def test_commands_are_registered_in_one_list_and_importing_a_module_registers_nothing() -> None:
    assert sorted(main.commands) == sorted(command.name for command in COMMANDS if command.name)
    assert len(main.commands) == len(COMMANDS)
    for path in sorted(CLI_DIR.glob("*.py")):
        if path.name in ("app.py", "__init__.py"):
            continue
        source = path.read_text(encoding="utf-8")
        assert "iotpipe.cli.app" not in source and "add_command" not in source and "@main." not in source, \
            f"cli/{path.name} registers commands itself; list them in COMMANDS of cli/app.py"


def test_format_table_aligns_columns_and_drops_trailing_spaces() -> None:
    table = format_table(("NAME", "N", "NOTE"), [("a", 1, ""), ("long-name", 12345, "x")], align=("<", ">"))
    assert table.splitlines() == ["NAME           N  NOTE",
                                  "a              1",
                                  "long-name  12345  x"]
    assert format_table(None, [("key", "v"), ("k", "value")]) == "key  v\nk    value"
    assert format_table(("A", "B"), []) == "A  B"


def test_format_csv_writes_booleans_as_json_does_and_none_empty() -> None:
    assert format_csv(("a", "b", "c"), [(True, None, 1.5), (False, "x,y", 0)]) == 'a,b,c\ntrue,,1.5\nfalse,"x,y",0'


@click.command()
@click.option("--yes", is_flag=True)
def _guarded(yes: bool) -> None:
    if not cli_output.confirm("Do it?", yes=yes, what="doing it"):
        click.echo("nothing done")
        return
    click.echo("done")


def test_confirm_with_yes_does_not_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_output, "is_interactive", lambda: False)
    result = CliRunner().invoke(_guarded, ["--yes"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "done\n", "")


def test_confirm_without_a_terminal_is_a_usage_error_naming_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_output, "is_interactive", lambda: False)
    result = CliRunner().invoke(_guarded, [])
    assert result.exit_code == 2
    assert "doing it needs confirmation and stdin is not a terminal; pass --yes" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("answer", "printed"), [("n\n", "nothing done\n"), ("\n", "nothing done\n"),
                                                  ("y\n", "done\n")])
def test_confirm_asks_on_a_terminal_and_defaults_to_no(monkeypatch: pytest.MonkeyPatch, answer: str,
                                                       printed: str) -> None:
    monkeypatch.setattr(cli_output, "is_interactive", lambda: True)
    result = CliRunner().invoke(_guarded, [], input=answer)
    assert result.exit_code == 0
    assert result.stdout == printed and "Do it? [y/N]" in result.stderr
