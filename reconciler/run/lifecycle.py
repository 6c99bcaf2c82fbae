"""Lifecycle decisions for one execution (SPEC §4) — pure functions over data.

The reconcile loop (``cycle``) gathers facts — the declared execution, its previous
state, the run with its deterministic name as the cluster shows it, which targets are
already claimed this cycle, the time — and asks this module what to do.  The answer is a
:class:`Decision`: the new state plus at most one action for the loop to carry out
(create, cancel).  Keeping this pure makes every branch of the lifecycle a table test.

Locks need no extra storage: the run's name is derived from the target, so a run object
*is* the lock; its labels say which execution holds it, its completion time starts the
cooldown, and deleting it (after terminal + cooldown) releases it.  Where a chain's
predecessors stand (SPEC §3a) is :mod:`reconciler.run.chains`'s to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from reconciler.declare.declared import ResolvedExecution
from reconciler.observe.runstatus import RunObservation
from reconciler.observe.vocabulary import FailureDetails, format_time, parse_time
from reconciler.record.status import ExecutionState, RunRef, drop_condition, set_condition
from reconciler.render.renderer import (
    ANNOTATION_SPEC_HASH,
    LABEL_EXECUTION,
    LABEL_MANAGED_BY,
    LABEL_WORKFLOW,
    MANAGED_BY,
)
from reconciler.run.chains import NOT_MET, WAITING, chain_exempt, dependency_verdict, outcome


class Act:
    NONE = "none"
    CREATE = "create"
    CANCEL = "cancel"
    RELEASE = "release"  # delete a terminal predecessor's run (the lock) for its dependent


@dataclass(frozen=True)
class Settings:
    namespace: str = "kubernaut-workflows"
    cooldown: timedelta = timedelta(minutes=5)
    # A run still not terminal this long after its own deadline is cancelled by us (the
    # engine's controller may be down); the engine's timeout normally fires first.
    deadline_grace: timedelta = timedelta(minutes=5)
    # failure breaker (SPEC §3a): after this many consecutive failed runs of one workflow
    # on one target, further executions of it there are Skipped for breaker_period (0: off)
    breaker_failures: int = 3
    breaker_period: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class RunInfo:
    """What the reconciler reads off a run object (PipelineRun or Job)."""

    kind: str
    namespace: str
    name: str
    uid: str
    execution: str  # value of the execution label ("" when absent)
    workflow: str
    managed: bool
    terminal: bool
    succeeded: bool | None
    completion_time: datetime | None
    deleting: bool
    spec_hash: str
    start_time: datetime | None = None  # the run's own: status.startTime, else creationTimestamp

    def ref(self) -> RunRef:
        return RunRef(self.kind, self.namespace, self.name, self.uid)


def run_info(obj: Mapping[str, Any]) -> RunInfo:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = obj.get("status") or {}
    kind = str(obj.get("kind") or "")
    succeeded: bool | None = None
    completion = parse_time(status.get("completionTime"))
    for c in status.get("conditions") or []:
        ctype, cstatus = c.get("type"), c.get("status")
        if kind == "Job":
            if ctype in ("Complete", "SuccessCriteriaMet") and cstatus == "True":
                succeeded = True
            elif ctype in ("Failed", "FailureTarget") and cstatus == "True":
                succeeded = False
            if succeeded is not None and completion is None:
                completion = parse_time(c.get("lastTransitionTime"))
        elif ctype == "Succeeded" and cstatus in ("True", "False"):
            succeeded = cstatus == "True"
            completion = completion or parse_time(c.get("lastTransitionTime"))
    return RunInfo(
        kind=kind, namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""), execution=str(labels.get(LABEL_EXECUTION) or ""),
        workflow=str(labels.get(LABEL_WORKFLOW) or ""),
        managed=labels.get(LABEL_MANAGED_BY) == MANAGED_BY, terminal=succeeded is not None,
        succeeded=succeeded, completion_time=completion,
        deleting=bool(meta.get("deletionTimestamp")),
        spec_hash=str((meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH) or ""),
        start_time=parse_time(status.get("startTime")) or parse_time(meta.get("creationTimestamp")),
    )


@dataclass(frozen=True)
class Decision:
    state: ExecutionState
    act: str = Act.NONE
    note: str = ""  # why, for logs and events


def _base(execution: ResolvedExecution, prev: ExecutionState | None, revision: str) -> ExecutionState:
    state = prev or ExecutionState(name=execution.name)
    return replace(state, observed_revision=revision, workflow=f"{execution.workflow_id}@{execution.version}",
                   target=execution.target, spec_hash=state.spec_hash if state.started else execution.spec_hash)


def _pending(state: ExecutionState, why: str, text: str, now: datetime, **details: Any) -> ExecutionState:
    """Still Pending; ``details`` (conflicting execution, remaining cooldown) go to skipDetails."""
    if why == "Suspended":
        conditions = set_condition(state.conditions, "Suspended", "True", why, text, now)
    else:
        conditions = drop_condition(state.conditions, "Suspended")
    skip = {"reason": why, "message": text, **{k: v for k, v in details.items() if v}} if details else {}
    return replace(state, phase="Pending", reason=why, message=text, skip_details=skip,
                   conditions=conditions)


def _skipped(state: ExecutionState, reason: str, message: str, now: datetime, **details: Any) -> ExecutionState:
    skip = {"reason": reason, "message": message, **{k: v for k, v in details.items() if v}}
    return replace(state, phase="Skipped", reason=reason, message=message, skip_details=skip,
                   completion_time=now, conditions=drop_condition(state.conditions, "Suspended"))


BREAKER = "ConsecutiveFailures"


@dataclass(frozen=True)
class BreakerVerdict:
    """The failure breaker for one workflow on one target: ``open`` until ``until``."""

    open: bool
    failures: tuple[str, ...] = ()  # the consecutive failed executions, newest first
    until: datetime | None = None


def breaker_verdict(workflow_id: str, target: str, states: Mapping[str, ExecutionState], now: datetime,
                    settings: Settings) -> BreakerVerdict:
    """Count the newest consecutive runs of ``workflow_id`` on ``target`` that failed after
    actually running (``wasExecutionFailure: true``), from the recorded states — the status
    history in Git, so the count survives restarts.  A completed run ends the streak; a run
    that never started (``wasExecutionFailure: false``) and skipped executions neither count
    nor end it.  Open while there are at least ``breaker_failures`` and the newest ended less
    than ``breaker_period`` ago."""
    if settings.breaker_failures <= 0:
        return BreakerVerdict(False)
    runs = [s for s in states.values()
            if s.started and s.terminal and s.target == target and s.completion_time is not None
            and s.workflow.partition("@")[0] == workflow_id]
    runs.sort(key=lambda s: (s.completion_time, s.name), reverse=True)
    failures: list[ExecutionState] = []
    for s in runs:
        if s.phase == "Completed":
            break
        if s.phase == "Failed" and s.failure_details.get("wasExecutionFailure") is True:
            failures.append(s)
    if len(failures) < settings.breaker_failures:
        return BreakerVerdict(False)
    newest = failures[0].completion_time
    assert newest is not None
    until = newest + settings.breaker_period
    return BreakerVerdict(now < until, tuple(s.name for s in failures), until)



def decide_start(
    execution: ResolvedExecution,
    prev: ExecutionState | None,
    run: RunInfo | None,
    claimed: Mapping[str, str],
    now: datetime,
    settings: Settings,
    revision: str,
    states: Mapping[str, ExecutionState] | None = None,
    allow_breaker_override: bool = False,
) -> Decision:
    """For an execution not started yet: hold, wait, skip, adopt or create (SPEC §3a, §4.3–6).

    ``states`` are the known states of every execution (the predecessors of a chain, the
    runs the failure breaker counts); ``allow_breaker_override`` is the policy's switch for
    ``spec.overrideBreaker``.  :data:`Act.RELEASE` asks the loop to delete the terminal
    run of a predecessor on the same target (its lock) once its outcome is durable."""
    state = _base(execution, prev, revision)
    known = states or {}
    if execution.suspend:
        return Decision(_pending(state, "Suspended", "spec.suspend is true: merged but held", now))
    if run is not None and run.managed and run.execution == execution.name:
        return Decision(adopt(state, run, now), note=f"adopted existing run {run.name}")
    if execution.document.spec.dependencies:
        verdict = dependency_verdict(execution, known)
        if verdict.not_met:
            return Decision(_skipped(state, NOT_MET, verdict.message, now, conflictingExecution=verdict.not_met))
        if not verdict.ready:
            return Decision(_pending(state, WAITING, verdict.message, now,
                                     waitingFor=list(verdict.waiting)))
    breaker = breaker_verdict(execution.workflow_id, execution.target, known, now, settings)
    if breaker.open:
        overridden = execution.document.spec.override_breaker
        if not (overridden and allow_breaker_override):
            until = format_time(breaker.until) if breaker.until else ""
            message = (f"{execution.workflow_id} failed {len(breaker.failures)} times in a row on "
                       f"{execution.target} ({', '.join(breaker.failures)}); the breaker is open until {until}")
            if overridden:
                message += ("; spec.overrideBreaker is ignored: the policy does not permit it "
                            "(allowBreakerOverride: false)")
            else:
                message += "; or set spec.overrideBreaker: true in a new execution, where the policy allows it"
            return Decision(_skipped(state, BREAKER, message, now, conflictingExecution=breaker.failures[0],
                                     breakerUntil=until))
    if run is not None:
        if run.managed and run.terminal and chain_exempt(execution, run.execution, known):
            message = (f"{run.execution} ended {outcome(known[run.execution])}; releasing its lock on "
                       f"{execution.target} ({run.name}) for this dependent")
            return Decision(_pending(state, "LockReleasing", message, now, conflictingExecution=run.execution),
                            act=Act.RELEASE)
        if not run.managed:
            message = (f"run {run.namespace}/{run.name} for target {execution.target} exists and is not "
                       "managed by the reconciler")
            return Decision(_skipped(state, "ResourceBusy", message, now))
        if not run.terminal:
            message = f"target {execution.target} is busy: execution {run.execution} is running ({run.name})"
            return Decision(_skipped(state, "ResourceBusy", message, now,
                                     conflictingExecution=run.execution))
        remaining = _cooldown_remaining(run, now, settings)
        if remaining > timedelta(0):
            # an absolute time, never a countdown: the status bytes must not change with the
            # clock alone (SPEC §10), or every poll would commit
            until = format_time((run.completion_time or now) + settings.cooldown) if run.completion_time else ""
            ends = f"at {until}" if until else "once the run finishes"
            if run.workflow == execution.workflow_id:
                message = (f"{execution.workflow_id} already ran on {execution.target} "
                           f"(execution {run.execution}); cooldown ends {ends}")
                return Decision(_skipped(state, "RecentlyRemediated", message, now,
                                         conflictingExecution=run.execution, cooldownUntil=until))
            message = (f"target {execution.target} was remediated by {run.execution} "
                       f"({run.workflow}); starts after the cooldown, which ends {ends}")
            return Decision(_pending(state, "CooldownActive", message, now,
                                     conflictingExecution=run.execution, cooldownUntil=until))
        message = f"waiting for the lock on {execution.target} held by {run.execution} to be released"
        return Decision(_pending(state, "LockReleasing", message, now,
                                 conflictingExecution=run.execution))
    holder = claimed.get(execution.target)
    if holder is not None and holder != execution.name and not chain_exempt(execution, holder, known):
        message = f"target {execution.target} is busy: execution {holder} claimed it first"
        return Decision(_skipped(state, "ResourceBusy", message, now, conflictingExecution=holder))
    return Decision(_pending(state, "Creating", f"creating {execution.engine} run {execution.run_name}", now),
                    act=Act.CREATE)


def _cooldown_remaining(run: RunInfo, now: datetime, settings: Settings) -> timedelta:
    if run.completion_time is None:
        return settings.cooldown
    return run.completion_time + settings.cooldown - now


def adopt(state: ExecutionState, run: RunInfo, now: datetime) -> ExecutionState:
    """The run exists and is ours (we created it now, or before a restart). Its start is the
    run's own (an adopted run may have started long before this cycle), else now."""
    return replace(state, phase="Running", reason="Running", message=f"run {run.name} is running",
                   execution_ref=run.ref(), start_time=state.start_time or run.start_time or now,
                   skip_details={},
                   spec_hash=run.spec_hash or state.spec_hash,
                   conditions=drop_condition(state.conditions, "Suspended"))


