"""``iotpipe local up|status|down``: the whole pipeline on this machine, without an AWS account."""

from __future__ import annotations

import os
import sys

import click

from iotpipe.cli.common import progress
from iotpipe.cli.output import echo_json, output_option, write_table
from iotpipe.console.serve import DEFAULT_PORT as CONSOLE_PORT
from iotpipe.local import control
from iotpipe.local import state as local_state
from iotpipe.local.supervisor import LocalOptions


@click.group()
def local() -> None:
    """Run the whole pipeline on this machine: AWS emulator, MQTT broker, topic rule, mapping, function.

    \b
    Examples:
      iotpipe local up --detach
      iotpipe simulate --env local --count 100
      iotpipe readings sim-001 --env local
      iotpipe local down
    """


def _show_state(state: local_state.LocalState, output: str) -> None:
    if output == "json":
        echo_json(state.as_dict())
        return
    rows = [("env", state.env), ("stack", state.stack_name), ("AWS endpoint", state.aws_endpoint),
            ("MQTT", f"{state.mqtt} ({state.broker})"), ("pid", str(state.pid)), ("since", state.started_at),
            ("logs", state.log_file)]
    if state.console_url:
        rows.append(("console", state.console_url))
    write_table(None, rows)


@local.command("up")
@click.option("--env", default="local", show_default=True, help="Environment whose stack is deployed locally.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: ./iotpipe.toml when present).")
@click.option("--aws-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the AWS emulator on 127.0.0.1 (0: a free port).")
@click.option("--mqtt-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the MQTT broker on 127.0.0.1 (0: a free port).")
@click.option("--broker", type=click.Choice(["auto", "mosquitto", "amqtt"]), default="auto", show_default=True,
              help="MQTT broker: mosquitto (when on PATH) or the embedded amqtt.")
@click.option("--console-port", type=click.IntRange(0, 65535), default=CONSOLE_PORT, show_default=True,
              help="Port of the console (iotpipe console) served beside the pipeline on 127.0.0.1; taken or 0: a "
                   "free port.")
@click.option("--no-console", is_flag=True, help="Do not serve the console.")
@click.option("--detach", is_flag=True, help="Return once everything is ready and keep running in the background.")
@output_option
def up(env: str, config_path: str | None, aws_port: int, mqtt_port: int, broker: str, console_port: int,
       no_console: bool, detach: bool, output: str) -> None:
    """Start the emulator and the broker, deploy the env's stack into it, and run the pipeline.

    Without --detach it runs in the foreground until Ctrl-C. Other commands given the same --env then
    use it without extra flags, from this folder or below it (they read .iotpipe/local/state.json, which
    holds this run's random AWS and MQTT credentials, readable by you alone). One folder runs one instance.
    """
    os.umask(0o077)  # every file of the run (state, logs, broker files, function code) is the user's alone
    inherited = os.environ.pop(local_state.LOCK_FD_VARIABLE, "")
    options = LocalOptions(env=env, config_path=config_path, aws_port=aws_port, mqtt_port=mqtt_port, broker=broker,
                           lock_fd=int(inherited) if inherited.isdigit() else None,
                           console_port=None if no_console else console_port)
    if detach:
        _show_state(control.start_detached(options), output)
        return
    _run_foreground(options, output)


def _run_foreground(options: LocalOptions, output: str) -> None:
    def on_ready(state: local_state.LocalState) -> None:
        _show_state(state, output)
        sys.stdout.flush()

    control.run_foreground(options, progress, on_ready)


@local.command("status")
@output_option
def status(output: str) -> None:
    """Show whether iotpipe local runs, where, and whether every part works.

    \b
    Exit 0 when it runs and every part works, or when nothing runs; exit 1 naming the part when one failed
    (died, stopped, or stopped answering): the emulator, the broker, the rule engine, a mapping, a worker or
    the supervisor itself. A failure stays reported until `iotpipe local down` or the next `local up`.
    """
    found = control.status(progress)
    if output == "json":
        echo_json(found.as_dict())
    elif found.failed:
        click.echo("iotpipe local is failing:" if found.running else "iotpipe local failed:")
        for part in found.failed:
            click.echo(f"  {part.describe()}")
        if found.failure:
            click.echo(f"the supervisor gave up: {found.failure}")
        if found.running and found.state is not None:
            _show_state(found.state, output)
    elif found.state is None:
        click.echo("iotpipe local is not running (start it with `iotpipe local up --detach`)")
    else:
        click.echo("iotpipe local is running")
        _show_state(found.state, output)
    if found.failed:
        sys.exit(1)


@local.command("down")
def down() -> None:
    """Stop iotpipe local and everything it started (exit 0 when nothing runs)."""
    stopped = control.stop(progress)
    if stopped is None:
        click.echo("iotpipe local is not running; nothing to stop")
        return
    click.echo(f"iotpipe local (pid {stopped.pid}, env {stopped.env}) stopped")
