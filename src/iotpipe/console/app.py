"""The console's web app (Starlette): the page, its static assets, a JSON API per view and server-sent events.

Safe by default: every request needs the run's random token, as ``?token=`` once (the answer sets an HttpOnly,
SameSite=Strict cookie and moves on to the same page without it) or the cookie after that; a Host header that is
not the loopback address the server is bound to is refused (DNS rebinding); the only POST (a SQL SELECT) needs a
JSON body from the same origin; every answer carries a strict Content-Security-Policy (scripts and styles from the
app's own files only, no inline script, nothing from elsewhere). Nothing the app serves holds a credential.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from iotpipe.console.data import ConsoleData
from iotpipe.errors import IotpipeError, ParameterError

COOKIE = "iotpipe_console"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOG = logging.getLogger("iotpipe.console")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Server-sent events: how often the server looks for news, and how long one stream lasts (the browser's
# EventSource reconnects by itself).
POLL_S = 2.0
STREAM_S = 600.0
# Open event streams at most: each polls the anomaly index every POLL_S (read units on AWS) and holds a socket.
MAX_STREAMS = 16


def new_token() -> str:
    """A random token for the console's URL (256 bits)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """What the app checks each request against."""

    token: str
    bind_host: str = "127.0.0.1"
    port: int = 0
    poll_s: float = POLL_S
    stream_s: float = STREAM_S
    max_streams: int = MAX_STREAMS
    extra_hosts: tuple[str, ...] = field(default=())

    @property
    def cookie(self) -> str:
        """The cookie's name, one per port: a browser keeps cookies by host, not port, so consoles on two ports
        of 127.0.0.1 would otherwise overwrite each other's token."""
        return f"{COOKIE}_{self.port}"

    def host_allowed(self, header: str) -> bool:
        """Bound to loopback: the Host header must name a loopback host (a DNS-rebinding page cannot); bound
        elsewhere the token alone guards it."""
        if not is_loopback(self.bind_host):
            return True
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        return is_loopback(name.strip("[]")) or name in self.extra_hosts


def static_dir() -> str:
    """The folder of the page's files inside the package."""
    return str(resources.files("iotpipe.console") / "static")


# A versioned asset may be kept by the browser: its address changes with its content. "private": never by a
# shared cache; the browser that keeps it got it past the token check.
STATIC_CACHE = "private, max-age=31536000, immutable"


