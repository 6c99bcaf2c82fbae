"""The service's HTTP surfaces: health, metrics and the push webhook (SPEC §9).

Why a module of its own: the reconciler is a synchronous program (a scheduler thread
runs cycles); its HTTP endpoints are small Starlette apps, each served by uvicorn in a
background daemon thread (:class:`ServerThread`) on its own port, so a slow scrape never
delays a probe and the webhook can be exposed without exposing metrics.

* health (``:8081``): ``/healthz`` and ``/readyz``, plus the seed's ``/health`` and
  ``/ready`` as aliases — no authentication (kubelet probes).
* metrics (``:9090``): ``/metrics``, optionally behind a bearer token.
* webhook (third port): ``POST /webhook`` (provider detected from headers) and
  ``POST /webhook/{github,gitlab,gitea}``.  The body is size-capped before it is read,
  authenticated before it is parsed, and a push only *asks* for a cycle (``on_push``);
  the webhook never carries anything that is executed.  Secrets and signatures are never
  logged or echoed.

Callbacks (``is_live``, ``is_ready``, ``on_push``) are plain synchronous functions; they
run in Starlette's thread pool, so they may take a lock but should return quickly.

Every port is exposed to whatever can reach it, so each connection is bounded
(:class:`Limits`): the request head must arrive within ``header_timeout`` of the
connection opening (or of the previous response), an idle keep-alive connection is
closed after ``keep_alive`` seconds, at most ``max_connections`` are served at once (the
next one is answered 503 and closed at once), and a response sent before the request
body was read (a 413, a 400 on the headers) closes the connection instead of draining
the body.  uvicorn has the keep-alive timeout and a request-time concurrency check but
nothing for a client that connects and never finishes its headers: that, and the
refusal at connection time, are :func:`_guarded_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import socket
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

import h11
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from reconciler.service.metrics import Metrics
from reconciler.service.webhook import (
    PROVIDERS,
    PushEvent,
    WebhookError,
    detect_provider,
    event_name,
    parse_push,
    verify,
)

App: TypeAlias = ASGIApp  # an ASGI app, as the service hands it to a server (only here is starlette's type named)

log = logging.getLogger("reconciler.http")
MiB = 1024 * 1024


# -- health --------------------------------------------------------------------------------

def health_app(is_live: Callable[[], bool], is_ready: Callable[[], tuple[bool, str]]) -> Starlette:
    """``/healthz`` (200 "ok" / 503) and ``/readyz`` (200 / 503, JSON with a reason)."""

    def live(request: Request) -> Response:
        try:
            ok = is_live()
        except Exception:  # a probe must answer, never crash
            log.exception("liveness check failed")
            ok = False
        return PlainTextResponse("ok\n" if ok else "not live\n", status_code=200 if ok else 503)

    def ready(request: Request) -> Response:
        try:
            ok, reason = is_ready()
        except Exception as e:
            log.exception("readiness check failed")
            ok, reason = False, f"readiness check failed: {type(e).__name__}"
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    return Starlette(routes=[
        Route("/healthz", live, methods=["GET"]),
        Route("/health", live, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ])


# -- metrics -------------------------------------------------------------------------------

def _bearer_ok(request: Request, token: str) -> bool:
    scheme, _, given = (request.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8"))


def metrics_app(metrics: Metrics, token: str | None = None) -> Starlette:
    """``/metrics`` in the Prometheus text format; with ``token``, ``Authorization: Bearer`` is required."""

    def scrape(request: Request) -> Response:
        if token and not _bearer_ok(request, token):
            return PlainTextResponse("unauthorized\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])


# -- webhook -------------------------------------------------------------------------------

class _TooLarge(Exception):
    pass


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, or :class:`_TooLarge` as soon as it is known to exceed ``limit`` —
    from ``Content-Length`` before reading anything, else while streaming (chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise WebhookError("invalid Content-Length") from None
        if size > limit:
            raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def webhook_app(secret_for: Callable[[str], bytes | None], on_push: Callable[[PushEvent], bool],
                metrics: Metrics | None = None, max_body: int = MiB) -> Starlette:
    """Push webhooks: ``POST /webhook`` (auto-detect) and ``POST /webhook/{provider}``.

    Answers: 400 unknown provider or unreadable body, 401 not authentic (or no secret
    configured for the provider), 413 body over ``max_body``, 202 otherwise with
    ``{"triggered": bool, "reason": str}``; ``on_push`` says whether a cycle was triggered.
    """

    def answer(provider: str, result: str, status: int, content: dict[str, Any], *,
               close: bool = False) -> Response:
        if metrics is not None:
            metrics.record_webhook(provider, result)
        # close: the body was not (fully) read, so the connection cannot carry another request
        # without draining it first — and draining an oversized body is what the cap prevents
        return JSONResponse(content, status_code=status, headers={"Connection": "close"} if close else None)

    async def receive(request: Request) -> Response:
        given = request.path_params.get("provider")
        provider = given.lower() if isinstance(given, str) else detect_provider(request.headers)
        if provider not in PROVIDERS:
            label = "unknown"
            why = ("unknown provider (expected one of " + ", ".join(PROVIDERS) + ")" if given
                   else "cannot tell the provider from the headers")
            return answer(label, "bad_request", 400, {"error": why}, close=True)
        assert provider is not None
        try:
            body = await _read_capped(request, max_body)
        except _TooLarge:
            log.warning("webhook body too large", extra={"provider": provider, "limit": max_body})
            return answer(provider, "too_large", 413, {"error": f"body larger than {max_body} bytes"}, close=True)
        except WebhookError as e:
            return answer(provider, "bad_request", 400, {"error": str(e)}, close=True)
        secret = secret_for(provider)
        if not secret or not verify(provider, request.headers, body, secret):
            log.warning("webhook not authentic", extra={"provider": provider,
                                                        "event": event_name(provider, request.headers)})
            return answer(provider, "unauthorized", 401, {"error": "unauthorized"})
        try:
            event = parse_push(provider, request.headers, body)
        except WebhookError as e:
            log.warning("webhook body unreadable", extra={"provider": provider, "error": str(e)})
            return answer(provider, "bad_request", 400, {"error": str(e)})
        if event is None:
            name = event_name(provider, request.headers) or "(none)"
            return answer(provider, "ignored", 202, {"triggered": False, "reason": f"not a push event: {name}"})
        if event.branch is None:
            return answer(provider, "ignored", 202, {"triggered": False, "reason": f"not a branch: {event.ref}"})
        if event.deleted:
            return answer(provider, "ignored", 202,
                          {"triggered": False, "reason": f"branch {event.branch} was deleted"})
        try:
            triggered = await run_in_threadpool(on_push, event)
        except Exception:
            log.exception("webhook push handler failed", extra={"provider": provider})
            return answer(provider, "error", 500, {"error": "internal error"})
        log.info("webhook push", extra={"provider": provider, "repository": event.repository,
                                        "branch": event.branch, "commit": event.after,
                                        "delivery": event.delivery, "triggered": triggered})
        if triggered:
            return answer(provider, "accepted", 202, {"triggered": True})
        return answer(provider, "ignored", 202, {"triggered": False, "reason": "no cycle triggered for this push "
                                                                               "(untracked branch or repository)"})

    return Starlette(routes=[
        Route("/webhook", receive, methods=["POST"]),
        Route("/webhook/{provider}", receive, methods=["POST"]),
    ])


# -- serving -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Per-connection bounds of one port (see the module docstring)."""

    header_timeout: float = 10.0  # request line + headers, from connect or from the previous response
    keep_alive: float = 5.0  # idle time allowed between requests on one connection
    max_connections: int = 100  # served at once; the next one gets a 503 and is closed

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.keep_alive <= 0 or self.max_connections < 1:
            raise ValueError("HTTP limits must be positive")


