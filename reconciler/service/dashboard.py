"""The read-only web dashboard: what the repository declares and what became of it.

One Starlette app (:func:`dashboard_app`) over a :class:`DashboardSource` (the provider
that reads declarations, status documents and Git history; see ``views/status_view.py``):

* ``GET /`` — the executions page: repository summary, a filterable table that refreshes
  itself (``fetch('/api/executions')``) without reloading the page.  Filters (phase,
  health, sync, free text incl. ``key=value`` labels) are applied client-side *and*
  server-side from the same query string, so a filtered view is a shareable link that
  also works without JavaScript.
* ``GET /executions/{name}`` — one execution: failure / skip details, conditions, the
  timeline of phase transitions, commits, the declared spec and the rendered run.
* ``GET /api/summary``, ``/api/executions``, ``/api/executions/{name}`` — the same as JSON.
* ``GET /static/{file}`` — the CSS, JavaScript and icon shipped in ``reconciler/web/static``
  (clusters are offline: no CDN, no web fonts, no framework).

Everything in an execution file is untrusted input.  Templates are autoescaped, data is
only put into the DOM with ``textContent`` by the script, JSON embedded in a page has
``<``, ``>`` and ``&`` escaped, and every response carries a strict Content-Security-Policy
(no inline script or style), ``nosniff`` and ``no-referrer``.  The app is read-only: any
method but GET/HEAD is answered 405.  Names in URLs are checked against the DNS-1123
label format before the source is asked about them.

Source calls are synchronous (they may read Git); the handlers are plain functions, so
Starlette runs them in its thread pool.  This module serves (routes, headers, static files,
the read-only rule); what the pages show is built by :mod:`reconciler.views.dashboard_pages`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, TypeVar, runtime_checkable

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.views.dashboard_pages import (
    Filters,
    execution_detail,
    execution_row,
    page_environment,
    repository_summary,
    valid_name,
)

log = logging.getLogger("reconciler.dashboard")

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
READ_ONLY_METHODS = ("GET", "HEAD")

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

@runtime_checkable
class DashboardSource(Protocol):
    """What the dashboard shows; plain JSON-friendly dicts (see ``views/status_view.py``)."""

    def summary(self) -> dict[str, Any]: ...

    def executions(self) -> list[dict[str, Any]]: ...

    def execution(self, name: str) -> dict[str, Any] | None: ...



# -- static files --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load_static() -> dict[str, _Asset]:
    """The shipped assets, read once: a fixed set of names, so no path ever reaches the filesystem."""
    assets: dict[str, _Asset] = {}
    root = resources.files("reconciler.web").joinpath("static")
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in STATIC_TYPES:
            body = entry.read_bytes()
            assets[entry.name] = _Asset(body, STATIC_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


# -- middleware ----------------------------------------------------------------------------

class _ReadOnlyHeaders:
    """Security headers on every response; 405 for anything but GET/HEAD, before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
            await send(message)

        if scope["method"] not in READ_ONLY_METHODS:
            response: Response
            if str(scope.get("path", "")).startswith("/api/"):
                response = JSONResponse({"error": "method not allowed: the dashboard is read-only"}, 405)
            else:
                response = PlainTextResponse("405 Method Not Allowed: the dashboard is read-only.\n", 405)
            response.headers["Allow"] = ", ".join(READ_ONLY_METHODS)
            await response(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)


class _SourceUnavailable(Exception):
    pass


T = TypeVar("T")


def _ask(call: Callable[..., T], *args: Any) -> T:
    try:
        return call(*args)
    except Exception as e:
        log.exception("dashboard source failed", extra={"call": getattr(call, "__name__", "?")})
        raise _SourceUnavailable from e


# -- the app -------------------------------------------------------------------------------

def dashboard_app(source: DashboardSource, *, title: str = "kubernaut remediations",
                  refresh_seconds: float = 5.0) -> Starlette:
    """The dashboard over ``source``; the list page refreshes itself every ``refresh_seconds``."""
    env = page_environment()
    assets = _load_static()
    versions = {name: asset.etag.strip('"')[:10] for name, asset in assets.items()}
    refresh_ms = max(100, int(refresh_seconds * 1000))
    # e.g. "Simulated cluster: ..." from reconciler testdrive: shown on every page
    banner = str(getattr(source, "banner", "") or "")

    def static_url(name: str) -> str:
        return f"/static/{name}?v={versions.get(name, '0')}"

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(title=title, static=static_url, refresh_ms=refresh_ms,
                                                 banner=banner, **context)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def api(content: Any, status: int = 200) -> Response:
        body = json.dumps(content, default=str, ensure_ascii=False).encode("utf-8")
        return Response(body, status_code=status, media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    def not_found_page(what: str) -> HTMLResponse:
        return page("error.html", 404, heading="Not found", detail=what)

    def unavailable(request: Request) -> Response:
        message = "the repository state cannot be read right now; see the reconciler's log"
        if request.url.path.startswith("/api/"):
            return api({"error": message}, 503)
        return page("error.html", 503, heading="Unavailable", detail=message)

    # pages

    def executions_page(request: Request) -> Response:
        try:
            summary = repository_summary(_ask(source.summary))
            raw_rows = _ask(source.executions)
        except _SourceUnavailable:
            return unavailable(request)
        filters = Filters.from_query(request.query_params)
        rows = [execution_row(r) for r in raw_rows if isinstance(r, Mapping)]
        shown = [r for r in rows if filters.matches(r)]
        return page("executions.html", summary=summary, rows=rows, shown=shown, filters=filters,
                    data=[r for r in raw_rows if isinstance(r, Mapping)])

    def execution_page(request: Request) -> Response:
        name = request.path_params["name"]
        if not valid_name(name):
            return not_found_page("No execution has that name: execution names are DNS-1123 labels.")
        try:
            raw = _ask(source.execution, name)
        except _SourceUnavailable:
            return unavailable(request)
        if raw is None:
            return not_found_page(f"No execution named “{name}” is declared or recorded in this repository.")
        return page("execution.html", x=execution_detail(raw))

    # JSON

    def api_summary(request: Request) -> Response:
        try:
            return api(_ask(source.summary))
        except _SourceUnavailable:
            return unavailable(request)

    def api_executions(request: Request) -> Response:
        try:
            return api(_ask(source.executions))
        except _SourceUnavailable:
            return unavailable(request)

    def api_execution(request: Request) -> Response:
        name = request.path_params["name"]
        if not valid_name(name):
            return api({"error": "not found"}, 404)
        try:
            raw = _ask(source.execution, name)
        except _SourceUnavailable:
            return unavailable(request)
        if raw is None:
            return api({"error": "not found", "name": name}, 404)
        return api(raw)

    # static

    def static(request: Request) -> Response:
        asset = assets.get(request.path_params["path"])
        if asset is None:
            return PlainTextResponse("404 Not Found\n", 404)
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if request.url.path.startswith("/api/"):
            return api({"error": "not found" if status == 404 else "error"}, status)
        if status == 404:
            return not_found_page("There is nothing at this address.")
        return PlainTextResponse(f"{status}\n", status)

    return Starlette(
        routes=[
            Route("/", executions_page, methods=["GET"]),
            Route("/executions/{name}", execution_page, methods=["GET"]),
            Route("/api/summary", api_summary, methods=["GET"]),
            Route("/api/executions", api_executions, methods=["GET"]),
            Route("/api/executions/{name}", api_execution, methods=["GET"]),
            Route("/static/{path}", static, methods=["GET"]),
        ],
        middleware=[Middleware(_ReadOnlyHeaders)],
        exception_handlers={HTTPException: http_error},
    )
