"""Notifications (a generic signed webhook, Slack incoming webhooks) and the wiring of every
sink from the configuration.

Why: on-call engineers watch chat, other systems want the full status.  The payloads are
built here — pure functions of an :class:`~reconciler.service.delivery.Event` — and sent by the
delivery worker; routing, de-duplication, retries and the never-block rule are
:mod:`reconciler.service.delivery`'s and the same for every sink.

* **Generic webhook**: ``POST`` of a JSON document holding the execution, the transition,
  the full status and the failure details.  ``X-Kubernaut-Signature-256: sha256=<hex>`` is
  the HMAC-SHA256 of the exact body with the configured key (the receiver recomputes it and
  compares in constant time); ``X-Kubernaut-Delivery`` is the transition's stable id (the
  same transition always has the same id: de-duplicate on it); ``X-Kubernaut-Event:
  transition``.
* **Slack**: a readable message — outcome, what ran on which target, the reason, the
  failure summary, a link to the dashboard.  Text from the repository or the cluster is
  escaped (``&``, ``<``, ``>``), so a message can never mention ``@channel`` or forge a link.
* **Credentials** (tokens, the Slack URL — which is itself the credential —, HMAC keys) come
  from files or variables, are re-read when a request is built (a rotated Secret is used at
  once) and are redacted from every error.
* :func:`check_sinks` is what ``reconciler doctor`` calls: a forge token is proved with a
  read of the repository; a webhook or a Slack URL cannot be checked without posting, so
  it is reported as configured, not verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError
from reconciler.service.config_model import Config, ForgeSink, RouteRule, SlackSink, WebhookSink, seconds
from reconciler.service.delivery import Notifier
from reconciler.service.delivery_event import Event
from reconciler.service.delivery_sink import Outcome, Sink, classify_http
from reconciler.service.forges import (
    ForgeStatuses,
    ForgeTarget,
    check_request,
    default_api_url,
    default_repository,
    merge_commit,
)
from reconciler.service.outbound import Request, Response, send
from reconciler.source.gitauth import read_secret
from reconciler.source.gitwords import redact_text, redact_url

SIGNATURE_HEADER = "X-Kubernaut-Signature-256"
DELIVERY_HEADER = "X-Kubernaut-Delivery"
PAYLOAD_KIND = "WorkflowExecutionTransition"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): recompute, compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


def webhook_payload(event: Event, link: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": PAYLOAD_KIND, "delivery": event.id,
        "execution": {"name": event.execution, "workflow": event.workflow, "targetResource": event.target,
                      "namespace": event.namespace, "labels": dict(sorted(event.labels.items())),
                      "file": event.file, "commit": event.commit, "run": event.run},
        "transition": {"from": event.from_phase, "to": event.phase, "reason": event.reason,
                       "message": event.message},
        "status": event.status,
        "failureDetails": event.status.get("failureDetails", {}),
        "link": link,
    }


def webhook_request(url: str, secret: str, event: Event, link: str) -> Request:
    body = json.dumps(webhook_payload(event, link), sort_keys=True, separators=(",", ":")).encode()
    return Request("POST", url, (("Content-Type", "application/json"), ("X-Kubernaut-Event", "transition"),
                                 (DELIVERY_HEADER, event.id), (SIGNATURE_HEADER, sign(secret.encode(), body))),
                   body)


_ICON = {"Completed": ":white_check_mark:", "Failed": ":x:", "Skipped": ":fast_forward:",
         "Running": ":arrow_forward:", "Pending": ":hourglass_flowing_sand:"}


def slack_escape(text: str) -> str:
    """Slack's three control characters; what is left cannot mention anyone or make a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event: Event, link: str) -> dict[str, Any]:
    """A readable message: outcome, what ran where, reason and run, failure summary, link."""
    e = slack_escape
    head = (f"{_ICON.get(event.phase, '')} *{e(event.phase)}*: {e(event.execution)} — "
            f"{e(event.workflow or 'workflow')} on {e(event.target or 'its target')}").strip()
    facts = []
    if event.reason:
        facts.append(f"reason {e(event.reason)}")
    if event.run:
        facts.append(f"run {e(event.run)}")
    if event.failed_task or event.failed_step:
        facts.append("failed in " + e(" / ".join(p for p in (event.failed_task, event.failed_step) if p)))
    if event.conflicting:
        facts.append(f"held by {e(event.conflicting)}")
    lines = [head]
    if facts:
        lines.append(" · ".join(facts))
    detail = event.summary or (event.message if event.phase in ("Failed", "Skipped") else "")
    if detail:
        lines.append("> " + e(" ".join(detail.split()))[:1500])
    if link:
        lines.append(f"<{link}|Open {e(event.execution)} in the dashboard>")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


