"""The emulator of ``iotpipe local``: moto's WSGI application, with iotpipe's moto patches, served by waitress.

``python -m iotpipe.local.moto_server [-H host] [-p port]`` runs :func:`main`. moto's own server runs on
Werkzeug's development server, which closes the connection after every response and starts a thread per request:
about 2 ms of CPU per AWS call on the server and 1.7 ms on the client, most of it connection set-up and two writes
per response. Here moto's application (:func:`application`) is served by waitress directly: HTTP/1.1 keep-alive, a
fixed pool of threads, one buffered write per response (about 1.3 ms on each side, measured on the 2-core
development machine). ``--ssl``, ``--ssl-cert``/``--ssl-key`` and ``--reload`` are served by Werkzeug, which
implements them; so is everything when ``IOTPIPE_MOTO_WERKZEUG=1`` or waitress is not installed.

With ``IOTPIPE_MOTO_ACCESS_KEY`` set (``iotpipe local`` sets it to the run's random key) the server answers only
requests signed with that access key (SigV4 ``Authorization`` header or presigned ``X-Amz-Credential``); any other
gets AWS's 403 (``UnrecognizedClientException``, ``InvalidClientTokenId`` or S3's ``InvalidAccessKeyId``). moto's
own ``/moto-api/`` (reset, state dumps) then needs ``IOTPIPE_MOTO_API_TOKEN`` in the ``X-Iotpipe-Local-Token``
header: it is the supervisor's alone.
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from iotpipe.local.emulator import moto_compat

QUIET_VARIABLE = "IOTPIPE_MOTO_QUIET"
WERKZEUG_VARIABLE = "IOTPIPE_MOTO_WERKZEUG"
SERVER_THREADS = 8
ACCESS_KEY_VARIABLE = "IOTPIPE_MOTO_ACCESS_KEY"
API_TOKEN_VARIABLE = "IOTPIPE_MOTO_API_TOKEN"
API_TOKEN_HEADER = "X-Iotpipe-Local-Token"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]*/[^/]*/([^/,\s]+)/")


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """moto_server's options (host, port, TLS, reloader), with its defaults."""
    parser = argparse.ArgumentParser(prog="python -m iotpipe.local.moto_server",
                                     description="moto's server with iotpipe's moto patches")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="which host to bind")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)),
                        help="the port to listen on")
    parser.add_argument("-r", "--reload", action="store_true", help="reload on a file change (Werkzeug)")
    parser.add_argument("-s", "--ssl", action="store_true", help="TLS with a generated certificate (Werkzeug)")
    parser.add_argument("-c", "--ssl-cert", default=None, help="TLS certificate (Werkzeug)")
    parser.add_argument("-k", "--ssl-key", default=None, help="TLS private key (Werkzeug)")
    return parser.parse_args(argv)


def application() -> Any:
    """moto's server application (what ``moto_server`` serves): one moto backend app per service, chosen by each
    request's host and signature."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]  # as moto_server sets it: errors answered, not raised
    return app


def main(argv: list[str] | None = None) -> None:
    """Apply every moto patch in this process, then serve moto's application (guarded by the run's access key
    when ``IOTPIPE_MOTO_ACCESS_KEY`` is set) until SIGTERM or SIGINT."""
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    moto_compat.apply(moto_compat.ALL_KINDS)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs (SQS queues) from it
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit)
    app = application()
    access_key = os.environ.get(ACCESS_KEY_VARIABLE)
    if access_key:
        app = AccessKeyGuard(app, access_key, os.environ.get(API_TOKEN_VARIABLE, ""))
    ssl_context: Any = (args.ssl_cert, args.ssl_key) if args.ssl_cert and args.ssl_key else \
        ("adhoc" if args.ssl else None)
    if ssl_context is not None or args.reload or not use_waitress():
        serve_with_werkzeug(args.host, args.port, app, ssl_context=ssl_context, use_reloader=args.reload)
    else:
        serve_with_waitress(args.host, args.port, app)


def _exit(_signum: int, _frame: Any) -> None:
    sys.exit(0)


class AccessKeyGuard:
    """WSGI middleware: only requests signed with ``access_key`` reach ``app``; ``/moto-api/`` needs
    ``api_token`` in the ``X-Iotpipe-Local-Token`` header."""

    def __init__(self, app: Callable[..., Iterable[bytes]], access_key: str, api_token: str) -> None:
        self.app = app
        self.access_key = access_key
        self.api_token = api_token

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Answer 403 for another key (or none), else pass the request on."""
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/moto-api"):
            given = str(environ.get("HTTP_" + API_TOKEN_HEADER.upper().replace("-", "_"), ""))
            if self.api_token and hmac.compare_digest(given.encode(), self.api_token.encode()):
                return self.app(environ, start_response)
            return _refuse(start_response, "", "moto-api", "AccessDenied", "moto's API is iotpipe local's own")
        key, service = request_credential(environ)
        if key is not None and hmac.compare_digest(key.encode(), self.access_key.encode()):
            return self.app(environ, start_response)
        what = f"the access key {key}" if key else "an unsigned request"
        return _refuse(start_response, str(environ.get("CONTENT_TYPE", "")), service, "",
                       f"{what} is not this iotpipe local's; use the credentials in its state file")


