"""What the service says about itself: readiness, reachability, and the dashboard's data.

Readiness is honest: Git counts as reachable only while a *real* fetch succeeded within
the grace period, the API server only while a real API call did (:class:`ApiWitness`).
A follow-up pins the revision and fetches nothing, so it proves nothing about Git; when
the last real check grows old between polls, the follow job makes one (a fetch, a list,
:meth:`ServiceStatus._probe`), so a long poll interval never reads as an outage and an
outage never hides behind a running execution.  The ``git_reachable``/``kube_reachable``
gauges follow the same rule.

:class:`ServiceStatus` is the part of :class:`reconciler.service.app.Service` the HTTP side
reads (``/readyz``, the dashboard, the webhook's secret); the service assigns every
attribute declared here when it is built.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from reconciler.errors import GitError, KubeError, Unavailable
from reconciler.record.writeback import GitStatusStore
from reconciler.render.renderer import RenderedRun
from reconciler.run.cluster import Cluster
from reconciler.service.config_model import Config
from reconciler.service.cycle import Reconciler
from reconciler.service.delivery import Notifier
from reconciler.service.leader import LeaderElector
from reconciler.service.metrics import Metrics
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import redact_url
from reconciler.views import status_view as views

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


class ServiceStatus:
    """Readiness and the read-only views of a running service (see the module docstring)."""

    config: Config
    log: logging.Logger
    source: GitSource
    store: GitStatusStore
    reconciler: Reconciler
    api_witness: ApiWitness
    elector: LeaderElector | None
    metrics: Metrics
    notifier: Notifier
    cycles: int
    readiness_grace: float
    last_git_ok: float  # time.monotonic() of the last successful real fetch
    git_error: str  # why the last fetch failed ("" after a success)
    _git_probe_at: float
    _kube_probe_at: float
    _warned: dict[str, str]  # what → the error last logged as a warning
    _webhook_secret: str | None

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

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
