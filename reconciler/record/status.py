"""The recorded state of one execution and its status document (SPEC §7, §8) — pure.

:class:`ExecutionState` is what the reconciler knows about an execution after a cycle:
phase, reason, the run it created, timings, failure or skip details, conditions, and the
derived sync/health.  The reconcile loop computes a new state from the previous one plus
what it observed; this module owns the rules that are the same everywhere:

* conditions keep their ``lastTransitionTime`` unless their status actually changes
  (the Kubernetes convention, so a status file only changes when something happened);
* sync and health follow Argo CD's model (SPEC §8);
* the status document is rendered in one canonical key order, so an unchanged state
  produces a byte-identical file and no commit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.observe.vocabulary import format_duration, format_time, parse_time

API_VERSION = "kubernaut.ai/v1alpha1"
KIND = "WorkflowExecutionStatus"
TERMINAL = frozenset({"Completed", "Failed", "Skipped"})
HEALTH_ORDER = ["Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"]


@dataclass(frozen=True, slots=True)  # one (or more) per execution: no per-instance __dict__
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_transition_time: datetime

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message, "lastTransitionTime": format_time(self.last_transition_time)}


@dataclass(frozen=True, slots=True)  # one (or more) per execution: no per-instance __dict__
class RunRef:
    kind: str
    namespace: str
    name: str
    uid: str = ""

    def to_dict(self) -> dict[str, str]:
        data = {"kind": self.kind, "namespace": self.namespace, "name": self.name}
        if self.uid:
            data["uid"] = self.uid
        return data


@dataclass(frozen=True, slots=True)  # one (or more) per execution: no per-instance __dict__
class ExecutionState:
    name: str
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    sync: str = "OutOfSync"
    health: str = "Progressing"
    observed_revision: str = ""
    spec_hash: str = ""
    workflow: str = ""
    target: str = ""
    execution_ref: RunRef | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    execution_status: dict[str, Any] = field(default_factory=dict)
    skip_details: dict[str, Any] = field(default_factory=dict)
    failure_details: dict[str, Any] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def started(self) -> bool:
        return self.execution_ref is not None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def duration(self) -> timedelta | None:
        if self.start_time and self.completion_time:
            return self.completion_time - self.start_time
        return None

    def to_document(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": self.phase, "reason": self.reason, "message": self.message,
            "sync": self.sync, "health": self.health,
            "observedRevision": self.observed_revision, "specHash": self.spec_hash,
        }
        if self.workflow:
            status["workflow"] = self.workflow
        if self.target:
            status["targetResource"] = self.target
        if self.execution_ref:
            status["executionRef"] = self.execution_ref.to_dict()
        if self.start_time:
            status["startTime"] = format_time(self.start_time)
        if self.completion_time:
            status["completionTime"] = format_time(self.completion_time)
        if self.start_time and self.completion_time:
            # from the whole-second times written above, so a state read back from its own
            # file renders the same duration (the bytes depend on the state, not the clock)
            status["duration"] = format_duration(_whole(self.completion_time) - _whole(self.start_time))
        for key, value in (("executionStatus", self.execution_status),
                           ("skipDetails", self.skip_details),
                           ("failureDetails", self.failure_details)):
            if value:
                status[key] = dict(value)
        if self.conditions:
            status["conditions"] = [c.to_dict() for c in sorted(self.conditions, key=lambda c: c.type)]
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": self.name},
                "status": status}


def _whole(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def progress_rank(state: ExecutionState) -> int:
    """How far an execution has come, for keeping status monotonic (SPEC §10):
    terminal (2) beats started (1) beats not started (0)."""
    return 2 if state.terminal else 1 if state.started else 0


def from_document(data: dict[str, Any]) -> ExecutionState | None:
    """Read a status document back; None when it is not a well-formed one of ours (the
    caller reports why: ``statusdoc.check_status_document``)."""
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    meta, status = data.get("metadata"), data.get("status")
    if not isinstance(meta, dict) or not isinstance(status, dict) or not isinstance(meta.get("name"), str):
        return None
    ref = status.get("executionRef")
    conditions = []
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type"):
            when = parse_time(c.get("lastTransitionTime")) or datetime.fromtimestamp(0, timezone.utc)
            conditions.append(Condition(_shared(c["type"]), _shared(c.get("status", "Unknown")),
                                        _shared(c.get("reason", "")), _shared(c.get("message", "")), when))

    def mapping(key: str) -> dict[str, Any]:
        value = status.get(key)
        return dict(value) if isinstance(value, dict) else {}

    return ExecutionState(
        name=meta["name"],
        phase=_shared(status.get("phase") or "Pending"),
        reason=_shared(status.get("reason") or ""),
        message=_shared(status.get("message") or ""),
        sync=_shared(status.get("sync") or "Unknown"),
        health=_shared(status.get("health") or "Unknown"),
        observed_revision=_shared(status.get("observedRevision") or ""),
        spec_hash=str(status.get("specHash") or ""),
        workflow=_shared(status.get("workflow") or ""),
        target=str(status.get("targetResource") or ""),
        execution_ref=RunRef(_shared(ref.get("kind", "")), _shared(ref.get("namespace", "")),
                             str(ref.get("name", "")), str(ref.get("uid", "")))
        if isinstance(ref, dict) and ref.get("name") else None,
        start_time=parse_time(status.get("startTime")),
        completion_time=parse_time(status.get("completionTime")),
        execution_status=mapping("executionStatus"),
        skip_details=mapping("skipDetails"),
        failure_details=mapping("failureDetails"),
        conditions=tuple(conditions),
    )


def _shared(value: Any) -> str:
    """``str(value)``, interned: phases, reasons, messages, revisions, workflow ids and the
    like repeat across thousands of states read back from their documents (one copy each)."""
    return sys.intern(str(value))


def set_condition(conditions: tuple[Condition, ...], type_: str, status: str, reason: str, message: str,
                  now: datetime) -> tuple[Condition, ...]:
    """Upsert a condition; ``lastTransitionTime`` moves only when ``status`` changes."""
    old = next((c for c in conditions if c.type == type_), None)
    if old is not None and conditions[-1] is old and (old.status, old.reason, old.message) == (status, reason, message):
        return conditions  # unchanged (and already last): the same tuple, nothing rebuilt each cycle
    when = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(type_, status, reason, message, when)
    return (*tuple(c for c in conditions if c.type != type_), new)


def drop_condition(conditions: tuple[Condition, ...], type_: str) -> tuple[Condition, ...]:
    if all(c.type != type_ for c in conditions):
        return conditions
    return tuple(c for c in conditions if c.type != type_)


def health_of(phase: str, reason: str, *, run_missing: bool = False, cluster_unknown: bool = False) -> str:
    """SPEC §8 health for one execution."""
    if cluster_unknown and phase not in TERMINAL:
        return "Unknown"
    if run_missing:
        return "Missing"
    if phase == "Completed" or phase == "Skipped":
        return "Healthy"
    if phase == "Failed":
        return "Degraded"
    if phase == "Pending" and reason == "Suspended":
        return "Suspended"
    if phase == "Pending" and reason in ("PolicyViolation", "UnverifiedCommit"):
        return "Degraded"  # blocked until someone acts: not "progressing" (see README)
    return "Progressing"


def sync_of(state: ExecutionState, declared_hash: str | None, *, cluster_unknown: bool = False) -> str:
    """SPEC §8 sync: Synced when the declared spec is applied (a run with that spec hash
    exists, or a terminal status records it); OutOfSync when declared but not applied or
    changed after start; Unknown when the cluster cannot be read."""
    if declared_hash is None:  # no longer declared: nothing to apply
        return "Synced" if state.terminal else "OutOfSync"
    if state.spec_hash and state.spec_hash != declared_hash and (state.started or state.terminal):
        return "OutOfSync"
    if cluster_unknown and not state.terminal:
        return "Unknown"
    if state.terminal or state.started:
        return "Synced"
    return "OutOfSync"


def repository_health(states: list[ExecutionState]) -> str:
    """The worst health of all executions (Healthy < … < Unknown)."""
    worst = "Healthy"
    for s in states:
        if HEALTH_ORDER.index(s.health if s.health in HEALTH_ORDER else "Unknown") > HEALTH_ORDER.index(worst):
            worst = s.health if s.health in HEALTH_ORDER else "Unknown"
    return worst


def with_summary(state: ExecutionState, declared_hash: str | None, *, run_missing: bool = False,
                 cluster_unknown: bool = False, now: datetime) -> ExecutionState:
    """Recompute sync, health and the Ready condition from the phase (done once, at the end)."""
    health = health_of(state.phase, state.reason, run_missing=run_missing, cluster_unknown=cluster_unknown)
    sync = sync_of(state, declared_hash, cluster_unknown=cluster_unknown)
    ready = {"Completed": "True", "Failed": "False", "Skipped": "False"}.get(state.phase, "Unknown")
    conditions = set_condition(state.conditions, "Ready", ready, state.reason or state.phase,
                               state.message, now)
    if (sync, health) == (state.sync, state.health) and conditions is state.conditions:
        return state  # a settled state stays the same object: later steps compare it by identity
    return replace(state, sync=sync, health=health, conditions=conditions)