class _Secret:
    def __init__(self, file: Path | None, env: str | None, what: str):
        self.file, self.env, self.what = file, env, what

    def __call__(self) -> str:
        value = read_secret(self.file, self.env, self.what)
        if value is None:
            raise ConfigError(f"{self.what}: not configured")
        return value


class _Constant:
    def __init__(self, value: str):
        self.value = value

    def __call__(self) -> str:
        return self.value


class WebhookNotifications:
    kind = "webhook"

    def __init__(self, name: str, url: Callable[[], str], secret: Callable[[], str],
                 rules: Sequence[RouteRule] = ()):
        self.name, self.rules = name, list(rules)
        self._url, self._secret = url, secret
        self._seen: list[str] = []

    def targets(self, event: Event) -> list[str]:
        return [""]

    def request(self, event: Event, target: str, link: str) -> Request:
        url, secret = self._url(), self._secret()
        self._seen = [url, secret]
        return webhook_request(url, secret, event, link)

    def classify(self, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome:
        return classify_http(response, attempt, now, base=base, cap=cap)

    def secrets(self) -> list[str]:
        return [s for s in self._seen if s]


class SlackNotifications:
    kind = "slack"

    def __init__(self, name: str, url: Callable[[], str], rules: Sequence[RouteRule] = ()):
        self.name, self.rules = name, list(rules)
        self._url = url
        self._seen = ""

    def targets(self, event: Event) -> list[str]:
        return [""]

    def request(self, event: Event, target: str, link: str) -> Request:
        self._seen = self._url()
        body = json.dumps(slack_message(event, link), sort_keys=True).encode()
        return Request("POST", self._seen, (("Content-Type", "application/json"),), body)

    def classify(self, response: Response, attempt: int, now: float, *, base: float, cap: float) -> Outcome:
        return classify_http(response, attempt, now, base=base, cap=cap)

    def secrets(self) -> list[str]:
        return [self._seen] if self._seen else []


# -- from the configuration -------------------------------------------------------------------

def _where(config: Config, sink: object) -> str:
    n = config.notifications
    for key, sinks in (("commitStatuses", n.commit_statuses), ("webhooks", n.webhooks), ("slack", n.slack)):
        for index, candidate in enumerate(sinks):
            if candidate is sink:
                return f"notifications.{key}[{index}]"
    return "notifications"


def forge_target(config: Config, sink: ForgeSink) -> ForgeTarget:
    """The API root and repository of a commit-status sink (defaults from repository.url)."""
    where = _where(config, sink)
    api = (sink.api_url or default_api_url(sink.type, config.repository.url)).rstrip("/")
    repository = (sink.repository or default_repository(config.repository.url)).strip("/")
    if not api:
        raise ConfigError(f"{where}.apiUrl: cannot be derived from repository.url "
                          f"({redact_url(config.repository.url)}); set it")
    if not repository or (sink.type != "gitlab" and repository.count("/") != 1):
        raise ConfigError(f"{where}.repository: need owner/name{' (or a project id)' if sink.type == 'gitlab' else ''}"
                          f", got {repository or 'nothing'} (from repository.url when unset)")
    return ForgeTarget(sink.type, api, repository)


def build_sinks(config: Config, *, git_dir: Path | None = None, git_env: Mapping[str, str] | None = None,
                only: object = None) -> list[Sink]:
    """Every configured sink (or ``only`` that one); ConfigError naming the setting when a
    secret cannot be read."""
    sinks: list[Sink] = []
    for name, sink in config.notifications.sinks():
        if only is not None and sink is not only:
            continue
        where = _where(config, sink)
        if isinstance(sink, ForgeSink):
            token = _Secret(sink.token_file, sink.token_env, f"{where} token")
            token()  # fail at start, not at the first transition
            merge = None
            if sink.merge_commit and git_dir is not None:
                directory = git_dir

                def merge(commit: str, tip: str, directory: Path = directory) -> str:
                    return merge_commit(directory, commit, tip, git_env)
            sinks.append(ForgeStatuses(name, forge_target(config, sink), token, rules=sink.rules, merge=merge))
        elif isinstance(sink, WebhookSink):
            url: Callable[[], str] = (_Constant(sink.url) if sink.url
                                      else _Secret(sink.url_file, None, f"{where}.urlFile"))
            secret = _Secret(sink.secret_file, sink.secret_env, f"{where} secret")
            url(), secret()
            sinks.append(WebhookNotifications(name, url, secret, sink.rules))
        elif isinstance(sink, SlackSink):
            slack_url = _Secret(sink.webhook_url_file, sink.webhook_url_env, f"{where} webhook URL")
            if not slack_url().startswith(("https://", "http://")):
                raise ConfigError(f"{where}: the webhook URL is not an http(s) URL")
            sinks.append(SlackNotifications(name, slack_url, sink.rules))
    return sinks


def build_notifier(config: Config, *, durable: Callable[..., bool], is_leader: Callable[[], bool],
                   default_state_file: Path, metrics: Any = None, git_dir: Path | None = None,
                   git_env: Mapping[str, str] | None = None, logger: logging.Logger | None = None) -> Notifier:
    n = config.notifications
    return Notifier(build_sinks(config, git_dir=git_dir, git_env=git_env),
                    state_file=n.state_file or default_state_file,
                    durable=durable, is_leader=is_leader, metrics=metrics, public_url=n.public_url,
                    queue_size=n.queue_size, replay_window=float(seconds(n.replay_window)),
                    timeout=float(seconds(n.request_timeout)), base_delay=float(seconds(n.retry_base_delay)),
                    max_delay=float(seconds(n.retry_max_delay)), logger=logger)


def problems(config: Config) -> list[str]:
    """What ``reconciler config check`` reports about the sinks (without sending anything)."""
    found: list[str] = []
    for _, sink in config.notifications.sinks():
        try:
            build_sinks(config, only=sink)  # one at a time: a bad sink does not hide the others
        except ConfigError as e:
            found.append(str(e))
    return found


@dataclass(frozen=True)
class CheckResult:
    sink: str
    kind: str
    ok: bool | None  # None: cannot be checked without sending a notification
    message: str


def check_sinks(config: Config, *, timeout: float = 10.0,
                transport: Callable[[Request, float], Response] = send) -> list[CheckResult]:
    """For ``reconciler doctor``: can each sink's credentials do their job?  Forges: a read
    of the repository with the token.  Webhooks and Slack: nothing can be checked without
    posting, so only that the URL and secret are readable."""
    results: list[CheckResult] = []
    for name, sink in config.notifications.sinks():
        if isinstance(sink, ForgeSink):
            results.append(_check_forge(config, name, sink, timeout, transport))
            continue
        kind = "webhook" if isinstance(sink, WebhookSink) else "slack"
        try:
            build_sinks(config, only=sink)
        except ConfigError as e:
            results.append(CheckResult(name, kind, False, str(e)))
            continue
        what = ("a Slack incoming webhook cannot be verified without posting a message"
                if kind == "slack" else "a webhook receiver cannot be verified without posting a delivery")
        results.append(CheckResult(name, kind, None, f"URL and secret readable; {what}: none sent"))
    return results


def _check_forge(config: Config, name: str, sink: ForgeSink, timeout: float,
                 transport: Callable[[Request, float], Response]) -> CheckResult:
    try:
        target = forge_target(config, sink)
        token = _Secret(sink.token_file, sink.token_env, f"{_where(config, sink)} token")()
    except ConfigError as e:
        return CheckResult(name, sink.type, False, str(e))
    response = transport(check_request(target, token), timeout)
    where = f"{target.repository} at {target.api_url}"
    if response.status is not None and 200 <= response.status < 300:
        return CheckResult(name, sink.type, True, f"the token can read {where}")
    if response.status is None:
        message = f"{target.api_url} unreachable: {response.error}"
    elif response.status == 401:
        message = f"the token was refused by {target.api_url} (401)"
    elif response.status in (403, 404):
        message = f"the token cannot see {where} ({response.status}): grant it access to commit statuses"
    else:
        message = f"unexpected answer from {target.api_url}: HTTP {response.status}"
    return CheckResult(name, sink.type, False, redact_text(message, [token]))
