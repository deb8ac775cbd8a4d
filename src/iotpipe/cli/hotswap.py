"""``iotpipe deploy --hotswap`` / ``--watch``: the fast inner loop on a development env."""

from __future__ import annotations

import time
from typing import Any

import click

from iotpipe.cli.common import progress
from iotpipe.cli.output import echo_json
from iotpipe.deploy.client import DeployClient
from iotpipe.deploy.hotswap import HotswapResult, hotswap, watch_files
from iotpipe.deploy.plan import DeployRequest
from iotpipe.errors import IotpipeError
from iotpipe.package import handler_path

# None: --watch runs until Ctrl-C. Tests bound it.
WATCH_MAX_CHANGES: int | None = None
WATCH_MAX_POLLS: int | None = None
WATCH_INTERVAL_S = 0.5
WATCH_SLEEP = time.sleep


def show_hotswap(result: HotswapResult, output: str) -> None:
    """The functions updated and the seconds it took (or that nothing changed)."""
    if output == "json":
        echo_json(result.as_dict())
        return
    if not result.updated:
        click.echo(f"No code changes: the functions of stack {result.stack_name} already run this code.")
        return
    for name, sha in result.updated:
        click.echo(f"Hotswapped {name} (CodeSha256 {sha}) in {result.seconds:.1f} s")


def run_hotswap(factory: Any, make_request: Any, runtime: str, output: str, watch: bool) -> None:
    """One hotswap; with ``watch``, one more after each save of the processor's source (errors reported, not
    fatal, so that the next save can fix them). ``make_request()`` renders the template anew each time."""
    client = DeployClient.from_factory(factory)

    def once() -> None:
        request: DeployRequest = make_request()
        show_hotswap(hotswap(client, request, progress), output)

    once()
    if not watch:
        return
    source = handler_path(runtime)
    progress(f"watching {source}: each save is hotswapped (Ctrl-C stops)")

    def on_change() -> None:
        try:
            once()
        except IotpipeError as exc:
            progress(f"error: {exc}")

    watch_files([source], on_change, interval_s=WATCH_INTERVAL_S, max_changes=WATCH_MAX_CHANGES,
                max_polls=WATCH_MAX_POLLS, sleep=WATCH_SLEEP)
