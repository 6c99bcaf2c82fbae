"""The HTTP surfaces over real sockets: health, metrics, webhook, and the server thread."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.service.httpserver import ServerThread, health_app, metrics_app, webhook_app
from reconciler.service.metrics import Metrics
from reconciler.service.webhook import PushEvent, signature

from .test_metrics import value
from .test_webhook import (
    GITEA_PUSH,
    GITHUB_PUSH,
    GITLAB_PUSH,
    SECRET,
    ZERO,
    body_of,
    gitea_headers,
    github_headers,
    gitlab_headers,
)

LIMIT = 1024


@contextmanager
def serving(app: ASGIApp) -> Iterator[httpx.Client]:
    server = ServerThread(app, "127.0.0.1", 0, name="test").start(timeout=10)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client
    finally:
        server.stop()


# -- health --------------------------------------------------------------------------------

@pytest.mark.parametrize(("live", "ready", "live_status", "ready_status"), [
    (True, (True, "synced abc123"), 200, 200),
    (True, (False, "no successful sync yet"), 200, 503),
    (False, (False, "git unreachable"), 503, 503),
])
def test_health_and_readiness(live: bool, ready: tuple[bool, str], live_status: int, ready_status: int) -> None:
    with serving(health_app(lambda: live, lambda: ready)) as client:
        for path in ("/healthz", "/health"):
            r = client.get(path)
            assert r.status_code == live_status
            assert r.text == ("ok\n" if live else "not live\n")
        for path in ("/readyz", "/ready"):
            r = client.get(path)
            assert r.status_code == ready_status
            assert r.json() == {"ready": ready[0], "reason": ready[1]}
        assert client.get("/metrics").status_code == 404


def test_failing_probe_callbacks_answer_503() -> None:
    def boom() -> bool:
        raise RuntimeError("lock poisoned")

    def boom_ready() -> tuple[bool, str]:
        raise RuntimeError("secret-ish detail")

    with serving(health_app(boom, boom_ready)) as client:
        assert client.get("/healthz").status_code == 503
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"ready": False, "reason": "readiness check failed: RuntimeError"}


# -- metrics -------------------------------------------------------------------------------

def test_metrics_without_token() -> None:
    m = Metrics()
    m.set_leader(True)
    with serving(metrics_app(m, None)) as client:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "version=" in r.headers["content-type"]
        assert "kubernaut_reconciler_leader 1.0" in r.text
        assert "workflowexecution_pipelinerun_creation_total 0.0" in r.text


@pytest.mark.parametrize(("authorization", "status"), [
    (None, 401),
    ("Bearer wrong", 401),
    ("Bearer t0ken-but-longer", 401),
    ("Bearer", 401),
    ("Basic dDBrZW46", 401),
    ("t0ken", 401),
    ("Bearer t0ken", 200),
    ("bearer t0ken", 200),
])
def test_metrics_with_token(authorization: str | None, status: int) -> None:
    with serving(metrics_app(Metrics(), "t0ken")) as client:
        headers = {"Authorization": authorization} if authorization is not None else {}
        r = client.get("/metrics", headers=headers)
        assert r.status_code == status
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "kubernaut_reconciler" not in r.text
        else:
            assert "kubernaut_reconciler_leader" in r.text


# -- webhook -------------------------------------------------------------------------------

class Recorder:
    """on_push: records every event; answers ``triggers``."""

    def __init__(self) -> None:
        self.events: list[PushEvent] = []
        self.triggers = True
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, event: PushEvent) -> bool:
        with self._lock:
            self.events.append(event)
        if self.fail:
            raise RuntimeError("scheduler gone")
        return self.triggers


class CountingApp:
    """ASGI wrapper counting the body bytes the app actually pulled from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


class Hook:
    def __init__(self, client: httpx.Client, recorder: Recorder, metrics: Metrics, app: CountingApp) -> None:
        self.client, self.recorder, self.metrics, self.app = client, recorder, metrics, app


SECRETS: dict[str, bytes] = {"github": SECRET, "gitlab": SECRET, "gitea": SECRET}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[httpx.Client, Recorder, Metrics, CountingApp]]:
    recorder, metrics = Recorder(), Metrics()
    app = CountingApp(webhook_app(lambda provider: SECRETS.get(provider), recorder, metrics, max_body=LIMIT))
    with serving(app) as client:
        yield client, recorder, metrics, app


@pytest.fixture
def hook(server: tuple[httpx.Client, Recorder, Metrics, CountingApp]) -> Hook:
    client, recorder, metrics, app = server
    recorder.events.clear()
    recorder.triggers, recorder.fail = True, False
    app.received = 0
    return Hook(client, recorder, metrics, app)


def webhook_count(m: Metrics, provider: str, result: str) -> float:
    return value(m, "kubernaut_reconciler_webhook_requests_total", provider=provider, result=result) or 0


