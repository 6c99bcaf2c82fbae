"""The state one reconcile cycle threads through its steps (:class:`CycleContext`) and the
small helpers every step shares: what a step may skip (:func:`is_inert`, :func:`maybe_active`),
what it counts, the per-version memo of :func:`~reconciler.run.lifecycle.run_info`, the run
context a failure is described in, and whether a run is ours (:func:`owned_by`).

It exists so the steps (:mod:`reconciler.service.cycle_observe`, :mod:`reconciler.service.cycle_act`) and the
chain that runs them (:mod:`reconciler.service.cycle`) share one definition of the context without
importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from operator import is_not
from typing import Any

from reconciler.declare.declared import Declaration, ResolvedExecution
from reconciler.errors import NotLeader
from reconciler.gate.checks import Block, Gate
from reconciler.observe.vocabulary import RunContext
from reconciler.record.status import ExecutionState, RunRef
from reconciler.record.transitions import StatusStore, Transition
from reconciler.render.renderer import Renderer
from reconciler.run.cluster import Cluster
from reconciler.run.lifecycle import RunInfo, Settings, run_info
from reconciler.source.gitsource import GitSource

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
    inert: dict[str, ExecutionState] = field(default_factory=dict)  # see is_inert
    infos: dict[tuple[str, str, str], tuple[str, str, RunInfo]] = field(default_factory=dict)  # see cached_run_info
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


def is_inert(ctx: CycleContext, name: str, state: ExecutionState) -> bool:
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


def maybe_active(ctx: CycleContext) -> list[str]:
    """The names whose state is not the one :func:`is_inert` remembered for them (in the order
    of ``ctx.states``): exactly those for which ``ctx.inert.get(name) is not state``, found
    by C-level passes (``map``/``compress``) instead of a Python loop over every state — the
    rest are inert by identity and every step skips them.  A step still asks
    :func:`is_inert` of each name returned, as the full loop does."""
    states, inert = ctx.states, ctx.inert
    names = list(states)
    return list(compress(names, map(is_not, map(inert.get, names), states.values())))


def count_examined(ctx: CycleContext, step: str, n: int = 1) -> None:
    ctx.examined[step] = ctx.examined.get(step, 0) + n


def cached_run_info(ctx: CycleContext, run: dict[str, Any]) -> RunInfo:
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


def run_context(execution: ResolvedExecution | None, state: ExecutionState) -> RunContext:
    if execution is not None:
        return RunContext(execution.workflow_id, execution.version, execution.target, execution.name,
                          "job" if execution.engine == "job" else "tekton")
    workflow, _, version = state.workflow.partition("@")
    engine = "job" if state.execution_ref and state.execution_ref.kind == "Job" else "tekton"
    return RunContext(workflow, version, state.target, state.name, engine)  # type: ignore[arg-type]


def object_versions(objects: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str((o.get("metadata") or {}).get("uid") or ""),
                  str((o.get("metadata") or {}).get("resourceVersion") or "")) for o in objects)


def watch_cache(cluster: Any) -> Any:
    """``cluster`` when it can tell its watch cache's generation (wrappers such as the
    service's readiness witness forward it), else None."""
    return cluster if hasattr(cluster, "generation") else None


def invalid_names(ctx: CycleContext) -> set[str]:
    return {i.name for i in ctx.decl.invalid if i.name} if ctx.decl else set()


def owned_by(run: dict[str, Any], name: str, ref: RunRef | None, namespace: str,
             info: RunInfo | None = None) -> bool:
    """The run's own labels say it is this execution's (managed-by **and** execution label),
    in our namespace, and it is the object we recorded (same uid, when both are known).
    Nothing a status file says can make a foreign run ours."""
    info = info or run_info(run)
    if not info.managed or info.execution != name or (info.namespace and info.namespace != namespace):
        return False
    return ref is None or not ref.uid or not info.uid or ref.uid == info.uid
