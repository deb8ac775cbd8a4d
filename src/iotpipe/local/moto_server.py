"""``python -m iotpipe.local.moto_server [moto_server's arguments]``: a moto server with iotpipe's fixes.

moto's own server runs on Werkzeug's development server, which closes the connection after every response and
starts a thread per request: about 2 ms of CPU per AWS call on the server and 1.7 ms on the client, most of it
connection set-up and two writes per response. When waitress is installed (the ``local`` and ``dev`` extras
install it) the same WSGI application is served by waitress instead: HTTP/1.1 keep-alive, a fixed pool of
threads, one buffered write per response (about 1.3 ms on each side, measured on the 2-core development
machine). ``--ssl``, ``--ssl-cert`` and ``--reload`` stay on Werkzeug, which implements them; so does
``IOTPIPE_MOTO_WERKZEUG=1``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

from iotpipe.local import moto_fixes

QUIET_VARIABLE = "IOTPIPE_MOTO_QUIET"
WERKZEUG_VARIABLE = "IOTPIPE_MOTO_WERKZEUG"
SERVER_THREADS = 8


def main(argv: list[str] | None = None) -> None:
    """Apply the fixes in this process, then run moto's own server entry point with ``argv``."""
    import moto.server as moto_server

    moto_fixes.apply()
    if os.environ.get(QUIET_VARIABLE):  # a line per request costs ~8% of the server's CPU under load
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if use_waitress():
        setattr(moto_server, "run_simple", serve_with_waitress)  # noqa: B010 (a module attribute moto reads)
    moto_server.main(sys.argv[1:] if argv is None else argv)


def use_waitress() -> bool:
    """True when waitress is installed and not turned off by ``IOTPIPE_MOTO_WERKZEUG``."""
    return not os.environ.get(WERKZEUG_VARIABLE) and importlib.util.find_spec("waitress") is not None


def serve_with_waitress(hostname: str, port: int, application: Any, *, ssl_context: Any = None,
                        use_reloader: bool = False, **options: Any) -> None:
    """Werkzeug's ``run_simple`` as moto's server calls it, served by waitress; TLS and the reloader go to
    Werkzeug, which implements them."""
    if ssl_context is not None or use_reloader:
        from werkzeug.serving import run_simple

        run_simple(hostname, port, application, ssl_context=ssl_context, use_reloader=use_reloader, **options)
        return
    import waitress

    if os.environ.get(QUIET_VARIABLE):
        logging.getLogger("waitress").setLevel(logging.ERROR)
    print(f" * Running on http://{hostname}:{port} (waitress)", file=sys.stderr, flush=True)
    waitress.serve(application, host=hostname, port=port, threads=SERVER_THREADS, ident=None, _quiet=True)


if __name__ == "__main__":
    main()
