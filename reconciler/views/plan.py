"""What the reconciler would do with a declaration — computed, not done (pure).

``plan`` answers the reviewer's questions before anything touches a cluster: which
executions would start a run (and with which run name), which would be skipped because
another declared execution already claims the same target, which are held or already
recorded, which files are invalid and why.  Given a base declaration it shows only what a
change adds, edits or removes, and flags edits to executions that already started
(immutability, SPEC §3).  The cluster's view (running runs, locks, cooldowns) is layered
on by the executor in a later step; this module needs only data.

Chains (SPEC §3a): a dependent whose predecessors have not ended is ``wait``
(``WaitingForDependency``), one whose predecessor ended the wrong way is ``skip``
(``DependencyNotMet``); every entry carries ``depends_on`` and its ``condition`` so the
reports can draw who waits on whom.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from reconciler.record.status import ExecutionState, from_document

if TYPE_CHECKING:  # annotations only: ``reconciler plan`` imports no more than it runs
    from reconciler.declare.declared import Declaration, InvalidExecution, ResolvedExecution
    from reconciler.declare.statusdoc import StatusRecord
    from reconciler.errors import Problem


class Action:
    CREATE = "create"
    SKIP = "skip"
    HOLD = "hold"
    OBSERVE = "observe"
    DONE = "done"
    INVALID = "invalid"
    REMOVED = "removed"
    WAIT = "wait"
    BLOCKED = "blocked"


class Change:
    ADDED = "added"
    EDITED = "edited"
    SUSPEND = "suspend-changed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)  # one per execution: no per-entry __dict__ (~0.5 KB each)
class PlanEntry:
    name: str
    file: str
    action: str
    reason: str = ""
    message: str = ""
    target: str = ""
    run_name: str = ""
    workflow: str = ""
    engine: str = ""
    change: str = ""
    conflicting_execution: str = ""
    violations: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    depends_on: tuple[str, ...] = ()  # spec.after, then spec.onFailureOf (SPEC §3a)
    condition: str = ""  # the chain condition for people: "after a, b; if p fails (OOMKilled)"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depends_on"] = list(self.depends_on)
        data["problems"] = [
            {"file": p.file, "line": p.line, "column": p.column, "path": p.path, "rule": p.rule,
             "message": p.message}
            for p in self.problems
        ]
        data["violations"] = list(self.violations)
        return {k: v for k, v in data.items() if v not in ("", [], None)}


@dataclass
class Plan:
    entries: list[PlanEntry] = field(default_factory=list)
    revision: str = ""
    base_revision: str = ""

    @property
    def failed(self) -> bool:
        """True when the plan shows something a reviewer must fix before merging."""
        return any(e.action == Action.INVALID or e.violations for e in self.entries)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.action] = out.get(e.action, 0) + 1
        return out


def chain_condition(execution: ResolvedExecution) -> str:
    """When a dependent may start, in words: ``after a, b; if p fails (OOMKilled)``."""
    spec = execution.document.spec
    parts = []
    if spec.after:
        parts.append(f"after {', '.join(spec.after)}")
    if spec.on_failure_of:
        reasons = f" ({' or '.join(spec.on_failure_reasons)})" if spec.on_failure_reasons else ""
        parts.append(f"if {spec.on_failure_of} fails{reasons}")
    return "; ".join(parts)


def _describe(execution: ResolvedExecution, action: str, **extra: Any) -> PlanEntry:
    return PlanEntry(
        name=execution.name,
        file=execution.file,
        action=action,
        target=execution.target,
        run_name=execution.run_name,
        workflow=sys.intern(f"{execution.workflow_id}@{execution.version}"),  # a few values, shared by all
        engine=execution.engine,
        depends_on=execution.document.spec.dependencies,
        condition=chain_condition(execution),
        **extra,
    )


def _invalid(item: InvalidExecution, **extra: Any) -> PlanEntry:
    """An invalid execution file, or (``name`` None) an invalid catalog file."""
    first = item.problems[0] if item.problems else None
    return PlanEntry(
        name=item.name or item.file.rsplit("/", 1)[-1],
        file=item.file,
        action=Action.INVALID,
        reason="ConfigurationError",
        message=f"{len(item.problems)} problem(s); first: {first.path or '(file)'}: {first.message}"
        if first else "invalid",
        problems=item.problems,
        **extra,
    )


def plan_declaration(decl: Declaration, revision: str = "") -> Plan:
    """The action for every declared execution, in the order they would be processed."""
    entries: list[PlanEntry] = []
    claimed: dict[str, str] = {}
    # Running executions hold their targets before anything new is considered.
    for execution in decl.executions:
        status = decl.statuses.get(execution.name)
        if status is not None and status.phase == "Running":
            claimed.setdefault(execution.target, execution.name)
    recorded: dict[str, ExecutionState] | None = None
    for execution in decl.executions:
        status = decl.statuses.get(execution.name)
        waiting = None
        if execution.document.spec.dependencies and not (status is not None and (status.terminal or
                                                                                 status.phase == "Running")):
            recorded = states_from(decl) if recorded is None else recorded
            waiting = _chain_entry(execution, recorded)
        entries.append(waiting or _entry_for(execution, status, claimed))
    for item in decl.invalid:
        entries.append(_invalid(item))
    for item in decl.invalid_catalog:
        entries.append(_invalid(item))
    return Plan(entries=entries, revision=revision)


def states_from(decl: Declaration) -> dict[str, ExecutionState]:
    """The recorded states (status files at the revision) — for views and the chain conditions."""
    from reconciler.declare.statusdoc import documents

    out = {}
    for record, data in documents(decl.statuses.values()):  # a chunk of documents decoded at a time
        state = from_document(data)
        if state is not None:
            out[record.name] = state
    return out


def _chain_entry(execution: ResolvedExecution, recorded: Mapping[str, ExecutionState]) -> PlanEntry | None:
    """A dependent that waits (its predecessors have not ended) or will be skipped (one ended
    the wrong way); None when its condition is met and it is planned like any other."""
    from reconciler.run.chains import NOT_MET, WAITING, dependency_verdict  # the run lifecycle (and Jinja): chains only

    verdict = dependency_verdict(execution, recorded)
    if verdict.not_met:
        return _describe(execution, Action.SKIP, reason=NOT_MET, message=verdict.message,
                         conflicting_execution=verdict.not_met)
    if not verdict.ready:
        return _describe(execution, Action.WAIT, reason=WAITING, message=verdict.message)
    return None


def _entry_for(
    execution: ResolvedExecution, status: StatusRecord | None, claimed: dict[str, str]
) -> PlanEntry:
    if status is not None and status.terminal:
        return _describe(execution, Action.DONE, reason=status.reason or status.phase,
                         message=sys.intern(f"already {status.phase}; nothing to do"))
    if status is not None and status.phase == "Running":
        return _describe(execution, Action.OBSERVE, reason="Running",
                         message=f"run {execution.run_name} is in progress")
    if execution.suspend:
        return _describe(execution, Action.HOLD, reason="Suspended",
                         message="spec.suspend is true: merged but not started")
    holder = claimed.get(execution.target)
    if holder is not None and holder != execution.name:
        return _describe(execution, Action.SKIP, reason="ResourceBusy",
                         message=f"target {execution.target} is claimed by {holder}",
                         conflicting_execution=holder)
    claimed[execution.target] = execution.name
    return _describe(execution, Action.CREATE, reason="",
                     message=f"create {execution.engine} run {execution.run_name}")


def plan_change(base: Declaration, head: Declaration, *, base_revision: str = "",
                revision: str = "") -> Plan:
    """The plan of ``head`` restricted to what changed since ``base``, with immutability
    violations flagged."""
    full = plan_declaration(head, revision)
    base_by_name = {e.name: e for e in base.executions}
    base_files = ({e.file for e in base.executions} | {i.file for i in base.invalid}
                  | {i.file for i in base.invalid_catalog} | set(base.catalog_files.values()))
    base_invalid = {i.file: i for i in (*base.invalid, *base.invalid_catalog)}
    head_names = {e.name for e in head.executions} | {i.name for i in head.invalid if i.name}
    entries: list[PlanEntry] = []
    for entry in full.entries:
        if entry.action == Action.INVALID:
            old = base_invalid.get(entry.file)
            if old is None or old.problems != entry.problems:
                change = Change.EDITED if entry.file in base_files else Change.ADDED
                entries.append(_with(entry, change=change))
            continue
        current = head.find(entry.name)
        previous = base_by_name.get(entry.name)
        assert current is not None
        if previous is None:
            entries.append(_with(entry, change=Change.ADDED))
        elif previous.spec_hash != current.spec_hash:
            status = head.statuses.get(entry.name) or base.statuses.get(entry.name)
            violations: Sequence[str] = ()
            if status is not None and (status.started or status.terminal):
                violations = (
                    f"SpecChangedAfterStart: {entry.name} is already {status.phase}; its spec "
                    "must not change. Revert this edit and add a new execution to run again.",
                )
            entries.append(_with(entry, change=Change.EDITED, violations=tuple(violations)))
        elif previous.suspend != current.suspend:
            entries.append(_with(entry, change=Change.SUSPEND))
    for name, previous in base_by_name.items():
        if name not in head_names:
            status = head.statuses.get(name) or base.statuses.get(name)
            running = status is not None and status.phase == "Running"
            entries.append(_describe(
                previous, Action.REMOVED, change=Change.REMOVED,
                reason="Cancelled" if running else "",
                message=f"run {previous.run_name} would be cancelled" if running
                else "removed; its status file stays as history",
            ))
    return Plan(entries=entries, revision=revision, base_revision=base_revision)


def _with(entry: PlanEntry, **changes: Any) -> PlanEntry:
    return replace(entry, **changes)


def plan_from_states(decl: Declaration, states: Mapping[str, ExecutionState], revision: str) -> Plan:
    """The plan with the cluster's view: what a (dry-run) cycle decided for each execution."""
    entries: list[PlanEntry] = []
    for execution in decl.executions:
        state = states.get(execution.name)
        if state is None:
            entries.append(_describe(execution, Action.CREATE, message=f"create {execution.run_name}"))
            continue
        action = _ACTION_FOR.get((state.phase, state.reason)) or _ACTION_FOR.get((state.phase, "*"), Action.WAIT)
        violations = (f"PolicyViolation: {state.message}",) if state.reason == "PolicyViolation" else ()
        entries.append(_describe(execution, action, reason=state.reason, message=state.message,
                                 conflicting_execution=str(state.skip_details.get("conflictingExecution", "")),
                                 violations=violations))
    entries.extend(_invalid(item) for item in (*decl.invalid, *decl.invalid_catalog))
    return Plan(entries=entries, revision=revision)


