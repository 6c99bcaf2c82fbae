"""The steps of a cycle that learn what it will decide from (see :mod:`reconciler.service.cycle`):
fetch the branch, load the declaration, the previous status, the gate's verdicts, the runs in
the cluster, and the observation of every run we started — its phase, failure details (with the
log line that explains a failed step), external deletion, cancellation of a deleted execution
and of a run past its deadline.

Observation is a function of the versions it reads: a run that did not move costs a lookup.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from reconciler.declare.declared import ResolvedExecution
from reconciler.errors import GitCommandFailed, GitError, KubeError, ReconcilerError
from reconciler.observe.failures import externally_deleted
from reconciler.observe.logevidence import explaining_line, with_step_message
from reconciler.observe.runstatus import observe_job, observe_pipelinerun
from reconciler.observe.vocabulary import FailureDetails, FailureReason, human_duration
from reconciler.record.status import ExecutionState
from reconciler.record.statushistory import Committer, recorded_states
from reconciler.record.transitions import MemoryStatusStore
from reconciler.render.renderer import ANNOTATION_REVISION, ANNOTATION_SPEC_HASH
from reconciler.run.lifecycle import adopt, apply_observation, fail, overdue
from reconciler.service.cycle_context import (
    CycleContext,
    cached_run_info,
    count_examined,
    invalid_names,
    is_inert,
    maybe_active,
    object_versions,
    owned_by,
    run_context,
    watch_cache,
)


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
    watched = watch_cache(ctx.cluster)
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
        info = cached_run_info(ctx, run)
        if (not info.managed or not info.execution or info.terminal or info.deleting
                or (info.namespace and info.namespace != ctx.cluster.namespace)):
            continue
        if (info.execution in ctx.states and info.execution not in added) or ctx.decl.find(info.execution):
            continue
        if invalid is None:
            invalid = invalid_names(ctx)
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
    active = [(n, states[n]) for n in maybe_active(ctx)]
    count_examined(ctx, "observe", len(active))
    for name, state in sorted((n, s) for n, s in active if not is_inert(ctx, n, s)):
        if not state.started or state.terminal or state.execution_ref is None:
            continue
        if ctx.only is not None and name not in ctx.only:
            continue
        execution = ctx.execution(name)
        ref = state.execution_ref
        try:
            run = ctx.runs.get(ref.name) or ctx.cluster.get_run(ref.kind, ref.name)
            if run is not None and not owned_by(run, name, ref, ctx.cluster.namespace, cached_run_info(ctx, run)):
                run = None  # the name is now someone else's run (or never was ours): ours is gone
            if run is None:
                details = externally_deleted(run_context(execution, state), state.start_time, ctx.now)
                ctx.states[name] = fail(state, details, ctx.now)
                ctx.missing_runs.add(name)
                continue
            if execution is None and name not in invalid_names(ctx):
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
            ctx.states[name] = observe_run(ctx, state, execution, run)
            ctx.claimed.setdefault(state.target, name)
        except KubeError as e:
            ctx.error(name, e)


def observe_run(ctx: CycleContext, state: ExecutionState, execution: ResolvedExecution | None,
             run: dict[str, Any]) -> ExecutionState:
    watched = watch_cache(ctx.cluster)
    reads = getattr(watched, "api_reads", None)
    children = ctx.cluster.children(run)
    if reads is not None and getattr(watched, "api_reads", None) != reads:  # not from the cache
        ctx.live_children[(str(run.get("kind") or ""), str((run.get("metadata") or {}).get("name") or ""))] = (
            run, object_versions(children))
    events = _run_events(ctx, run, children)
    # observation is a function of these (no clock): unchanged versions, same state
    inputs = (execution, object_versions((run,)), object_versions(children), object_versions(events))
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
    context = run_context(execution, state)
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
