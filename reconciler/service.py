"""``reconciler run``: the always-on service, wired from its parts.

    APScheduler ── reconcile job (poll interval, jittered, never two at once, coalesced)
               └── follow job (every few seconds: observe running executions — the poll
                   fallback for the watch)
    RunFollower ── watch events → observe that execution now
    webhook     ── push to the tracked branch → run the reconcile job now
    Lease       ── only the leader runs jobs; every write is fenced on leadership
    HTTP        ── :8081 /healthz /readyz, :9090 /metrics, :8080 /webhook

Readiness is honest: Git counts as reachable only while a *real* fetch succeeded within
the grace period, the API server only while a real API call did (:class:`ApiWitness`).
A follow-up pins the revision and fetches nothing, so it proves nothing about Git; when
the last real check grows old between polls, the follow job makes one (a fetch, a list),
so a long poll interval never reads as an outage and an outage never hides behind a
running execution.  The ``git_reachable``/``kube_reachable`` gauges follow the same rule.

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
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from apscheduler.schedulers.background import BackgroundScheduler
from starlette.types import ASGIApp

from . import views
from .cluster import Cluster, KubeCluster
from .config import Config, read_secret, seconds
from .cycle import CycleResult, Reconciler
from .dashboard import dashboard_app
from .errors import ConfigError, GitError, KubeError, ReconcilerError, Unavailable
from .follow import RunFollower
from .gate import Gate
from .gitauth import git_environment
from .gitsource import GitSource, redact_url
from .httpserver import ServerThread, health_app, metrics_app, webhook_app
from .kube import KubeClient, RetryPolicy, load_api_client
from .leader import LeaderElector, default_identity
from .lifecycle import Settings
from .metrics import Metrics
from .notify import build_notifier
from .notify import problems as notification_problems
from .render import RenderedRun, Renderer
from .signatures import SignaturePolicy, SignatureVerifier
from .webhook import PushEvent
from .writeback import GitStatusStore, Identity

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


T = TypeVar("T")


class ApiWitness:
    """The reconciler's cluster, noting when the API server last answered a call.

    An answer about an object (not found, conflict, invalid) is still an answer; no
    connection, a 5xx/429, or refused credentials (401/403) is not.  ``step_log`` is not
    witnessed: it swallows its own errors.
    """

    def __init__(self, inner: Cluster) -> None:
        self.inner = inner
        self.namespace = inner.namespace
        self._last_ok = -math.inf  # time.monotonic() of the last answer to a call
        self.last_error = ""

    @property
    def last_ok(self) -> float:
        """The last answer: to a call, or on the watch-fed cache's LISTs and watches (a read
        served from the cache is no answer by itself)."""
        cache = getattr(self.inner, "cache", None)
        return max(self._last_ok, cache.last_answer if cache is not None else -math.inf)

    def generation(self) -> int | None:
        """The inner cluster's watch-cache generation (see ``KubeCluster.generation``)."""
        inner = getattr(self.inner, "generation", None)
        return inner() if inner is not None else None

    @property
    def api_reads(self) -> int | None:
        """The inner cluster's count of reads that went to the API server."""
        return getattr(self.inner, "api_reads", None)

    def _call(self, call: Callable[[], T], *, read: bool = False) -> T:
        before = getattr(self.inner, "api_reads", None)
        try:
            result = call()
        except KubeError as e:
            if isinstance(e, Unavailable) or e.status in (401, 403):
                self.last_error = str(e)[:300]
            else:
                self._last_ok, self.last_error = time.monotonic(), ""
            raise
        if not read or before is None or getattr(self.inner, "api_reads", None) != before:
            self._last_ok, self.last_error = time.monotonic(), ""
        return result

    def list_runs(self) -> dict[str, dict[str, Any]]:
        return self._call(self.inner.list_runs, read=True)

    def probe(self) -> None:
        """A read the API server answers (never the cache): readiness when nothing else asked."""
        live = getattr(self.inner, "list_runs_live", self.inner.list_runs)
        self._call(live)

    def get_run(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._call(lambda: self.inner.get_run(kind, name), read=True)

    def children(self, run: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._call(lambda: self.inner.children(run), read=True)

    def create_run(self, rendered: RenderedRun) -> dict[str, Any]:
        return self._call(lambda: self.inner.create_run(rendered))

    def cancel_run(self, kind: str, name: str) -> None:
        self._call(lambda: self.inner.cancel_run(kind, name))

    def delete_run(self, kind: str, name: str, uid: str) -> None:
        self._call(lambda: self.inner.delete_run(kind, name, uid))

    def record_event(self, run: Mapping[str, Any] | None, reason: str, message: str,
                     warning: bool = False) -> None:
        self.inner.record_event(run, reason, message, warning)  # best effort, errors logged inside

    def step_log(self, pod: str, container: str) -> str:
        return self.inner.step_log(pod, container)

    def warning_events(self) -> list[dict[str, Any]]:
        return self._call(self.inner.warning_events)


class HeapTrimmer:
    """Gives the C heap's free pages back to the system after the first cycle, then at most
    once per ``interval`` seconds of cycles.

    The first cycle reads and parses everything (every execution and status file): megabytes
    of short-lived buffers and objects that, once freed, glibc keeps mapped for reuse, so the
    process's resident size stays at that start-up peak forever.  ``malloc_trim(0)`` releases
    every free page of every malloc arena (what pymalloc and the data still hold is
    untouched): at 10 000 executions ~8 MB after start-up.  It frees only memory that is
    free, so nothing the process computes changes; where the C library has no
    ``malloc_trim`` (musl, macOS) this does nothing."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.trims = 0
        self._last = -math.inf
        self._trim = _malloc_trim()

    def after_cycle(self) -> None:
        now = self.clock()
        if self._trim is None or now - self._last < self.interval:
            return
        self._last = now
        self._trim()
        self.trims += 1


def _malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class Service:
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

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _started_leading(self) -> None:
        self.store.forget()  # what a standby read may be stale: recover from the remote
        self.notifier.catch_up()
        self.metrics.set_leader(True)
        self.log.info("became leader", extra={"identity": self.identity})
        self.trigger()

    def _stopped_leading(self) -> None:
        self.metrics.set_leader(False)
        self.log.warning("lost leadership; standing by", extra={"identity": self.identity})

    # -- jobs ----------------------------------------------------------------------------

    def reconcile_job(self) -> CycleResult | None:
        """One full cycle (then another at once if a push arrived meanwhile)."""
        result: CycleResult | None = None
        while not self._stopping.is_set() and self.is_leader():
            self._again.clear()
            result = self._cycle(self.reconciler.run_once)
            if not self._again.is_set():
                break
        return result

    def _cycle(self, run: Callable[[], CycleResult]) -> CycleResult:
        commits = self.store.commits
        failures = self.store.failures
        result = run()
        self.cycles += 1
        if result.fetch_seconds is not None:  # a real fetch (a follow-up pins the revision: none)
            fetched = bool(result.revision)  # the fetch step leaves it empty when the fetch failed
            self._git_result(fetched, "" if fetched else next(
                (e for e in result.errors if e.startswith("git:")), "; ".join(result.errors)))
            self.metrics.record_fetch(result.fetch_seconds, fetched)
        self.metrics.record_cycle(result)
        if self.store.failures > failures:
            self.metrics.record_writeback(False)
        elif self.store.commits > commits:
            self.metrics.record_writeback(True, self.store.commits - commits)
        self.last_error = "; ".join(result.errors)[:500]
        self.notifier.observe(result)  # only what the remote holds; never blocks, never raises
        self.heap.after_cycle()
        if result.requeue:  # a chain's predecessor ended: start its dependent now, not at the next poll
            self.trigger()
        self._ensure_follower()
        with self.cycle_done:
            self.last_result = result
            self.cycle_done.notify_all()
        return result

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after some cycle or follow job (for operators'
        tools and tests)."""
        with self.cycle_done:
            return self.cycle_done.wait_for(predicate, timeout)

    def _notify(self) -> None:
        with self.cycle_done:
            self.cycle_done.notify_all()

    def follow_job(self) -> None:
        """Poll fallback for the watch: observe executions whose runs are in progress; then
        refresh a readiness check that has grown old.  Errors are logged, never raised."""
        if self._stopping.is_set() or not self.is_leader():
            return
        try:
            # before the first cycle has ended there is nothing to follow up that it will not
            # observe itself: loading every recorded state alongside its load (both at their
            # largest then) only raised the process's high-water mark, which it keeps
            running = {n for n, s in self.store.load().items() if s.phase == "Running"} if self.cycles else set()
            if running:
                self._cycle(lambda: self.reconciler.observe_now(running))
        except ReconcilerError as e:
            if isinstance(e, GitError):
                self._git_result(False, str(e))
            self.last_error = str(e)[:500]
            self._warn("follow", "follow-up failed; the next cycle retries", str(e))
        else:
            self._warned.pop("follow", None)
        self._probe()
        self._notify()

    def _warn(self, what: str, message: str, error: str) -> None:
        """A warning the first time an error is seen, debug while it repeats."""
        level = logging.DEBUG if self._warned.get(what) == error else logging.WARNING
        self._warned[what] = error
        self.log.log(level, message, extra={"error": error})

    def _probe(self) -> None:
        """A real fetch / API read when the last success is older than a third of the grace
        period (and no attempt was made for as long): between polls, readiness stays true
        only while it is."""
        due = self.readiness_grace / 3
        now = time.monotonic()
        if now - max(self.last_git_ok, self._git_probe_at) >= due:
            self._git_probe_at = now
            started = time.perf_counter()
            try:
                self.source.fetch()
                self._git_result(True, "")
                self._warned.pop("git", None)
            except GitError as e:
                self._git_result(False, str(e))
                self._warn("git", "git unreachable", str(e))
            self.metrics.record_fetch(time.perf_counter() - started, not self.git_error)
        if now - max(self.api_witness.last_ok, self._kube_probe_at) >= due:
            self._kube_probe_at = now
            try:
                self.api_witness.probe()
                self._warned.pop("kube", None)
            except KubeError as e:
                self._warn("kube", "kubernetes API unreachable", str(e))

    def _git_result(self, ok: bool, error: str) -> None:
        if ok:
            self.last_git_ok, self.git_error = time.monotonic(), ""
        else:
            self.git_error = error[:300]

    def _followed(self, name: str) -> None:
        if not self._stopping.is_set() and self.is_leader():
            self._cycle(lambda: self.reconciler.observe_now({name}))

    def _ensure_follower(self) -> None:
        if not self._follower_started:
            self._follower_started = True
            self.follower.start()

    def trigger(self) -> None:
        """Run the reconcile job now (or right after the one in progress)."""
        self._again.set()
        if self.scheduler.running:
            self.scheduler.modify_job("reconcile", next_run_time=datetime.now(timezone.utc))

    def on_push(self, event: PushEvent) -> bool:
        if event.deleted or event.branch != self.config.repository.branch:
            return False
        if self._our_repo not in {normalise_repo_url(u) for u in event.clone_urls() if u}:
            self.log.info("push for another repository ignored", extra={"repository": event.repository})
            return False
        self.log.info("push received; reconciling now", extra={"after": event.after, "delivery": event.delivery})
        self.trigger()
        return True

    # -- health --------------------------------------------------------------------------

    @property
    def last_kube_ok(self) -> float:
        """time.monotonic() of the last answer from the API server to the reconciler."""
        return self.api_witness.last_ok

    def git_reachable(self) -> bool:
        """A real fetch succeeded within the grace period."""
        return time.monotonic() - self.last_git_ok < self.readiness_grace

    def kube_reachable(self) -> bool:
        """A real API call was answered within the grace period."""
        return time.monotonic() - self.api_witness.last_ok < self.readiness_grace

    def ready(self) -> tuple[bool, str]:
        grace = f"{self.readiness_grace:g}s"
        if self.elector is not None and not self.is_leader():
            # a standby is ready when it can reach the API server (it holds no work)
            return (True, "standby") if self.cycles == 0 or self.kube_reachable() else (
                False, "kubernetes API unreachable")
        if self.cycles == 0:
            return False, "no reconcile cycle has completed yet"
        if not self.git_reachable():
            return False, f"git unreachable: {self.git_error or f'no successful fetch in the last {grace}'}"
        if not self.kube_reachable():
            why = self.api_witness.last_error or f"no API call answered in the last {grace}"
            return False, f"kubernetes API unreachable: {why}"
        return True, "ok"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, serve_http: bool = True) -> None:
        server = self.config.server
        if serve_http:
            apps: list[tuple[str, ASGIApp, str]] = [
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

    # -- dashboard data (read-only; called from the HTTP thread pool) ----------------------

    def _view(self) -> tuple[Any, dict[str, Any], str]:
        revision = self.reconciler.last_revision
        if not revision:
            return None, {}, ""
        return self.source.load(revision), self.store.load(), revision

    def summary(self) -> dict[str, Any]:
        decl, states, revision = self._view()
        if decl is None:
            return {"repository": redact_url(self.config.repository.url), "branch": self.config.repository.branch,
                    "revision": "", "health": "Unknown", "phases": {}, "sync": {}, "generatedAt": "",
                    "leader": self.is_leader()}
        return views.summary(decl, states, repository=redact_url(self.config.repository.url),
                             branch=self.config.repository.branch, revision=revision, leader=self.is_leader())

    def executions(self) -> list[dict[str, Any]]:
        decl, states, _ = self._view()
        return views.rows(decl, states) if decl is not None else []

    def execution(self, name: str) -> dict[str, Any] | None:
        decl, states, revision = self._view()
        if decl is None:
            return None
        # history up to our newest status commit, which may be newer than the last fetch
        history_at = self.store.last_commit or revision
        detail = views.detail(self.source, history_at, decl, states, name, self.reconciler.renderer)
        if detail is not None:
            detail["deliveries"] = self.notifier.deliveries(name)
        return detail

    def _secret_for(self, provider: str) -> bytes | None:
        return self._webhook_secret.encode() if self._webhook_secret else None

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


def by_path(prefixes: dict[str, ASGIApp], default: ASGIApp) -> ASGIApp:
    """One port, several apps: the webhook under /webhook, the dashboard everywhere else."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") in ("http", "websocket") else ""
        for prefix, target in prefixes.items():
            if path == prefix or path.startswith(prefix + "/"):
                await target(scope, receive, send)
                return
        await default(scope, receive, send)

    return app


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
