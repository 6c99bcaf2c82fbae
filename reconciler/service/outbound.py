"""The one HTTP client of the reconciler's outbound deliveries (forge statuses, webhooks, Slack).

Why a module of its own, and why ``urllib.request`` rather than ``httpx``: the delivery
worker sends a handful of small JSON POSTs per transition from one thread per sink, so the
standard library is enough and the service gains no dependency (``httpx`` is only a test
dependency).  What matters is kept here, in one place:

* **no redirects**: ``urllib`` would forward the ``Authorization``/``PRIVATE-TOKEN`` header
  to wherever a 3xx points; a redirect is returned as the answer instead (and treated by
  the sinks as a permanent error to fix in the configuration);
* **never raises** for HTTP or network trouble: a :class:`Response` with ``status=None``
  and a short reason (no URL in it — a Slack URL *is* the credential);
* bodies read up to a bound, header names lower-cased, a timeout on every request.

Everything before and after the wire (what to send, what an answer means) is pure data
in :mod:`reconciler.service.forges`, :mod:`reconciler.service.notify` and :mod:`reconciler.service.delivery`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MAX_BODY = 64 * 1024
USER_AGENT = "kubernaut-gitops-reconciler"


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


@dataclass(frozen=True)
class Response:
    status: int | None  # None: no answer (connection refused, timeout, DNS)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    error: str = ""  # why there was no answer; never holds the URL

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", errors="replace").strip()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        return None  # the 3xx becomes an HTTPError: the caller sees it, credentials stay here


_OPENER = urllib.request.build_opener(_NoRedirect)


def send(request: Request, timeout: float = 10.0) -> Response:
    """Send ``request``; every outcome is a :class:`Response` (no exception for HTTP errors)."""
    headers = {"User-Agent": USER_AGENT, **dict(request.headers)}
    req = urllib.request.Request(request.url, data=request.body, method=request.method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as answer:
            return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()},
                            answer.read(MAX_BODY))
    except urllib.error.HTTPError as e:
        try:
            body = e.read(MAX_BODY)
        except OSError:
            body = b""
        return Response(e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, body)
    except urllib.error.URLError as e:
        return Response(None, error=_reason(e.reason))
    except TimeoutError:
        return Response(None, error="timed out")
    except (OSError, ValueError) as e:  # reset by peer, a malformed URL
        return Response(None, error=_reason(e))


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return type(reason).__name__ if not isinstance(reason, str) else "connection failed"