GH, GL, GT = body_of(GITHUB_PUSH), body_of(GITLAB_PUSH), body_of(GITEA_PUSH)

# (case, path, headers, body, expected branch)
VALID = [
    ("github auto-detected", "/webhook", github_headers(GH), GH, "main"),
    ("github explicit", "/webhook/github", github_headers(GH), GH, "main"),
    ("gitlab auto-detected", "/webhook", gitlab_headers(), GL, "main"),
    ("gitlab explicit", "/webhook/gitlab", gitlab_headers(), GL, "main"),
    ("gitea auto-detected", "/webhook", gitea_headers(GT), GT, "develop"),
    ("gitea explicit", "/webhook/gitea", gitea_headers(GT), GT, "develop"),
]


@pytest.mark.parametrize(("case", "path", "headers", "body", "branch"), VALID, ids=[c[0] for c in VALID])
def test_valid_push_triggers_once(hook: Hook, case: str, path: str, headers: dict[str, str], body: bytes,
                                  branch: str) -> None:
    provider = path.rpartition("/")[2] if path != "/webhook" else case.split()[0]
    before = webhook_count(hook.metrics, provider, "accepted")
    r = hook.client.post(path, content=body, headers=headers)
    assert (r.status_code, r.json()) == (202, {"triggered": True})
    assert [(e.provider, e.branch) for e in hook.recorder.events] == [(provider, branch)]
    assert webhook_count(hook.metrics, provider, "accepted") == before + 1


def test_push_the_reconciler_does_not_want(hook: Hook) -> None:
    hook.recorder.triggers = False
    r = hook.client.post("/webhook", content=GH, headers=github_headers(GH))
    assert r.status_code == 202
    assert r.json()["triggered"] is False and r.json()["reason"]
    assert len(hook.recorder.events) == 1


# (case, path, headers, body, status, metrics result)
REJECTED = [
    ("bad signature", "/webhook", {**github_headers(GH), "X-Hub-Signature-256": "sha256=" + "0" * 64}, GH, 401, "unauthorized"),
    ("tampered body", "/webhook", github_headers(GH), GH.replace(b"main", b"prod"), 401, "unauthorized"),
    ("wrong gitlab token", "/webhook", gitlab_headers(token="guess"), GL, 401, "unauthorized"),
    ("gitea signed with another secret", "/webhook", gitea_headers(GT, secret=b"other"), GT, 401, "unauthorized"),
    ("github delivery at the gitlab endpoint", "/webhook/gitlab", github_headers(GH), GH, 401, "unauthorized"),
    ("no signature at all", "/webhook", {"X-GitHub-Event": "push", "Content-Type": "application/json"}, GH, 401, "unauthorized"),
    ("unknown provider path", "/webhook/bitbucket", github_headers(GH), GH, 400, "bad_request"),
    ("undetectable provider", "/webhook", {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + signature(SECRET, GH)}, GH, 400, "bad_request"),
    ("malformed json, valid signature", "/webhook", github_headers(b'{"ref": '), b'{"ref": ', 400, "bad_request"),
    ("gitlab push without ref", "/webhook", gitlab_headers(), body_of({"object_kind": "push"}), 400, "bad_request"),
]


