"""Fake forge (GitHub, GitLab, Gitea commit-status APIs) and fake webhook/Slack receiver over
real HTTP on 127.0.0.1, for the delivery tests.

Each implements the subset the reconciler uses, faithfully enough to fail when we are wrong:

* authentication exactly as the forge expects it (GitHub ``Authorization: Bearer|token``,
  GitLab ``PRIVATE-TOKEN``, Gitea ``Authorization: token``) → 401 otherwise; a token with
  read access only → 403 without rate-limit headers;
* ``POST …/statuses/{sha}``: 201 with the created status; 422 (GitHub/Gitea) / 400 (GitLab)
  for an unknown state, a malformed sha or a commit the repository does not have; GitLab's
  400 "Cannot transition status" when a context is set to the state it already has;
* rate limits: GitHub's 403 with ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``, or
  a 429 with ``Retry-After``; ``down`` answers 503 to everything;
* ``GET`` of the repository (project) for credential checks.

The receiver verifies the webhook's HMAC-SHA256 (401 when it does not match) and answers a
Slack incoming-webhook path with ``ok``, ``invalid_payload`` (400) or ``no_service`` (404).
Everything received is recorded with its arrival time (``time.monotonic()``); waits are
condition variables notified on each request, never sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATES = {
    "github": {"pending", "success", "failure", "error"},
    "gitea": {"pending", "success", "error", "failure", "warning"},
    "gitlab": {"pending", "running", "success", "failed", "canceled"},
}
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass
class Received:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class _Server:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                if outer.down:
                    status, extra, reply = 503, {}, b'{"message":"Service Unavailable"}'
                else:
                    status, extra, reply = outer.handle(method, self.path, headers, body)
                with outer.cond:
                    outer.received.append(Received(method, self.path, status, headers, body))
                    outer.cond.notify_all()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def start(self) -> _Server:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def count(self, status: int | None = None) -> int:
        with self.cond:
            return sum(1 for r in self.received if status is None or r.status == status)


def _json(status: int, data: Any, extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(extra or {})}, json.dumps(data).encode()


class FakeForge(_Server):
    """One repository on a GitHub, GitLab or Gitea API."""

    def __init__(self, kind: str, *, token: str, repository: str = "acme/remediations",
                 readonly_token: str = "", commits: Iterable[str] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.token = token
        self.readonly_token = readonly_token
        self.repository = repository
        self.commits = set(commits) if commits is not None else None  # None: any well-formed sha
        self.statuses: list[dict[str, Any]] = []  # accepted, in arrival order
        self.rate_limited = 0  # the next N status requests are rate limited
        self.rate_limit_style = "github-403"  # or "429"
        self.reset_in = 1  # seconds (X-RateLimit-Reset / Retry-After)
        self.rate_limited_at: list[float] = []
        self._current: dict[tuple[str, str], str] = {}

    @property
    def api_url(self) -> str:
        return self.url + {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}[self.kind]

    def _auth(self, headers: dict[str, str]) -> str:
        """"ok", "readonly" or "" (unauthenticated)."""
        if self.kind == "gitlab":
            given = headers.get("private-token", "")
        else:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            allowed = {"bearer", "token"} if self.kind == "github" else {"token"}
            if scheme.lower() not in allowed:
                given = ""
        if given and hmac.compare_digest(given, self.token):
            return "ok"
        if given and self.readonly_token and hmac.compare_digest(given, self.readonly_token):
            return "readonly"
        return ""

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        prefix = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}[self.kind]
        if not path.startswith(prefix + "/"):
            return _json(404, {"message": "Not Found"})
        rest = path[len(prefix):]
        if self.kind == "gitlab":
            from urllib.parse import unquote

            match = re.fullmatch(r"/projects/([^/]+)(?:/statuses/([^/]+))?", rest)
            repo = unquote(match.group(1)) if match else ""
        else:
            match = re.fullmatch(r"/repos/([^/]+/[^/]+)(?:/statuses/([^/]+))?", rest)
            repo = match.group(1) if match else ""
        if match is None:
            return _json(404, {"message": "Not Found"})
        auth = self._auth(headers)
        if not auth:
            return _json(401, {"message": "Bad credentials" if self.kind == "github" else "401 Unauthorized"})
        if repo != self.repository:
            return _json(404, {"message": "Not Found"})
        sha = match.group(2)
        if sha is None:
            return _json(200, {"full_name": repo} if method == "GET" else {"message": "Not Found"})
        if method != "POST":
            return _json(404, {"message": "Not Found"})
        if auth == "readonly":
            return _json(403, {"message": "Resource not accessible by integration"})
        if self.rate_limited > 0:
            self.rate_limited -= 1
            self.rate_limited_at.append(time.monotonic())
            if self.rate_limit_style == "429":
                return _json(429, {"message": "Too Many Requests"}, {"Retry-After": str(self.reset_in)})
            reset = int(time.time()) + self.reset_in
            return _json(403, {"message": "API rate limit exceeded"},
                         {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0",
                          "X-RateLimit-Reset": str(reset)})
        try:
            data = json.loads(body)
        except ValueError:
            return _json(400, {"message": "Problems parsing JSON"})
        state = data.get("state")
        context = data.get("name") if self.kind == "gitlab" else data.get("context")
        invalid = 400 if self.kind == "gitlab" else 422
        if state not in STATES[self.kind] or not isinstance(context, str):
            return _json(invalid, {"message": "Validation Failed", "errors": [{"field": "state"}]})
        if not _SHA.fullmatch(sha) or (self.commits is not None and sha not in self.commits):
            return _json(422 if self.kind != "gitlab" else 404,
                         {"message": f"No commit found for SHA: {sha}"})
        with self.cond:
            if self.kind == "gitlab" and self._current.get((sha, context)) == state:
                return _json(400, {"message": f"Cannot transition status via :{state} from :{state}"})
            self._current[(sha, context)] = state
            record = {"sha": sha, "state": state, "context": context, "description": data.get("description", ""),
                      "target_url": data.get("target_url", ""), "at": time.monotonic()}
            self.statuses.append(record)
        return _json(201, {"id": len(self.statuses), **{k: v for k, v in record.items() if k != "at"}})

    def seen(self, context: str | None = None) -> list[tuple[str, str]]:
        """(sha, state) of every accepted status, in order (optionally of one context)."""
        with self.cond:
            return [(s["sha"], s["state"]) for s in self.statuses if context is None or s["context"] == context]


SLACK_PATH = "/services/T0001/B0001/slacksecretpathvalue0123"


class FakeReceiver(_Server):
    """A generic webhook receiver (``POST /hook``, HMAC-checked) and a Slack incoming webhook."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret.encode()
        self.hooks: list[dict[str, Any]] = []  # verified payloads, with their headers
        self.slack: list[dict[str, Any]] = []
        self.rate_limited = 0

    @property
    def hook_url(self) -> str:
        return self.url + "/hook"

    @property
    def slack_url(self) -> str:
        return self.url + SLACK_PATH

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST":
            return 405, {}, b""
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, {"Retry-After": "1"}, b"rate_limited"
        if path == "/hook":
            expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, headers.get("x-kubernaut-signature-256", "")):
                return 401, {}, b"bad signature"
            with self.cond:
                self.hooks.append({"headers": headers, "payload": json.loads(body)})
            return 204, {}, b""
        if path == SLACK_PATH:
            try:
                data = json.loads(body)
            except ValueError:
                return 400, {}, b"invalid_payload"
            if not isinstance(data, dict) or not data.get("text"):
                return 400, {}, b"no_text"
            with self.cond:
                self.slack.append(data)
            return 200, {"Content-Type": "text/html"}, b"ok"
        return 404, {}, b"no_service"
