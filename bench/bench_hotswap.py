"""``make bench-hotswap``: seconds from saving the processor's source to the new code being in place, three ways.

- ``local``: what ``iotpipe local`` does between a save and the next record: its watcher polls the source every
  ``WATCH_INTERVAL_S`` (:class:`iotpipe.local.functions.follower.HandlerFollower`), the function runner retires its warm
  worker, and the next Kinesis batch cold-starts the new code. Measured on the real processor (a copy of
  ``handler/python/index.py``) in a real worker process, fed a one-record batch every 0.1 s as the mapping runner
  would, until a record is answered by the new code. (The broker, rule engine and emulator around it do not
  change on a save, so they are left out.)
- ``hotswap``: ``iotpipe deploy --watch`` against a moto server: the watcher sees the save, renders the template,
  compares it with the deployed one, uploads the zip, UpdateFunctionCode, waits (``function_updated_v2``). moto
  stores the code but cannot run it without Docker, so the end point is the function holding the new code.
- ``full``: ``iotpipe deploy --yes`` after the save: render, lint gate, change set, execute, wait.

The save is simulated by rewriting a copy of the handler, which ``iotpipe.package.handler_source`` is pointed at
for the run (the checkout's file is left alone). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "handler" / "python" / "index.py"
REGION = "us-east-1"


def _edit(path: Path, n: int) -> None:
    """A save that changes what the handler answers: the batch result carries the edit number."""
    path.write_text(HANDLER.read_text(encoding="utf-8") + (
        f"\n\n_ORIGINAL_{n} = handler\n\ndef handler(event, context):\n"
        f"    return {{**_ORIGINAL_{n}(event, context), 'edit': {n}}}\n"), encoding="utf-8")


def bench_local(runs: int, workdir: Path, timeout_s: float = 30.0) -> list[float]:
    """Save -> the next one-record batch answered by the new code, with local's watcher and function runner."""
    from iotpipe.local.functions.follower import HandlerFollower
    from iotpipe.local.functions.runner import FunctionRunner
    from iotpipe.local.functions.spec import FunctionSpec
    from iotpipe.local.supervisor import WATCH_INTERVAL_S

    source = workdir / "local" / "index.py"
    source.parent.mkdir(parents=True)
    source.write_text(HANDLER.read_text(encoding="utf-8"), encoding="utf-8")
    follower = HandlerFollower({"python": source})
    runner = FunctionRunner(
        FunctionSpec(name="processor", arn=f"arn:aws:lambda:{REGION}:123456789012:function:processor",
                     runtime="python3.13", handler="index.handler", code=source.read_text(encoding="utf-8"),
                     environment={"DYNAMODB_TABLE": "t", "S3_BUCKET": "b"}, timeout_s=10, memory_mb=128,
                     log_group="/aws/lambda/processor"),
        aws_endpoint="http://127.0.0.1:9", region=REGION, workdir=workdir / "local-run", on_output=lambda _: None)
    stop = threading.Event()
    watcher = threading.Thread(target=_poll_until, args=(stop, WATCH_INTERVAL_S, lambda: follower.poll([runner])),
                               daemon=True)
    watcher.start()
    results = []
    try:
        runner({"Records": []})  # warm, as a running pipeline is
        for n in range(1, runs + 1):
            time.sleep(WATCH_INTERVAL_S * 1.37)  # saves land anywhere in the watcher's period
            _edit(source, n)
            saved = time.monotonic()
            while time.monotonic() - saved < timeout_s:
                if (runner({"Records": []}).payload or {}).get("edit") == n:
                    results.append(time.monotonic() - saved)
                    break
                time.sleep(0.1)
    finally:
        stop.set()
        watcher.join(timeout=5)
        runner.close()
    return results


def _poll_until(stop: threading.Event, interval_s: float, poll: Callable[[], Any]) -> None:
    while not stop.wait(interval_s):
        poll()


def _moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    from iotpipe.local.emulator import moto_compat

    moto_compat.apply(moto_compat.ALL_KINDS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _cli(endpoint: str, config: Path, *args: str) -> Any:
    from iotpipe.cli import main

    argv = [*args, "--env", "dev", "--config", str(config), "--endpoint-url", endpoint, "--region", REGION]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"iotpipe {' '.join(args)} failed: {result.stderr}")
    return result


def bench_moto(runs: int, workdir: Path) -> tuple[list[float], list[float]]:
    """(hotswap seconds, full deploy seconds) from a save, against a moto server."""
    import iotpipe.package as package
    from iotpipe.aws import ClientFactory
    from iotpipe.cli.common import CLI_TIMEOUTS
    from iotpipe.cli.hotswap import WATCH_INTERVAL_S
    from iotpipe.config import load_config
    from iotpipe.deploy.client import DeployClient
    from iotpipe.deploy.hotswap import hotswap, watch_files
    from iotpipe.deploy.plan import DeployRequest
    from iotpipe.render import render_template

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "testing"
    os.environ.pop("AWS_PROFILE", None)
    source = workdir / "moto" / "index.py"
    source.parent.mkdir(parents=True)
    source.write_text(HANDLER.read_text(encoding="utf-8"), encoding="utf-8")
    package.handler_source = lambda _runtime: source.read_text(encoding="utf-8")
    config = workdir / "iotpipe.toml"
    config.write_text("[env.dev]\n")
    server, endpoint = _moto()
    hot, full = [], []
    try:
        _cli(endpoint, config, "deploy", "--yes")
        cfg = load_config(config, "dev")
        client = DeployClient.from_factory(ClientFactory(region=REGION, endpoint_url=endpoint,
                                                         timeouts=CLI_TIMEOUTS))

        def request() -> DeployRequest:
            return DeployRequest(stack_name=cfg.resolved_stack_name, template_body=render_template(cfg),
                                 env=cfg.env, artefacts=package.artefacts(cfg.processor))

        done: list[float] = []

        def swap() -> None:
            hotswap(client, request())
            done.append(time.monotonic())

        for n in range(1, runs + 1):
            done.clear()
            watcher = threading.Thread(target=watch_files, args=([source], swap), daemon=True,
                                       kwargs={"interval_s": WATCH_INTERVAL_S, "max_changes": 1, "max_polls": 200})
            watcher.start()
            time.sleep(WATCH_INTERVAL_S * 1.37)
            _edit(source, n)
            saved = time.monotonic()
            watcher.join(timeout=120)
            if done:
                hot.append(done[0] - saved)
        for n in range(runs + 1, 2 * runs + 1):
            _edit(source, n)
            saved = time.monotonic()
            _cli(endpoint, config, "deploy", "--yes")
            full.append(time.monotonic() - saved)
    finally:
        server.stop()
    return hot, full


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<10} no result"
    return (f"{name:<10} runs {len(values):>2}  median {statistics.median(values):6.2f} s  "
            f"min {min(values):6.2f} s  max {max(values):6.2f} s")


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="Saves measured per way (default 3).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hotswap-") as directory:
        workdir = Path(directory)
        local = bench_local(args.runs, workdir)
        hot, full = bench_moto(args.runs, workdir)
    print(f"save -> new code in place, {args.runs} save(s) each (cpu count {os.cpu_count()}):")
    print(_row("local", local))
    print(_row("hotswap", hot))
    print(_row("full", full))
    return 0


if __name__ == "__main__":
    sys.exit(main())