def asset_version(folder: str) -> str:
    """A short hash of every file the page loads from ``folder`` (its addresses carry it)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != "index.html"):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def index_page(folder: str) -> str:
    """The page, each of its asset addresses versioned (``/static/console.js?v=<hash>``)."""
    version = asset_version(folder)
    html = (Path(folder) / "index.html").read_text(encoding="utf-8")
    return re.sub(r'((?:src|href)="/static/[^"?]+)"', rf'\1?v={version}"', html)


class Guard(BaseHTTPMiddleware):
    """Host check, token or cookie, security headers on every answer."""

    def __init__(self, app: Any, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await self._check(request, call_next)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.url.path.startswith("/static/") and response.status_code in (200, 304):
            response.headers["Cache-Control"] = STATIC_CACHE  # StaticFiles answers If-None-Match with its ETag
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _check(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not self.settings.host_allowed(request.headers.get("host", "")):
            return PlainTextResponse("refused: this console answers on its loopback address only", status_code=403)
        given = request.query_params.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self.settings.token.encode()):
                return PlainTextResponse("wrong token: open the URL `iotpipe console` printed", status_code=403)
            if request.method == "GET" and not request.url.path.startswith("/api/"):
                # the token leaves the address bar (and the history); the cookie carries it from now on
                response: Response = HTMLResponse(landing_page(_without_token(request)))
                response.set_cookie(self.settings.cookie, self.settings.token, httponly=True, samesite="strict",
                                    path="/")
                return response
        elif not hmac.compare_digest(request.cookies.get(self.settings.cookie, "").encode(),
                                     self.settings.token.encode()):
            return PlainTextResponse("the console needs its token: open the URL `iotpipe console` printed "
                                     "(it ends with ?token=...)", status_code=401)
        if request.method not in ("GET", "HEAD") and not _same_origin_json(request):
            return PlainTextResponse("refused: only the console's own page may send this", status_code=403)
        if request.url.path.startswith("/api/") and request.headers.get("sec-fetch-site") not in (
                None, "same-origin", "none"):
            # a page of another port of this host is "same-site": SameSite=Strict sends it the cookie, and a read
            # can start Athena queries (a range past the table's retention) though the page never sees the answer
            return PlainTextResponse("refused: only the console's own page may ask this", status_code=403)
        return await call_next(request)


def landing_page(target: str) -> str:
    """The answer to the token URL: it sets the cookie and moves on to ``target`` by itself. Not a redirect: a
    navigation started elsewhere (the browser opening the console's start file, a link in another site) is
    cross-site, and a browser sends no SameSite=Strict cookie along a redirect of it; this page's own refresh is
    same-origin, and replaces its entry in the history."""
    shown = html.escape(target, quote=True)
    return (f'<!doctype html>\n<html lang="en"><meta charset="utf-8">\n'
            f'<meta http-equiv="refresh" content="0;url={shown}">\n<title>iotpipe console</title>\n'
            f'<p><a href="{shown}">Open the iotpipe console</a></p></html>\n')


def _without_token(request: Request) -> str:
    """The address asked for, without its token, as a path on this server: a path of two leading slashes
    (``//host/``) would send the browser to another host, and the rest of the query is kept as it was encoded."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    path = "/" + request.url.path.lstrip("/")
    return path + (f"?{urlencode(rest)}" if rest else "")


def _same_origin_json(request: Request) -> bool:
    """A JSON POST from the console's own page (a form of another site cannot send JSON without a preflight the
    console never grants, and a browser marks its origin)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return False
    site = request.headers.get("sec-fetch-site")
    return site in (None, "same-origin")


def _error(exc: Exception) -> JSONResponse:
    # a bad argument (a parameter, a device id, a range) is the page's; anything else is the pipeline's
    status = 400 if isinstance(exc, ParameterError) or getattr(exc, "exit_code", 1) == 2 else 502
    return JSONResponse({"error": str(exc)}, status_code=status)


def create_app(data: ConsoleData, settings: Settings) -> Starlette:
    """The console app over ``data``."""

    async def call(read: Callable[[], Any]) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(read))
        except IotpipeError as exc:
            return _error(exc)
        except Exception as exc:  # a bug or an unwrapped library error: the traceback to the terminal, not the page
            LOG.exception("the console failed")
            return JSONResponse({"error": f"the console failed ({type(exc).__name__}); its terminal shows why"},
                                status_code=500)

    page = index_page(static_dir())
    sql_running = asyncio.Lock()  # one query at a time: on Athena each one is billed
    streams = [0]  # event streams open now

    async def index(_request: Request) -> Response:
        return HTMLResponse(page)

    async def about(_request: Request) -> Response:
        return await call(data.about)

    async def fleet(_request: Request) -> Response:
        return await call(data.fleet)

    async def device(request: Request) -> Response:
        return await call(lambda: data.device(request.path_params["device_id"],
                                              request.query_params.get("range", "1h")))

    async def series(request: Request) -> Response:
        return await call(lambda: data.series(request.path_params["device_id"], request.path_params["sensor"],
                                              request.query_params.get("range", "1h")))

    async def anomalies(request: Request) -> Response:
        q = request.query_params
        return await call(lambda: data.anomalies(device_id=q.get("device") or None, sensor=q.get("sensor") or None,
                                                 rule=q.get("rule") or None))

    async def health(_request: Request) -> Response:
        return await call(data.health)

    async def sql_queries(_request: Request) -> Response:
        return await call(data.sql_queries)

    async def sql_run(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return JSONResponse({"error": 'send {"query": "SELECT ...", "since": "24h"}'}, status_code=400)
        since = body.get("since")
        window = since if isinstance(since, str) else "24h"
        if sql_running.locked():
            return JSONResponse({"error": "a query is running already: wait for its answer"}, status_code=429)
        async with sql_running:
            return await call(lambda: data.run_sql(body["query"], window))

    async def events(request: Request) -> Response:
        if streams[0] >= settings.max_streams:
            return PlainTextResponse(f"{settings.max_streams} pages of this console are open already: close one",
                                     status_code=503)

        async def counted() -> AsyncIterator[str]:
            streams[0] += 1  # counted once it runs: a stream cancelled before it starts never ends either
            try:
                async for event in _events(request, data, settings):
                    yield event
            finally:
                streams[0] -= 1

        return StreamingResponse(counted(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    routes = [
        Route("/", index),
        Route("/api/about", about),
        Route("/api/fleet", fleet),
        Route("/api/device/{device_id}", device),
        Route("/api/device/{device_id}/series/{sensor}", series),
        Route("/api/anomalies", anomalies),
        Route("/api/health", health),
        Route("/api/sql", sql_queries),
        Route("/api/sql", sql_run, methods=["POST"]),
        Route("/api/events", events),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, settings=settings)])


def sse(event: str, payload: Any) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _events(request: Request, data: ConsoleData, settings: Settings) -> AsyncIterator[str]:
    """News while the page is open: each new anomaly and the fleet when it changed (a device's new readings
    show as its new last-seen time). Polls every ``poll_s`` for at most ``stream_s``."""
    since = data.clock()
    seen: set[tuple[str, int, str]] = set()
    last_fleet: Any = None
    yield "retry: 2000\n\n"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.stream_s
    while loop.time() < deadline and not await request.is_disconnected():
        try:
            found = await run_in_threadpool(lambda: data.anomalies(since_ms=since - 60_000, limit=500))
            for anomaly in reversed(found["anomalies"]):
                key = (anomaly["deviceId"], anomaly["timestamp"], anomaly["sensorType"])
                if key not in seen:
                    seen.add(key)
                    yield sse("anomaly", anomaly)
            fleet = await run_in_threadpool(data.fleet)
            if fleet["devices"] != last_fleet:
                last_fleet = fleet["devices"]
                yield sse("fleet", fleet)
        except IotpipeError as exc:
            yield sse("problem", {"error": str(exc)})
        await asyncio.sleep(settings.poll_s)
