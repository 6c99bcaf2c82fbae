"""The read-only web dashboard: what the repository declares and what became of it.

One Starlette app (:func:`dashboard_app`) over a :class:`DashboardSource` (the provider
that reads declarations, status documents and Git history; see ``views.py``):

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
Starlette runs them in its thread pool.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Protocol, TypeVar, runtime_checkable

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders, QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .names import DNS1123_LABEL

log = logging.getLogger("reconciler.dashboard")

PHASES = ("Pending", "Running", "Completed", "Failed", "Skipped")
HEALTHS = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")
SYNCS = ("Synced", "OutOfSync", "Unknown")

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

# failureDetails keys (SPEC §6) in the order people read them; others follow alphabetically
FAILURE_FIELDS = ("reason", "message", "failedTaskName", "failedStepName", "failedTaskIndex", "exitCode",
                  "failedAt", "executionTimeBeforeFailure", "wasExecutionFailure")


@runtime_checkable
class DashboardSource(Protocol):
    """What the dashboard shows; plain JSON-friendly dicts (see ``views.py``)."""

    def summary(self) -> dict[str, Any]: ...

    def executions(self) -> list[dict[str, Any]]: ...

    def execution(self, name: str) -> dict[str, Any] | None: ...


def valid_name(name: object) -> bool:
    """A DNS-1123 label (what execution names are); anything else is never looked up or linked."""
    return isinstance(name, str) and 0 < len(name) <= 63 and DNS1123_LABEL.fullmatch(name) is not None


def script_json(data: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and
    the line separators are escaped, so no value can close the element or open a comment."""
    text = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return Markup(text)


# -- filters (the same rules as matches() in static/dashboard.js) --------------------------

@dataclass(frozen=True)
class Filters:
    phase: str = ""
    health: str = ""
    sync: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, query: QueryParams | Mapping[str, str]) -> Filters:
        def pick(key: str, allowed: tuple[str, ...]) -> str:
            value = query.get(key) or ""
            return value if value in allowed else ""
        return cls(phase=pick("phase", PHASES), health=pick("health", HEALTHS), sync=pick("sync", SYNCS),
                   q=(query.get("q") or "")[:200])

    @property
    def active(self) -> bool:
        return bool(self.phase or self.health or self.sync or self.q.strip())

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Phase/health/sync exactly; each whitespace-separated search term (all must match)
        case-insensitively as a substring of name, target or workflow, or — a ``key=value``
        term — exactly as one of the labels."""
        if self.phase and row.get("phase") != self.phase:
            return False
        if self.health and row.get("health") != self.health:
            return False
        if self.sync and row.get("sync") != self.sync:
            return False
        haystack = [str(row.get(k) or "").lower() for k in ("name", "target", "workflow")]
        raw_labels = row.get("labels")
        labels: Mapping[Any, Any] = raw_labels if isinstance(raw_labels, Mapping) else {}
        pairs = {(str(k).lower(), str(v).lower()) for k, v in labels.items()}
        for term in self.q.lower().split():
            if any(term in h for h in haystack):
                continue
            key, eq, value = term.partition("=")
            if eq and (key, value) in pairs:
                continue
            if not eq and any(term in k or term in v for k, v in pairs):
                continue
            return False
        return True


# -- presentation helpers ------------------------------------------------------------------

def _known(value: object, allowed: Iterable[str], fallback: str = "Unknown") -> str:
    """A CSS class suffix: only ever one of the known values (data never names a class)."""
    return value if isinstance(value, str) and value in allowed else fallback


def _short(sha: object) -> str:
    s = str(sha or "")
    return s[:7] if len(s) >= 12 and all(c in "0123456789abcdef" for c in s.lower()) else s


def _breakable(value: object) -> Markup:
    """Escaped text with line-break opportunities (``<wbr>``) after ``/`` and ``@``, so
    ``ns/Kind/name`` and ``workflow@version`` wrap at their separators, not mid-word."""
    return Markup("<wbr>").join(part for part in re.split(r"(?<=[/@])", str(value or "")) if part)


def _scalar(value: object) -> str:
    """A failure/skip detail value for people: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _when(value: object) -> str:
    """``2026-11-22T04:30:00Z`` → ``2026-11-22 04:30:00 UTC``; anything unparseable as given."""
    text = str(value or "")
    if not text:
        return ""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A source row with every key the templates read (a provider may leave some out)."""
    out: dict[str, Any] = {k: ("" if raw.get(k) is None else raw.get(k)) for k in (
        "name", "target", "workflow", "engine", "phase", "reason", "message", "sync", "health", "run",
        "startTime", "completionTime", "duration", "age", "declaredIn")}
    labels = raw.get("labels")
    out["labels"] = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
    out["linkable"] = valid_name(out["name"])
    return out


def _detail(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {**raw, **_row(raw)}

    def mapping(key: str) -> dict[str, Any]:
        value = raw.get(key)
        return dict(value) if isinstance(value, Mapping) else {}

    def records(key: str) -> list[dict[str, Any]]:
        value = raw.get(key)
        return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    for key in ("failureDetails", "skipDetails", "executionStatus", "declaredCommit", "lastChangedCommit"):
        out[key] = mapping(key)
    for key in ("conditions", "timeline", "statusCommits", "deliveries"):
        out[key] = records(key)
    problems = raw.get("problems")
    out["problems"] = [str(p) for p in problems] if isinstance(problems, list) else []
    for key in ("spec", "rendered", "file", "observedRevision"):
        out[key] = str(raw.get(key) or "")
    failure = out["failureDetails"]
    out["failureFields"] = [(k, failure[k]) for k in FAILURE_FIELDS if k in failure and failure[k] not in ("", None)]
    out["failureFields"] += [(k, v) for k, v in sorted(failure.items())
                             if k not in FAILURE_FIELDS and k != "naturalLanguageSummary" and v not in ("", None)]
    return out


def _summary(raw: Mapping[str, Any]) -> dict[str, Any]:
    def counts(key: str, names: tuple[str, ...]) -> dict[str, int]:
        found = raw.get(key)
        given: Mapping[Any, Any] = found if isinstance(found, Mapping) else {}
        out = {n: int(given.get(n) or 0) for n in names}
        out.update({str(k): int(v or 0) for k, v in given.items() if k not in out})
        return out
    return {
        "repository": str(raw.get("repository") or ""), "branch": str(raw.get("branch") or ""),
        "revision": str(raw.get("revision") or ""), "health": str(raw.get("health") or "Unknown"),
        "phases": counts("phases", PHASES), "sync": counts("sync", SYNCS),
        "generatedAt": str(raw.get("generatedAt") or ""), "leader": bool(raw.get("leader")),
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "web/templates"),
        autoescape=True,  # every template is HTML; every value from the repository is untrusted
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(short=_short, when=_when, script_json=script_json, breakable=_breakable,
                       scalar=_scalar)
    env.globals.update(PHASES=PHASES, HEALTHS=HEALTHS, SYNCS=SYNCS, known=_known, valid_name=valid_name)
    return env


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
    env = _environment()
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
            summary = _summary(_ask(source.summary))
            raw_rows = _ask(source.executions)
        except _SourceUnavailable:
            return unavailable(request)
        filters = Filters.from_query(request.query_params)
        rows = [_row(r) for r in raw_rows if isinstance(r, Mapping)]
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
        return page("execution.html", x=_detail(raw))

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