@pytest.mark.parametrize(("case", "path", "headers", "body", "status", "result"), REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_deliveries_never_trigger(hook: Hook, case: str, path: str, headers: dict[str, str], body: bytes,
                                          status: int, result: str) -> None:
    provider = path.rpartition("/")[2] if path != "/webhook/bitbucket" else "unknown"
    if path == "/webhook":
        provider = next((p for p, h in (("gitea", "x-gitea-event"), ("gitlab", "x-gitlab-event"),
                                        ("github", "x-github-event")) if h in {k.lower() for k in headers}), "unknown")
    before = webhook_count(hook.metrics, provider, result)
    r = hook.client.post(path, content=body, headers=headers)
    assert r.status_code == status
    assert hook.recorder.events == []
    assert webhook_count(hook.metrics, provider, result) == before + 1
    if status == 401:
        assert r.json() == {"error": "unauthorized"}  # nothing about what was expected
    for secretish in (SECRET.decode(), signature(SECRET, body), headers.get("X-Hub-Signature-256", "-")):
        assert secretish not in r.text


# (case, headers, payload, reason fragment)
IGNORED = [
    ("github ping", github_headers(b"{}", event="ping"), {"zen": "Keep it logically awesome.", "hook_id": 1}, "ping"),
    ("github issues", github_headers(b"{}", event="issues"), {"action": "opened"}, "issues"),
    ("gitlab merge request", gitlab_headers("Merge Request Hook"), {"object_kind": "merge_request"}, "Merge Request Hook"),
    ("tag push", github_headers(b"{}"), {**GITHUB_PUSH, "ref": "refs/tags/v1.0.0"}, "refs/tags/v1.0.0"),
    ("branch deletion", github_headers(b"{}"), {**GITHUB_PUSH, "after": ZERO, "deleted": True}, "deleted"),
]


@pytest.mark.parametrize(("case", "headers", "payload", "reason"), IGNORED, ids=[c[0] for c in IGNORED])
def test_irrelevant_events_are_accepted_but_not_triggered(hook: Hook, case: str, headers: dict[str, str],
                                                          payload: dict[str, Any], reason: str) -> None:
    body = body_of(payload)
    if "X-Hub-Signature-256" in headers:
        headers = {**headers, "X-Hub-Signature-256": "sha256=" + signature(SECRET, body)}
    r = hook.client.post("/webhook", content=body, headers=headers)
    assert r.status_code == 202
    assert r.json()["triggered"] is False
    assert reason in r.json()["reason"]
    assert hook.recorder.events == []


def test_oversized_body_with_honest_content_length(hook: Hook) -> None:
    payload = {**GITHUB_PUSH, "padding": "x" * (4 * LIMIT)}
    body = body_of(payload)
    before = webhook_count(hook.metrics, "github", "too_large")
    r = hook.client.post("/webhook", content=body, headers=github_headers(body))
    assert r.status_code == 413
    assert hook.recorder.events == []
    assert hook.app.received == 0  # refused on Content-Length, before reading a byte
    assert webhook_count(hook.metrics, "github", "too_large") == before + 1


def test_oversized_chunked_body_lying_about_its_size(hook: Hook) -> None:
    chunks = [b"x" * 300 for _ in range(8)]  # 2400 bytes, announced as nothing (chunked)

    def body() -> Iterator[bytes]:
        yield from chunks

    headers = github_headers(b"".join(chunks))
    r = hook.client.post("/webhook", content=body(), headers=headers)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert hook.recorder.events == []


def test_chunked_body_within_the_limit_is_accepted(hook: Hook) -> None:
    def body() -> Iterator[bytes]:
        yield GH[:100]
        yield GH[100:]

    assert len(GH) <= LIMIT
    r = hook.client.post("/webhook", content=body(), headers=github_headers(GH))
    assert (r.status_code, r.json()) == (202, {"triggered": True})
    assert len(hook.recorder.events) == 1


def test_push_handler_failure_is_a_500_without_details(hook: Hook) -> None:
    hook.recorder.fail = True
    r = hook.client.post("/webhook", content=GH, headers=github_headers(GH))
    assert (r.status_code, r.json()) == (500, {"error": "internal error"})
    assert "scheduler" not in r.text


def test_provider_without_a_configured_secret_is_unauthorized() -> None:
    recorder = Recorder()
    app = webhook_app(lambda provider: SECRET if provider == "github" else None, recorder)
    with serving(app) as client:
        assert client.post("/webhook", content=GL, headers=gitlab_headers()).status_code == 401
        assert client.post("/webhook", content=GT, headers=gitea_headers(GT)).status_code == 401
        assert client.post("/webhook", content=GH, headers=github_headers(GH)).status_code == 202
    assert [e.provider for e in recorder.events] == ["github"]


def test_only_post_is_routed(hook: Hook) -> None:
    assert hook.client.get("/webhook").status_code == 405
    assert hook.client.get("/metrics").status_code == 404


def test_reading_stops_at_the_limit_on_an_endless_stream() -> None:
    """At the ASGI level: a client streaming forever is cut off after limit + one chunk."""
    app = webhook_app(lambda provider: SECRET, Recorder(), max_body=LIMIT)
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"y" * 100, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                    "scheme": "http", "path": "/webhook/github", "raw_path": b"/webhook/github", "query_string": b"",
                    "root_path": "", "headers": [(b"x-github-event", b"push"), (b"transfer-encoding", b"chunked")],
                    "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled * 100 <= LIMIT + 100
    assert json.loads(sent[1]["body"]) == {"error": f"body larger than {LIMIT} bytes"}


# -- the server thread ---------------------------------------------------------------------

def test_server_thread_binds_an_ephemeral_port_and_stops() -> None:
    a = ServerThread(health_app(lambda: True, lambda: (True, "ok"))).start()
    b = ServerThread(health_app(lambda: False, lambda: (False, "no"))).start()
    try:
        assert a.port != b.port and a.port > 0 and a.running
        assert a.url == f"http://127.0.0.1:{a.port}"
        assert httpx.get(f"{a.url}/healthz").status_code == 200
        assert httpx.get(f"{b.url}/healthz").status_code == 503
    finally:
        a.stop()
        b.stop()
    assert not a.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{b.url}/healthz")


def test_server_thread_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerThread(health_app(lambda: True, lambda: (True, "")), "127.0.0.1", port, name="health")
        with pytest.raises(RuntimeError, match=f"health server could not listen on 127.0.0.1:{port}"):
            server.start(timeout=10)
        server.stop()
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.port
