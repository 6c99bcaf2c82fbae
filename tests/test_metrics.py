"""Metrics: what one cycle result, fetch, write-back, leadership and webhook turn into."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.declare.declared import Declaration
from reconciler.record.status import ExecutionState, RunRef
from reconciler.record.transitions import CycleResult, Transition
from reconciler.service.metrics import HEALTHS, PHASES, SYNCS, WORKFLOW_BUCKETS, Metrics, workflow_id

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
WF = "increase-memory-limit@1.2.0"
REF = RunRef("PipelineRun", "kubernaut-workflows", "wfe-a")


def value(m: Metrics, name: str, **labels: str) -> float | None:
    """One sample by its exposed name and exact labels (None when absent)."""
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def state(name: str, phase: str, *, reason: str = "", workflow: str = WF, seconds: float | None = None,
          sync: str = "Synced", health: str | None = None, run: bool = True) -> ExecutionState:
    health = health or {"Completed": "Healthy", "Skipped": "Healthy", "Failed": "Degraded"}.get(phase, "Progressing")
    return ExecutionState(name=name, phase=phase, reason=reason, workflow=workflow, sync=sync, health=health,
                          execution_ref=REF if run else None,
                          start_time=T0 if seconds is not None else None,
                          completion_time=T0 + timedelta(seconds=seconds) if seconds is not None else None)


def result(states: list[ExecutionState], transitions: list[Transition], *, errors: list[str] | None = None,
           revision: str = "abc123", cluster_unknown: bool = False, loaded: bool = True,
           seconds: float = 0.3) -> CycleResult:
    # the rows' "→ Running with a run" transitions are runs the cycle created (not adopted)
    created = sum(1 for t in transitions if t.to_phase == "Running" and t.from_phase != "Running" and t.run)
    return CycleResult(revision, {s.name: s for s in states}, transitions, errors or [],
                       Declaration() if loaded else None, cluster_unknown, seconds, created=created)


def tr(name: str, before: str, after: str, reason: str = "", run: str = "wfe-a") -> Transition:
    return Transition(name, before, after, reason, "", "payments/Deployment/api", run)


# (case, state after the cycle, transition, expected {(sample, labels): value})
OUTCOMES = [
    ("created", state("a", "Running", reason="Running"), tr("a", "Pending", "Running", "Running"),
     {("workflowexecution_pipelinerun_creation_total", ()): 1,
      ("workflowexecution_total", (("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): None}),
    ("new and created in one cycle", state("a", "Running"), tr("a", "", "Running"),
     {("workflowexecution_pipelinerun_creation_total", ()): 1}),
    ("completed", state("a", "Completed", reason="Succeeded", seconds=90), tr("a", "Running", "Completed"),
     {("workflowexecution_total", (("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): 1,
      ("workflowexecution_duration_seconds_count", (("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): 1,
      ("workflowexecution_duration_seconds_sum", (("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): 90,
      ("workflowexecution_duration_seconds_bucket", (("le", "60.0"), ("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): 0,
      ("workflowexecution_duration_seconds_bucket", (("le", "120.0"), ("outcome", "Completed"), ("workflow_id", "increase-memory-limit"))): 1,
      ("workflowexecution_pipelinerun_creation_total", ()): 0}),
    ("failed after an hour", state("a", "Failed", reason="TaskFailed", seconds=3700), tr("a", "Running", "Failed"),
     {("workflowexecution_total", (("outcome", "Failed"), ("workflow_id", "increase-memory-limit"))): 1,
      ("workflowexecution_duration_seconds_bucket", (("le", "3600.0"), ("outcome", "Failed"), ("workflow_id", "increase-memory-limit"))): 0,
      ("workflowexecution_duration_seconds_bucket", (("le", "7200.0"), ("outcome", "Failed"), ("workflow_id", "increase-memory-limit"))): 1}),
    ("skipped: counted, no duration", state("a", "Skipped", reason="ResourceBusy", run=False),
     tr("a", "", "Skipped", "ResourceBusy", run=""),
     {("workflowexecution_total", (("outcome", "Skipped"), ("workflow_id", "increase-memory-limit"))): 1,
      ("kubernaut_reconciler_skips_total", (("reason", "ResourceBusy"),)): 1,
      ("workflowexecution_duration_seconds_count", (("outcome", "Skipped"), ("workflow_id", "increase-memory-limit"))): None}),
    ("invalid file: unknown workflow", state("a", "Failed", reason="ConfigurationError", workflow="", run=False),
     tr("a", "", "Failed", "ConfigurationError", run=""),
     {("workflowexecution_total", (("outcome", "Failed"), ("workflow_id", "unknown"))): 1}),
    ("terminal to terminal is not a new outcome", state("a", "Failed", reason="Cancelled", seconds=10),
     tr("a", "Completed", "Failed", "Cancelled"),
     {("workflowexecution_total", (("outcome", "Failed"), ("workflow_id", "increase-memory-limit"))): None}),
    ("reason change while running is no creation", state("a", "Running", reason="TaskRunning"),
     tr("a", "Running", "Running", "TaskRunning"),
     {("workflowexecution_pipelinerun_creation_total", ()): 0}),
    ("dry run: pending, nothing created", state("a", "Pending", run=False), tr("a", "", "Pending", run=""),
     {("workflowexecution_pipelinerun_creation_total", ()): 0}),
]


@pytest.mark.parametrize(("case", "after", "transition", "expected"), OUTCOMES, ids=[c[0] for c in OUTCOMES])
def test_outcomes_durations_creations(case: str, after: ExecutionState, transition: Transition,
                                      expected: dict[tuple[str, tuple[tuple[str, str], ...]], float | None]) -> None:
    m = Metrics()
    m.record_cycle(result([after], [transition]))
    for (name, labels), want in expected.items():
        assert value(m, name, **dict(labels)) == want, (case, name, labels)


def test_state_gauges_cover_every_value_and_never_go_stale() -> None:
    m = Metrics()
    states = [state("a", "Running"), state("b", "Running", sync="OutOfSync"), state("c", "Failed"),
              state("d", "Completed"), state("e", "Pending", sync="Unknown", health="Unknown")]
    m.record_cycle(result(states, []))
    assert {p: value(m, "kubernaut_reconciler_executions", phase=p) for p in PHASES} == {
        "Pending": 1, "Running": 2, "Completed": 1, "Failed": 1, "Skipped": 0}
    assert {s: value(m, "kubernaut_reconciler_executions_by_sync", sync=s) for s in SYNCS} == {
        "Synced": 3, "OutOfSync": 1, "Unknown": 1}
    assert {h: value(m, "kubernaut_reconciler_executions_by_health", health=h) for h in HEALTHS} == {
        "Healthy": 1, "Suspended": 0, "Progressing": 2, "Missing": 0, "Degraded": 1, "Unknown": 1}
    assert {h: value(m, "kubernaut_reconciler_repository_health", health=h) for h in HEALTHS} == {
        h: (1 if h == "Unknown" else 0) for h in HEALTHS}

    m.record_cycle(result([state("d", "Completed")], []))  # the others were removed from Git
    assert {p: value(m, "kubernaut_reconciler_executions", phase=p) for p in PHASES} == {
        "Pending": 0, "Running": 0, "Completed": 1, "Failed": 0, "Skipped": 0}
    assert value(m, "kubernaut_reconciler_repository_health", health="Healthy") == 1
    assert value(m, "kubernaut_reconciler_repository_health", health="Unknown") == 0


def test_unexpected_label_values_are_zeroed_when_they_disappear() -> None:
    m = Metrics()
    m.record_cycle(result([state("a", "Weird")], []))
    assert value(m, "kubernaut_reconciler_executions", phase="Weird") == 1
    m.record_cycle(result([state("a", "Running")], []))
    assert value(m, "kubernaut_reconciler_executions", phase="Weird") == 0


def test_empty_registry_already_exposes_zeroes() -> None:
    m = Metrics()
    assert value(m, "kubernaut_reconciler_executions", phase="Running") == 0
    assert value(m, "kubernaut_reconciler_repository_health", health="Healthy") == 1
    assert value(m, "workflowexecution_pipelinerun_creation_total") == 0


# (case, cycle, expected git, kube, errors, last sync)
CYCLES = [
    ("clean", dict(), 1, 1, 0, 1000.0),
    ("cluster unreadable", dict(cluster_unknown=True, errors=["cluster: connection refused"]), 1, 0, 1, None),
    ("one execution failed", dict(errors=["a: forbidden", "b: forbidden"]), 1, 1, 2, None),
    ("git unreachable: aborted before loading", dict(revision="", loaded=False, errors=["git: timeout"]),
     0, None, 1, None),
]


@pytest.mark.parametrize(("case", "kwargs", "git", "kube", "errors", "synced"), CYCLES, ids=[c[0] for c in CYCLES])
def test_cycle_health(case: str, kwargs: dict[str, object], git: float, kube: float | None, errors: float,
                      synced: float | None) -> None:
    m = Metrics(clock=lambda: 1000.0)
    m.record_cycle(result([state("a", "Running")], [], **kwargs))  # type: ignore[arg-type]
    assert value(m, "kubernaut_reconciler_git_reachable") == git
    assert value(m, "kubernaut_reconciler_kube_reachable") == (kube if kube is not None else 0)
    assert value(m, "kubernaut_reconciler_cycle_errors_total") == errors
    assert value(m, "kubernaut_reconciler_last_successful_sync_timestamp_seconds") == (synced or 0)
    assert value(m, "kubernaut_reconciler_cycle_duration_seconds_count") == 1
    assert value(m, "kubernaut_reconciler_cycle_duration_seconds_sum") == pytest.approx(0.3)


def test_aborted_cycle_keeps_the_last_known_states() -> None:
    m = Metrics()
    m.record_cycle(result([state("a", "Running"), state("b", "Failed")], []))
    m.record_cycle(result([], [], revision="", loaded=False, errors=["git: unreachable"]))
    assert value(m, "kubernaut_reconciler_executions", phase="Running") == 1
    assert value(m, "kubernaut_reconciler_repository_health", health="Degraded") == 1
    assert value(m, "kubernaut_reconciler_kube_reachable") == 1  # not re-measured


def test_fetch_writeback_leader_webhook() -> None:
    m = Metrics()
    m.record_fetch(0.4, ok=True)
    assert value(m, "kubernaut_reconciler_git_reachable") == 1
    m.record_fetch(30.0, ok=False)
    assert value(m, "kubernaut_reconciler_git_reachable") == 0
    assert value(m, "kubernaut_reconciler_git_fetch_duration_seconds_count") == 2
    assert value(m, "kubernaut_reconciler_git_fetch_duration_seconds_bucket", le="0.5") == 1
    assert value(m, "kubernaut_reconciler_git_fetch_failures_total") == 1
    m.record_writeback(True, commits=2)
    m.record_writeback(True, commits=0)  # nothing changed: no commit
    m.record_writeback(False)
    assert value(m, "kubernaut_reconciler_writeback_commits_total") == 2
    assert value(m, "kubernaut_reconciler_writeback_failures_total") == 1
    assert value(m, "kubernaut_reconciler_leader") == 0
    m.set_leader(True)
    assert value(m, "kubernaut_reconciler_leader") == 1
    m.record_webhook("github", "accepted")
    m.record_webhook("github", "accepted")
    m.record_webhook("gitlab", "unauthorized")
    assert value(m, "kubernaut_reconciler_webhook_requests_total", provider="github", result="accepted") == 2
    assert value(m, "kubernaut_reconciler_webhook_requests_total", provider="gitlab", result="unauthorized") == 1


def test_instances_do_not_collide_and_never_touch_the_global_registry() -> None:
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()
    a.set_leader(True)
    assert value(a, "kubernaut_reconciler_leader") == 1
    assert value(b, "kubernaut_reconciler_leader") == 0
    assert REGISTRY.get_sample_value("kubernaut_reconciler_leader") is None


def test_seed_names_and_buckets() -> None:
    m = Metrics()
    m.record_cycle(result([state("a", "Completed", seconds=5)], [tr("a", "Running", "Completed")]))
    text = m.exposition().decode()
    for line in ("# TYPE workflowexecution_total counter", "# TYPE workflowexecution_duration_seconds histogram",
                 "# TYPE workflowexecution_pipelinerun_creation_total counter"):
        assert line in text
    assert 'workflowexecution_total{outcome="Completed",workflow_id="increase-memory-limit"} 1.0' in text
    les = [float(s.labels["le"]) for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == "workflowexecution_duration_seconds_bucket"]
    assert les == [*WORKFLOW_BUCKETS, float("inf")]
    assert WORKFLOW_BUCKETS[0] == 5 and WORKFLOW_BUCKETS[-1] == 7200


@pytest.mark.parametrize(("workflow", "expected"), [
    ("increase-memory-limit@1.2.0", "increase-memory-limit"), ("restart-pod", "restart-pod"), ("", "unknown"),
    ("@1.0", "unknown")])
def test_workflow_id_drops_the_version(workflow: str, expected: str) -> None:
    assert workflow_id(workflow) == expected


def test_git_cache_rebuilds_are_counted_once_each() -> None:
    """The source keeps a running count; the counter adds only what is new."""
    m = Metrics()
    for seen in (0, 1, 1, 3):
        m.record_cycle(CycleResult("r", {}, [], [], Declaration(), False, 0.1, cache_rebuilds=seen))
    assert m.registry.get_sample_value("kubernaut_reconciler_git_cache_rebuilds_total") == 3


@pytest.mark.parametrize("skipped", [[False, True, True, False, True], [False, False]])
def test_skipped_cycles_are_counted_apart_and_still_timed(skipped: list[bool]) -> None:
    """A skipped cycle (nothing changed) is still a cycle (its fetch ran): timed, and counted."""
    m = Metrics()
    for flag in skipped:
        m.record_cycle(CycleResult("r", {}, [], [], Declaration(), False, 0.01, skipped=flag))
    assert m.registry.get_sample_value("kubernaut_reconciler_cycles_skipped_total") == sum(skipped)
    assert m.registry.get_sample_value("kubernaut_reconciler_cycle_duration_seconds_count") == len(skipped)
