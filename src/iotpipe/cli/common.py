"""Options shared by iotpipe commands, and the context object the commands read them from."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import click

from iotpipe.aws import CLI_TIMEOUTS, ClientFactory, Timeouts
from iotpipe.config import PipelineConfig, load_config
from iotpipe.local.state import LocalState, local_factory, running_state

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """What the group callback knows: debug flag and how to build boto3 clients (tests replace the factory)."""

    debug: bool = False
    new_env: bool = False  # --new-env: an env with no section in the config file is wanted
    factory_class: type[ClientFactory] = ClientFactory
    overrides: dict[str, Any] = field(default_factory=dict)
    timeouts: Timeouts = CLI_TIMEOUTS


def config_options(func: F) -> F:
    """Add ``--env`` and ``--config``."""
    func = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="Config file (default: ./iotpipe.toml when present).")(func)
    func = click.option("--env", "env", default="dev", show_default=True,
                        help="Environment section of the config file ([env.<name>]).")(func)
    return func


def _set_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:
        obj = ctx.ensure_object(CliContext)
        bound: dict[str, Any] = {str(param.name): value}
        obj.timeouts = replace(obj.timeouts, **bound)


def aws_options(func: F | None = None, *, timeouts: Timeouts = CLI_TIMEOUTS) -> Any:
    """Add ``--region``, ``--profile``, ``--endpoint-url`` and the AWS calls' bounds (``--connect-timeout``,
    ``--read-timeout``, ``--max-attempts``: kept in the context, read by :func:`client_factory`), with this
    command's ``timeouts`` as their defaults (``@aws_options`` or ``@aws_options(timeouts=...)``)."""
    if func is None:
        return functools.partial(aws_options, timeouts=timeouts)
    bounds = (
        ("--max-attempts", "attempts", click.IntRange(1, 10), timeouts.attempts,
         "AWS calls: tries per call, the first included."),
        ("--read-timeout", "read_s", click.FloatRange(0.1, 600), timeouts.read_s,
         "AWS calls: seconds to wait for an answer, per try."),
        ("--connect-timeout", "connect_s", click.FloatRange(0.1, 600), timeouts.connect_s,
         "AWS calls: seconds to wait for a connection, per try (an endpoint that never answers fails the command "
         "after about tries x (connect + read) seconds)."),
    )
    for flag, name, kind, default, text in bounds:
        func = click.option(flag, name, type=kind, default=default, show_default=True, expose_value=False,
                            metavar="N" if name == "attempts" else "SECONDS",
                            envvar=f"IOTPIPE_{flag[2:].upper().replace('-', '_')}", show_envvar=True,
                            callback=_set_timeout, help=text)(func)
    func = click.option("--endpoint-url", help="Send AWS calls to this URL (moto, LocalStack).")(func)
    func = click.option("--profile", help="AWS named profile.")(func)
    func = click.option("--region", help="AWS region (default: config, then the profile's).")(func)
    return func


def blueprint_option(func: F) -> F:
    """Add ``--blueprint MODULE:CALLABLE``: loaded (imported) when the command starts, before anything is written."""
    return click.option(
        "--blueprint", "blueprint", metavar="MODULE:CALLABLE", callback=_load_blueprint,
        help="Customise the template: a callable (module:callable or path/to/file.py:callable) that takes the "
             "default Composition and returns one.")(func)


def _load_blueprint(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from iotpipe.blueprint import load_blueprint

    return load_blueprint(value)


def load_pipeline_config(config_path: str | None, env: str, **overrides: Any) -> PipelineConfig:
    """Load the config for ``env`` with CLI overrides given as dotted keys; ``None`` values are ignored."""
    ctx = click.get_current_context().find_object(CliContext)
    given = {key: value for key, value in overrides.items() if value is not None}
    if ctx is not None:
        given = {**ctx.overrides, **given}
    return load_config(config_path, env, given)


def client_factory(config: PipelineConfig, region: str | None, profile: str | None,
                   endpoint_url: str | None) -> ClientFactory:
    """The client factory for these options; the region falls back to the config's.

    Without ``--endpoint-url``, a running ``iotpipe local`` that serves this env takes the calls.
    """
    ctx = click.get_current_context().find_object(CliContext)
    factory_class = ctx.factory_class if ctx is not None else ClientFactory
    timeouts = ctx.timeouts if ctx is not None else CLI_TIMEOUTS
    local = running_local(config.env) if endpoint_url is None else None
    if local is not None:
        return replace(local_factory(local), timeouts=timeouts)
    return factory_class(region=region or config.region or None, profile=profile, endpoint_url=endpoint_url,
                         timeouts=timeouts)


def running_local(env: str) -> LocalState | None:
    """The running ``iotpipe local`` when it serves ``env`` (said once on stderr), else None."""
    state = running_state()
    if state is None or state.env != env:
        return None
    progress(f"using iotpipe local ({state.aws_endpoint}, MQTT {state.mqtt}) for env {env}")
    return state


def progress(message: str) -> None:
    """Print a progress line on stderr (stdout carries results only)."""
    click.echo(message, err=True)


@dataclass(frozen=True)
class Target:
    """The environment a command works on: its validated config and how to reach its AWS account."""

    config: PipelineConfig
    factory: ClientFactory


def pipeline_target(func: F | None = None, *, timeouts: Timeouts = CLI_TIMEOUTS) -> Any:
    """Add ``--env``, ``--config``, ``--region``, ``--profile``, ``--endpoint-url`` and the AWS calls' bounds
    (defaults ``timeouts``); pass ``target: Target``."""
    if func is None:
        return functools.partial(pipeline_target, timeouts=timeouts)

    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, env: str, region: str | None, profile: str | None,
                endpoint_url: str | None, **kwargs: Any) -> Any:
        config = load_pipeline_config(config_path, env)
        target = Target(config, client_factory(config, region, profile, endpoint_url))
        return func(*args, target=target, **kwargs)

    return config_options(aws_options(wrapper, timeouts=timeouts))
