"""Pure lifecycle decisions and status rules (SPEC §4, §7, §8), table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import ResolvedExecution
from reconciler.observe.vocabulary import format_time
from reconciler.record.status import (
    ExecutionState,
    RunRef,
    from_document,
    health_of,
    repository_health,
    set_condition,
    sync_of,
    with_summary,
)
from reconciler.run.lifecycle import Act, RunInfo, Settings, decide_start, mark_spec_change, release_due, run_info
from tests.conftest import CATALOG, execution_yaml

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = Settings(cooldown=timedelta(minutes=5))


def execution(name: str = "oom-payment-api", extra: str = "") -> ResolvedExecution:
    decl = load_declaration({"executions/x.yaml": execution_yaml(name, extra=extra).encode(),
                             "workflows/w.yaml": CATALOG.encode()})
    assert not decl.problems
    return decl.executions[0]


def run(owner: str = "other", *, workflow: str = "increase-memory-limit", managed: bool = True,
        terminal: bool = False, completed_ago: timedelta | None = None, deleting: bool = False) -> RunInfo:
    return RunInfo(kind="PipelineRun", namespace="kubernaut-workflows", name="wfe-1", uid="u1",
                   execution=owner, workflow=workflow, managed=managed, terminal=terminal,
                   succeeded=True if terminal else None,
                   completion_time=NOW - completed_ago if completed_ago is not None else None,
                   deleting=deleting, spec_hash="h")


CASES: list[tuple[str, dict[str, Any], str, str, str, str]] = [
    # id, kwargs, expected phase, reason, act, words in message
    ("no run: create", {}, "Pending", "Creating", Act.CREATE, "creating tekton run wfe-"),
    ("suspended", {"extra": "  suspend: true\n"}, "Pending", "Suspended", Act.NONE, "held"),
    ("our run exists: adopt", {"run": run("oom-payment-api")}, "Running", "Running", Act.NONE, "running"),
    ("someone else's running run", {"run": run("other")}, "Skipped", "ResourceBusy", Act.NONE,
     "execution other is running"),
    ("unmanaged object with our name", {"run": run("", managed=False)}, "Skipped", "ResourceBusy", Act.NONE,
     "not managed by the reconciler"),
    ("same workflow within cooldown", {"run": run("other", terminal=True, completed_ago=timedelta(minutes=2))},
     "Skipped", "RecentlyRemediated", Act.NONE, "cooldown ends at 2026-"),
    ("different workflow within cooldown",
     {"run": run("other", workflow="rollback", terminal=True, completed_ago=timedelta(minutes=1))},
     "Pending", "CooldownActive", Act.NONE, "which ends at 2026-"),
    ("cooldown over but run not yet deleted",
     {"run": run("other", terminal=True, completed_ago=timedelta(minutes=6))},
     "Pending", "LockReleasing", Act.NONE, "held by other"),
    ("target claimed earlier this cycle", {"claimed": {"payments/Deployment/payment-api": "first"}},
     "Skipped", "ResourceBusy", Act.NONE, "first claimed it first"),
    ("own claim is fine", {"claimed": {"payments/Deployment/payment-api": "oom-payment-api"}},
     "Pending", "Creating", Act.CREATE, "creating"),
]


@pytest.mark.parametrize(("case", "kw", "phase", "reason", "act", "words"), CASES, ids=[c[0] for c in CASES])
def test_decide_start(case: str, kw: dict[str, Any], phase: str, reason: str, act: str, words: str) -> None:
    decision = decide_start(execution(extra=kw.get("extra", "")), None, kw.get("run"), kw.get("claimed", {}),
                            NOW, SETTINGS, "rev1")
    assert (decision.state.phase, decision.state.reason, decision.act) == (phase, reason, act)
    assert words in decision.state.message
    assert decision.state.observed_revision == "rev1"


def test_skip_details_name_the_conflict_and_cooldown() -> None:
    d = decide_start(execution(), None, run("other", terminal=True, completed_ago=timedelta(seconds=30)), {},
                     NOW, SETTINGS, "r")
    assert d.state.skip_details == {"reason": "RecentlyRemediated", "message": d.state.message,
                                    "conflictingExecution": "other",
                                    "cooldownUntil": format_time(NOW + timedelta(minutes=4, seconds=30))}
    assert d.state.completion_time == NOW


def test_cooldown_wait_then_start_with_injected_clock() -> None:
    holder = run("other", workflow="rollback", terminal=True, completed_ago=timedelta(minutes=1))
    waiting = decide_start(execution(), None, holder, {}, NOW, SETTINGS, "r")
    assert (waiting.state.phase, waiting.state.reason) == ("Pending", "CooldownActive")
    later = NOW + timedelta(minutes=4, seconds=1)
    assert release_due(holder, ExecutionState("other", phase="Completed"), True, later, SETTINGS)
    started = decide_start(execution(), waiting.state, None, {}, later, SETTINGS, "r")
    assert started.act == Act.CREATE


@pytest.mark.parametrize(("info", "owner", "declared", "ago", "due"), [
    (run("a", terminal=True), ExecutionState("a", phase="Completed"), True, timedelta(minutes=6), True),
    (run("a", terminal=True), ExecutionState("a", phase="Completed"), True, timedelta(minutes=4), False),
    (run("a", terminal=False), ExecutionState("a", phase="Running"), True, timedelta(minutes=60), False),
    (run("a", terminal=True), ExecutionState("a", phase="Running"), True, timedelta(minutes=60), False),
    (run("a", terminal=True), None, True, timedelta(minutes=60), False),  # owner has not recorded it
    (run("a", terminal=True), None, False, timedelta(minutes=60), True),  # orphan: file and status gone
    (run("", managed=False, terminal=True), None, False, timedelta(minutes=60), False),  # never others'
    (run("a", terminal=True, deleting=True), ExecutionState("a", phase="Failed"), True,
     timedelta(minutes=60), False),
])
def test_release_due(info: RunInfo, owner: ExecutionState | None, declared: bool, ago: timedelta,
                     due: bool) -> None:
    info = replace(info, completion_time=NOW - ago)
    assert release_due(info, owner, declared, NOW, SETTINGS) is due


@pytest.mark.parametrize(("obj", "terminal", "succeeded"), [
    ({"kind": "PipelineRun", "status": {"conditions": [{"type": "Succeeded", "status": "Unknown"}]}}, False, None),
    ({"kind": "PipelineRun", "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}, True, True),
    ({"kind": "PipelineRun", "status": {"conditions": [{"type": "Succeeded", "status": "False"}]}}, True, False),
    ({"kind": "PipelineRun"}, False, None),
    ({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, True, True),
    ({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}}, True, False),
    ({"kind": "Job", "status": {"active": 1}}, False, None),
])
def test_run_info_terminal(obj: dict[str, Any], terminal: bool, succeeded: bool | None) -> None:
    obj = {**obj, "metadata": {"name": "wfe-1", "labels": {"kubernaut.ai/workflow-execution": "e",
                                                           "app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler"}}}
    info = run_info(obj)
    assert (info.terminal, info.succeeded, info.managed, info.execution) == (terminal, succeeded, True, "e")


@pytest.mark.parametrize(("phase", "reason", "kw", "health"), [
    ("Running", "Running", {}, "Progressing"),
    ("Pending", "CooldownActive", {}, "Progressing"),
    ("Pending", "Suspended", {}, "Suspended"),
    ("Completed", "Succeeded", {}, "Healthy"),
    ("Skipped", "ResourceBusy", {}, "Healthy"),
    ("Failed", "OOMKilled", {}, "Degraded"),
    ("Running", "Running", {"run_missing": True}, "Missing"),
    ("Running", "Running", {"cluster_unknown": True}, "Unknown"),
    ("Completed", "Succeeded", {"cluster_unknown": True}, "Healthy"),
])
def test_health(phase: str, reason: str, kw: dict[str, bool], health: str) -> None:
    assert health_of(phase, reason, **kw) == health


@pytest.mark.parametrize(("state", "declared", "kw", "sync"), [
    (ExecutionState("a", phase="Pending"), "h1", {}, "OutOfSync"),
    (ExecutionState("a", phase="Running", spec_hash="h1", execution_ref=RunRef("PipelineRun", "n", "r")), "h1", {},
     "Synced"),
    (ExecutionState("a", phase="Completed", spec_hash="h1", execution_ref=RunRef("PipelineRun", "n", "r")), "h2", {},
     "OutOfSync"),
    (ExecutionState("a", phase="Skipped", spec_hash="h1"), "h1", {}, "Synced"),
    (ExecutionState("a", phase="Running", spec_hash="h1", execution_ref=RunRef("PipelineRun", "n", "r")), "h1",
     {"cluster_unknown": True}, "Unknown"),
])
def test_sync(state: ExecutionState, declared: str, kw: dict[str, bool], sync: str) -> None:
    assert sync_of(state, declared, **kw) == sync


def test_repository_health_is_the_worst() -> None:
    states = [ExecutionState("a", health="Healthy"), ExecutionState("b", health="Degraded"),
              ExecutionState("c", health="Progressing")]
    assert repository_health(states) == "Degraded"
    assert repository_health([]) == "Healthy"


def test_condition_time_moves_only_on_status_change() -> None:
    first = set_condition((), "Ready", "Unknown", "Running", "x", NOW)
    same = set_condition(first, "Ready", "Unknown", "Running", "y", NOW + timedelta(minutes=1))
    changed = set_condition(same, "Ready", "True", "Succeeded", "z", NOW + timedelta(minutes=2))
    assert same[0].last_transition_time == NOW and same[0].message == "y"
    assert changed[0].last_transition_time == NOW + timedelta(minutes=2)


def test_spec_change_after_start_is_flagged_not_applied() -> None:
    state = ExecutionState("a", phase="Completed", spec_hash="h1", execution_ref=RunRef("PipelineRun", "n", "r"))
    flagged = mark_spec_change(state, "h2", NOW)
    cond = flagged.condition("SpecChangedAfterStart")
    assert cond is not None and cond.status == "True" and flagged.spec_hash == "h1"
    assert mark_spec_change(flagged, "h1", NOW).condition("SpecChangedAfterStart") is None


def test_status_document_round_trips() -> None:
    state = with_summary(ExecutionState(
        "a", phase="Failed", reason="OOMKilled", message="m", spec_hash="h", workflow="w@1", target="ns/Kind/x",
        execution_ref=RunRef("PipelineRun", "kubernaut-workflows", "wfe-1", "uid"), start_time=NOW,
        completion_time=NOW + timedelta(minutes=2, seconds=38), failure_details={"reason": "OOMKilled"},
        execution_status={"status": "False"}), "h", now=NOW)
    doc = state.to_document()
    assert doc["status"]["duration"] == "2m38s" and doc["status"]["health"] == "Degraded"
    assert list(doc["status"])[:7] == ["phase", "reason", "message", "sync", "health", "observedRevision",
                                       "specHash"]
    again = from_document(doc)
    assert again is not None and again.to_document() == doc
