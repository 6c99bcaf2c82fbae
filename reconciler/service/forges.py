"""Commit statuses on the forge: what a transition looks like on GitHub, GitLab and Gitea — pure.

Reviewers look at their pull requests, so each execution gets one status context
(``kubernaut/<name>``) on the commit that declared it, and on the merge commit that brought
it to the tracked branch.  This module turns an :class:`~reconciler.service.delivery.Event` into
the forge's request and an answer into an :class:`~reconciler.service.delivery.Outcome`; it sends
nothing (:mod:`reconciler.service.outbound` does, from the delivery worker).

* **States.**  Pending and Running are ``pending`` (GitLab: ``pending``/``running``);
  Completed is ``success``; a Failed run that actually ran is ``failure`` (GitLab
  ``failed``), one that never started (configuration, image pull, policy, external deletion)
  is ``error`` (GitLab ``failed``, ``canceled`` when cancelled); Skipped did not run:
  ``error`` on GitHub, ``warning`` on Gitea, ``canceled`` on GitLab.
* **Descriptions** are built from the phase, the reason, the run name and the failing
  task/step — never from free text that holds times, never with a timestamp — so the
  same transition always gives the same bytes (de-duplication, no rate-limit churn).
* **Answers.**  2xx is delivered.  429 and GitHub's 403 with ``Retry-After`` or
  ``X-RateLimit-Remaining: 0`` are rate limits (wait as told); other 401/403 are
  credentials (retried with backoff: a rotated Secret heals it); 400/404/422 are permanent
  for that status (an unknown commit, a repository the token cannot see) — except GitLab's
  400 "Cannot transition status", which means the commit already shows that state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.service.config_model import RouteRule
from reconciler.service.delivery_event import Event
from reconciler.service.delivery_sink import Outcome, classify_http
from reconciler.service.outbound import Request, Response
from reconciler.source import gitcmd

Kind = Literal["github", "gitlab", "gitea"]
DESCRIPTION_LIMIT = 140  # GitHub's limit; the others accept more
_NOT_STARTED = frozenset({"ConfigurationError", "ImagePullBackOff", "Forbidden", "ResourceExhausted",
                          "ExternallyDeleted", "PolicyViolation", "UnverifiedCommit"})


@dataclass(frozen=True)
class ForgeTarget:
    kind: Kind
    api_url: str  # the API root, no trailing slash
    repository: str  # owner/name (GitLab: path or numeric id)


def default_api_url(kind: Kind, repo_url: str) -> str:
    """The API root of the forge that hosts ``repo_url`` (github.com → api.github.com;
    another GitHub host is Enterprise: /api/v3)."""
    host = _host(repo_url)
    if not host:
        return ""
    if kind == "github":
        return "https://api.github.com" if host in ("github.com", "www.github.com") else f"https://{host}/api/v3"
    return f"https://{host}/api/v4" if kind == "gitlab" else f"https://{host}/api/v1"


def default_repository(repo_url: str) -> str:
    """owner/name (or group/sub/project) from any clone URL form."""
    return _split(repo_url)[1]


def _host(repo_url: str) -> str:
    host = _split(repo_url)[0]
    return host if "." in host else ""


def _split(repo_url: str) -> tuple[str, str]:
    """(host, path) of scheme://[user@]host[:port]/path or [user@]host:path (string
    operations only: no pattern can be fooled by a trailing newline or non-ASCII digits)."""
    url = repo_url.strip()
    if "://" in url:
        authority, _, path = url.split("://", 1)[1].partition("/")
        host = authority.rpartition("@")[2].split(":", 1)[0]
    else:
        before, colon, after = url.partition(":")
        host, path = (before.rpartition("@")[2], after) if colon and "/" not in before else ("", url)
    path = path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    return host.lower(), path.strip("/")


def state_for(kind: Kind, event: Event) -> str:
    """The forge's state for the execution's phase (see the module docstring)."""
    phase, reason = event.phase, event.reason
    if phase == "Completed":
        return "success"
    if phase == "Running":
        return "running" if kind == "gitlab" else "pending"
    if phase == "Pending":
        return "pending"
    if phase == "Skipped":
        return {"github": "error", "gitlab": "canceled", "gitea": "warning"}[kind]
    # Failed
    if kind == "gitlab":
        return "canceled" if reason == "Cancelled" else "failed"
    ran = event.was_execution_failure if event.was_execution_failure is not None else reason not in _NOT_STARTED
    return "failure" if ran else "error"


def description(event: Event) -> str:
    """One short line from stable fields only: the same transition gives the same text."""
    phase, reason = event.phase, event.reason
    if phase == "Pending":
        text = f"waiting: {reason}" if reason else "merged; waiting to start"
    elif phase == "Running":
        text = f"running {event.run}" if event.run else "running"
    elif phase == "Completed":
        text = f"completed: run {event.run}" if event.run else "completed"
    elif phase == "Skipped":
        text = f"skipped: {reason or 'not run'}"
        if event.conflicting:
            text += f" (held by {event.conflicting})"
    else:
        text = f"failed: {reason or 'Unknown'}"
        where = " / ".join(p for p in (event.failed_task, event.failed_step) if p)
        if where:
            text += f" in {where}"
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_LIMIT else text[:DESCRIPTION_LIMIT - 1] + "…"


def context(event: Event) -> str:
    return f"kubernaut/{event.execution}"


def status_request(target: ForgeTarget, token: str, sha: str, event: Event, target_url: str) -> Request:
    """The request that sets the execution's status on ``sha``."""
    state, text = state_for(target.kind, event), description(event)
    if target.kind == "gitlab":
        project = urllib.parse.quote(target.repository, safe="")
        url = f"{target.api_url}/projects/{project}/statuses/{sha}"
        body: dict[str, str] = {"state": state, "name": context(event), "description": text}
        headers: tuple[tuple[str, str], ...] = (("PRIVATE-TOKEN", token),)
    else:
        owner_repo = "/".join(urllib.parse.quote(p, safe="") for p in target.repository.split("/"))
        url = f"{target.api_url}/repos/{owner_repo}/statuses/{sha}"
        body = {"state": state, "context": context(event), "description": text}
        if target.kind == "github":
            headers = (("Authorization", f"Bearer {token}"), ("Accept", "application/vnd.github+json"),
                       ("X-GitHub-Api-Version", "2022-11-28"))
        else:
            headers = (("Authorization", f"token {token}"),)
    if target_url:
        body["target_url"] = target_url
    return Request("POST", url, (*headers, ("Content-Type", "application/json")),
                   json.dumps(body, sort_keys=True).encode())


