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
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from reconciler.errors import KubeError, ReconcilerError
from reconciler.gate.checks import Gate
from reconciler.record.status import ExecutionState
from reconciler.record.transitions import CycleResult, MemoryStatusStore, StatusStore
from reconciler.render.renderer import Renderer
from reconciler.run.cluster import Cluster, DryRunCluster
from reconciler.run.lifecycle import RunInfo, Settings, overdue_at
from reconciler.service.cycle_act import record, release_locks, start_pending, summarise
from reconciler.service.cycle_context import CycleContext, invalid_names, object_versions, watch_cache
from reconciler.service.cycle_observe import check_gate, fetch, load, observe_started, previous_status, read_cluster
from reconciler.source.gitsource import GitSource

STEPS: list[Callable[[CycleContext], None]] = [
    fetch, load, previous_status, check_gate, read_cluster, observe_started, release_locks, start_pending,
    summarise, record,
]
# the fast path after a watch event: no fetch, no new starts, just observe and record
FOLLOW_STEPS: list[Callable[[CycleContext], None]] = [load, previous_status, observe_started, summarise, record]
NEEDS_CLUSTER = {observe_started, release_locks, start_pending}


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
        self._inert: dict[str, ExecutionState] = {}  # see is_inert
        self._infos: dict[tuple[str, str, str], tuple[str, str, RunInfo]] = {}  # see cached_run_info
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
        watched = watch_cache(ctx.cluster)
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
                if ctx.decl.find(name) is not None or name in invalid_names(ctx):
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
            events = frozenset(object_versions(ctx.warning_events))
        return QuietMark(ctx.revision, ctx.generation, events, dict(states), deadline, result,
                         tuple(ctx.live_children.values()), _held_token(store, states))

    def _still_quiet(self, ctx: CycleContext, mark: QuietMark, started: float) -> CycleResult | None:
        """After the fetch: the mark's result again when every input it names is the same."""
        if ctx.aborted or ctx.revision != mark.revision:
            return None
        if mark.deadline is not None and ctx.now >= mark.deadline:
            return None
        watched = watch_cache(ctx.cluster)
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
                if object_versions(ctx.cluster.children(run)) != versions:
                    return None
            except KubeError:
                return None
        if mark.events is not None:
            try:
                events = ctx.cluster.warning_events()
            except KubeError:
                return None  # the full pass lists them again and says why
            ctx.warning_events = events  # the full pass (if it comes to that) uses this LIST
            if frozenset(object_versions(events)) != mark.events:
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
