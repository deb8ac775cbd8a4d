"""The ``iotpipe`` click group: global options, error-to-exit-code mapping, and the list of its commands."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from iotpipe.aws import clean_message, explain_aws_failure, looks_like_html
from iotpipe.cli import (
    build,
    cost,
    deploy,
    detect,
    devices,
    doctor,
    failures,
    fleet,
    local,
    observe,
    readings,
    sql,
    telemetry,
)
from iotpipe.cli import console as console_command
from iotpipe.cli.common import CliContext
from iotpipe.errors import ConfigError, IotpipeError, ParameterError


class IotpipeGroup(click.Group):
    """Maps :class:`IotpipeError` and AWS client errors to a one-line message and an exit code.

    ``--debug`` (before the command, or after it like any per-command option) prints the traceback too, and
    the exit code stays the error's own (2 for usage and config errors).
    """

    def invoke(self, ctx: click.Context) -> Any:
        for command in _commands(self):
            _equip(command)
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message, code = _explain(exc)
            obj = ctx.find_object(CliContext)
            debug = obj is not None and obj.debug
            if message is None:
                raise
            if debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {message}", err=True)
            sys.exit(code)


def _explain(exc: Exception) -> tuple[str | None, int]:
    if isinstance(exc, IotpipeError):
        text = str(exc)
        # A message that carries an HTML page (an endpoint that is not AWS) becomes one line; others keep theirs.
        return (clean_message(text) if looks_like_html(text) else text), exc.exit_code
    if isinstance(exc, click.exceptions.ClickException):
        return None, exc.exit_code
    return explain_aws_failure(exc), 1


def _commands(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from _commands(command)


def _set_debug(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliContext).debug = True


def _set_new_env(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliContext).new_env = True


def _equip(command: click.Command) -> None:
    """Give a command ``--debug`` and the config-source line on stderr, once."""
    if getattr(command, "_iotpipe_equipped", False):
        return
    command._iotpipe_equipped = True  # type: ignore[attr-defined]
    if not isinstance(command, click.Group) and not any(p.name == "debug" for p in command.params):
        command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                                           callback=_set_debug, help="Show tracebacks with errors."))
    if command.callback is not None and any(p.name == "config_path" for p in command.params):
        command.params.append(click.Option(
            ["--new-env"], is_flag=True, expose_value=False, is_eager=True, callback=_set_new_env,
            help="Allow an --env the config file has no [env.<name>] section for ([defaults] apply)."))
        command.callback = _announcing_config(command.callback)
    if command.callback is not None:
        command.callback = _naming_flags(command.callback)


# A library parameter may carry its unit where the flag does not: period_s is --period, rate_hz is --rate.
_UNIT_SUFFIXES = ("_s", "_ms", "_hz", "_minutes")


def option_for(command: click.Command, parameter: str) -> str | None:
    """The flag of ``command`` that sets the library's ``parameter`` (``limit`` -> ``--limit``); None if none does.

    The one mapping from library parameters to flags: click knows each option's parameter name and its flags.
    """
    names = [parameter] + [parameter.removesuffix(suffix) for suffix in _UNIT_SUFFIXES if parameter.endswith(suffix)]
    for name in names:
        for param in command.params:
            if isinstance(param, click.Option) and param.name == name:
                long = [opt for opt in param.opts if opt.startswith("--")]
                return (long or param.opts)[0]
    return None


def _naming_flags(callback: Callable[..., Any]) -> Callable[..., Any]:
    """A :class:`ParameterError` from the library names the flag the user typed, not the Python parameter."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except ParameterError as exc:
            flag = option_for(click.get_current_context().command, exc.parameter)
            if flag is None:
                raise
            raise exc.for_option(flag) from None

    return wrapper


def _announcing_config(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Say on stderr which config file was read (or that none was) before the command runs; an env the file has
    no section for is a ConfigError (a typo like ``--env prdo`` would render, or deploy a new stack) unless
    ``--new-env`` asks for it."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from iotpipe.config import config_source, read_config_file, unknown_env_warning

        env, path = kwargs.get("env"), kwargs.get("config_path")
        if isinstance(env, str):
            document = read_config_file(path)
            click.echo(config_source(path, document, env), err=True)
            unknown = unknown_env_warning(document, env)
            obj = click.get_current_context().find_object(CliContext)
            if unknown and not (obj is not None and obj.new_env):
                raise ConfigError(f"{unknown}; or pass --new-env to use it with [defaults]")
        return callback(*args, **kwargs)

    return wrapper


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from iotpipe.version import version_info

        click.echo(version_info().describe())
        ctx.exit()


@click.group(cls=IotpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks with errors (also accepted after the command).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version (and, in a clone, the git commit) and exit.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Compose, lint, deploy and operate the manufacturing IoT telemetry pipeline.

    \b
    Examples:
      iotpipe render --env dev -o templates/TapStack.yml
      iotpipe lint
      iotpipe deploy --env dev --yes
      iotpipe doctor --env dev
    """
    obj = ctx.ensure_object(CliContext)
    obj.debug = obj.debug or debug


# Every command, registered here and only here: importing a command module registers nothing.
COMMANDS: tuple[click.Command, ...] = (
    build.render, build.lint, cost.cost,
    deploy.deploy, deploy.diff, deploy.outputs, deploy.status, deploy.destroy, doctor.doctor,
    devices.device, telemetry.simulate, readings.readings, readings.anomalies, observe.logs, observe.metrics,
    local.local, sql.sql, detect.detect, failures.failures, failures.replay, fleet.fleet_group,
    console_command.console,
)
for _command in COMMANDS:
    main.add_command(_command)
