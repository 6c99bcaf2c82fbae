"""The service's settings, as one validated model: :class:`Config` and its sections.

What each setting means, its default and its checks (durations that parse, addresses that
are host:port, a sink that names where its credential is) are declared here once; reading
the file, the ``RECONCILER_*`` environment and the flags into it, and showing it with
secrets hidden, is :mod:`reconciler.service.config`.  Credentials are never *values* here: a
section names the files or environment variables that hold them (mounted Secrets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.declare import names
from reconciler.gate.policy import Policy
from reconciler.source.gitauth import GitAuth


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def _duration(value: str) -> str:
    names.parse_duration(value)
    return value


class Author(_Section):
    name: str = "kubernaut-reconciler"
    email: str = "kubernaut-reconciler@users.noreply.invalid"


class RepositoryConfig(_Section):
    url: str = Field(..., description="Git URL (https://, ssh://, git@host:path) or local path.")
    branch: str = Field("main", description="Tracked branch: the only branch that executes.")
    path: str = Field("", description="Sub-path holding executions/, workflows/, status/.")
    status_branch: str = Field("", description="Branch receiving status commits (default: the tracked branch).")
    poll_interval: str = Field("30s", description="Reconcile interval (jittered); webhooks only accelerate.")
    auth: GitAuth = Field(default_factory=GitAuth)
    commit_author: Author = Field(default_factory=Author)
    cache_dir: Path | None = None

    @field_validator("poll_interval")
    @classmethod
    def _poll(cls, value: str) -> str:
        return _duration(value)


class ExecutionConfigSection(_Section):
    namespace: str = "kubernaut-workflows"
    cooldown: str = "5m"
    templates_dir: Path | None = None
    breaker_failures: int = Field(3, ge=0, description=(
        "Failure breaker: after this many consecutive failed runs (wasExecutionFailure) of one workflow "
        "on one target, further executions of it there are Skipped (ConsecutiveFailures); 0 disables."))
    breaker_period: str = Field("1h", description="How long the failure breaker stays open after the last failure.")

    @field_validator("cooldown", "breaker_period")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        return _duration(value)


class KubernetesConfig(_Section):
    kubeconfig: Path | None = None
    context: str | None = None


class LeaderElectionConfig(_Section):
    enabled: bool = True
    lease_name: str = "kubernaut-gitops-reconciler"
    lease_namespace: str = "kubernaut-system"
    lease_duration: str = "15s"
    renew_deadline: str = "10s"
    retry_period: str = "2s"

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionConfig:
        lease, renew, retry = (names.parse_duration(x) for x in
                               (self.lease_duration, self.renew_deadline, self.retry_period))
        if not retry < renew < lease:
            raise ValueError("need retryPeriod < renewDeadline < leaseDuration")
        return self


class WebhookConfig(_Section):
    secret_file: Path | None = Field(None, description="Shared secret for HMAC/token verification.")
    secret_env: str | None = None
    max_body_bytes: int = Field(1024 * 1024, gt=0, le=25 * 1024 * 1024)


class ServerConfig(_Section):
    health_address: str = ":8081"
    metrics_address: str = ":9090"
    webhook_address: str = ":8080"
    metrics_token_file: Path | None = Field(None, description="If set, /metrics requires this bearer token.")
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)

    @field_validator("health_address", "metrics_address", "webhook_address")
    @classmethod
    def _address(cls, value: str) -> str:
        _, _, port = value.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port (e.g. ':8081')")
        return value


class SignaturesConfig(_Section):
    mode: Literal["off", "files", "head"] = Field("off", description=(
        "files: the commits that declared/changed each execution (and the catalog) must be signed; "
        "head: the newest non-status commit must be"))
    allowed_signers_file: Path | None = Field(None, description="git's allowed-signers file (SSH signatures).")
    gpg_keyring: Path | None = Field(None, description="Exported public keys allowed to sign (GPG).")

    @model_validator(mode="after")
    def _keys(self) -> SignaturesConfig:
        if self.mode != "off" and not (self.allowed_signers_file or self.gpg_keyring):
            raise ValueError("signature verification needs allowedSignersFile or gpgKeyring")
        return self


class LoggingConfig(_Section):
    format: Literal["text", "json"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


_PHASE = Literal["Pending", "Running", "Completed", "Failed", "Skipped"]
_SINK_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class RouteRule(_Section):
    """Which transitions a sink receives. Every field that is set must match (globs for
    reasons, workflows and namespaces, exact values for labels); a sink takes a transition
    when any of its rules matches, and every transition when it has no rules."""

    phases: list[_PHASE] = Field(default_factory=list, description="Phases reached (empty: any).")
    reasons: list[str] = Field(default_factory=list, description="Reasons, globs (OOMKilled, Dead*).")
    workflows: list[str] = Field(default_factory=list, description="Workflow ids, globs.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces of the target, globs.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the execution (all must match).")


class _Sink(_Section):
    name: str = Field("", pattern=r"^$|" + _SINK_NAME, description="Unique sink name (metrics label).")
    rules: list[RouteRule] = Field(default_factory=list)


class ForgeSink(_Sink):
    """Commit statuses on GitHub, GitLab or Gitea/Forgejo, one context per execution."""

    type: Literal["github", "gitlab", "gitea"]
    api_url: str = Field("", description=(
        "API root: https://api.github.com, https://ghe.example.com/api/v3, https://gitlab.example.com/api/v4, "
        "https://gitea.example.com/api/v1 (default: from repository.url)"))
    repository: str = Field("", description="owner/name (GitLab: group/project or its id); default: repository.url.")
    token_file: Path | None = Field(None, description="File holding the API token (a mounted Secret).")
    token_env: str | None = None
    merge_commit: bool = Field(True, description="Also set the status on the merge commit of the pull request.")

    @model_validator(mode="after")
    def _token(self) -> ForgeSink:
        if self.token_file is None and not self.token_env:
            raise ValueError("a commit-status sink needs tokenFile or tokenEnv")
        if self.api_url and not self.api_url.startswith(("https://", "http://")):
            raise ValueError("apiUrl must be an http(s) URL")
        return self


class WebhookSink(_Sink):
    """A generic webhook: JSON signed with HMAC-SHA256 (header X-Kubernaut-Signature-256)."""

    url: str = Field("", description="Receiver URL (use urlFile when it holds a credential).")
    url_file: Path | None = None
    secret_file: Path | None = Field(None, description="HMAC-SHA256 key (a mounted Secret).")
    secret_env: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> WebhookSink:
        if bool(self.url) == (self.url_file is not None):
            raise ValueError("set exactly one of url or urlFile")
        if self.url and not self.url.startswith(("https://", "http://")):
            raise ValueError("url must be an http(s) URL")
        if self.secret_file is None and not self.secret_env:
            raise ValueError("a webhook sink needs secretFile or secretEnv: every delivery is signed")
        return self


class SlackSink(_Sink):
    """A Slack incoming webhook; its URL is the credential, so it only comes from a file or variable."""

    webhook_url_file: Path | None = None
    webhook_url_env: str | None = None

    @model_validator(mode="after")
    def _url(self) -> SlackSink:
        if self.webhook_url_file is None and not self.webhook_url_env:
            raise ValueError("a Slack sink needs webhookUrlFile or webhookUrlEnv")
        return self


class NotificationsConfig(_Section):
    """Forge commit statuses and notifications (see reconciler.service.delivery)."""

    public_url: str = Field("", description="Dashboard base URL for links (https://kubernaut.example.com).")
    state_file: Path | None = Field(None, description="Delivery state (default: <cacheDir>/deliveries.json).")
    queue_size: int = Field(500, ge=1, le=100_000, description="Undelivered items kept per sink.")
    replay_window: str = Field("10m", description=(
        "After a restart or a failover, states that changed longer ago than this and were never "
        "queued here are not announced (no flood of history)."))
    request_timeout: str = "10s"
    retry_base_delay: str = "1s"
    retry_max_delay: str = "5m"
    commit_statuses: list[ForgeSink] = Field(default_factory=list)
    webhooks: list[WebhookSink] = Field(default_factory=list)
    slack: list[SlackSink] = Field(default_factory=list)

    @field_validator("replay_window", "request_timeout", "retry_base_delay", "retry_max_delay")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("publicUrl must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _names(self) -> NotificationsConfig:
        seen: set[str] = set()
        for sink in self.sinks():
            if sink[0] in seen:
                raise ValueError(f"two sinks are named {sink[0]!r}: give each a unique name")
            seen.add(sink[0])
        if names.parse_duration(self.retry_base_delay) > names.parse_duration(self.retry_max_delay):
            raise ValueError("need retryBaseDelay <= retryMaxDelay")
        return self

    def sinks(self) -> list[tuple[str, ForgeSink | WebhookSink | SlackSink]]:
        """(effective name, sink): the name, or the type (github, webhook, slack) when unnamed."""
        out: list[tuple[str, ForgeSink | WebhookSink | SlackSink]] = []
        for sink in self.commit_statuses:
            out.append((sink.name or sink.type, sink))
        for hook in self.webhooks:
            out.append((hook.name or "webhook", hook))
        for slack in self.slack:
            out.append((slack.name or "slack", slack))
        return out


class Config(_Section):
    """The whole configuration (see deploy/base/config.yaml for a commented example)."""

    repository: RepositoryConfig
    execution: ExecutionConfigSection = Field(default_factory=ExecutionConfigSection)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    signatures: SignaturesConfig = Field(default_factory=SignaturesConfig)
    policy: Policy | None = Field(None, description="What may run and when (see reconciler.gate.policy).")
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)


def seconds(value: str) -> int:
    return names.parse_duration(value)
