"""Commit statuses (reconciler.service.forges): the state and description tables, the requests each
forge expects, what answers mean, merge commits from real Git history, and every forge's
fake over real HTTP — including rate limits and credential checks for ``doctor``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.service.config import load_config
from reconciler.service.delivery_event import Event, event_id
from reconciler.service.forges import (
    ForgeStatuses,
    ForgeTarget,
    Kind,
    classify,
    default_api_url,
    default_repository,
    description,
    merge_commit,
    state_for,
    status_request,
)
from reconciler.service.notify import check_sinks
from reconciler.service.outbound import Response
from tests.conftest import WorkRepo, git
from tests.fakeforge import FakeForge
from tests.test_delivery import TOKEN, _no_delivery_secrets_in_logs, declare, notifier, result, state

__all__ = ["_no_delivery_secrets_in_logs"]  # the autouse fixture applies here too


def ev(phase: str, reason: str = "", **kw: object) -> Event:
    return Event(event_id("oom", phase, reason), "oom", "", phase, reason, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "phase", "reason", "ran", "expected"), [
    ("github", "Pending", "", None, "pending"),
    ("github", "Pending", "CooldownActive", None, "pending"),
    ("github", "Running", "", None, "pending"),
    ("github", "Completed", "", None, "success"),
    ("github", "Failed", "OOMKilled", True, "failure"),
    ("github", "Failed", "ImagePullBackOff", False, "error"),
    ("github", "Failed", "ConfigurationError", None, "error"),  # never started
    ("github", "Failed", "TaskFailed", None, "failure"),
    ("github", "Skipped", "ResourceBusy", None, "error"),
    ("gitea", "Running", "", None, "pending"),
    ("gitea", "Skipped", "RecentlyRemediated", None, "warning"),
    ("gitea", "Failed", "ExternallyDeleted", False, "error"),
    ("gitea", "Failed", "DeadlineExceeded", True, "failure"),
    ("gitlab", "Pending", "", None, "pending"),
    ("gitlab", "Running", "", None, "running"),
    ("gitlab", "Completed", "", None, "success"),
    ("gitlab", "Failed", "OOMKilled", True, "failed"),
    ("gitlab", "Failed", "Cancelled", True, "canceled"),
    ("gitlab", "Skipped", "ResourceBusy", None, "canceled"),
])
def test_state_for(kind: Kind, phase: str, reason: str, ran: bool | None, expected: str) -> None:
    assert state_for(kind, ev(phase, reason, was_execution_failure=ran)) == expected


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d|\d\d:\d\d")


@pytest.mark.parametrize(("event", "expected"), [
    (ev("Pending"), "merged; waiting to start"),
    (ev("Pending", "CooldownActive", message="cooldown until 2026-11-21T09:05:00Z"), "waiting: CooldownActive"),
    (ev("Running", run="wfe-0123456789abcdef", message="started 2026-11-21T09:00:00Z"), "running wfe-0123456789abcdef"),
    (ev("Completed", run="wfe-1"), "completed: run wfe-1"),
    (ev("Failed", "OOMKilled", failed_task="patch", failed_step="apply",
        summary="OOMKilled at 2026-11-21T09:01:02Z after 3m"), "failed: OOMKilled in patch / apply"),
    (ev("Failed", ""), "failed: Unknown"),
    (ev("Skipped", "ResourceBusy", conflicting="other-exec"), "skipped: ResourceBusy (held by other-exec)"),
    (ev("Failed", "TaskFailed", failed_task="t" * 200), "failed: TaskFailed in " + "t" * 117 + "…"),
])
def test_descriptions_are_stable_short_and_timeless(event: Event, expected: str) -> None:
    text = description(event)
    assert text == expected and len(text) <= 140 and not TIMESTAMP.search(text)


@pytest.mark.parametrize(("kind", "url", "api", "repository"), [
    ("github", "https://github.com/acme/remediations.git", "https://api.github.com", "acme/remediations"),
    ("github", "git@github.com:acme/remediations.git", "https://api.github.com", "acme/remediations"),
    ("github", "https://x-access-token:tok@ghe.example.com/acme/ops", "https://ghe.example.com/api/v3", "acme/ops"),
    ("gitlab", "https://gitlab.example.com/group/sub/project.git", "https://gitlab.example.com/api/v4", "group/sub/project"),
    ("gitlab", "ssh://git@gitlab.com:2222/group/project.git", "https://gitlab.com/api/v4", "group/project"),
    ("gitea", "https://gitea.example.com/ops/remediations", "https://gitea.example.com/api/v1", "ops/remediations"),
    ("gitea", "/srv/git/local-repo", "", "srv/git/local-repo"),  # a local path: no API can be derived
])
def test_defaults_from_the_repository_url(kind: Kind, url: str, api: str, repository: str) -> None:
    assert default_api_url(kind, url) == api
    assert default_repository(url) == repository


@pytest.mark.parametrize(("kind", "path", "auth"), [
    ("github", "/repos/acme/ops/statuses/" + "a" * 40, ("Authorization", "Bearer T0k")),
    ("gitea", "/repos/acme/ops/statuses/" + "a" * 40, ("Authorization", "token T0k")),
    ("gitlab", "/projects/acme%2Fops/statuses/" + "a" * 40, ("PRIVATE-TOKEN", "T0k")),
])
def test_status_request(kind: Kind, path: str, auth: tuple[str, str]) -> None:
    import json

    request = status_request(ForgeTarget(kind, "https://api.example", "acme/ops"), "T0k", "a" * 40,
                             ev("Completed", run="wfe-1"), "https://dash.example/executions/oom")
    assert request.method == "POST" and request.url == "https://api.example" + path
    assert auth in request.headers
    body = json.loads(request.body or b"")
    assert body["state"] == "success" and body["target_url"] == "https://dash.example/executions/oom"
    assert body["name" if kind == "gitlab" else "context"] == "kubernaut/oom"


@pytest.mark.parametrize(("kind", "response", "outcome"), [
    ("github", Response(201), "delivered"),
    ("github", Response(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "+30"}), "retry"),  # now + 30s
    ("github", Response(403, {"retry-after": "60"}), "retry"),  # secondary rate limit
    ("github", Response(403, body=b'{"message":"Resource not accessible by integration"}'), "retry"),
    ("github", Response(422, body=b'{"message":"No commit found for SHA: abc"}'), "drop"),
    ("gitlab", Response(400, body=b'{"message":"Cannot transition status via :run from :running"}'), "delivered"),
    ("gitlab", Response(400, body=b'{"message":"state is invalid"}'), "drop"),
    ("gitea", Response(404), "drop"),
])
def test_classify_forge_answers(kind: Kind, response: Response, outcome: str) -> None:
    now = time.time()
    if response.headers.get("x-ratelimit-reset") == "+30":  # relative to the moment the test runs
        response = Response(response.status, {**response.headers, "x-ratelimit-reset": str(int(now) + 30)})
    result = classify(kind, response, 1, now, base=1.0, cap=300.0)
    assert result.kind == outcome
    if response.headers.get("retry-after"):
        assert result.delay == 60.0
    if response.headers.get("x-ratelimit-reset"):
        assert 29.0 <= result.delay <= 32.0


def test_merge_commit_from_real_history(tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "r")
    repo.commit("base")
    repo.git("checkout", "-q", "-b", "pr")
    declared = repo.commit("declare", **{"executions/x.yaml": "x"})
    repo.git("checkout", "-q", "main")
    repo.commit("meanwhile", **{"other.txt": "y"})
    git(repo.path, "merge", "-q", "--no-ff", "pr", "-m", "Merge pull request #7")
    merged = repo.git("rev-parse", "HEAD")
    later = repo.commit("later")
    assert merge_commit(repo.path, declared, later) == merged
    assert merge_commit(repo.path, merged, later) == ""  # on the first-parent line itself
    assert merge_commit(repo.path, later, later) == ""
    assert merge_commit(repo.path, "f" * 40, later) == ""  # unknown here
    assert merge_commit(repo.path, "--upload-pack=evil", later) == ""  # never an option


@pytest.fixture(params=["github", "gitlab", "gitea"])
def any_forge(request: pytest.FixtureRequest) -> Iterator[FakeForge]:
    with FakeForge(request.param, token=TOKEN) as forge:
        yield forge


def test_each_forge_gets_one_status_per_transition(tmp_path: Path, any_forge: FakeForge) -> None:
    d = declare(tmp_path, "oom")
    sink = ForgeStatuses(any_forge.kind, ForgeTarget(any_forge.kind, any_forge.api_url, any_forge.repository),  # type: ignore[arg-type]
                         lambda: TOKEN)
    n = notifier([sink], tmp_path, public_url="https://kubernaut.example.com")
    n.start()
    try:
        for s in (state("oom", "Pending"), state("oom", "Pending", "CooldownActive"), state("oom", "Running"),
                  state("oom", "Running"), state("oom", "Failed", "OOMKilled", failure={"wasExecutionFailure": True})):
            n.observe(result(d, s))
        assert n.wait_empty(10)
    finally:
        n.stop()
    sha = d.commits["oom"]
    expected = {"github": ["pending", "pending", "pending", "failure"],
                "gitea": ["pending", "pending", "pending", "failure"],
                # GitLab refuses pending → pending (400 "Cannot transition"): the commit already shows it
                "gitlab": ["pending", "running", "failed"]}[any_forge.kind]
    assert any_forge.seen("kubernaut/oom") == [(sha, s) for s in expected]
    assert {s["target_url"] for s in any_forge.statuses} == {"https://kubernaut.example.com/executions/oom"}
    assert all(r.status in (201, 400) for r in any_forge.received)
    assert n.deliveries("oom")[0]["result"] == "delivered"


def test_the_merge_commit_gets_the_status_too(tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "seed")
    from tests.conftest import CATALOG, execution_yaml

    repo.commit("catalog", **{"workflows/w.yaml": CATALOG})
    repo.git("checkout", "-q", "-b", "pr")
    declared = repo.commit("declare", **{"executions/oom.yaml": execution_yaml("oom")})
    repo.git("checkout", "-q", "main")
    repo.commit("meanwhile", **{"README": "x"})
    git(repo.path, "merge", "-q", "--no-ff", "pr", "-m", "Merge pull request #1")
    merged = repo.git("rev-parse", "HEAD")
    from reconciler.source.gitsource import GitSource
    from tests.test_delivery import Declared

    source = GitSource(str(repo.path), cache_dir=tmp_path / "cache")
    revision = source.fetch()
    d = Declared(source.load(revision), revision, {"oom": declared})
    with FakeForge("github", token=TOKEN) as forge:
        sink = ForgeStatuses("github", ForgeTarget("github", forge.api_url, forge.repository), lambda: TOKEN,
                             merge=lambda c, t: merge_commit(source.cache_path, c, t))
        n = notifier([sink], tmp_path)
        n.start()
        try:
            n.observe(result(d, state("oom", "Completed")))
            assert n.wait_empty(10)
        finally:
            n.stop()
    assert forge.seen() == [(declared, "success"), (merged, "success")]


@pytest.mark.parametrize("style", ["github-403", "429"])
def test_rate_limit_is_honoured(tmp_path: Path, style: str) -> None:
    d = declare(tmp_path, "oom")
    with FakeForge("github", token=TOKEN) as forge:
        forge.rate_limited, forge.rate_limit_style, forge.reset_in = 1, style, 2
        n = notifier([ForgeStatuses("github", ForgeTarget("github", forge.api_url, forge.repository), lambda: TOKEN)],
                     tmp_path)  # our own backoff would retry after 0.05s
        n.start()
        try:
            n.observe(result(d, state("oom", "Pending")))
            assert n.wait_empty(15)
        finally:
            n.stop()
    refused, accepted = forge.received[0], forge.received[1]
    assert refused.status == (403 if style == "github-403" else 429) and accepted.status == 201
    assert forge.count() == 2  # one refusal, then exactly one retry: no hammering
    # the retry waited as told (X-RateLimit-Reset has whole seconds: at least reset_in - 1)
    assert accepted.at - refused.at >= 1.0


def test_credentials_checks_for_doctor(tmp_path: Path) -> None:
    (tmp_path / "good").write_text(TOKEN + "\n")
    (tmp_path / "bad").write_text("not-the-token\n")
    (tmp_path / "slack").write_text("https://hooks.slack.invalid/services/T/B/secret\n")
    with FakeForge("github", token=TOKEN) as gh, FakeForge("gitlab", token=TOKEN, repository="group/sub/ops") as gl:
        config = load_config(None, environ={}, overrides={
            "repository": {"url": "https://github.com/acme/remediations.git"},
            "notifications": {
                "commit_statuses": [
                    {"name": "gh", "type": "github", "apiUrl": gh.api_url, "tokenFile": str(tmp_path / "good")},
                    {"name": "gh-bad", "type": "github", "apiUrl": gh.api_url, "tokenFile": str(tmp_path / "bad")},
                    {"name": "gh-other", "type": "github", "apiUrl": gh.api_url, "repository": "acme/secret",
                     "tokenFile": str(tmp_path / "good")},
                    {"name": "gl", "type": "gitlab", "apiUrl": gl.api_url, "repository": "group/sub/ops",
                     "tokenFile": str(tmp_path / "good")},
                    {"name": "gone", "type": "gitea", "apiUrl": "http://127.0.0.1:9", "repository": "a/b",
                     "tokenFile": str(tmp_path / "good")},
                    {"name": "nofile", "type": "gitea", "apiUrl": gh.api_url, "tokenFile": str(tmp_path / "absent")},
                ],
                "slack": [{"name": "oncall", "webhookUrlFile": str(tmp_path / "slack")}],
            }})
        results = {r.sink: r for r in check_sinks(config, timeout=5)}
    assert results["gh"].ok is True and "acme/remediations" in results["gh"].message
    assert results["gh-bad"].ok is False and "401" in results["gh-bad"].message
    assert results["gh-other"].ok is False and "cannot see acme/secret" in results["gh-other"].message
    assert results["gl"].ok is True
    assert results["gone"].ok is False and "unreachable" in results["gone"].message
    assert results["nofile"].ok is False and "cannot read" in results["nofile"].message
    assert results["oncall"].ok is None and "without posting" in results["oncall"].message
    for r in results.values():
        assert TOKEN not in r.message and "services/T/B/secret" not in r.message