def check_request(target: ForgeTarget, token: str) -> Request:
    """A read that proves the token can see the repository (for ``reconciler doctor``)."""
    if target.kind == "gitlab":
        project = urllib.parse.quote(target.repository, safe="")
        return Request("GET", f"{target.api_url}/projects/{project}", (("PRIVATE-TOKEN", token),))
    owner_repo = "/".join(urllib.parse.quote(p, safe="") for p in target.repository.split("/"))
    auth = f"Bearer {token}" if target.kind == "github" else f"token {token}"
    return Request("GET", f"{target.api_url}/repos/{owner_repo}", (("Authorization", auth),))


def classify(kind: Kind, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome:
    """What a forge's answer means for this status (see the module docstring)."""
    if kind == "gitlab" and response.status == 400 and b"Cannot transition status" in response.body:
        return Outcome("delivered", 0.0, "the commit already shows this state")
    rate_limited = response.status == 403 and (
        "retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0")
    return classify_http(response, attempt, now, base=base, cap=cap, rate_limited=rate_limited)


def merge_commit(git_dir: Path, commit: str, tip: str, env: Mapping[str, str] | None = None) -> str:
    """The first-parent commit of ``tip``'s history that brought ``commit`` in (the pull
    request's merge commit); "" when ``commit`` is itself on the first-parent line
    (fast-forward, squash, rebase) or unknown here."""
    if not (_SHA.fullmatch(commit) and _SHA.fullmatch(tip)) or commit == tip:
        return ""
    run_env = {**os.environ, **(env or {})}
    try:
        out = gitcmd.run(["rev-list", "--first-parent", "--ancestry-path", "--reverse",
                              f"{commit}..{tip}"], cwd=git_dir, text=True, env=run_env,
                             timeout=30, check=True).stdout.split()
        if not out:
            return ""
        parent = gitcmd.run(["rev-parse", f"{out[0]}^1"], cwd=git_dir, text=True,
                                env=run_env, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return "" if parent == commit else out[0]


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class ForgeStatuses:
    """A commit-status sink (see :class:`reconciler.service.delivery.Sink`)."""

    def __init__(self, name: str, target: ForgeTarget, token: Callable[[], str], *,
                 rules: Sequence[RouteRule] = (), merge: Callable[[str, str], str] | None = None):
        self.name = name
        self.kind = target.kind
        self.target = target
        self.rules = list(rules)
        self._token = token
        self._merge = merge
        self._merges: dict[tuple[str, str], str] = {}
        self._last_token = ""

    def targets(self, event: Event) -> list[str]:
        if not event.commit:
            return []  # nothing to attach the status to (declared nowhere we know)
        shas = [event.commit]
        if self._merge is not None and event.revision:
            key = (event.commit, event.revision)
            if key not in self._merges:
                self._merges[key] = self._merge(event.commit, event.revision)
            if self._merges[key]:
                shas.append(self._merges[key])
        return shas

    def request(self, event: Event, target: str, link: str) -> Request:
        self._last_token = self._token()
        return status_request(self.target, self._last_token, target, event, link)

    def classify(self, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome:
        return classify(self.kind, response, attempt, now, base=base, cap=cap)

    def secrets(self) -> list[str]:
        return [self._last_token] if self._last_token else []
