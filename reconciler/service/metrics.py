"""Prometheus metrics of the reconciler service (SPEC §9, BR-WF-008).

Why a module of its own: the reconcile cycle stays pure (it returns a
:class:`~reconciler.service.cycle.CycleResult`), and this is the one place that turns results,
Git fetches, write-backs, leadership and webhook deliveries into time series.

* The seed names are kept exactly, so dashboards written for the WorkflowExecution
  controller keep working: ``workflowexecution_total{outcome,workflow_id}``,
  ``workflowexecution_duration_seconds{outcome,workflow_id}`` and
  ``workflowexecution_pipelinerun_creation_total``.  ``outcome`` is the terminal phase
  (Completed, Failed, Skipped); ``workflow_id`` is the catalog id without ``@version``
  (bounded cardinality).
* Everything else is prefixed ``kubernaut_reconciler_``.
* State gauges (executions by phase/sync/health, repository health) are set for *every*
  known value on each cycle — zero for absent ones — so a series never goes stale and
  ``sum()`` is always the number of executions.
* Each :class:`Metrics` owns its own :class:`CollectorRegistry`, never the global one, so
  several instances (tests, several reconcilers in one process) never collide.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.record.status import HEALTH_ORDER, TERMINAL, ExecutionState, repository_health

if TYPE_CHECKING:
    from reconciler.record.transitions import CycleResult

PREFIX = "kubernaut_reconciler_"
PHASES = ("Pending", "Running", "Completed", "Failed", "Skipped")
SYNCS = ("Synced", "OutOfSync", "Unknown")
HEALTHS = tuple(HEALTH_ORDER)  # Healthy, Suspended, Progressing, Missing, Degraded, Unknown
DELIVERY_RESULTS = ("sent", "failed", "dropped")
WEBHOOK_RESULTS = ("accepted", "ignored", "unauthorized", "too_large", "bad_request", "error")

# Remediation runs take seconds (a restart) to hours (a drain or a rollout of many pods).
WORKFLOW_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0)
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def workflow_id(workflow: str) -> str:
    """``increase-memory-limit@1.2.0`` → ``increase-memory-limit``; empty → ``unknown``."""
    return workflow.partition("@")[0].strip() or "unknown"


class Metrics:
    """All time series of one reconciler; :meth:`exposition` renders them."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        r = self.registry
        # -- seed names (BR-WF-008) --
        self.executions_total = Counter(
            "workflowexecution_total", "Executions that reached a terminal phase, by outcome and workflow id.",
            ["outcome", "workflow_id"], registry=r)
        self.execution_duration = Histogram(
            "workflowexecution_duration_seconds",
            "Run time of executions that reached a terminal phase (start to completion).",
            ["outcome", "workflow_id"], buckets=WORKFLOW_BUCKETS, registry=r)
        self.pipelinerun_creations = Counter(
            "workflowexecution_pipelinerun_creation_total", "Runs (PipelineRuns or Jobs) created.", registry=r)
        self.runs_adopted = Counter(
            PREFIX + "runs_adopted_total",
            "Existing runs of ours taken over instead of created (restart, lost create response, failover).",
            registry=r)
        # -- reconciler --
        self.skips = Counter(PREFIX + "skips_total", "Executions skipped, by reason.", ["reason"], registry=r)
        self.cycle_duration = Histogram(PREFIX + "cycle_duration_seconds", "Duration of reconcile cycles.",
                                        buckets=CYCLE_BUCKETS, registry=r)
        self.cycles_skipped = Counter(
            PREFIX + "cycles_skipped_total",
            "Cycles whose inputs had not changed (branch tip, watch cache, status, deadlines): the previous "
            "pass's result stands and no step ran.", registry=r)
        self.cycle_errors = Counter(PREFIX + "cycle_errors_total",
                                    "Errors recorded by reconcile cycles (one per failing execution or step).",
                                    registry=r)
        self.git_fetch_duration = Histogram(PREFIX + "git_fetch_duration_seconds",
                                            "Duration of fetches of the watched repository.",
                                            buckets=FETCH_BUCKETS, registry=r)
        self.git_fetch_failures = Counter(PREFIX + "git_fetch_failures_total", "Failed fetches.", registry=r)
        self.git_reachable = Gauge(PREFIX + "git_reachable",
                                   "1 while a fetch succeeded within the readiness grace period.", registry=r)
        self.kube_reachable = Gauge(PREFIX + "kube_reachable",
                                    "1 while the API server answered a call within the readiness grace period.",
                                    registry=r)
        self.writeback_commits = Counter(PREFIX + "writeback_commits_total", "Status commits pushed to Git.",
                                         registry=r)
        self.writeback_failures = Counter(PREFIX + "writeback_failures_total",
                                          "Status write-backs that failed (retried next cycle).", registry=r)
        self.last_sync = Gauge(PREFIX + "last_successful_sync_timestamp_seconds",
                               "Unix time of the end of the last cycle without errors.", registry=r)
        self.by_phase = Gauge(PREFIX + "executions", "Executions by phase.", ["phase"], registry=r)
        self.by_sync = Gauge(PREFIX + "executions_by_sync", "Executions by sync status.", ["sync"], registry=r)
        self.by_health = Gauge(PREFIX + "executions_by_health", "Executions by health.", ["health"], registry=r)
        self.repo_health = Gauge(PREFIX + "repository_health",
                                 "The repository's health (worst of its executions), one-hot.", ["health"],
                                 registry=r)
        self.leader = Gauge(PREFIX + "leader", "1 when this replica holds the leader lease.", registry=r)
        self.locks_awaiting_writeback = Gauge(
            PREFIX + "locks_awaiting_writeback",
            "Runs (locks) past their cooldown kept because their terminal status is not on the remote yet.",
            registry=r)
        self.git_cache_rebuilds = Counter(PREFIX + "git_cache_rebuilds_total",
                                          "Damaged Git caches rebuilt from the remote.", registry=r)
        self._cache_rebuilds_seen = 0
        self.status_files_ignored = Gauge(
            PREFIX + "status_files_ignored",
            "Files under status/ on the branch that are not valid status documents (ignored, never trusted).",
            registry=r)
        self.webhook_requests = Counter(PREFIX + "webhook_requests_total", "Webhook deliveries, by result.",
                                        ["provider", "result"], registry=r)
        # -- deliveries (forge statuses, webhooks, Slack; reconciler.service.delivery) --
        self.deliveries = Counter(
            PREFIX + "deliveries_total",
            "Outbound delivery requests by sink and result: sent, failed (an attempt that will be retried "
            "or dropped), dropped (given up: refused or the queue was full).", ["sink", "result"], registry=r)
        self.delivery_queue = Gauge(PREFIX + "delivery_queue_depth", "Items waiting to be delivered, by sink.",
                                    ["sink"], registry=r)
        # label values seen outside the fixed lists, so they are zeroed when they disappear
        self._extra: dict[str, set[str]] = {"phase": set(), "sync": set(), "health": set()}
        self._set_counts(self.by_phase, "phase", PHASES, [])
        self._set_counts(self.by_sync, "sync", SYNCS, [])
        self._set_counts(self.by_health, "health", HEALTHS, [])
        self._set_repository_health("Healthy")

    # -- recording ----------------------------------------------------------------------

    def record_cycle(self, result: CycleResult) -> None:
        """Everything one cycle tells: outcomes, durations, creations, skips, gauges."""
        for t in result.transitions:
            state = result.states.get(t.name)
            if t.to_phase in TERMINAL and t.from_phase not in TERMINAL:
                labels = (t.to_phase, workflow_id(state.workflow if state else ""))
                self.executions_total.labels(*labels).inc()
                duration = state.duration if state else None
                if duration is not None:
                    self.execution_duration.labels(*labels).observe(max(0.0, duration.total_seconds()))
                if t.to_phase == "Skipped":
                    self.skips.labels(t.reason or "Unknown").inc()
        # only runs this process created: taking over an existing run (restart, lost response,
        # another replica's) is an adoption, counted apart
        self.pipelinerun_creations.inc(result.created)
        self.runs_adopted.inc(result.adopted)
        self.cycle_duration.observe(max(0.0, result.seconds))
        if result.skipped:
            self.cycles_skipped.inc()
        if result.errors:
            self.cycle_errors.inc(len(result.errors))
        if result.locks_awaiting_writeback is not None:  # follow-ups do not judge locks: keep the gauge
            self.locks_awaiting_writeback.set(result.locks_awaiting_writeback)
        if result.cache_rebuilds > self._cache_rebuilds_seen:  # the source's own running count
            self.git_cache_rebuilds.inc(result.cache_rebuilds - self._cache_rebuilds_seen)
            self._cache_rebuilds_seen = result.cache_rebuilds
        self.status_files_ignored.set(len(result.ignored_status_files))
        self.git_reachable.set(1 if result.revision else 0)
        if result.declaration is not None:
            # the cycle got past loading: its states are complete and it tried the cluster
            self.kube_reachable.set(0 if result.cluster_unknown else 1)
            self.set_states(result.states)
        if not result.errors and result.revision:
            self.last_sync.set(self._clock())

    def set_states(self, states: Mapping[str, ExecutionState]) -> None:
        """Set the state gauges to the current counts (zero for absent values)."""
        values = list(states.values())
        self._set_counts(self.by_phase, "phase", PHASES, [s.phase for s in values])
        self._set_counts(self.by_sync, "sync", SYNCS, [s.sync for s in values])
        self._set_counts(self.by_health, "health", HEALTHS, [s.health for s in values])
        self._set_repository_health(repository_health(values))

    def record_fetch(self, seconds: float, ok: bool) -> None:
        self.git_fetch_duration.observe(max(0.0, seconds))
        self.git_reachable.set(1 if ok else 0)
        if not ok:
            self.git_fetch_failures.inc()

    def record_writeback(self, ok: bool, commits: int = 1) -> None:
        if ok:
            if commits > 0:
                self.writeback_commits.inc(commits)
        else:
            self.writeback_failures.inc()

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    def record_webhook(self, provider: str, result: str) -> None:
        self.webhook_requests.labels(provider or "unknown", result).inc()

    def record_delivery(self, sink: str, result: str) -> None:
        self.deliveries.labels(sink, result).inc()

    def set_delivery_queue(self, sink: str, depth: int) -> None:
        """Also creates the sink's counters at zero, so rate() works from the first failure."""
        self.delivery_queue.labels(sink).set(depth)
        for result in DELIVERY_RESULTS:
            self.deliveries.labels(sink, result)

    def exposition(self) -> bytes:
        """The text exposition format of this registry (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)

    # -- helpers ------------------------------------------------------------------------

    def _set_counts(self, gauge: Gauge, label: str, known: Iterable[str], values: list[str]) -> None:
        counts = Tally(values)
        extra = self._extra[label]
        extra.update(v for v in counts if v not in known)
        for value in (*known, *sorted(extra)):
            gauge.labels(value).set(counts.get(value, 0))

    def _set_repository_health(self, health: str) -> None:
        for value in HEALTHS:
            self.repo_health.labels(value).set(1 if value == health else 0)
