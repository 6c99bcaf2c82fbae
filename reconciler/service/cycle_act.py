"""The steps of a cycle that act on what it observed (see :mod:`reconciler.service.cycle`): release
expired locks once the terminal status is durable, start pending executions (or hold them at
the gate: policy, windows, concurrency), summarise every state into sync, health and Ready with
the pass's transitions, and record them in the :class:`~reconciler.record.transitions.StatusStore`.

The start decisions themselves are :mod:`reconciler.run.lifecycle`'s; this module applies them to
the cluster and the context.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.declare.declared import ResolvedExecution
from reconciler.errors import AlreadyExists, Invalid, KubeError, TemplateError
from reconciler.gate.checks import CONCURRENCY, WINDOW
from reconciler.observe.failures import rejected_by_api
from reconciler.observe.vocabulary import format_time
from reconciler.record.status import ExecutionState, drop_condition, set_condition, with_summary
from reconciler.record.transitions import Transition
from reconciler.run.lifecycle import (
    Act,
    Decision,
    adopt,
    decide_start,
    fail,
    mark_spec_change,
    release_at,
    release_due,
    run_info,
)
from reconciler.service.cycle_context import (
    LOCK_HELD,
    CycleContext,
    cached_run_info,
    count_examined,
    is_inert,
    maybe_active,
    owned_by,
    run_context,
)
from reconciler.service.cycle_observe import observe_run


def release_locks(ctx: CycleContext) -> None:
    """After terminal + cooldown, delete our runs (lock released), oldest first — only once
    the remote branch holds the terminal status (SPEC §10: durable before release)."""
    declared = ctx.decl.index() if ctx.decl else {}
    ctx.locks_awaiting_writeback = 0
    for run_name, run in sorted(ctx.runs.items()):
        info = cached_run_info(ctx, run)
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
    for name in maybe_active(ctx):  # the others are inert: no LockHeld condition to check
        state = ctx.states[name]  # each pass below replaces only its own name's state
        count_examined(ctx, "release")
        if is_inert(ctx, name, state):
            continue
        held = state.condition(LOCK_HELD)
        ref = state.execution_ref
        lock = ctx.runs.get(ref.name) if ref is not None else None
        if held is not None and (lock is None or not owned_by(lock, name, ref, ctx.cluster.namespace,
                                                              cached_run_info(ctx, lock))):
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
    running = sum(1 for n in maybe_active(ctx) if not is_inert(ctx, n, states[n]) and states[n].phase == "Running")
    for execution in ctx.decl.executions:
        state = ctx.states.get(execution.name)
        if state is not None and (inert.get(execution.name) is state or state.started or state.terminal):
            continue
        count_examined(ctx, "start")
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
    if run is not None and owned_by(run, execution.name, None, ctx.cluster.namespace, cached_run_info(ctx, run)):
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
    return decide_start(execution, prev, cached_run_info(ctx, run) if run else None, ctx.claimed, ctx.now,
                        ctx.settings, ctx.declared, ctx.states, _allow_breaker_override(ctx))


def _release_for_dependent(ctx: CycleContext, execution: ResolvedExecution, decision: Decision) -> Decision:
    """A dependent on its predecessor's target (SPEC §3a): delete the predecessor's terminal
    run — the lock — now, without waiting for its cooldown, but only once the predecessor's
    outcome is on the remote (SPEC §10); then decide again, so the dependent's run is created
    in this same pass.  Until then it stays Pending/LockReleasing."""
    run = ctx.runs.get(execution.run_name)
    info = cached_run_info(ctx, run) if run is not None else None
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
            state = fail(state, rejected_by_api(run_context(execution, state), str(e), ctx.now), ctx.now)
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
            state = observe_run(ctx, state, execution, run)
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
            count_examined(ctx, "summarise")
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
