"""Push webhooks from GitHub, GitLab and Gitea: authenticate, then read — pure, no I/O.

Why: polling every 30 s is the safety net, a push webhook makes a merged pull request
run within seconds.  The HTTP layer (:mod:`reconciler.service.httpserver`) reads the body and
asks this module three questions: who sent it (:func:`detect_provider`), is it
authentic (:func:`verify`), and is it a push to a branch (:func:`parse_push`).

Authentication, per provider (documented by each; secrets never leave this module):

* GitHub — ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``; event in
  ``X-GitHub-Event`` (``push``, ``ping``, …).
* Gitea — ``X-Gitea-Signature: <hex HMAC-SHA256(secret, raw body)>`` (no prefix); Gitea
  also sends ``X-Hub-Signature-256`` and ``X-GitHub-Event``, so Gitea is detected first,
  by ``X-Gitea-Event``.
* GitLab — ``X-Gitlab-Token: <secret>`` (the secret itself, no signature); event in
  ``X-Gitlab-Event`` (``Push Hook``, ``Tag Push Hook``, ``System Hook``, …).

Every comparison is constant-time (:func:`hmac.compare_digest`), a missing header fails,
and an empty configured secret never authenticates anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

GITHUB, GITLAB, GITEA = "github", "gitlab", "gitea"
PROVIDERS = (GITHUB, GITLAB, GITEA)
EVENT_HEADER = {GITHUB: "X-GitHub-Event", GITLAB: "X-Gitlab-Event", GITEA: "X-Gitea-Event"}
DELIVERY_HEADER = {GITHUB: "X-GitHub-Delivery", GITLAB: "X-Gitlab-Event-UUID", GITEA: "X-Gitea-Delivery"}
PUSH_EVENTS = {GITHUB: ("push",), GITEA: ("push",), GITLAB: ("Push Hook", "Tag Push Hook")}
BRANCH_PREFIX = "refs/heads/"


class WebhookError(ValueError):
    """An authenticated delivery whose body cannot be read (not JSON, no ref, …)."""


@dataclass(frozen=True)
class PushEvent:
    provider: str
    event: str  # the provider's event name, as sent
    ref: str  # refs/heads/main, refs/tags/v1, …
    branch: str | None  # "main" for refs/heads/main; None for tags and other refs
    before: str
    after: str  # the commit the ref points to after the push (zeros when deleted)
    deleted: bool
    repository: str  # owner/name (GitHub, Gitea) or group/project (GitLab), for logs
    http_url: str  # clone URLs as the provider gives them ("" when absent)
    ssh_url: str
    delivery: str = ""  # the provider's delivery id, for logs and de-duplication

    def clone_urls(self) -> tuple[str, ...]:
        """The non-empty clone URLs, HTTP first."""
        return tuple(u for u in (self.http_url, self.ssh_url) if u)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping (a dict or Starlette ``Headers``)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def detect_provider(headers: Mapping[str, str]) -> str | None:
    """The sender by its event header; Gitea first (it also sends ``X-GitHub-Event``)."""
    for provider in (GITEA, GITLAB, GITHUB):
        if header(headers, EVENT_HEADER[provider]) is not None:
            return provider
    return None


def event_name(provider: str, headers: Mapping[str, str]) -> str:
    """The provider's event name (``push``, ``Push Hook``, …); "" when absent."""
    name = EVENT_HEADER.get(provider)
    return (header(headers, name) or "").strip() if name else ""


def signature(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 a GitHub or Gitea sender computes (for tests and tooling)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str | bytes) -> bool:
    want = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given.encode("utf-8", "replace"), want)


def _hub_signature_ok(headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    given = header(headers, "X-Hub-Signature-256")
    if given is None:
        return False
    scheme, _, digest = given.strip().partition("=")
    if scheme.lower() != "sha256" or not digest:
        return False
    return _same(digest.lower(), signature(secret, body))


def verify(provider: str, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    """Whether the delivery is authentic for ``provider`` (False when ``secret`` is empty)."""
    if not secret:
        return False
    if provider == GITHUB:
        return _hub_signature_ok(headers, body, secret)
    if provider == GITEA:
        given = header(headers, "X-Gitea-Signature")
        if given is not None and given.strip() and _same(given.strip().lower(), signature(secret, body)):
            return True
        return _hub_signature_ok(headers, body, secret)
    if provider == GITLAB:
        token = header(headers, "X-Gitlab-Token")
        return token is not None and _same(token, secret)
    return False


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    content_type = (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if content_type == "application/x-www-form-urlencoded":
            # GitHub and Gitea can send the JSON in a form field named "payload"
            form = parse_qs(text, keep_blank_values=True)
            if "payload" not in form:
                raise WebhookError("form-encoded webhook body has no 'payload' field")
            text = form["payload"][0]
        data = json.loads(text)
    except UnicodeDecodeError as e:
        raise WebhookError(f"webhook body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise WebhookError(f"webhook body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise WebhookError(f"webhook body is JSON but not an object (got {type(data).__name__})")
    return data


def _text(data: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def parse_push(provider: str, headers: Mapping[str, str], body: bytes) -> PushEvent | None:
    """The push a delivery announces, or None for other events (ping, issues, …).

    Raises :class:`WebhookError` for an unknown provider or a body that cannot be read.
    Call it only after :func:`verify` succeeded.
    """
    if provider not in PROVIDERS:
        raise WebhookError(f"unknown webhook provider {provider!r} (expected one of {', '.join(PROVIDERS)})")
    event = event_name(provider, headers)
    if provider == GITLAB and event == "System Hook":
        # system hooks carry pushes too, told apart by object_kind
        data = _payload(headers, body)
        if data.get("object_kind") not in ("push", "tag_push"):
            return None
    elif event in PUSH_EVENTS[provider]:
        data = _payload(headers, body)
    else:
        return None
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref:
        raise WebhookError(f"{provider} push event has no 'ref'")
    after = _text(data, "after")
    deleted = data.get("deleted") is True or (bool(after) and set(after) == {"0"})
    if provider == GITLAB:
        project, legacy = _mapping(data, "project"), _mapping(data, "repository")
        repository = _text(project, "path_with_namespace") or _text(legacy, "name")
        http_url = _text(project, "git_http_url", "http_url") or _text(legacy, "git_http_url")
        ssh_url = _text(project, "git_ssh_url", "ssh_url") or _text(legacy, "git_ssh_url")
    else:
        repo = _mapping(data, "repository")
        repository = _text(repo, "full_name", "name")
        http_url, ssh_url = _text(repo, "clone_url"), _text(repo, "ssh_url")
    return PushEvent(
        provider=provider, event=event, ref=ref,
        branch=(ref[len(BRANCH_PREFIX):] or None) if ref.startswith(BRANCH_PREFIX) else None,
        before=_text(data, "before"), after=after, deleted=deleted, repository=repository,
        http_url=http_url, ssh_url=ssh_url,
        delivery=(header(headers, DELIVERY_HEADER[provider]) or "").strip())
