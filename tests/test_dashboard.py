"""The web dashboard over real sockets, against a fake DashboardSource.

The fake holds six executions — a Failed one with a natural-language summary, a Skipped
ResourceBusy, a Running, a Suspended Pending, a Completed, and one whose fields carry
XSS payloads — so every page is checked for status codes, JSON shapes, security headers,
read-only-ness and escaping.  The browser-level checks are in test_dashboard_browser.py.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from reconciler.service.dashboard import CONTENT_SECURITY_POLICY, DashboardSource, dashboard_app
from reconciler.service.httpserver import ServerThread
from reconciler.views.dashboard_pages import Filters, script_json, valid_name

SHA_DECLARED = "3f9c2a1b7d4e5f60718293a4b5c6d7e8f9012345"
SHA_S1 = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
SHA_S2 = "b2c3d4e5f60718293a4b5c6d7e8f901234567890"
SHA_S3 = "c3d4e5f60718293a4b5c6d7e8f90123456789012"
REVISION = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a291807"

NL_SUMMARY = ("The increase-memory-limit workflow ran and failed: step patch-deployment of task apply was "
              "OOMKilled (exit code 137) after 41s. The Deployment may already carry the new limit; "
              "check payments/Deployment/payment-api before retrying.")

# payloads: each sets window.__xss or opens a dialog if it ever runs
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
XSS_CLOSE = "</script><script>alert(2)</script>"
XSS_FLAG = '<img src=x onerror="window.__xss=1">'
XSS_SVG = "'><svg onload=window.__xss=1>"
XSS_STYLE = '<style>body{display:none}</style><a href="javascript:window.__xss=1">x</a>'
PAYLOADS = (XSS_SCRIPT, XSS_IMG, XSS_CLOSE, XSS_FLAG, XSS_SVG, XSS_STYLE)
RAW_MARKERS = ("<script>alert", "<img src=x", "<svg onload", "<style>body", 'href="javascript:', "</script><script>")


def _row(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name, "target": f"payments/Deployment/{name}", "workflow": "increase-memory-limit@1.2.0",
        "engine": "tekton", "phase": "Completed", "reason": "Succeeded", "message": "all tasks succeeded",
        "sync": "Synced", "health": "Healthy", "run": f"wfe-{name}-4f2a9c", "startTime": "2026-11-22T01:10:00Z",
        "completionTime": "2026-11-22T01:12:38Z", "duration": "2m38s", "age": "3h", "labels": {},
        "declaredIn": SHA_DECLARED,
    }
    base.update(fields)
    return base


def _detail(row: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = {
        **row,
        "spec": f"apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecution\nmetadata:\n  name: {row['name']}\n"
                f"spec:\n  targetResource: {row['target']}\n",
        "rendered": f"apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  name: {row['run'] or 'wfe-x'}\n",
        "conditions": [{"type": "Ready", "status": "True", "reason": row["reason"], "message": row["message"],
                        "lastTransitionTime": "2026-11-22T01:12:38Z"}],
        "failureDetails": {}, "skipDetails": {}, "executionStatus": {},
        "timeline": [
            {"time": "2026-11-22T01:09:58Z", "phase": "Pending", "reason": "Accepted", "message": "queued",
             "commit": SHA_S1},
            {"time": "2026-11-22T01:10:02Z", "phase": "Running", "reason": "Started", "message": "run created",
             "commit": SHA_S2},
            {"time": "2026-11-22T01:12:40Z", "phase": row["phase"], "reason": row["reason"],
             "message": row["message"], "commit": SHA_S3},
        ],
        "declaredCommit": {"sha": SHA_DECLARED, "author": "Dana SRE", "time": "2026-11-22T01:09:00Z",
                           "subject": f"remediate: declare {row['name']}"},
        "statusCommits": [
            {"sha": SHA_S3, "time": "2026-11-22T01:12:40Z", "subject": f"status: {row['name']} {row['phase']}"},
            {"sha": SHA_S2, "time": "2026-11-22T01:10:02Z", "subject": f"status: {row['name']} Running"},
            {"sha": SHA_S1, "time": "2026-11-22T01:09:58Z", "subject": f"status: {row['name']} Pending"},
        ],
    }
    out.update(fields)
    return out


def sample_details() -> dict[str, dict[str, Any]]:
    failed = _row("oom-payment-api", phase="Failed", reason="OOMKilled", sync="Synced", health="Degraded",
                  message="step patch-deployment was OOMKilled", duration="41s",
                  labels={"team": "payments", "severity": "critical"})
    skipped = _row("restart-checkout", target="shop/Deployment/checkout", workflow="restart-pods@2.0.1",
                   phase="Skipped", reason="ResourceBusy", health="Healthy", run="", startTime="",
                   completionTime="", duration="",
                   message="another execution (oom-payment-api) holds shop/Deployment/checkout",
                   labels={"team": "shop"})
    running = _row("db-failover", target="data/StatefulSet/postgres", workflow="failover-primary@0.3.0",
                   phase="Running", reason="Started", message="2 of 5 tasks completed", sync="Synced",
                   health="Progressing", completionTime="", duration="1m12s", age="2m",
                   labels={"team": "data"})
    suspended = _row("scale-search", target="search/Deployment/indexer", workflow="scale-out@1.0.0",
                     engine="job", phase="Pending", reason="Held", message="held: outside the change window",
                     sync="OutOfSync", health="Suspended", run="", startTime="", completionTime="", duration="",
                     age="15m", labels={"team": "search"})
    completed = _row("rotate-certs", target="Namespace/ingress", workflow="rotate-certificates@1.4.2",
                     labels={"team": "platform"})
    xss = _row("xss-probe", target=XSS_SCRIPT, workflow=XSS_IMG + "@1.0.0", phase="Failed", reason=XSS_FLAG,
               health="Degraded", message=XSS_SCRIPT + " " + XSS_IMG, run=XSS_SVG,
               labels={"note": XSS_CLOSE, XSS_SVG: XSS_STYLE})
    details = {
        "oom-payment-api": _detail(failed, failureDetails={
            "failedTaskIndex": 1, "failedTaskName": "apply", "failedStepName": "patch-deployment",
            "reason": "OOMKilled", "message": "container patch-deployment was OOMKilled", "exitCode": 137,
            "failedAt": "2026-11-22T01:10:43Z", "executionTimeBeforeFailure": "41s",
            "naturalLanguageSummary": NL_SUMMARY, "wasExecutionFailure": True},
            executionStatus={"status": "False", "reason": "Failed", "message": "Tasks Completed: 2 (Failed: 1)",
                             "completedTasks": 1, "totalTasks": 3}),
        "restart-checkout": _detail(skipped, rendered="", skipDetails={
            "reason": "ResourceBusy", "message": skipped["message"], "conflictingExecution": "oom-payment-api"}),
        "db-failover": _detail(running, executionStatus={"status": "Unknown", "reason": "Running",
                                                         "message": "Tasks Completed: 2", "completedTasks": 2,
                                                         "totalTasks": 5}),
        "scale-search": _detail(suspended, rendered="", timeline=[], statusCommits=[]),
        "rotate-certs": _detail(completed),
        "xss-probe": _detail(
            xss,
            spec=f"metadata:\n  name: xss-probe\n  annotations:\n    a: '{XSS_CLOSE}'\n    b: '{XSS_FLAG}'\n",
            rendered=f"# {XSS_SCRIPT}\n",
            conditions=[{"type": XSS_SCRIPT, "status": XSS_IMG, "reason": XSS_FLAG, "message": XSS_CLOSE,
                         "lastTransitionTime": XSS_SVG}],
            failureDetails={"reason": "TaskFailed", "message": XSS_FLAG,
                            "naturalLanguageSummary": XSS_SCRIPT + " summary " + XSS_CLOSE,
                            XSS_SVG: XSS_STYLE},
            skipDetails={"reason": XSS_SCRIPT, "conflictingExecution": XSS_IMG},
            timeline=[{"time": XSS_SCRIPT, "phase": XSS_IMG, "reason": XSS_FLAG, "message": XSS_CLOSE,
                       "commit": XSS_SVG}],
            declaredCommit={"sha": XSS_IMG, "author": XSS_SCRIPT, "time": XSS_FLAG, "subject": XSS_CLOSE},
            statusCommits=[{"sha": XSS_SVG, "time": XSS_STYLE, "subject": XSS_SCRIPT}],
        ),
    }
    return details


class FakeSource:
    """A DashboardSource whose data tests can change while the server runs."""

    ROW_KEYS = ("name", "target", "workflow", "engine", "phase", "reason", "message", "sync", "health", "run",
                "startTime", "completionTime", "duration", "age", "labels", "declaredIn")

    def __init__(self, details: dict[str, dict[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._details = details if details is not None else sample_details()
        self.looked_up: list[str] = []
        self.repository = "https://git.example.com/sre/remediations.git"
        self.revision = REVISION

    def summary(self) -> dict[str, Any]:
        with self._lock:
            rows = [self._as_row(d) for d in self._details.values()]
        phases = {p: 0 for p in ("Pending", "Running", "Completed", "Failed", "Skipped")}
        sync = {s: 0 for s in ("Synced", "OutOfSync", "Unknown")}
        for r in rows:
            phases[r["phase"]] = phases.get(r["phase"], 0) + 1
            sync[r["sync"]] = sync.get(r["sync"], 0) + 1
        order = ["Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"]
        health = max((r["health"] for r in rows), key=order.index, default="Healthy")
        return {"repository": self.repository, "branch": "main", "revision": self.revision, "health": health,
                "phases": phases, "sync": sync, "generatedAt": "2026-11-22T04:30:00Z", "leader": True}

    def _as_row(self, detail: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy({k: detail[k] for k in self.ROW_KEYS})

    def executions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._as_row(d) for d in self._details.values()]

    def execution(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.looked_up.append(name)
            found = self._details.get(name)
            return copy.deepcopy(found) if found is not None else None

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self._details[name].update(fields)

    def add(self, detail: dict[str, Any]) -> None:
        with self._lock:
            self._details[detail["name"]] = detail

    def remove(self, name: str) -> None:
        with self._lock:
            del self._details[name]


@contextmanager
def serve(source: DashboardSource, **options: Any) -> Iterator[ServerThread]:
    server = ServerThread(dashboard_app(source, **options), "127.0.0.1", 0, name="dashboard").start(timeout=10)
    try:
        yield server
    finally:
        server.stop()


class Delegate:
    """One server for the module; each test points it at its own source."""

    def __init__(self) -> None:
        self.target: DashboardSource = FakeSource()

    def summary(self) -> dict[str, Any]:
        return self.target.summary()

    def executions(self) -> list[dict[str, Any]]:
        return self.target.executions()

    def execution(self, name: str) -> dict[str, Any] | None:
        return self.target.execution(name)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Delegate, ServerThread]]:
    delegate = Delegate()
    with serve(delegate) as server:
        yield delegate, server


@pytest.fixture()
def source(shared: tuple[Delegate, ServerThread]) -> FakeSource:
    fake = FakeSource()
    shared[0].target = fake
    return fake


@pytest.fixture()
def client(shared: tuple[Delegate, ServerThread], source: FakeSource) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared[1].url, timeout=10) as c:
        yield c


def tbody_names(html: str) -> list[str]:
    body = html.split('<tbody id="rows">', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<tr data-name="([^"]*)">', body)


def embedded_json(html: str) -> str:
    m = re.search(r'<script type="application/json" id="executions-data">(.*?)</script>', html, re.S)
    assert m, "the executions page embeds its data"
    return m.group(1)


# -- pages ---------------------------------------------------------------------------------

def test_source_fake_satisfies_the_protocol(source: FakeSource) -> None:
    assert isinstance(source, DashboardSource)


def test_executions_page_lists_everything(client: httpx.Client, source: FakeSource) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    html = r.text
    assert tbody_names(html) == list(sample_details())
    assert '<span id="repo-health" class="badge badge-lg health-Degraded">Degraded</span>' in html
    assert source.repository in html
    assert '<code id="repo-revision" title="' + REVISION + '">9e8d7c6</code>' in html
    assert '<code id="repo-branch">main</code>' in html
    assert '<span class="n" data-count="phases.Failed">2</span>' in html
    assert '<span class="n" data-count="sync.OutOfSync">1</span>' in html
    assert '<a class="name" href="/executions/oom-payment-api">oom-payment-api</a>' in html
    assert 'class="badge health-Suspended">Suspended</span>' in html
    assert 'class="badge sync-OutOfSync">OutOfSync</span>' in html
    assert "6 of 6 executions" in html
    assert 'data-refresh-ms="5000"' in html
    assert '<script src="/static/dashboard.js?v=' in html
    assert '<link rel="stylesheet" href="/static/dashboard.css?v=' in html


def test_refresh_interval_and_title_are_configurable(source: FakeSource) -> None:
    with serve(source, title="prod remediations", refresh_seconds=0.25) as server:
        html = httpx.get(server.url + "/", timeout=10).text
    assert 'data-refresh-ms="250"' in html
    assert "<title>prod remediations</title>" in html


def test_embedded_data_is_script_safe_json(client: httpx.Client, source: FakeSource) -> None:
    raw = embedded_json(client.get("/").text)
    assert not set(raw) & set("<>&")
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(2)" in raw
    assert json.loads(raw) == source.executions()


@pytest.mark.parametrize(("query", "expected"), [
    ("phase=Failed", ["oom-payment-api", "xss-probe"]),
    ("phase=Skipped", ["restart-checkout"]),
    ("health=Suspended", ["scale-search"]),
    ("sync=OutOfSync", ["scale-search"]),
    ("health=Degraded&sync=Synced", ["oom-payment-api", "xss-probe"]),
    ("q=team%3Dpayments", ["oom-payment-api"]),
    ("q=TEAM%3DPayments", ["oom-payment-api"]),
    ("q=team%3Dpay", []),
    ("q=postgres", ["db-failover"]),
    ("q=restart-pods", ["restart-checkout"]),
    ("q=payment+critical", ["oom-payment-api"]),
    ("q=platform", ["rotate-certs"]),
    ("q=nothing-matches", []),
    ("phase=Bogus&health=%3Cscript%3E", list(sample_details())),  # unknown values are ignored
])
def test_server_side_filters_follow_the_query(client: httpx.Client, query: str, expected: list[str]) -> None:
    html = client.get("/?" + query).text
    assert tbody_names(html) == expected
    if not expected:
        assert "No executions match these filters." in html
    assert f"{len(expected)} of 6 executions" in html
    # the table is filtered, the embedded data (what the script filters) is not
    assert len(json.loads(embedded_json(html))) == 6


def test_filters_echo_into_the_form(client: httpx.Client) -> None:
    html = client.get("/", params={"phase": "Failed", "q": 'x" autofocus onfocus="alert(1)'}).text
    assert '<option value="Failed" selected>Failed</option>' in html
    assert 'value="x&#34; autofocus onfocus=&#34;alert(1)"' in html
    assert 'onfocus="alert' not in html


@pytest.mark.parametrize(("row", "query", "expected"), [
    ({"name": "a", "labels": {"team": "payments"}}, "team=payments", True),
    ({"name": "a", "labels": {"team": "payments"}}, "team=pay", False),
    ({"name": "a", "labels": {"team": "payments"}}, "pay", True),
    ({"name": "a", "labels": {"team": "payments"}}, "team", True),
    ({"name": "a", "labels": {"myteam": "payments"}}, "team=payments", False),
    ({"name": "oom-x", "target": "ns/Deployment/api", "workflow": "w@1"}, "OOM api w@1", True),
    ({"name": "oom-x", "target": "ns/Deployment/api"}, "oom missing", False),
    ({"name": "a=b"}, "a=b", True),  # a term with '=' still matches name/target/workflow text
    ({"name": "a", "labels": None}, "x", False),
    ({"name": "a"}, "   ", True),
])
def test_filter_rules(row: dict[str, Any], query: str, expected: bool) -> None:
    assert Filters(q=query).matches(row) is expected


def test_detail_page_of_a_failed_execution(client: httpx.Client) -> None:
    r = client.get("/executions/oom-payment-api")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert f'<p class="nl-summary" id="failure-summary">{NL_SUMMARY}</p>' in html
    assert "The workflow ran and failed: it may have changed the cluster." in html
    assert "<dt>failedStepName</dt><dd>patch-deployment</dd>" in html
    assert "<dt>exitCode</dt><dd>137</dd>" in html
    assert "<dt>wasExecutionFailure</dt><dd>true</dd>" in html
    assert '<dt>failedAt</dt><dd><time datetime="2026-11-22T01:10:43Z"' in html
    assert 'class="badge phase-Failed">Failed</span>' in html
    assert 'class="badge health-Degraded">Degraded</span>' in html
    # timeline with short commit shas, oldest first
    timeline = html.split('id="timeline"', 1)[1].split("</table>", 1)[0]
    assert [m for m in re.findall(r'<code class="sha" title="([0-9a-f]{40})">([0-9a-f]{7})</code>', timeline)] == [
        (SHA_S1, SHA_S1[:7]), (SHA_S2, SHA_S2[:7]), (SHA_S3, SHA_S3[:7])]
    assert '<time datetime="2026-11-22T01:10:02Z" title="2026-11-22T01:10:02Z">2026-11-22 01:10:02 UTC</time>' in html
    # commits
    assert "remediate: declare oom-payment-api" in html and "Dana SRE" in html
    assert html.count("status: oom-payment-api ") == 3
    # conditions, run progress, spec and rendered manifest
    assert 'class="cond cond-True">True</span>' in html
    assert '<progress value="1" max="3"></progress>' in html
    assert '<pre class="code" id="spec"><code>apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecution' in html
    assert '<pre class="code" id="rendered"><code>apiVersion: tekton.dev/v1\nkind: PipelineRun' in html


def test_detail_page_of_a_skipped_execution_links_the_conflict(client: httpx.Client) -> None:
    html = client.get("/executions/restart-checkout").text
    assert "Why it did not run" in html
    assert '<dd><a href="/executions/oom-payment-api">oom-payment-api</a></dd>' in html
    assert "Nothing rendered." in html
    assert 'id="failure"' not in html


def test_detail_page_with_no_history(client: httpx.Client) -> None:
    html = client.get("/executions/scale-search").text
    assert "No phase transitions recorded yet." in html
    assert "No status recorded yet." in html
    assert 'class="badge health-Suspended">Suspended</span>' in html


@pytest.mark.parametrize("name", ["no-such-execution", "x"])
def test_unknown_execution_is_a_404_page(client: httpx.Client, source: FakeSource, name: str) -> None:
    r = client.get(f"/executions/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text
    assert source.looked_up == [name]


@pytest.mark.parametrize("path", [
    "UPPER", "a_b", "-leading", "trailing-", "a.b", "a" * 64, "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "caf%C3%A9", "a..b", "%2e%2e", "a%00b", "a%2Fb",
])
def test_invalid_names_are_404_without_a_lookup(client: httpx.Client, source: FakeSource, path: str) -> None:
    page = client.get(f"/executions/{path}")
    assert page.status_code == 404
    assert "<script>" not in page.text
    api = client.get(f"/api/executions/{path}")
    assert api.status_code == 404
    assert api.json()["error"] == "not found"
    assert source.looked_up == []


def test_unknown_paths_are_404(client: httpx.Client) -> None:
    r = client.get("/nothing/here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/api/nothing")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


def test_valid_name() -> None:
    assert valid_name("oom-payment-api") and valid_name("a") and valid_name("a" * 63)
    assert not any(valid_name(n) for n in ("", "A", "a" * 64, "a-", "-a", "a.b", "é", None, 5))


# -- JSON ----------------------------------------------------------------------------------

def test_api_summary(client: httpx.Client, source: FakeSource) -> None:
    r = client.get("/api/summary")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body == source.summary()
    assert set(body) == {"repository", "branch", "revision", "health", "phases", "sync", "generatedAt", "leader"}
    assert body["health"] == "Degraded"
    assert body["phases"] == {"Pending": 1, "Running": 1, "Completed": 1, "Failed": 2, "Skipped": 1}


def test_api_executions(client: httpx.Client, source: FakeSource) -> None:
    r = client.get("/api/executions")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    rows = r.json()
    assert rows == source.executions()
    assert [x["name"] for x in rows] == list(sample_details())
    assert all(set(x) == set(FakeSource.ROW_KEYS) for x in rows)


def test_api_execution(client: httpx.Client, source: FakeSource) -> None:
    r = client.get("/api/executions/oom-payment-api")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body == source.execution("oom-payment-api")
    assert body["failureDetails"]["naturalLanguageSummary"] == NL_SUMMARY
    assert [e["phase"] for e in body["timeline"]] == ["Pending", "Running", "Failed"]
    r = client.get("/api/executions/no-such-execution")
    assert r.status_code == 404
    assert r.json() == {"error": "not found", "name": "no-such-execution"}


def test_api_carries_payloads_verbatim_as_json(client: httpx.Client) -> None:
    r = client.get("/api/executions/xss-probe")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.json()["target"] == XSS_SCRIPT


# -- security ------------------------------------------------------------------------------

def assert_secure(r: httpx.Response) -> None:
    assert r.headers["content-security-policy"] == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", [
    "/", "/?phase=Failed", "/executions/oom-payment-api", "/executions/nope", "/executions/BAD", "/api/summary",
    "/api/executions", "/api/executions/xss-probe", "/api/executions/nope", "/static/dashboard.css",
    "/static/dashboard.js", "/static/nope.js", "/nothing",
])
def test_security_headers_on_every_response(client: httpx.Client, path: str) -> None:
    assert_secure(client.get(path))


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/executions/oom-payment-api", "/api/executions", "/api/summary",
                                  "/api/executions/oom-payment-api", "/static/dashboard.js", "/nothing"])
def test_read_only(client: httpx.Client, source: FakeSource, method: str, path: str) -> None:
    r = client.request(method, path, content=b"{}")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert_secure(r)
    if path.startswith("/api/"):
        assert r.json() == {"error": "method not allowed: the dashboard is read-only"}
    assert source.looked_up == []


def test_head_is_allowed(client: httpx.Client) -> None:
    for path in ("/", "/api/executions", "/static/dashboard.css"):
        r = client.head(path)
        assert r.status_code == 200
        assert r.content == b""
        assert_secure(r)


@pytest.mark.parametrize("path", ["/", "/?q=" + XSS_SCRIPT, "/?q=" + XSS_IMG, "/executions/xss-probe",
                                  "/executions/oom-payment-api", "/executions/restart-checkout"])
def test_payloads_are_escaped_in_html(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    html = r.text
    for marker in RAW_MARKERS:
        assert marker not in html, marker
    tags = Tags.of(html)
    # the only script elements are the page's own: the external script, at most one JSON island
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts[0]["src"].startswith("/static/dashboard.js?v=")
    assert all(s == {"type": "application/json", "id": "executions-data"} for s in scripts[1:])
    assert len(scripts) == (2 if path.startswith("/?") or path == "/" else 1)
    # nothing inline that the CSP would have to block, nothing loaded from elsewhere
    for tag, attrs in tags:
        assert tag not in ("style", "iframe", "object", "embed", "img", "svg", "base", "form") or (
            tag == "form" and attrs["action"] == "/") or (tag == "svg" and attrs.get("class") == "logo"), tag
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)
        for key in ("src", "href", "action"):
            value = attrs.get(key) or ""
            assert not re.match(r"\s*(?:[a-z][a-z0-9+.-]*:|//)", value, re.I), (tag, key, value)


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    @classmethod
    def of(cls, html: str) -> list[tuple[str, dict[str, str]]]:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser.tags


def test_payloads_show_as_text(client: httpx.Client) -> None:
    html = client.get("/executions/xss-probe").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert '<p class="nl-summary" id="failure-summary">&lt;script&gt;alert(1)&lt;/script&gt; summary' in html
    # a conflicting "execution" that is not a valid name is shown, never linked
    assert '<dd><span>&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</span></dd>' in html
    # data never chooses a CSS class
    assert 'class="badge phase-Unknown">&#34;&gt;&lt;img' in html
    assert 'class="cond cond-Unknown">' in html
    listing = client.get("/").text
    assert '<span class="label">note=&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;</span>' in listing
    assert '<span class="mono">&lt;script&gt;alert(1)&lt;/<wbr>script&gt;</span>' in listing
    assert '<span class="mono">increase-memory-limit@<wbr>1.2.0</span>' in listing
    assert '<span class="mono">payments/<wbr>Deployment/<wbr>oom-payment-api</span>' in listing


def test_script_json_cannot_break_out() -> None:
    text = str(script_json({"a": "</script><!-- & \u2028", "b": [1, None]}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028", "b": [1, None]}


# -- static files --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content_type"), [
    ("dashboard.css", "text/css; charset=utf-8"),
    ("dashboard.js", "text/javascript; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
])
def test_static_assets(client: httpx.Client, name: str, content_type: str) -> None:
    r = client.get(f"/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    etag = r.headers["etag"]
    assert r.headers["cache-control"] == "no-cache"
    again = client.get(f"/static/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    # no CDN, no web fonts, no framework: nothing is fetched from elsewhere
    assert not re.search(r"(?:url\(|import|fetch\()\s*['\"]?(?:https?:)?//", r.text)
    assert "@font-face" not in r.text
    assert ".innerHTML" not in r.text and "outerHTML" not in r.text and "insertAdjacentHTML" not in r.text
    assert "eval(" not in r.text and "document.write" not in r.text


@pytest.mark.parametrize("path", [
    "/static/nope.css", "/static/executions.html", "/static/base.html", "/static/__init__.py",
    "/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/..%2fdashboard.py",
    "/static/%2e%2e%2f%2e%2e%2fhttpserver.py", "/static/", "/static/templates/base.html",
])
def test_static_serves_only_the_assets(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "import" not in r.text


# -- failures of the source ----------------------------------------------------------------

class BrokenSource:
    def summary(self) -> dict[str, Any]:
        raise RuntimeError("git exploded: token=s3cr3t")

    def executions(self) -> list[dict[str, Any]]:
        raise RuntimeError("git exploded: token=s3cr3t")

    def execution(self, name: str) -> dict[str, Any] | None:
        raise RuntimeError("git exploded: token=s3cr3t")


@pytest.mark.parametrize("path", ["/", "/executions/oom-payment-api", "/api/summary", "/api/executions",
                                  "/api/executions/oom-payment-api"])
def test_a_failing_source_is_a_503_without_details(shared: tuple[Delegate, ServerThread], path: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    shared[0].target = BrokenSource()
    with caplog.at_level("ERROR", logger="reconciler.dashboard"):
        r = httpx.get(shared[1].url + path, timeout=10)
    assert r.status_code == 503
    assert_secure(r)
    assert "s3cr3t" not in r.text
    if path.startswith("/api/"):
        assert r.json() == {"error": "the repository state cannot be read right now; see the reconciler's log"}
    else:
        assert "cannot be read right now" in r.text
    assert [rec.message for rec in caplog.records] == ["dashboard source failed"]
    assert "s3cr3t" in caplog.text  # the details go to the log, not to the browser


def test_a_sparse_source_still_renders(shared: tuple[Delegate, ServerThread]) -> None:
    """A provider that leaves optional keys out (or sends nulls) still gets pages, not 500s."""
    class Sparse:
        def summary(self) -> dict[str, Any]:
            return {"repository": "r", "health": "Healthy"}

        def executions(self) -> list[dict[str, Any]]:
            return [{"name": "only-name"}, {"name": "nulls", "labels": None, "phase": None}]

        def execution(self, name: str) -> dict[str, Any] | None:
            return {"name": name, "timeline": None, "conditions": [None], "failureDetails": None}

    shared[0].target = Sparse()
    with httpx.Client(base_url=shared[1].url, timeout=10) as c:
        r = c.get("/")
        assert r.status_code == 200
        assert tbody_names(r.text) == ["only-name", "nulls"]
        assert c.get("/executions/only-name").status_code == 200
        assert c.get("/api/summary").json() == {"repository": "r", "health": "Healthy"}
