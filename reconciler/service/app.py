"""``reconciler run``: the always-on service, wired from its parts.

    APScheduler ── reconcile job and follow job (reconciler.service.app_jobs)
    RunFollower ── watch events → observe that execution now
    webhook     ── push to the tracked branch → run the reconcile job now
    Lease       ── only the leader runs jobs; every write is fenced on leadership
    HTTP        ── :8081 /healthz /readyz, :9090 /metrics, :8080 /webhook
                   (readiness and the dashboard's data: reconciler.service.app_status)

This module builds the parts from the configuration, starts them and stops them.
Webhooks accelerate; they are never the only path: the interval job always runs.  On
SIGTERM the scheduler stops taking new work, the cycle in progress finishes (so its
status is pushed), a pending write-back is retried once, the Lease is released so a
standby takes over at once, and the HTTP servers close.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from reconciler.errors import ConfigError, ReconcilerError
from reconciler.gate.checks import Gate
from reconciler.record.transitions import CycleResult
from reconciler.record.writeback import GitStatusStore, Identity
from reconciler.render.renderer import Renderer
from reconciler.run.cluster import KubeCluster
from reconciler.run.follow import RunFollower
from reconciler.run.kube import KubeClient, RetryPolicy, load_api_client
from reconciler.run.lifecycle import Settings
from reconciler.service.app_jobs import HeapTrimmer, ServiceJobs
from reconciler.service.app_status import ApiWitness
from reconciler.service.config_model import Config, seconds
from reconciler.service.cycle import Reconciler
from reconciler.service.dashboard import dashboard_app
from reconciler.service.httpserver import App, ServerThread, by_path, health_app, metrics_app, webhook_app
from reconciler.service.leader import LeaderElector, default_identity
from reconciler.service.metrics import Metrics
from reconciler.service.notify import build_notifier
from reconciler.service.notify import problems as notification_problems
from reconciler.service.webhook import PushEvent
from reconciler.source.gitauth import git_environment, read_secret
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import redact_url
from reconciler.source.signatures import SignaturePolicy, SignatureVerifier

FOLLOW_INTERVAL = 5.0


def normalise_repo_url(url: str) -> str:
    """host/owner/name for any clone URL form, to match webhook payloads to our repository."""
    url = redact_url(url).lower().strip()
    url = re.sub(r"^[a-z+]+://", "", url)
    url = re.sub(r"^[^@/]*@", "", url)  # user@ / ***@
    url = url.replace(":", "/", 1) if re.match(r"^[^/]+:[^/0-9]", url) else re.sub(r":\d+/", "/", url)
    return re.sub(r"(\.git)?/*$", "", url)


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or "0.0.0.0"), int(port)


class Service(ServiceJobs):
    """The reconciler service: its parts built from ``config``, started and stopped."""

    def __init__(self, config: Config, *, api_client: Any = None, identity: str | None = None,
                 logger: logging.Logger | None = None, readiness_grace: float | None = None,
                 follow_interval: float = FOLLOW_INTERVAL):
        self.config = config
        self.log = logger or logging.getLogger("reconciler.service")
        repo = config.repository
        self.source = GitSource(repo.url, branch=repo.branch, path=repo.path, cache_dir=repo.cache_dir,
                                env=git_environment(repo.auth))
        self.store = GitStatusStore(self.source, branch=repo.status_branch or repo.branch,
                                    identity=Identity(repo.commit_author.name, repo.commit_author.email),
                                    fence=self.is_leader)
        kube_config = config.kubernetes
        api = api_client or load_api_client(
            context=kube_config.context, kubeconfig=str(kube_config.kubeconfig) if kube_config.kubeconfig else None)
        self.kube = KubeClient(api, fence=self.is_leader)  # every write checks the Lease as it is sent
        execution = config.execution
        settings = Settings(namespace=execution.namespace, cooldown=timedelta(seconds=seconds(execution.cooldown)),
                            breaker_failures=execution.breaker_failures,
                            breaker_period=timedelta(seconds=seconds(execution.breaker_period)))
        self.metrics = Metrics()
        self.identity = identity or default_identity()
        self.elector: LeaderElector | None = None
        election = config.leader_election
        if election.enabled:
            renew = seconds(election.renew_deadline)
            # its own client: a renewal must fail fast, well inside the renew deadline
            lease_client = KubeClient(api, retry=RetryPolicy(attempts=2, base_delay=0.1, max_delay=0.5),
                                      request_timeout=max(1.0, renew / 3))
            self.elector = LeaderElector(
                lease_client, namespace=election.lease_namespace, name=election.lease_name, identity=self.identity,
                lease_duration=seconds(election.lease_duration), renew_deadline=seconds(election.renew_deadline),
                retry_period=seconds(election.retry_period), on_started_leading=self._started_leading,
                on_stopped_leading=self._stopped_leading)
        self.gate = build_gate(config, self.source)
        # the follower's watch-fed cache is what the cycle reads (LISTs only while it is not synced)
        self.follower = RunFollower(self.kube, execution.namespace, self._followed)
        self.api_witness = ApiWitness(KubeCluster(self.kube, execution.namespace, cache=self.follower.cache))
        self.reconciler = Reconciler(self.source, self.api_witness, settings=settings,
                                     renderer=Renderer(execution.templates_dir, execution.namespace),
                                     store=self.store, fence=self.is_leader, gate=self.gate)
        self.reconciler.on_locks_judged = self.metrics.locks_awaiting_writeback.set
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        self.interval = float(seconds(repo.poll_interval))
        # how long Git or the API server may be unreachable before /readyz says so: a few
        # polls (one failed fetch is not an outage), never more than 10 minutes
        self.readiness_grace = (readiness_grace if readiness_grace is not None
                                else min(max(3 * self.interval, 60.0), 600.0))
        self.follow_interval = follow_interval
        self.last_git_ok = -math.inf  # time.monotonic() of the last successful real fetch
        self.git_error = ""  # why the last fetch failed ("" after a success)
        self._git_probe_at = -math.inf
        self._kube_probe_at = -math.inf
        self._warned: dict[str, str] = {}  # what → the error last logged as a warning
        self.last_error = ""
        self.metrics.git_reachable.set_function(lambda: 1.0 if self.git_reachable() else 0.0)
        self.metrics.kube_reachable.set_function(lambda: 1.0 if self.kube_reachable() else 0.0)
        self.cycles = 0
        self.heap = HeapTrimmer()
        self.cycle_done = threading.Condition()
        self.last_result: CycleResult | None = None
        self._again = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._follower_started = False
        self.servers: list[ServerThread] = []
        webhook = config.server.webhook
        self._webhook_secret = read_secret(webhook.secret_file, webhook.secret_env, "server.webhook secret")
        self._metrics_token = read_secret(config.server.metrics_token_file, None, "server.metricsTokenFile")
        self._our_repo = normalise_repo_url(repo.url)
        # forge statuses and notifications: queued after each cycle, sent by their own threads
        self.notifier = build_notifier(config, durable=self.store.durable, is_leader=self.is_leader,
                                       metrics=self.metrics, git_dir=self.source.cache_path, git_env=self.source.env,
                                       default_state_file=self.source.cache_path.with_suffix(".deliveries.json"))

    # -- leadership ----------------------------------------------------------------------

    def _started_leading(self) -> None:
        self.store.forget()  # what a standby read may be stale: recover from the remote
        self.notifier.catch_up()
        self.metrics.set_leader(True)
        self.log.info("became leader", extra={"identity": self.identity})
        self.trigger()

    def _stopped_leading(self) -> None:
        self.metrics.set_leader(False)
        self.log.warning("lost leadership; standing by", extra={"identity": self.identity})

    # -- webhook ---------------------------------------------------------------------------

    def on_push(self, event: PushEvent) -> bool:
        if event.deleted or event.branch != self.config.repository.branch:
            return False
        if self._our_repo not in {normalise_repo_url(u) for u in event.clone_urls() if u}:
            self.log.info("push for another repository ignored", extra={"repository": event.repository})
            return False
        self.log.info("push received; reconciling now", extra={"after": event.after, "delivery": event.delivery})
        self.trigger()
        return True

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, serve_http: bool = True) -> None:
        server = self.config.server
        if serve_http:
            apps: list[tuple[str, App, str]] = [
                ("health", health_app(lambda: not self._stopped.is_set(), self.ready), server.health_address),
                ("metrics", metrics_app(self.metrics, self._metrics_token), server.metrics_address),
                ("webhook", by_path({"/webhook": webhook_app(self._secret_for, self.on_push, self.metrics,
                                                             server.webhook.max_body_bytes)},
                                    dashboard_app(self)), server.webhook_address),
            ]
            for name, app, address in apps:
                host, port = _address(address)
                self.servers.append(ServerThread(app, host, port, name=name).start())
        self.scheduler.add_job(self.reconcile_job, "interval", seconds=self.interval, id="reconcile",
                               jitter=max(1.0, self.interval * 0.1), max_instances=1, coalesce=True,
                               next_run_time=datetime.now(timezone.utc), misfire_grace_time=None)
        self.scheduler.add_job(self.follow_job, "interval", seconds=self.follow_interval, id="follow",
                               max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.start()
        self.notifier.start()
        if self.elector is not None:
            self.elector.start()
        else:
            self.metrics.set_leader(True)

    def stop(self) -> None:
        """Graceful: finish the cycle in progress, push pending status, release the Lease."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.store.stopping.set()  # a push retrying now gives up at its next safe point
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)  # the running cycle completes, including its push
        self.follower.stop()
        if self.store.pending and self.is_leader():
            self.store.stopping.clear()  # one last, full attempt for what is pending
            self.store.attempts = min(self.store.attempts, 3)
            try:
                self.store.save(self.store.load(), [], self.reconciler.last_revision)
            except ReconcilerError as e:
                self.log.error("pending status could not be pushed before exit", extra={"error": str(e)})
        self.notifier.stop()
        if self.elector is not None:
            self.elector.stop(release=True)
        for server in self.servers:
            server.stop()
        self._stopped.set()

    def run_forever(self) -> None:
        done = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            self.log.info("signal received; shutting down", extra={"signal": signum})
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        self.log.info("reconciler started", extra={
            "identity": self.identity, "repository": redact_url(self.config.repository.url),
            "branch": self.config.repository.branch,
            "ports": {s.name: s.port for s in self.servers}})
        # a bounded wait: a signal the OS delivers to another thread only sets a flag, which
        # the main thread acts on when it next wakes — an unbounded wait might never wake
        while not done.wait(0.5):
            pass
        self.stop()


def build_gate(config: Config, source: GitSource) -> Gate | None:
    sig = config.signatures
    verifier = None
    if sig.mode != "off":
        verifier = SignatureVerifier(source, SignaturePolicy(sig.mode, sig.allowed_signers_file, sig.gpg_keyring))
    if verifier is None and config.policy is None:
        return None
    return Gate(policy=config.policy, verifier=verifier)


def check(config: Config) -> list[str]:
    """Problems that would stop the service, found without starting it."""
    problems = []
    try:
        git_environment(config.repository.auth)
    except ConfigError as e:
        problems.append(str(e))
    for file, env, what in ((config.server.webhook.secret_file, config.server.webhook.secret_env, "webhook secret"),
                            (config.server.metrics_token_file, None, "metrics token")):
        try:
            read_secret(file, env, what)
        except ConfigError as e:
            problems.append(str(e))
    if config.server.webhook.secret_file is None and not config.server.webhook.secret_env:
        problems.append("server.webhook: no secret configured: every webhook will be refused (polling still works)")
    if config.execution.templates_dir is not None and not config.execution.templates_dir.is_dir():
        problems.append(f"execution.templatesDir: {config.execution.templates_dir} is not a directory")
    problems += notification_problems(config)
    return problems