def request_credential(environ: dict[str, Any]) -> tuple[str | None, str]:
    """The access key and service a request is signed for (SigV4 header or presigned URL, or S3's SigV2 forms);
    (None, '') if unsigned."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    found = _CREDENTIAL.search(authorization)
    if found:
        return found.group(1), found.group(2)
    if authorization.startswith("AWS ") and ":" in authorization:
        return authorization[4:].split(":")[0], "s3"
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    credential = (query.get("X-Amz-Credential") or [""])[0].split("/")
    if len(credential) >= 4 and credential[0]:
        return credential[0], credential[3]
    if query.get("AWSAccessKeyId"):
        return query["AWSAccessKeyId"][0], "s3"
    return None, ""


def _refuse(start_response: Callable[..., Any], content_type: str, service: str, code: str,
            message: str) -> list[bytes]:
    """AWS's answer to an unknown access key, in the protocol the client will parse."""
    if service == "s3":
        code = code or "InvalidAccessKeyId"
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}"
                "</Message></Error>").encode()
        kind = "application/xml"
    elif "x-www-form-urlencoded" in content_type:  # the query protocol (CloudFormation, STS, SNS, IAM)
        code = code or "InvalidClientTokenId"
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                "</Error><RequestId>iotpipe-local</RequestId></ErrorResponse>").encode()
        kind = "text/xml"
    else:
        code = code or "UnrecognizedClientException"
        body = json.dumps({"__type": code, "message": message}).encode()
        kind = "application/x-amz-json-1.1"
    start_response("403 Forbidden", [("Content-Type", kind), ("Content-Length", str(len(body))),
                                     ("x-amzn-ErrorType", code)])
    return [body]


def use_waitress() -> bool:
    """True when waitress is installed and not turned off by ``IOTPIPE_MOTO_WERKZEUG``."""
    return not os.environ.get(WERKZEUG_VARIABLE) and importlib.util.find_spec("waitress") is not None


def serve_with_waitress(host: str, port: int, app: Any) -> None:
    """Serve ``app`` on waitress with :data:`SERVER_THREADS` threads until the process is told to stop."""
    import waitress

    if os.environ.get(QUIET_VARIABLE):  # a line per request costs ~8% of the server's CPU under load
        logging.getLogger("waitress").setLevel(logging.ERROR)
    print(f" * Running on http://{host}:{port} (waitress)", file=sys.stderr, flush=True)
    waitress.serve(app, host=host, port=port, threads=SERVER_THREADS, ident=None, _quiet=True)


def serve_with_werkzeug(host: str, port: int, app: Any, *, ssl_context: Any, use_reloader: bool) -> None:
    """Serve ``app`` as moto_server does (Werkzeug, a thread per request), for TLS, the reloader or on request."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    if os.environ.get(QUIET_VARIABLE):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_simple(host, port, app, threaded=True, use_reloader=use_reloader, ssl_context=ssl_context,
               request_handler=MotoRequestHandler)