_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: 20\r\n\r\nService Unavailable\n")


def _guarded_protocol(limits: Limits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request-head deadline, a connection bound and
    close-instead-of-drain after an early response."""

    class GuardedH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("connection refused: too many open connections",
                            extra={"limit": limits.max_connections})
                transport.write(_REFUSED)
                transport.close()
                return
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # still waiting for (the rest of) a request head
                if self._head_deadline is None and not self.transport.is_closing():
                    self._arm_head_deadline()
            else:
                self._cancel_head_deadline()

        def on_response_complete(self) -> None:
            unread_body = self.conn.their_state is h11.SEND_BODY
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if unread_body:
                # answered before the request body was read: close rather than drain it
                self._cancel_head_deadline()
                self.transport.close()
            elif self.conn.their_state is h11.IDLE:
                self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._cancel_head_deadline()
            self._head_deadline = self.loop.call_later(limits.header_timeout, self._head_timed_out)

        def _cancel_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                log.info("connection closed: no complete request head in time",
                         extra={"timeout": limits.header_timeout})
                self.transport.close()

    return GuardedH11Protocol


class _ThreadServer(uvicorn.Server):
    """A uvicorn server that can run off the main thread: it never touches signal handlers
    (the process's own handlers stop it through :meth:`ServerThread.stop`)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class ServerThread:
    """One ASGI app served by uvicorn in a background daemon thread on (host, port)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, name: str = "http",
                 graceful_timeout: float = 5.0, limits: Limits | None = None) -> None:
        self.host, self.name = host, name
        self.limits = limits or Limits()
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=max(1, int(graceful_timeout)),
                                http=_guarded_protocol(self.limits),
                                timeout_keep_alive=max(1, math.ceil(self.limits.keep_alive)),
                                # uvicorn counts the connection asking: +1 so both checks agree
                                limit_concurrency=self.limits.max_connections + 1)
        self._server = _ThreadServer(config)
        self._thread = threading.Thread(target=self._run, name=f"{name}-server", daemon=True)
        self._error: BaseException | None = None
        self._port: int | None = None

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as e:  # SystemExit when the port cannot be bound
            self._error = e
        finally:
            self._server.ready.set()

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; returns once the socket accepts connections (or raises)."""
        self._thread.start()
        if not self._server.ready.wait(timeout):
            self._server.should_exit = True
            raise TimeoutError(f"{self.name} server did not start within {timeout:g}s")
        if not self._server.started:
            raise RuntimeError(f"{self.name} server could not listen on {self.host}:{self._server.config.port}"
                               f" ({type(self._error).__name__ if self._error else 'startup failed'};"
                               " see the log)")
        self._port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when started with port 0)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} server is not running")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started and not self._server.should_exit

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish, join the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(1.0)


def by_path(prefixes: dict[str, App], default: App) -> App:
    """One port, several apps: the webhook under /webhook, the dashboard everywhere else."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") in ("http", "websocket") else ""
        for prefix, target in prefixes.items():
            if path == prefix or path.startswith(prefix + "/"):
                await target(scope, receive, send)
                return
        await default(scope, receive, send)

    return app