def apply_observation(state: ExecutionState, observation: RunObservation) -> ExecutionState:
    """Map the engine's view of the run onto the execution (SPEC §4.7)."""
    failure = observation.failure
    return replace(
        state,
        phase=observation.phase.value if hasattr(observation.phase, "value") else str(observation.phase),
        reason=observation.reason,
        message=observation.message,
        start_time=observation.start_time or state.start_time,
        completion_time=observation.completion_time,
        execution_status=observation.execution_status.to_status_dict(),
        failure_details=failure.to_status_dict() if failure is not None else {},
    )


def fail(state: ExecutionState, details: FailureDetails, now: datetime) -> ExecutionState:
    """A terminal failure the reconciler itself determined (deleted run, cancel, deadline)."""
    return replace(state, phase="Failed", reason=details.reason, message=details.message,
                   completion_time=now, failure_details=details.to_status_dict())


def overdue(state: ExecutionState, execution: ResolvedExecution | None, now: datetime,
            settings: Settings) -> bool:
    """Running well past its own deadline: the engine did not enforce it."""
    if execution is None or state.start_time is None or state.phase != "Running":
        return False
    deadline = state.start_time + timedelta(seconds=execution.timeout_seconds) + settings.deadline_grace
    return now > deadline


def overdue_at(state: ExecutionState, execution: ResolvedExecution | None,
               settings: Settings) -> datetime | None:
    """The first moment :func:`overdue` holds with nothing but the clock moving (None: never):
    one microsecond past the deadline, the smallest step a ``datetime`` takes."""
    if execution is None or state.start_time is None or state.phase != "Running":
        return None
    deadline = state.start_time + timedelta(seconds=execution.timeout_seconds) + settings.deadline_grace
    return deadline + timedelta(microseconds=1)


