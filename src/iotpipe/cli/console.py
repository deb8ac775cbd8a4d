"""``iotpipe console``: the plant at a glance in a browser, for ``iotpipe local`` and a deployed stack."""

from __future__ import annotations

import html
import os
import tempfile
import threading
import webbrowser
from pathlib import Path
from typing import Any

import click

from iotpipe.cli.common import Target, pipeline_target, progress
from iotpipe.console.serve import DEFAULT_PORT, bind, bind_preferred, console_url, uvicorn_server
from iotpipe.local.state import LocalClientFactory


def redirect_file(url: str) -> Path:
    """A page only the user can read that sends the browser on to ``url``. The browser is started with this file's
    address rather than the URL: a command line shows in every local user's ``ps``, and the token with it (a browser
    started by ``webbrowser`` keeps its first address in its command line for as long as it runs)."""
    descriptor, name = tempfile.mkstemp(prefix="iotpipe-console-", suffix=".html")  # mode 0600
    shown = html.escape(url, quote=True)
    with os.fdopen(descriptor, "w", encoding="utf-8") as page:
        page.write(f'<!doctype html>\n<meta charset="utf-8">\n<meta http-equiv="refresh" content="0;url={shown}">\n'
                   f'<title>iotpipe console</title>\n<p><a href="{shown}">Open the iotpipe console</a></p>\n')
    return Path(name)


@click.command("console")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port on --host (default {DEFAULT_PORT}, or a free port when that one is taken; 0: a free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets other machines reach the console (the token "
                   "still guards it): it warns.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; the URL is the first line on stdout.")
@pipeline_target
def console(port: int | None, host: str, no_browser: bool, target: Target) -> None:
    """Open the console: fleet, devices' charts, anomalies, pipeline health and SQL, live, in a browser.

    Reads ENV through iotpipe's own library with your credentials (or the running iotpipe local's), which never
    reach the page. Read-only. The URL carries a random token (as Jupyter's does): without it the page answers 401.
    Runs until Ctrl-C.

    \b
    Examples:
      iotpipe console --env local
      iotpipe console --env prod --no-browser --port 0
    """
    from iotpipe.console.app import Settings, create_app, is_loopback, new_token
    from iotpipe.console.data import ConsoleData

    if not is_loopback(host):
        progress(f"warning: --host {host} is not a loopback address: other machines can reach the console; the "
                 "token in its URL is all that guards it (send it only over a channel you trust, and mind that "
                 "the page is plain HTTP)")
    # on iotpipe local (or another emulator): SQL on DuckDB, and devices found in the table as well as the things
    local = isinstance(target.factory, LocalClientFactory) or target.config.env == "local" \
        or target.factory.endpoint_url is not None
    data = ConsoleData(target.config, target.factory, local=local)
    token = new_token()
    sock = bind_preferred(host) if port is None else bind(host, port)  # a port named is that port
    actual = sock.getsockname()[1]
    settings = Settings(token=token, bind_host=host, port=actual)
    url = console_url(host, actual, token)
    click.echo(url)
    import sys

    sys.stdout.flush()
    # the fleet is read once before the first page asks for it: its first render is then the page's own time
    threading.Thread(target=_warm, args=(data,), daemon=True).start()
    opener = None if no_browser else redirect_file(url)
    if opener is not None:
        webbrowser.open(opener.as_uri())
    progress(f"iotpipe console for env {target.config.env} at {url.split('?')[0]} (Ctrl-C stops it)")
    server = uvicorn_server(create_app(data, settings))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops gracefully, then raises Ctrl-C again
        pass
    finally:
        sock.close()
        if opener is not None:
            opener.unlink(missing_ok=True)
    progress("iotpipe console stopped")


def _warm(data: Any) -> None:
    try:
        data.fleet()
    except Exception as exc:  # the page shows the same problem when it asks
        progress(f"note: the fleet could not be read yet: {exc}")