_ACTION_FOR = {
    ("Pending", "Creating"): Action.CREATE,
    ("Pending", "Suspended"): Action.HOLD,
    ("Pending", "PolicyViolation"): Action.BLOCKED,
    ("Pending", "UnverifiedCommit"): Action.BLOCKED,
    ("Running", "*"): Action.OBSERVE,
    ("Skipped", "*"): Action.SKIP,
    ("Completed", "*"): Action.DONE,
    ("Failed", "*"): Action.DONE,
}


def with_states(plan: Plan, states: Mapping[str, ExecutionState]) -> Plan:
    """The plan's entries with what a (dry-run) cycle decided for them: the cluster's view
    (busy targets, cooldowns), the gate (policy, windows) — for a pull-request preview."""
    entries = []
    for entry in plan.entries:
        state = states.get(entry.name)
        if state is None or entry.action in (Action.INVALID, Action.REMOVED):
            entries.append(entry)
            continue
        action = _ACTION_FOR.get((state.phase, state.reason)) or _ACTION_FOR.get((state.phase, "*"), Action.WAIT)
        violations = entry.violations
        if action == Action.BLOCKED and state.reason == "PolicyViolation":
            violations = (*violations, f"PolicyViolation: {state.message}")
        entries.append(_with(entry, action=action, reason=state.reason, message=state.message,
                             conflicting_execution=str(state.skip_details.get("conflictingExecution", "")),
                             violations=violations))
    return Plan(entries=entries, revision=plan.revision, base_revision=plan.base_revision)
