"""Webhook authentication and push parsing for GitHub, GitLab and Gitea (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from reconciler.service.webhook import PushEvent, WebhookError, detect_provider, header, parse_push, signature, verify

SECRET = b"s3cr3t-webhook-key"
OTHER = b"not-the-secret"
SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
BEFORE = "95790bf891e76fee5e1747ab589903a6a1f80f22"
ZERO = "0" * 40

# trimmed from the providers' documented examples: the fields a reconciler reads, plus some noise
GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main", "before": BEFORE, "after": SHA, "created": False, "deleted": False, "forced": False,
    "base_ref": None, "compare": f"https://github.com/acme/remediations/compare/{BEFORE[:12]}...{SHA[:12]}",
    "commits": [{"id": SHA, "message": "Merge pull request #42 from acme/oom-payment-api", "distinct": True}],
    "head_commit": {"id": SHA}, "pusher": {"name": "octocat", "email": "octocat@example.com"},
    "repository": {"id": 1296269, "name": "remediations", "full_name": "acme/remediations",
                   "clone_url": "https://github.com/acme/remediations.git",
                   "ssh_url": "git@github.com:acme/remediations.git",
                   "git_url": "git://github.com/acme/remediations.git", "default_branch": "main"},
    "sender": {"login": "octocat"},
}
GITLAB_PUSH: dict[str, Any] = {
    "object_kind": "push", "event_name": "push", "before": BEFORE, "after": SHA, "ref": "refs/heads/main",
    "ref_protected": True, "checkout_sha": SHA, "user_username": "jsmith", "project_id": 15,
    "project": {"id": 15, "name": "remediations", "path_with_namespace": "sre/remediations",
                "git_ssh_url": "git@gitlab.example.com:sre/remediations.git",
                "git_http_url": "https://gitlab.example.com/sre/remediations.git", "default_branch": "main"},
    "repository": {"name": "remediations", "url": "git@gitlab.example.com:sre/remediations.git",
                   "git_http_url": "https://gitlab.example.com/sre/remediations.git",
                   "git_ssh_url": "git@gitlab.example.com:sre/remediations.git"},
    "commits": [{"id": SHA, "message": "Merge branch 'oom' into 'main'"}], "total_commits_count": 1,
}
GITEA_PUSH: dict[str, Any] = {
    "ref": "refs/heads/develop", "before": BEFORE, "after": SHA,
    "compare_url": f"https://gitea.example.com/sre/remediations/compare/{BEFORE}...{SHA}",
    "commits": [{"id": SHA, "message": "Webhooks Yay!"}],
    "repository": {"id": 140, "name": "remediations", "full_name": "sre/remediations",
                   "html_url": "https://gitea.example.com/sre/remediations",
                   "clone_url": "https://gitea.example.com/sre/remediations.git",
                   "ssh_url": "git@gitea.example.com:sre/remediations.git", "default_branch": "main"},
    "pusher": {"login": "gitea"}, "sender": {"login": "gitea"},
}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def hub(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78",
            "X-GitHub-Hook-ID": "292430182", "User-Agent": "GitHub-Hookshot/044aadd",
            "X-Hub-Signature-256": hub(body, secret)}


def gitea_headers(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": "f6266f16",
            "X-Gogs-Event": event, "X-Gitea-Event": event, "X-Gitea-Delivery": "f6266f16",
            "X-Gitea-Signature": sig, "X-Gogs-Signature": sig, "X-Hub-Signature-256": "sha256=" + sig}


def gitlab_headers(event: str = "Push Hook", token: str = SECRET.decode()) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": "13792a34-cac6", "User-Agent": "GitLab/16.0.0"}


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


GH, GL, GT = body_of(GITHUB_PUSH), body_of(GITLAB_PUSH), body_of(GITEA_PUSH)

# (case, provider, headers, body, secret, authentic?)
VERIFY = [
    ("github valid", "github", github_headers(GH), GH, SECRET, True),
    ("github lower-case header names", "github", {k.lower(): v for k, v in github_headers(GH).items()}, GH, SECRET, True),
    ("github upper-case hex", "github", {**github_headers(GH), "X-Hub-Signature-256": "sha256=" + signature(SECRET, GH).upper()}, GH, SECRET, True),
    ("github tampered body", "github", github_headers(GH), GH.replace(b"main", b"prod"), SECRET, False),
    ("github wrong secret", "github", github_headers(GH, secret=OTHER), GH, SECRET, False),
    ("github missing signature", "github", without(github_headers(GH), "X-Hub-Signature-256"), GH, SECRET, False),
    ("github legacy sha1 only", "github", {**without(github_headers(GH), "X-Hub-Signature-256"), "X-Hub-Signature": "sha1=" + hmac.new(SECRET, GH, hashlib.sha1).hexdigest()}, GH, SECRET, False),
    ("github signature without prefix", "github", {**github_headers(GH), "X-Hub-Signature-256": signature(SECRET, GH)}, GH, SECRET, False),
    ("github wrong algorithm prefix", "github", {**github_headers(GH), "X-Hub-Signature-256": "sha1=" + signature(SECRET, GH)}, GH, SECRET, False),
    ("github empty configured secret", "github", github_headers(GH, secret=b""), GH, b"", False),
    ("github non-ascii garbage", "github", {**github_headers(GH), "X-Hub-Signature-256": "sha256=é" * 3}, GH, SECRET, False),
    ("gitea valid", "gitea", gitea_headers(GT), GT, SECRET, True),
    ("gitea X-Gitea-Signature alone", "gitea", without(gitea_headers(GT), "X-Hub-Signature-256", "X-Gogs-Signature"), GT, SECRET, True),
    ("gitea X-Hub-Signature-256 alone", "gitea", without(gitea_headers(GT), "X-Gitea-Signature", "X-Gogs-Signature"), GT, SECRET, True),
    ("gitea X-Gogs-Signature alone is not enough", "gitea", without(gitea_headers(GT), "X-Gitea-Signature", "X-Hub-Signature-256"), GT, SECRET, False),
    ("gitea tampered body", "gitea", gitea_headers(GT), GT + b" ", SECRET, False),
    ("gitea wrong secret", "gitea", gitea_headers(GT, secret=OTHER), GT, SECRET, False),
    ("gitea missing signatures", "gitea", without(gitea_headers(GT), "X-Gitea-Signature", "X-Hub-Signature-256"), GT, SECRET, False),
    ("gitea empty configured secret", "gitea", gitea_headers(GT, secret=b""), GT, b"", False),
    ("gitlab valid", "gitlab", gitlab_headers(), GL, SECRET, True),
    ("gitlab wrong token", "gitlab", gitlab_headers(token="guess"), GL, SECRET, False),
    ("gitlab token is not a signature", "gitlab", gitlab_headers(token=signature(SECRET, GL)), GL, SECRET, False),
    ("gitlab missing token", "gitlab", without(gitlab_headers(), "X-Gitlab-Token"), GL, SECRET, False),
    ("gitlab empty token, empty secret", "gitlab", gitlab_headers(token=""), GL, b"", False),
    ("gitlab token with a trailing space", "gitlab", gitlab_headers(token=SECRET.decode() + " "), GL, SECRET, False),
    ("github signature checked as gitlab", "gitlab", github_headers(GL), GL, SECRET, False),
    ("gitlab token checked as github", "github", gitlab_headers(), GH, SECRET, False),
    ("unknown provider", "bitbucket", github_headers(GH), GH, SECRET, False),
]


@pytest.mark.parametrize(("case", "provider", "headers", "body", "secret", "ok"), VERIFY, ids=[c[0] for c in VERIFY])
def test_verify(case: str, provider: str, headers: dict[str, str], body: bytes, secret: bytes, ok: bool) -> None:
    assert verify(provider, headers, body, secret) is ok


@pytest.mark.parametrize(("headers", "provider"), [
    (github_headers(GH), "github"),
    (gitea_headers(GT), "gitea"),  # Gitea also sends X-GitHub-Event: it must win
    (gitlab_headers(), "gitlab"),
    ({"x-gitea-event": "push", "x-github-event": "push"}, "gitea"),
    ({"Content-Type": "application/json"}, None),
    ({"X-Hub-Signature-256": hub(GH)}, None),  # a signature alone does not name a provider
])
def test_detect_provider(headers: dict[str, str], provider: str | None) -> None:
    assert detect_provider(headers) == provider


def test_header_lookup_is_case_insensitive() -> None:
    assert header({"x-gitlab-token": "t"}, "X-Gitlab-Token") == "t"
    assert header({"X-GITLAB-TOKEN": "t"}, "x-gitlab-token") == "t"
    assert header({}, "X-Gitlab-Token") is None


def event(**changes: Any) -> dict[str, Any]:
    return changes


# (case, provider, headers, payload, expected fields of the PushEvent, or None for "not a push")
PUSHES: list[tuple[str, str, dict[str, str], dict[str, Any], dict[str, Any] | None]] = [
    ("github push to main", "github", github_headers(GH), GITHUB_PUSH,
     event(branch="main", ref="refs/heads/main", after=SHA, before=BEFORE, deleted=False,
           repository="acme/remediations", http_url="https://github.com/acme/remediations.git",
           ssh_url="git@github.com:acme/remediations.git", delivery="72d3162e-cc78")),
    ("github branch with slashes", "github", github_headers(GH), {**GITHUB_PUSH, "ref": "refs/heads/release/2025.1"},
     event(branch="release/2025.1")),
    ("github tag push", "github", github_headers(GH), {**GITHUB_PUSH, "ref": "refs/tags/v1.2.0", "base_ref": "refs/heads/main"},
     event(branch=None, ref="refs/tags/v1.2.0", deleted=False)),
    ("github branch deletion", "github", github_headers(GH), {**GITHUB_PUSH, "after": ZERO, "deleted": True, "head_commit": None, "commits": []},
     event(branch="main", deleted=True, after=ZERO)),
    ("github ping", "github", github_headers(GH, event="ping"), {"zen": "Design for failure.", "hook_id": 1}, None),
    ("github issues", "github", github_headers(GH, event="issues"), {"action": "opened"}, None),
    ("github create (branch created, no commit)", "github", github_headers(GH, event="create"), {"ref": "main", "ref_type": "branch"}, None),
    ("gitlab push to main", "gitlab", gitlab_headers(), GITLAB_PUSH,
     event(branch="main", after=SHA, deleted=False, repository="sre/remediations",
           http_url="https://gitlab.example.com/sre/remediations.git",
           ssh_url="git@gitlab.example.com:sre/remediations.git", delivery="13792a34-cac6", event="Push Hook")),
    ("gitlab legacy payload without project", "gitlab", gitlab_headers(), {k: v for k, v in GITLAB_PUSH.items() if k != "project"},
     event(branch="main", http_url="https://gitlab.example.com/sre/remediations.git", repository="remediations")),
    ("gitlab branch deletion", "gitlab", gitlab_headers(), {**GITLAB_PUSH, "after": ZERO, "checkout_sha": None, "commits": [], "total_commits_count": 0},
     event(branch="main", deleted=True)),
    ("gitlab tag push", "gitlab", gitlab_headers("Tag Push Hook"), {**GITLAB_PUSH, "object_kind": "tag_push", "ref": "refs/tags/v1.0.0"},
     event(branch=None, ref="refs/tags/v1.0.0")),
    ("gitlab system hook push", "gitlab", gitlab_headers("System Hook"), GITLAB_PUSH, event(branch="main")),
    ("gitlab system hook, not a push", "gitlab", gitlab_headers("System Hook"), {"event_name": "project_create", "name": "x"}, None),
    ("gitlab merge request", "gitlab", gitlab_headers("Merge Request Hook"), {"object_kind": "merge_request"}, None),
    ("gitlab push hook header is case-sensitive text", "gitlab", gitlab_headers("push"), GITLAB_PUSH, None),
    ("gitea push to develop", "gitea", gitea_headers(GT), GITEA_PUSH,
     event(branch="develop", after=SHA, deleted=False, repository="sre/remediations",
           http_url="https://gitea.example.com/sre/remediations.git",
           ssh_url="git@gitea.example.com:sre/remediations.git", delivery="f6266f16")),
    ("gitea sha256 repository deletion", "gitea", gitea_headers(GT), {**GITEA_PUSH, "after": "0" * 64},
     event(deleted=True)),
    ("gitea delete event", "gitea", gitea_headers(GT, event="delete"), {"ref": "develop", "ref_type": "branch"}, None),
    ("gitea issues", "gitea", gitea_headers(GT, event="issues"), {"action": "opened"}, None),
]


@pytest.mark.parametrize(("case", "provider", "headers", "payload", "expected"), PUSHES, ids=[c[0] for c in PUSHES])
def test_parse_push(case: str, provider: str, headers: dict[str, str], payload: dict[str, Any],
                    expected: dict[str, Any] | None) -> None:
    got = parse_push(provider, headers, body_of(payload))
    if expected is None:
        assert got is None
        return
    assert isinstance(got, PushEvent)
    assert got.provider == provider
    for field, want in expected.items():
        assert getattr(got, field) == want, field


def test_clone_urls_as_given() -> None:
    got = parse_push("github", github_headers(GH), GH)
    assert got is not None
    assert got.clone_urls() == ("https://github.com/acme/remediations.git", "git@github.com:acme/remediations.git")
    bare = parse_push("github", github_headers(GH), body_of({"ref": "refs/heads/main", "after": SHA}))
    assert bare is not None and bare.clone_urls() == () and bare.repository == ""


def test_form_encoded_payload() -> None:
    form = urlencode({"payload": json.dumps(GITHUB_PUSH)}).encode()
    headers = {**github_headers(form), "Content-Type": "application/x-www-form-urlencoded"}
    assert verify("github", headers, form, SECRET)  # the signature covers the raw form body
    got = parse_push("github", headers, form)
    assert got is not None and got.branch == "main" and got.after == SHA


@pytest.mark.parametrize(("case", "provider", "headers", "body", "message"), [
    ("not json", "github", github_headers(b"{"), b"{", "not valid JSON"),
    ("json array", "github", github_headers(b"[]"), b"[]", "not an object"),
    ("not utf-8", "gitea", gitea_headers(b"\xff\xfe"), b"\xff\xfe", "not UTF-8"),
    ("push without ref", "gitlab", gitlab_headers(), body_of({"object_kind": "push", "after": SHA}), "no 'ref'"),
    ("ref of the wrong type", "github", github_headers(GH), body_of({**GITHUB_PUSH, "ref": 7}), "no 'ref'"),
    ("form without payload", "github", {**github_headers(b"a=1"), "Content-Type": "application/x-www-form-urlencoded"}, b"a=1", "no 'payload'"),
    ("unknown provider", "bitbucket", {"X-Event-Key": "repo:push"}, GH, "unknown webhook provider"),
])
def test_unreadable_bodies_raise_webhook_error(case: str, provider: str, headers: dict[str, str], body: bytes,
                                               message: str) -> None:
    with pytest.raises(WebhookError, match=message):
        parse_push(provider, headers, body)
    assert issubclass(WebhookError, ValueError)


def test_non_push_events_are_not_parsed() -> None:
    # a ping may carry anything: it is ignored without reading the body
    assert parse_push("github", github_headers(b"{", event="ping"), b"{") is None


def test_missing_event_header_is_not_a_push() -> None:
    assert parse_push("github", without(github_headers(GH), "X-GitHub-Event"), GH) is None