def release_at(run: RunInfo, owner: ExecutionState | None, owner_declared: bool,
               settings: Settings) -> datetime | None:
    """The first moment :func:`release_due` holds with nothing but the clock moving (None:
    the clock alone never makes it due — the run, its owner or the declaration must change)."""
    if not run.managed or not run.terminal or run.deleting or not run.execution:
        return None
    if (owner is None and owner_declared) or (owner is not None and not owner.terminal):
        return None
    if run.completion_time is None:  # the whole cooldown remains, whatever the time
        return None if settings.cooldown > timedelta(0) else datetime.min.replace(tzinfo=timezone.utc)
    return run.completion_time + settings.cooldown


def release_due(run: RunInfo, owner: ExecutionState | None, owner_declared: bool, now: datetime,
                settings: Settings) -> bool:
    """Delete a run (release the lock) after terminal + cooldown — only our own runs, and only
    once the owning execution has recorded its outcome (or is gone and the run is orphaned)."""
    if not run.managed or not run.terminal or run.deleting or not run.execution:
        return False
    if owner is None and owner_declared:
        return False  # the owner has not observed its result yet
    if owner is not None and not owner.terminal:
        return False
    return _cooldown_remaining(run, now, settings) <= timedelta(0)


def mark_spec_change(state: ExecutionState, declared_hash: str | None, now: datetime) -> ExecutionState:
    """Immutability (SPEC §3): an edit after start is reported, never applied."""
    if declared_hash is not None and state.spec_hash and declared_hash != state.spec_hash and (
            state.started or state.terminal):
        marked = set_condition(
            state.conditions, "SpecChangedAfterStart", "True", "SpecChangedAfterStart",
            "the execution was edited after it started; the edit is not applied — add a new "
            "execution to run again", now)
        # reported already: the same object, as for every settled state (compared by identity)
        return state if marked is state.conditions else replace(state, conditions=marked)
    conditions = drop_condition(state.conditions, "SpecChangedAfterStart")
    return state if conditions is state.conditions else replace(state, conditions=conditions)
