"""One reconcile cycle: a chain of small steps with one signature (``step(ctx) -> None``).

    fetch → load → previous status → read cluster → observe started runs
          → release expired locks → start pending executions → summarise → record

Each step reads and extends the :class:`CycleContext`.  Status is summarised (sync,
health, Ready) in one place at the end and handed to a :class:`StatusStore` in one call —
in memory for ``sync --once``, a Git commit in the service.  A step that cannot do its
work records the error and leaves the states it could not compute as they were, so one
failing execution or an unreachable API server never loses another's status.

Order is deterministic: executions are processed first-merged-first (the commit that
introduced the file), then by name; observation happens before new starts so running
executions keep their targets.

A cycle costs what changed.  A pass that changed nothing leaves a :class:`QuietMark`; the
next one fetches and, when the tip, the watch cache's generation, the store's state objects
and (with runs Running) the Warning Events are the same and no deadline has come, returns
that pass's result again (``CycleResult.skipped``) without doing the steps.  Within a pass
that does run, a state the previous pass settled is recognised by identity (the store hands
back the very objects it saved), so each step spends a lookup on it, not the work.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import compress
from operator import is_not
from typing import Any

from .cluster import Cluster, DryRunCluster
from .declared import Declaration, ResolvedExecution
from .errors import (
    AlreadyExists,
    GitCommandFailed,
    GitError,
    Invalid,
    KubeError,
    NotLeader,
    ReconcilerError,
    TemplateError,
)
from .failures import externally_deleted, rejected_by_api
from .gate import CONCURRENCY, WINDOW, Block, Gate
from .gitsource import GitSource
from .lifecycle import (
    Act,
    Decision,
    RunInfo,
    Settings,
    adopt,
    apply_observation,
    decide_start,
    fail,
    mark_spec_change,
    overdue,
    overdue_at,
    release_at,
    release_due,
    run_info,
)
from .logevidence import explaining_line, with_step_message
from .render import ANNOTATION_REVISION, ANNOTATION_SPEC_HASH, Renderer
from .runstatus import observe_job, observe_pipelinerun
from .runvocab import FailureDetails, FailureReason, RunContext, format_time, human_duration
from .status import ExecutionState, RunRef, drop_condition, set_condition, with_summary
from .statushistory import Committer, recorded_states
from .transitions import MemoryStatusStore, StatusStore, Transition

LOCK_HELD = "LockHeld"


@dataclass
class CycleContext:
    source: GitSource
    cluster: Cluster
    renderer: Renderer
    settings: Settings
    store: StatusStore
    now: datetime
    log: logging.Logger
    dry_run: bool = False
    revision: str = ""  # the branch tip that was read
    declared: str = ""  # the last commit that changed executions/ or workflows/ (observedRevision)
    decl: Declaration | None = None
    previous: dict[str, ExecutionState] = field(default_factory=dict)
    states: dict[str, ExecutionState] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cluster_unknown: bool = False
    aborted: bool = False
    claimed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    missing_runs: set[str] = field(default_factory=set)
    only: set[str] | None = None  # observe just these executions (the watch fast path)
    fence: Callable[[], bool] = lambda: True  # checked right before every write
    fetch_seconds: float | None = None  # how long the Git fetch took (None: no fetch this pass)
    gate: Gate | None = None
    blocked: dict[str, Block] = field(default_factory=dict)
    # runs kept because their outcome is not on the remote yet (None: this pass did not judge locks)
    locks_awaiting_writeback: int | None = None
    warning_events: list[dict[str, Any]] | None = None  # the namespace's, listed once per cycle on first use
    # execution → (state, what it was observed from) when observing changed nothing: the same
    # inputs next cycle give the same state, so a run that did not move costs no observation
    observed: dict[str, tuple[ExecutionState, Any]] = field(default_factory=dict)
    created: int = 0  # runs this cycle created (workflowexecution_pipelinerun_creation_total)
    adopted: int = 0  # existing runs of ours this cycle took over (restart, lost response, failover)
    released: int = 0  # runs this cycle deleted (locks released)
    # what a quiet mark needs to know about the pass (see Reconciler and QuietMark)
    generation: int | None = None  # the watch cache's generation before the runs were read
    api_reads: int | None = None  # the cluster's API reads then (more after: not all from the cache)
    events_unknown: bool = False  # the Warning-Event LIST failed: observed without them
    # runs whose children the cache did not hold (asked of the API server: a Job's pods may
    # lack our label), with the versions of what the API returned: a quiet mark re-asks these
    live_children: dict[tuple[str, str], tuple[dict[str, Any], tuple[tuple[str, str], ...]]] = field(
        default_factory=dict)
    release_at: datetime | None = None  # the first moment a kept lock's cooldown ends
    # execution → (state, declared hash) when summarising that state gave the state itself:
    # the same object with the same hash summarises to itself again (a fixed point, no clock)
    summaries: dict[str, tuple[ExecutionState, str | None]] = field(default_factory=dict)
    inert: dict[str, ExecutionState] = field(default_factory=dict)  # see _inert
    infos: dict[tuple[str, str, str], tuple[str, str, RunInfo]] = field(default_factory=dict)  # see _run_info
    # states each step looked at beyond the identity filters (observe, release, start,
    # summarise): what a pass costs in Python, counted (tests), never timed
    examined: dict[str, int] = field(default_factory=dict)

    def check_fence(self) -> None:
        if not self.dry_run and not self.fence():
            raise NotLeader("leadership lost: stopping before the next write")

    def execution(self, name: str) -> ResolvedExecution | None:
        return self.decl.find(name) if self.decl else None

    def error(self, name: str, err: Exception) -> None:
        message = f"{name}: {err}"
        self.errors.append(message)
        self.log.error("reconcile error", extra={"execution": name, "error": str(err),
                                                 "revision": self.revision})


def _inert(ctx: CycleContext, name: str, state: ExecutionState) -> bool:
    """Terminal and claiming no lock: observe, release and start have nothing to do with the
    state (summarise still sees it).  A function of the state object alone, remembered by
    identity — the store returns the very objects a cycle saved — so a cycle over 10 000
    settled executions spends a dictionary lookup on each."""
    if ctx.inert.get(name) is state:
        return True
    if state.terminal and state.condition(LOCK_HELD) is None:
        ctx.inert[name] = state
        return True
    return False


def _maybe_active(ctx: CycleContext) -> list[str]:
    """The names whose state is not the one :func:`_inert` remembered for them (in the order
    of ``ctx.states``): exactly those for which ``ctx.inert.get(name) is not state``, found
    by C-level passes (``map``/``compress``) instead of a Python loop over every state — the
    rest are inert by identity and every step skips them.  A step still asks
    :func:`_inert` of each name returned, as the full loop does."""
    states, inert = ctx.states, ctx.inert
    names = list(states)
    return list(compress(names, map(is_not, map(inert.get, names), states.values())))


def _count(ctx: CycleContext, step: str, n: int = 1) -> None:
    ctx.examined[step] = ctx.examined.get(step, 0) + n


def _run_info(ctx: CycleContext, run: dict[str, Any]) -> RunInfo:
    """:func:`run_info`, remembered per version of the run: what the API server gives the same
    uid and resourceVersion has the same content (every write moves the version).  Objects
    without both (a dry run's manifest) are read each time."""
    meta = run.get("metadata") or {}
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    if not uid or not version:
        return run_info(run)
    key = (str(run.get("kind") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    held = ctx.infos.get(key)
    if held is not None and held[0] == uid and held[1] == version:
        return held[2]
    info = run_info(run)
    ctx.infos[key] = (str(uid), str(version), info)
    return info


def _context(execution: ResolvedExecution | None, state: ExecutionState) -> RunContext:
    if execution is not None:
        return RunContext(execution.workflow_id, execution.version, execution.target, execution.name,
                          "job" if execution.engine == "job" else "tekton")
    workflow, _, version = state.workflow.partition("@")
    engine = "job" if state.execution_ref and state.execution_ref.kind == "Job" else "tekton"
    return RunContext(workflow, version, state.target, state.name, engine)  # type: ignore[arg-type]


# -- steps ------------------------------------------------------------------------------

def fetch(ctx: CycleContext) -> None:
    if ctx.revision:  # pinned by the caller (plans and views of a given commit)
        return
    started = time.perf_counter()
    try:
        ctx.revision = ctx.source.fetch()
    except GitError as e:
        ctx.error("git", e)
        ctx.aborted = True
    finally:
        ctx.fetch_seconds = time.perf_counter() - started


def load(ctx: CycleContext) -> None:
    ctx.decl = ctx.source.load(ctx.revision)
    ctx.declared = ctx.decl.revision or ctx.revision
    for problem in ctx.decl.problems:
        ctx.log.warning("invalid declaration", extra={"file": problem.file, "field": problem.path,
                                                      "rule": problem.rule, "error": problem.message})


def previous_status(ctx: CycleContext) -> None:
    """The last known state (SPEC §10: never from the status files as they stand now).

    An authoritative store (the service's Git write-back) knows it: its memory, recovered
    after a restart from the bot's own commits.  Otherwise (``sync --once``) the newest
    valid version of each status file in the history, so a deleted file still says that
    its execution started."""
    if ctx.store.authoritative:
        ctx.previous = ctx.store.load()
        try:
            ctx.store.refresh()
        except GitError as e:  # durability is then judged on the last tip seen (it only moves forward)
            ctx.error("git", e)
    else:
        prefix = f"{ctx.source.path}/" if ctx.source.path else ""
        recorded = recorded_states(ctx.source, ctx.revision, prefix, Committer(), ctx.log).states
        if isinstance(ctx.store, MemoryStatusStore):
            ctx.store.recorded = dict(recorded)
        ctx.previous = {**recorded, **ctx.store.load()}
    ctx.states = dict(ctx.previous)


def check_gate(ctx: CycleContext) -> None:
    """Signatures and policy for everything declared (SPEC §4.2); windows come at start time."""
    if ctx.gate is not None and ctx.decl is not None:
        ctx.blocked = ctx.gate.blocked(ctx.decl, ctx.revision)


def read_cluster(ctx: CycleContext) -> None:
    watched = _watched(ctx.cluster)
    if watched is not None:  # before the reads: a change after this moves the generation
        ctx.generation = watched.generation()
        ctx.api_reads = getattr(watched, "api_reads", None)
    try:
        ctx.runs = ctx.cluster.list_runs()
    except KubeError as e:
        ctx.error("cluster", e)
        ctx.cluster_unknown = True


def _deleted_while_running(ctx: CycleContext) -> None:
    """Runs of ours still going whose execution is neither declared nor known to this process:
    its file was deleted while it ran, and nothing here remembers the start — ``sync --once``
    is a new process each time, and may have no status file to read.  The run is the record,
    but labels alone are not proof (anyone can write them): it counts only when the commit its
    annotation names is in the tracked branch's history and declared that execution with that
    spec hash.  Its state is rebuilt from the run, and observation then cancels it exactly as
    the service does (SPEC §4.8 #10)."""
    if ctx.decl is None or ctx.only is not None:
        return
    # known: declared, invalid, or a state when the step began (asked only of runs that matter)
    invalid: set[str] | None = None
    added: set[str] = set()
    for run in ctx.runs.values():
        info = _run_info(ctx, run)
        if (not info.managed or not info.execution or info.terminal or info.deleting
                or (info.namespace and info.namespace != ctx.cluster.namespace)):
            continue
        if (info.execution in ctx.states and info.execution not in added) or ctx.decl.find(info.execution):
            continue
        if invalid is None:
            invalid = _invalid_names(ctx)
        if info.execution in invalid:
            continue
        annotations = (run.get("metadata") or {}).get("annotations") or {}
        revision, spec_hash = annotations.get(ANNOTATION_REVISION, ""), annotations.get(ANNOTATION_SPEC_HASH, "")
        if not revision or not spec_hash:
            continue
        try:
            ctx.source._git().merge_base("--is-ancestor", revision, ctx.revision)
            then = ctx.source.load(revision).find(info.execution)
        except (GitCommandFailed, ReconcilerError, ValueError):
            continue  # not from the tracked branch: not ours to cancel
        if then is None or then.spec_hash != spec_hash:
            continue
        ctx.states[info.execution] = adopt(ExecutionState(
            name=info.execution, workflow=f"{then.workflow_id}@{then.version}", target=then.target,
            spec_hash=spec_hash, observed_revision=ctx.declared), info, ctx.now)
        added.add(info.execution)


def observe_started(ctx: CycleContext) -> None:
    """Follow every run we started: phase, failure details, external deletion, cancel."""
    _deleted_while_running(ctx)
    states = ctx.states
    active = [(n, states[n]) for n in _maybe_active(ctx)]
    _count(ctx, "observe", len(active))
    for name, state in sorted((n, s) for n, s in active if not _inert(ctx, n, s)):
        if not state.started or state.terminal or state.execution_ref is None:
            continue
        if ctx.only is not None and name not in ctx.only:
            continue
        execution = ctx.execution(name)
        ref = state.execution_ref
        try:
            run = ctx.runs.get(ref.name) or ctx.cluster.get_run(ref.kind, ref.name)
            if run is not None and not owned_by(run, name, ref, ctx.cluster.namespace, _run_info(ctx, run)):
                run = None  # the name is now someone else's run (or never was ours): ours is gone
            if run is None:
                details = externally_deleted(_context(execution, state), state.start_time, ctx.now)
                ctx.states[name] = fail(state, details, ctx.now)
                ctx.missing_runs.add(name)
                continue
            if execution is None and name not in _invalid_names(ctx):
                ctx.check_fence()
                if not _cancel_requested(run):  # asked already (by an earlier `sync --once`)
                    ctx.cluster.cancel_run(ref.kind, ref.name)
                ctx.states[name] = fail(state, _cancelled(state, "the execution file was deleted from "
                                                          f"the tracked branch at {ctx.revision[:12]}", ctx), ctx.now)
                ctx.cluster.record_event(run, "Cancelled", f"execution {name} was deleted from Git")
                continue
            if overdue(state, execution, ctx.now, ctx.settings):
                ctx.check_fence()
                ctx.cluster.cancel_run(ref.kind, ref.name)
                ctx.states[name] = fail(state, _deadline(state, execution, ctx), ctx.now)
                ctx.cluster.record_event(run, "DeadlineExceeded", ctx.states[name].message, warning=True)
                continue
            ctx.states[name] = _observe(ctx, state, execution, run)
            ctx.claimed.setdefault(state.target, name)
        except KubeError as e:
            ctx.error(name, e)


def _versions(objects: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str((o.get("metadata") or {}).get("uid") or ""),
                  str((o.get("metadata") or {}).get("resourceVersion") or "")) for o in objects)


def _observe(ctx: CycleContext, state: ExecutionState, execution: ResolvedExecution | None,
             run: dict[str, Any]) -> ExecutionState:
    watched = _watched(ctx.cluster)
    reads = getattr(watched, "api_reads", None)
    children = ctx.cluster.children(run)
    if reads is not None and getattr(watched, "api_reads", None) != reads:  # not from the cache
        ctx.live_children[(str(run.get("kind") or ""), str((run.get("metadata") or {}).get("name") or ""))] = (
            run, _versions(children))
    events = _run_events(ctx, run, children)
    # observation is a function of these (no clock): unchanged versions, same state
    inputs = (execution, _versions((run,)), _versions(children), _versions(events))
    seen = ctx.observed.get(state.name)
    if seen is not None and seen[0] is state and seen[1] == inputs and all(
            uid and version for group in inputs[1:] for uid, version in group):
        return state
    new = _observe_now(ctx, state, execution, run, children, events)
    if new == state:
        ctx.observed[state.name] = (state, inputs)
        return state
    ctx.observed.pop(state.name, None)
    return new


def _observe_now(ctx: CycleContext, state: ExecutionState, execution: ResolvedExecution | None,
                 run: dict[str, Any], children: list[dict[str, Any]],
                 events: list[dict[str, Any]]) -> ExecutionState:
    context = _context(execution, state)
    observe = observe_job if run.get("kind") == "Job" else observe_pipelinerun
    observation = observe(run, children, context, events=events)
    failure = observation.failure
    if failure is not None and failure.reason == "TaskFailed" and failure.failed_step_name:
        # the status says only "exited with code N": look for the reason in the step's log
        line = _explaining_log_line(ctx, run, children, failure.failed_task_name, failure.failed_step_name)
        if line:
            task = None if run.get("kind") == "Job" else failure.failed_task_name
            observation = observe(run, with_step_message(children, task, failure.failed_step_name, line), context,
                                  events=events)
    new = apply_observation(state, observation)
    if new.terminal and not state.terminal:
        summary = observation.failure.natural_language_summary if observation.failure else new.message
        ctx.cluster.record_event(run, "Completed" if new.phase == "Completed" else "Failed",
                                 summary, warning=new.phase == "Failed")
    return new


def _run_events(ctx: CycleContext, run: dict[str, Any], children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Warning Events about this run, its TaskRuns or Pods and their pods, out of the one
    LIST the cycle makes (best effort: without them a run is only observed less precisely)."""
    if ctx.warning_events is None:
        try:
            ctx.warning_events = ctx.cluster.warning_events()
        except KubeError as e:
            ctx.log.warning("cannot list Warning Events", extra={"error": str(e), "revision": ctx.revision})
            ctx.warning_events = []
            ctx.events_unknown = True
    # by uid, or by name since the run was created: the children's names all start with the
    # run's (TaskRuns "<run>-<task>", their pods "<taskrun>-pod", Job pods "<run>-xxxxx"), and a
    # pod the Job controller deleted on its deadline is no child any more
    uids = {str((o.get("metadata") or {}).get("uid") or "") for o in (run, *children)} - {""}
    name = str((run.get("metadata") or {}).get("name") or "")
    since = str((run.get("metadata") or {}).get("creationTimestamp") or "")
    out = []
    for event in ctx.warning_events:
        involved = event.get("involvedObject") or {}
        other = str(involved.get("name") or "")
        if involved.get("uid") in uids or (
                name and (other == name or other.startswith(name + "-"))
                and str(event.get("lastTimestamp") or "") >= since):
            out.append(event)
    return out


def _explaining_log_line(ctx: CycleContext, run: dict[str, Any], children: list[dict[str, Any]],
                         task: str | None, step: str) -> str | None:
    if run.get("kind") == "Job":
        pods = [c for c in children if (c.get("status") or {}).get("containerStatuses")]
        pod, container = ((pods[-1].get("metadata") or {}).get("name", "") if pods else ""), step
    else:
        taskrun = next((c for c in children if ((c.get("metadata") or {}).get("labels") or {})
                        .get("tekton.dev/pipelineTask") == task), None)
        pod, container = ((taskrun or {}).get("status") or {}).get("podName", ""), f"step-{step}"
    if not pod:
        return None
    return explaining_line(ctx.cluster.step_log(pod, container))


def _cancel_requested(run: dict[str, Any]) -> bool:
    spec = run.get("spec") or {}
    if run.get("kind") == "Job":
        return spec.get("suspend") is True
    return spec.get("status") in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally")


def _invalid_names(ctx: CycleContext) -> set[str]:
    return {i.name for i in ctx.decl.invalid if i.name} if ctx.decl else set()


def _cancelled(state: ExecutionState, why: str, ctx: CycleContext) -> FailureDetails:
    ran = human_duration(ctx.now - state.start_time) if state.start_time else "an unknown time"
    workflow, target = state.workflow or "the workflow", state.target or "the target"
    summary = (f"Execution {state.name} of {workflow} on {target} was cancelled by the reconciler "
               f"after {ran}: {why}. The workflow had started, so it may have changed {target}; "
               "check its state before declaring a new execution.")
    return FailureDetails(None, None, None, FailureReason.Cancelled.value, why, None, ctx.now,
                          ctx.now - state.start_time if state.start_time else None, summary, True)


def _deadline(state: ExecutionState, execution: ResolvedExecution | None, ctx: CycleContext) -> FailureDetails:
    timeout = execution.timeout if execution else "its timeout"
    why = (f"the run did not finish within {timeout} and the engine did not stop it; the reconciler "
           "cancelled it")
    details = _cancelled(state, why, ctx)
    summary = details.natural_language_summary.replace("was cancelled by the reconciler",
                                                       "exceeded its deadline and was cancelled") + (
        " Recommendation: raise spec.executionConfig.timeout in a new execution or investigate why "
        "the run is slow or stuck.")
    return replace(details, reason=FailureReason.DeadlineExceeded.value, natural_language_summary=summary)


def owned_by(run: dict[str, Any], name: str, ref: RunRef | None, namespace: str,
             info: RunInfo | None = None) -> bool:
    """The run's own labels say it is this execution's (managed-by **and** execution label),
    in our namespace, and it is the object we recorded (same uid, when both are known).
    Nothing a status file says can make a foreign run ours."""
    info = info or run_info(run)
    if not info.managed or info.execution != name or (info.namespace and info.namespace != namespace):
        return False
    return ref is None or not ref.uid or not info.uid or ref.uid == info.uid


def release_locks(ctx: CycleContext) -> None:
    """After terminal + cooldown, delete our runs (lock released), oldest first — only once
    the remote branch holds the terminal status (SPEC §10: durable before release)."""
    declared = ctx.decl.index() if ctx.decl else {}
    ctx.locks_awaiting_writeback = 0
    for run_name, run in sorted(ctx.runs.items()):
        info = _run_info(ctx, run)
        owner = ctx.states.get(info.execution)
        if not release_due(info, owner, info.execution in declared, ctx.now, ctx.settings):
            at = release_at(info, owner, info.execution in declared, ctx.settings)
            if at is not None and (ctx.release_at is None or at < ctx.release_at):
                ctx.release_at = at
            continue
        if owner is not None and not ctx.store.durable(info.execution, owner):
            ctx.locks_awaiting_writeback = (ctx.locks_awaiting_writeback or 0) + 1
            if not (held := owner.condition(LOCK_HELD)) or held.status != "True":
                ctx.states[info.execution] = replace(owner, conditions=set_condition(
                    owner.conditions, LOCK_HELD, "True", "StatusNotDurable",
                    f"the run {info.name} (the lock on {owner.target}) is kept until the terminal status "
                    "is on the remote branch", ctx.now))
            ctx.log.warning("lock kept: terminal status not yet on the remote", extra={
                "execution": info.execution, "run": info.name, "revision": ctx.revision})
            continue
        ctx.check_fence()
        try:
            ctx.cluster.record_event(run, "LockReleased",
                                     f"cooldown over: releasing the lock on {info.name} held by {info.execution}")
            ctx.cluster.delete_run(info.kind, info.name, info.uid)
            ctx.released += 1
            ctx.runs.pop(run_name, None)
            if owner is not None and owner.condition(LOCK_HELD) is not None:
                ctx.states[info.execution] = replace(owner, conditions=drop_condition(owner.conditions, LOCK_HELD))
            ctx.log.info("lock released", extra={"execution": info.execution, "run": info.name,
                                                  "revision": ctx.revision})
        except KubeError as e:
            ctx.error(info.execution, e)
    # a LockHeld claim whose run is gone (released in a pass whose push was lost, then
    # recovered from an older status) must not outlive the lock: the status tells the truth
    for name in _maybe_active(ctx):  # the others are inert: no LockHeld condition to check
        state = ctx.states[name]  # each pass below replaces only its own name's state
        _count(ctx, "release")
        if _inert(ctx, name, state):
            continue
        held = state.condition(LOCK_HELD)
        ref = state.execution_ref
        lock = ctx.runs.get(ref.name) if ref is not None else None
        if held is not None and (lock is None or not owned_by(lock, name, ref, ctx.cluster.namespace,
                                                              _run_info(ctx, lock))):
            ctx.states[name] = replace(state, conditions=drop_condition(state.conditions, LOCK_HELD))


def start_pending(ctx: CycleContext) -> None:
    assert ctx.decl is not None
    for item in ctx.decl.invalid:
        if item.name is None or (item.name in ctx.states and ctx.states[item.name].started):
            continue
        problems = "; ".join(f"{p.file}:{p.line or '?'} {p.path or '(file)'}: {p.message}"
                             for p in item.problems[:5])
        previous = ctx.states.get(item.name) or ExecutionState(name=item.name)
        failed = replace(previous, phase="Failed", reason="ConfigurationError", message=problems[:2000],
                         observed_revision=ctx.declared, completion_time=previous.completion_time or ctx.now)
        ctx.states[item.name] = previous if failed == previous else failed  # settled: the same object
    inert, states = ctx.inert, ctx.states
    running = sum(1 for n in _maybe_active(ctx) if not _inert(ctx, n, states[n]) and states[n].phase == "Running")
    for execution in ctx.decl.executions:
        state = ctx.states.get(execution.name)
        if state is not None and (inert.get(execution.name) is state or state.started or state.terminal):
            continue
        _count(ctx, "start")
        held = _held_by_gate(ctx, execution, state, running)
        if held is not None:
            ctx.states[execution.name] = held
            continue
        try:
            _start_one(ctx, execution, state)
            if ctx.states[execution.name].phase == "Running" or ctx.states[execution.name].reason == "Creating":
                running += 1
        except (KubeError, TemplateError) as e:
            ctx.error(execution.name, e)


def _held_by_gate(ctx: CycleContext, execution: ResolvedExecution, prev: ExecutionState | None,
                  running: int) -> ExecutionState | None:
    """Pending with the gate's reason, or None when the execution may go on to lock/create.
    A run that already exists and is ours is always adopted (it started before)."""
    run = ctx.runs.get(execution.run_name)
    if run is not None and owned_by(run, execution.name, None, ctx.cluster.namespace, _run_info(ctx, run)):
        return None
    base = replace(prev or ExecutionState(name=execution.name), observed_revision=ctx.declared,
                   workflow=f"{execution.workflow_id}@{execution.version}", target=execution.target,
                   spec_hash=execution.spec_hash, skip_details={})
    block = ctx.blocked.get(execution.name)
    if block is not None:
        return replace(base, phase="Pending", reason=block.reason, message=block.message,
                       skip_details={"reason": block.reason, "message": block.message,
                                     **({"rules": list(block.rules)} if block.rules else {})})
    if ctx.gate is None or execution.suspend:
        return None
    window = ctx.gate.window(execution, ctx.now)
    if window is not None and not window.open:
        details: dict[str, Any] = {"reason": WINDOW, "message": window.reason}
        if window.next_change is not None:
            details["opensAt"] = format_time(window.next_change)
        return replace(base, phase="Pending", reason=WINDOW, message=window.reason, skip_details=details)
    if not ctx.gate.concurrency_allows(running):
        message = f"{running} runs are in progress: the policy allows at most that many at once"
        return replace(base, phase="Pending", reason=CONCURRENCY, message=message,
                       skip_details={"reason": CONCURRENCY, "message": message})
    return None


def _allow_breaker_override(ctx: CycleContext) -> bool:
    policy = ctx.gate.policy if ctx.gate is not None else None
    return policy is not None and policy.allow_breaker_override


def _decide(ctx: CycleContext, execution: ResolvedExecution, prev: ExecutionState | None,
            run: dict[str, Any] | None) -> Decision:
    return decide_start(execution, prev, _run_info(ctx, run) if run else None, ctx.claimed, ctx.now,
                        ctx.settings, ctx.declared, ctx.states, _allow_breaker_override(ctx))


def _release_for_dependent(ctx: CycleContext, execution: ResolvedExecution, decision: Decision) -> Decision:
    """A dependent on its predecessor's target (SPEC §3a): delete the predecessor's terminal
    run — the lock — now, without waiting for its cooldown, but only once the predecessor's
    outcome is on the remote (SPEC §10); then decide again, so the dependent's run is created
    in this same pass.  Until then it stays Pending/LockReleasing."""
    run = ctx.runs.get(execution.run_name)
    info = _run_info(ctx, run) if run is not None else None
    owner = ctx.states.get(info.execution) if info is not None else None
    if run is None or info is None or owner is None:
        return decision
    if info.deleting:
        return decision  # being deleted already: the next pass creates
    if not ctx.store.durable(info.execution, owner):
        ctx.locks_awaiting_writeback = (ctx.locks_awaiting_writeback or 0) + 1
        message = (f"{info.execution} ended {owner.phase}; its lock on {execution.target} ({info.name}) is "
                   "released for this dependent once that outcome is on the remote branch")
        return replace(decision, state=replace(decision.state, message=message, skip_details={
            **decision.state.skip_details, "message": message}))
    ctx.check_fence()
    ctx.cluster.record_event(run, "LockReleased", f"releasing the lock on {info.name} held by "
                                                  f"{info.execution} for its dependent {execution.name}")
    ctx.cluster.delete_run(info.kind, info.name, info.uid)
    ctx.released += 1
    ctx.runs.pop(execution.run_name, None)
    if owner.condition(LOCK_HELD) is not None:
        ctx.states[info.execution] = replace(owner, conditions=drop_condition(owner.conditions, LOCK_HELD))
    ctx.log.info("lock released for a dependent", extra={"execution": info.execution, "run": info.name,
                                                         "dependent": execution.name, "revision": ctx.revision})
    return _decide(ctx, execution, ctx.states.get(execution.name), None)


def _start_one(ctx: CycleContext, execution: ResolvedExecution, prev: ExecutionState | None) -> None:
    decision = _decide(ctx, execution, prev, ctx.runs.get(execution.run_name))
    if decision.act == Act.RELEASE:
        decision = _release_for_dependent(ctx, execution, decision)
    state = decision.state
    if decision.act == Act.CREATE:
        ctx.check_fence()
        rendered = ctx.renderer.render_checked(execution, execution.origin.last_commit
                                               if execution.origin else ctx.declared)
        try:
            created = ctx.cluster.create_run(rendered)
        except AlreadyExists:
            existing = ctx.cluster.get_run(rendered.kind, rendered.name)
            if existing is None:
                raise
            ctx.runs[rendered.name] = existing
            decision = _decide(ctx, execution, prev, existing)
            state = decision.state
        except Invalid as e:  # schema, strict field validation, admission: nothing ran
            state = fail(state, rejected_by_api(_context(execution, state), str(e), ctx.now), ctx.now)
        except KubeError as e:  # Forbidden, Unavailable after retries: try again next cycle
            ctx.error(execution.name, e)
            ctx.states[execution.name] = replace(state, reason=e.reason, message=f"could not create the run: {e}")
            return
        else:
            if ctx.dry_run:  # nothing was created: say what would happen, keep it Pending
                ctx.claimed.setdefault(execution.target, execution.name)
                ctx.states[execution.name] = replace(
                    state, message=f"would create {rendered.kind} {rendered.name}")
                return
            ctx.runs[rendered.name] = created
            ctx.created += 1
            state = adopt(state, run_info(created), ctx.now)
            state = replace(state, message=f"created {rendered.kind} {rendered.name}")
            ctx.cluster.record_event(created, "Created",
                                     f"created for execution {execution.name} at {ctx.declared[:12]}")
    if state.phase == "Running" and decision.act != Act.CREATE:
        run = ctx.runs.get(execution.run_name)
        if run is not None:
            if not ctx.dry_run:
                ctx.adopted += 1
            state = _observe(ctx, state, execution, run)
    if state.phase == "Skipped":
        holder = ctx.runs.get(execution.run_name)
        ctx.cluster.record_event(holder, "ExecutionSkipped", f"{execution.name}: {state.message}")
    if state.phase in ("Running", "Completed", "Failed") or (state.phase == "Pending" and state.reason == "Creating"):
        ctx.claimed.setdefault(execution.target, execution.name)
    ctx.states[execution.name] = state


def summarise(ctx: CycleContext) -> None:
    """Sync, health, Ready and spec-change conditions for every state; the transitions."""
    memo, previous, missing, unknown = ctx.summaries, ctx.previous, ctx.missing_runs, ctx.cluster_unknown
    index = ctx.decl.index() if ctx.decl else {}
    moved: list[str] = []
    for name, state in ctx.states.items():  # values of existing keys only: safe while iterating
        execution = index.get(name)
        declared_hash = execution.spec_hash if execution is not None else None
        seen = memo.get(name)
        if seen is None or seen[0] is not state or seen[1] != declared_hash or unknown or name in missing:
            _count(ctx, "summarise")
            given = state
            state = mark_spec_change(state, declared_hash, ctx.now)
            state = with_summary(state, declared_hash, run_missing=name in missing and not state.terminal,
                                 cluster_unknown=unknown, now=ctx.now)
            if state is given and not unknown and name not in missing:
                memo[name] = (state, declared_hash)
            else:
                memo.pop(name, None)
            ctx.states[name] = state
        before = previous.get(name)
        if before is state:
            continue
        if before is None or (before.phase, before.reason) != (state.phase, state.reason):
            moved.append(name)
    for name in sorted(moved):  # transitions in name order, as they are committed and logged
        state, before = ctx.states[name], ctx.previous.get(name)
        transition = Transition(name, before.phase if before else "", state.phase, state.reason,
                                state.message, state.target, state.execution_ref.name if state.execution_ref else "")
        ctx.transitions.append(transition)
        ctx.log.info("transition", extra={
            "execution": name, "from": transition.from_phase or "-", "to": state.phase,
            "reason": state.reason, "target": state.target, "run": transition.run,
            "revision": ctx.declared})


def record(ctx: CycleContext) -> None:
    if ctx.dry_run:
        return
    ctx.check_fence()
    ctx.store.save(ctx.states, ctx.transitions, ctx.declared)


STEPS: list[Callable[[CycleContext], None]] = [
    fetch, load, previous_status, check_gate, read_cluster, observe_started, release_locks, start_pending,
    summarise, record,
]
# the fast path after a watch event: no fetch, no new starts, just observe and record
FOLLOW_STEPS: list[Callable[[CycleContext], None]] = [load, previous_status, observe_started, summarise, record]
NEEDS_CLUSTER = {observe_started, release_locks, start_pending}


@dataclass
class CycleResult:
    revision: str
    states: dict[str, ExecutionState]
    transitions: list[Transition]
    errors: list[str]
    declaration: Declaration | None
    cluster_unknown: bool
    seconds: float
    fetch_seconds: float | None = None
    locks_awaiting_writeback: int | None = None  # None: the pass did not judge locks (a follow-up)
    ignored_status_files: dict[str, str] = field(default_factory=dict)  # path → why (untrusted input)
    cache_rebuilds: int = 0  # how often the source rebuilt a damaged Git cache (running count)
    created: int = 0  # runs created by this cycle
    adopted: int = 0  # existing runs of ours taken over by this cycle
    # a predecessor of a waiting dependent ended in this pass: run a full cycle again at once
    # (it releases the lock once durable and starts the dependent) instead of at the next poll
    requeue: bool = False
    # nothing this cycle reads had changed since a pass that changed nothing: its result
    # stands (see QuietMark); only the fetch was done (with runs Running, one Event LIST, and a
    # children LIST for each run whose children the watch cache does not hold)
    skipped: bool = False


@dataclass(frozen=True)
class QuietMark:
    """What a full pass that changed nothing read, kept so the next pass can prove that it
    would compute the same thing and skip the work (Flux: an unchanged revision is not
    reconciled again).  A pass is a function of: the branch tip (the declaration, and — the
    status branch being the tracked one — the status files), the previous states (the store's
    very objects), the runs and children in the watch cache (its generation), the Warning
    Events of the namespace (read only to observe Running runs), children the cache did not
    hold and the API server was asked for (a Job's pods without our label: asked again), and
    the clock.  The clock
    matters to states that are terminal or Running only at known moments: a Running run
    becomes overdue, a kept lock's cooldown ends; ``deadline`` is the first of them.  Any
    other state (pending, waiting, blocked, suspended: start decisions read the clock,
    windows, cooldowns) means no mark is kept at all."""

    revision: str
    generation: int
    events: frozenset[tuple[str, str]] | None  # (uid, resourceVersion) of the Warning Events listed
    states: dict[str, ExecutionState]  # the objects the store returns after the pass
    deadline: datetime | None  # the pass may differ from this moment on (None: no such moment)
    result: CycleResult
    # (run, versions of its children) for children read from the API server, not the cache
    live_children: tuple[tuple[dict[str, Any], tuple[tuple[str, str], ...]], ...] = ()
    # the store's own states mapping, checked to hold exactly ``states`` when the mark was made;
    # a store that replaces that mapping on every change (never mutates it) proves by identity
    # that nothing changed since (a reference: it cannot be freed and its address reused)
    held: object | None = None


class Reconciler:
    """Runs cycles for one source against one cluster."""

    def __init__(self, source: GitSource, cluster: Cluster, *, renderer: Renderer | None = None,
                 settings: Settings | None = None, store: StatusStore | None = None,
                 clock: Callable[[], datetime] | None = None, logger: logging.Logger | None = None,
                 dry_run: bool = False, fence: Callable[[], bool] | None = None, gate: Gate | None = None):
        self.source = source
        self.cluster = DryRunCluster(cluster) if dry_run and not isinstance(cluster, DryRunCluster) else cluster
        self.settings = settings or Settings()
        self.renderer = renderer or Renderer(namespace=self.settings.namespace)
        self.store = store or MemoryStatusStore()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.log = logger or logging.getLogger("reconciler.cycle")
        self.dry_run = dry_run
        self.last_revision = ""
        self.fence = fence or (lambda: True)
        self.gate = gate
        # told as soon as a pass has judged the locks — before its write-back, which may retry
        # for a while (the metric must say why locks are kept while that push is failing)
        self.on_locks_judged: Callable[[int], None] = lambda kept: None
        self._lock = threading.Lock()  # cycles and follow-ups never overlap
        self._observed: dict[str, tuple[ExecutionState, Any]] = {}  # see CycleContext.observed
        self._summaries: dict[str, tuple[ExecutionState, str | None]] = {}  # see CycleContext.summaries
        self._inert: dict[str, ExecutionState] = {}  # see _inert
        self._infos: dict[tuple[str, str, str], tuple[str, str, RunInfo]] = {}  # see _run_info
        self._quiet: QuietMark | None = None  # the last full pass changed nothing (see QuietMark)
        self.examined: dict[str, int] = {}  # the last pass's CycleContext.examined (tests count it)
        self._started = False  # a full pass has run (the first one builds what the process keeps)

    def run_once(self, revision: str = "") -> CycleResult:
        """A full cycle: fetch (unless ``revision`` pins the commit), observe, release, start, record."""
        with self._lock:
            result = self._full_pass(revision)
            if result.revision:
                self.last_revision = result.revision
            return result

    def _full_pass(self, revision: str) -> CycleResult:
        with _long_lived(not self._started):  # the process's first full pass: see _long_lived
            result = self._run(STEPS, None, revision)
        self._started = True
        return result

    def observe_now(self, names: set[str]) -> CycleResult:
        """Observe only ``names`` at the last reconciled revision (after a watch event)."""
        with self._lock:
            if not self.last_revision:
                result = self._full_pass("")
                self.last_revision = result.revision
                return result
            result = self._run(FOLLOW_STEPS, names, self.last_revision)
            # a state it changed is a new object in the store (the mark's identity check sees
            # it); what it could not do is something the next full pass must retry
            if result.errors or result.transitions:
                self._quiet = None
            return result

    def _run(self, steps: list[Callable[[CycleContext], None]], only: set[str] | None,
             revision: str) -> CycleResult:
        started = time.perf_counter()
        # whole seconds: every time written to a status file is, so a state read back from
        # its file compares equal and renders the same bytes
        now = self.clock().replace(microsecond=0)
        ctx = CycleContext(self.source, self.cluster, self.renderer, self.settings, self.store,
                           now, self.log, dry_run=self.dry_run, revision=revision, only=only,
                           fence=self.fence, gate=self.gate, observed=self._observed,
                           summaries=self._summaries, inert=self._inert, infos=self._infos)
        full, pinned = steps is STEPS, bool(revision)
        self.examined = ctx.examined
        quiet = self._quiet
        if full:
            self._quiet = None  # a full pass leaves a new mark, or none
        for step in steps:
            if ctx.aborted:
                break
            if ctx.cluster_unknown and step in NEEDS_CLUSTER:
                continue
            try:
                step(ctx)
                if step is release_locks and ctx.locks_awaiting_writeback is not None:
                    self.on_locks_judged(ctx.locks_awaiting_writeback)
            except ReconcilerError as e:
                ctx.error(step.__name__, e)
                ctx.aborted = True
            if step is fetch and quiet is not None and not pinned:
                skipped = self._still_quiet(ctx, quiet, started)
                if skipped is not None:
                    self._quiet = quiet
                    return skipped
        result = CycleResult(ctx.revision, ctx.states, ctx.transitions, ctx.errors, ctx.decl,
                             ctx.cluster_unknown, time.perf_counter() - started, ctx.fetch_seconds,
                             ctx.locks_awaiting_writeback, dict(getattr(ctx.store, "ignored", {})),
                             cache_rebuilds=getattr(ctx.source, "cache_rebuilds", 0),
                             requeue=_dependents_unblocked(ctx), created=ctx.created, adopted=ctx.adopted)
        if full and not pinned:
            self._quiet = self._quiet_mark(ctx, result)
        if full and len(self._infos) > 2 * len(ctx.runs) + 256:  # forget runs long gone
            live = {(str(r.get("kind") or ""), str((r.get("metadata") or {}).get("namespace") or ""), name)
                    for name, r in ctx.runs.items()}
            self._infos = {k: v for k, v in self._infos.items() if k in live}
        return result

    # -- the quiet mark -------------------------------------------------------------------

    def _quiet_mark(self, ctx: CycleContext, result: CycleResult) -> QuietMark | None:
        """A mark when this pass changed nothing and nothing it read can change unseen but at
        a known moment; None otherwise (the next pass then runs in full)."""
        if (ctx.dry_run or ctx.aborted or ctx.errors or ctx.cluster_unknown or ctx.transitions or ctx.created
                or ctx.adopted or ctx.released or result.requeue or ctx.locks_awaiting_writeback != 0
                or ctx.events_unknown or ctx.decl is None or not ctx.revision or ctx.generation is None):
            return None
        watched = _watched(ctx.cluster)
        reads = getattr(watched, "api_reads", None)
        if watched is None or watched.generation() is None or ctx.api_reads is None or reads is None or \
                reads != ctx.api_reads + len(ctx.live_children):
            return None  # read from the API server, not the cache, beyond children it can ask again
        store = ctx.store
        if getattr(store, "pending", False):
            return None  # a write-back to retry
        if store.authoritative and getattr(store, "branch", None) != ctx.source.branch:
            # status on a branch of its own: its tip (edits there, another replica's pushes) is
            # not the fetched revision, so the revision alone does not prove it unchanged
            return None
        previous, states = ctx.previous, ctx.states
        if len(previous) != len(states):
            return None
        for name, state in states.items():
            before = previous.get(name)
            if before is not state and before != state:
                return None
        deadline = ctx.release_at
        for name, state in states.items():
            if state.terminal:
                continue
            if state.phase != "Running" or state.execution_ref is None:
                if ctx.decl.find(name) is not None or name in _invalid_names(ctx):
                    return None  # a start decision depends on the clock, windows and cooldowns
                continue  # no longer declared and never started: nothing acts on it
            at = overdue_at(state, ctx.execution(name), self.settings)
            if at is not None and (deadline is None or at < deadline):
                deadline = at
        for execution in ctx.decl.executions:
            if execution.name not in states:
                return None
        events = None
        if ctx.warning_events is not None:
            events = frozenset(_versions(ctx.warning_events))
        return QuietMark(ctx.revision, ctx.generation, events, dict(states), deadline, result,
                         tuple(ctx.live_children.values()), _held_token(store, states))

    def _still_quiet(self, ctx: CycleContext, mark: QuietMark, started: float) -> CycleResult | None:
        """After the fetch: the mark's result again when every input it names is the same."""
        if ctx.aborted or ctx.revision != mark.revision:
            return None
        if mark.deadline is not None and ctx.now >= mark.deadline:
            return None
        watched = _watched(ctx.cluster)
        if watched is None or watched.generation() != mark.generation:
            return None
        if not self.fence():
            return None  # not the leader: the full pass stops before its first write, as ever
        token = getattr(ctx.store, "states_token", None)
        held = mark.held is not None and token is not None and token() is mark.held  # the very dict checked
        if not held and not _same_objects(ctx.store.load(), mark.states):
            return None
        if getattr(ctx.store, "pending", False):
            return None
        for run, versions in mark.live_children:  # what the cache cannot vouch for: asked again
            try:
                if _versions(ctx.cluster.children(run)) != versions:
                    return None
            except KubeError:
                return None
        if mark.events is not None:
            try:
                events = ctx.cluster.warning_events()
            except KubeError:
                return None  # the full pass lists them again and says why
            ctx.warning_events = events  # the full pass (if it comes to that) uses this LIST
            if frozenset(_versions(events)) != mark.events:
                return None
        self.on_locks_judged(0)
        self.log.debug("cycle skipped: nothing it reads has changed", extra={
            "revision": ctx.revision, "executions": len(mark.states)})
        return replace(mark.result, states=dict(mark.states), transitions=[], errors=[],
                       seconds=time.perf_counter() - started, fetch_seconds=ctx.fetch_seconds,
                       locks_awaiting_writeback=0, ignored_status_files=dict(getattr(ctx.store, "ignored", {})),
                       cache_rebuilds=getattr(ctx.source, "cache_rebuilds", 0), created=0, adopted=0,
                       requeue=False, skipped=True)


def _held_token(store: Any, states: dict[str, ExecutionState]) -> object | None:
    """The store's states mapping when it holds exactly ``states`` (the same objects), else None.
    The token is read before the states: a change in between leaves an old token that the next
    pass will not find again."""
    token = getattr(store, "states_token", None)
    if token is None:
        return None
    held = token()
    if held is None or not _same_objects(store.load(), states):
        return None
    return held  # type: ignore[no-any-return]


def _same_objects(loaded: dict[str, ExecutionState], states: dict[str, ExecutionState]) -> bool:
    """``loaded`` holds exactly the state objects of ``states`` (identity, not equality)."""
    return len(loaded) == len(states) and all(loaded.get(n) is s for n, s in states.items())


@contextmanager
def _long_lived(first: bool) -> Iterator[None]:
    """The first full pass of a process builds what it then keeps (the declaration, the parse
    cache's entries, every status state and record: ~300 000 objects at 10 000 executions),
    all acyclic and alive.  Left to the cyclic collector as it is, each would be walked in
    generation 0, again in generation 1 and count towards a full pass (~0.3 s, and a full
    pass over it all at a moment nobody chose).  So that pass runs with the collector
    paused, and what it built goes straight to the oldest generation (``gc.freeze`` then
    ``gc.unfreeze``: a move of lists, nothing walked): full passes still see it, cycles
    among it are still collected, nothing is kept from the collector for good.  Skipped
    when something else froze objects (a one-shot CLI command): that is its policy."""
    if not first or not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        gc.enable()


def _watched(cluster: Any) -> Any:
    """``cluster`` when it can tell its watch cache's generation (wrappers such as the
    service's readiness witness forward it), else None."""
    return cluster if hasattr(cluster, "generation") else None


def _dependents_unblocked(ctx: CycleContext) -> bool:
    """True when an execution that ended in this pass is the predecessor of one still waiting."""
    ended = {t.name for t in ctx.transitions if t.to_phase in ("Completed", "Failed", "Skipped")}
    if not ended or ctx.decl is None or ctx.dry_run or ctx.aborted:
        return False
    for execution in ctx.decl.executions:
        state = ctx.states.get(execution.name)
        if (state is None or not (state.started or state.terminal)) and \
                ended.intersection(execution.document.spec.dependencies):
            return True
    return False

