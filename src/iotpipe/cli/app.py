"""The ``iotpipe`` click group: global options and error-to-exit-code mapping."""

from __future__ import annotations

import sys
from typing import Any

import click

from iotpipe.aws import explain_aws_failure
from iotpipe.cli.common import CliContext
from iotpipe.errors import IotpipeError


class IotpipeGroup(click.Group):
    """Maps :class:`IotpipeError` and AWS client errors to a one-line message and an exit code.

    ``--debug`` shows the traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message, code = _explain(exc)
            obj = ctx.find_object(CliContext)
            if message is None or (obj is not None and obj.debug):
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(code)


def _explain(exc: Exception) -> tuple[str | None, int]:
    if isinstance(exc, IotpipeError):
        return str(exc), exc.exit_code
    return explain_aws_failure(exc), 1


@click.group(cls=IotpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="iotpipe")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Compose, lint, deploy and operate the manufacturing IoT telemetry pipeline.

    \b
    Examples:
      iotpipe render --env dev -o templates/TapStack.yml
      iotpipe lint
      iotpipe deploy --env dev --yes
    """
    obj = ctx.ensure_object(CliContext)
    obj.debug = debug
