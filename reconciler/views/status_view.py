"""What operators look at: one row per execution, one detail page, the repository summary.

The CLI (``status``, ``get``) and the web dashboard show the same things, built here once
from the declaration, the recorded states and Git history: the commit that declared an
execution, the commits that recorded its status, and its timeline of phase transitions
(read from successive versions of its status file — Git history *is* the audit trail).
Plain JSON-friendly dicts, so every surface renders the same data.  A chain (SPEC §3a)
adds ``dependsOn``/``condition`` to a dependent's row and ``dependents`` to its
predecessor's detail; the keys are absent otherwise, so outputs without chains are unchanged.
An invalid execution is shown as the reconciler records it (SPEC §4.1: ``Failed`` /
``ConfigurationError`` / ``Degraded``) even before any status was committed for it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from reconciler.declare.names import format_duration
from reconciler.declare.statusdoc import read_status_document
from reconciler.errors import GitError
from reconciler.observe.vocabulary import format_time
from reconciler.record.status import HEALTH_ORDER, ExecutionState, repository_health, with_summary
from reconciler.views.plan import chain_condition

if TYPE_CHECKING:  # annotations only: ``reconciler status`` does not need the renderer's Jinja
    from reconciler.declare.declared import Declaration, ResolvedExecution
    from reconciler.render.renderer import Renderer
    from reconciler.source.gitsource import GitSource

PHASES = ("Pending", "Running", "Completed", "Failed", "Skipped")
SYNCS = ("Synced", "OutOfSync", "Unknown")
HEALTHS = tuple(HEALTH_ORDER)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def row(name: str, execution: ResolvedExecution | None, state: ExecutionState | None,
        now: datetime) -> dict[str, Any]:
    """One execution as a table row (declared, recorded, or both)."""
    s = state or ExecutionState(name=name)
    duration = s.duration
    if duration is None and s.start_time and s.phase == "Running":
        duration = now - s.start_time
    origin = execution.origin if execution else None
    out = {
        "name": name,
        "target": execution.target if execution else s.target,
        "workflow": f"{execution.workflow_id}@{execution.version}" if execution else s.workflow,
        "engine": execution.engine if execution else ("job" if s.execution_ref and s.execution_ref.kind == "Job"
                                                      else "tekton"),
        "phase": s.phase if state else "Pending",
        "reason": s.reason if state else "NotYetReconciled",
        "message": s.message if state else "declared; the reconciler has not recorded it yet",
        "sync": s.sync if state else "OutOfSync",
        "health": s.health if state else "Progressing",
        "run": s.execution_ref.name if s.execution_ref else "",
        "startTime": format_time(s.start_time) if s.start_time else "",
        "completionTime": format_time(s.completion_time) if s.completion_time else "",
        "duration": format_duration(int(duration.total_seconds())) if duration is not None else "",
        "age": _age(now.timestamp() - origin.introduced_time) if origin else "",
        "labels": dict(execution.labels) if execution else {},
        "declaredIn": origin.introduced_commit if origin else "",
        "declared": execution is not None,
    }
    if execution is not None and execution.document.spec.dependencies:  # a chain (SPEC §3a)
        out["dependsOn"] = list(execution.document.spec.dependencies)
        out["condition"] = chain_condition(execution)
    return out


def with_invalid(decl: Declaration, states: dict[str, ExecutionState],
                 now: datetime | None = None) -> dict[str, ExecutionState]:
    """``states`` with every invalid execution that has not started as the reconciler's cycle
    records it (``Failed``/``ConfigurationError``, health ``Degraded``), so the views never
    show a file that can never run as ``Pending``/``Healthy`` (it once did, from Git alone)."""
    out = dict(states)
    moment = now or datetime.now(timezone.utc)
    for item in decl.invalid:
        previous = out.get(item.name) if item.name else None
        if item.name is None or (previous is not None and previous.started):
            continue
        base = previous or ExecutionState(name=item.name)
        if (base.phase, base.reason) == ("Failed", "ConfigurationError"):
            continue  # recorded already, with the reconciler's own message
        message = "; ".join(f"{p.file}:{p.line or '?'} {p.path or '(file)'}: {p.message}"
                            for p in item.problems[:5])
        failed = replace(base, phase="Failed", reason="ConfigurationError", message=message[:2000])
        out[item.name] = with_summary(failed, None, now=moment)
    return out


def rows(decl: Declaration, states: dict[str, ExecutionState], now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(timezone.utc)
    states = with_invalid(decl, states, now)
    names = sorted({e.name for e in decl.executions} | set(states) | {i.name for i in decl.invalid if i.name})
    return [row(n, decl.find(n), states.get(n), now) for n in names]


def summary(decl: Declaration, states: dict[str, ExecutionState], *, repository: str, branch: str,
            revision: str, leader: bool = True, now: datetime | None = None,
            all_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The repository at a glance.  ``all_rows``: ``rows(decl, states)`` when the caller built
    them already (``reconciler status`` shows them), so they are not built a second time."""
    if all_rows is None:
        all_rows = rows(decl, states, now)
    phases = {p: 0 for p in PHASES}
    syncs = {s: 0 for s in SYNCS}
    states = with_invalid(decl, states, now)
    for r in all_rows:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
        syncs[r["sync"]] = syncs.get(r["sync"], 0) + 1
    out = {"repository": repository, "branch": branch, "revision": revision,
           "health": repository_health(list(states.values())), "phases": phases, "sync": syncs,
           "generatedAt": format_time(now or datetime.now(timezone.utc)), "leader": leader}
    if decl.ignored_statuses:  # untrusted input that is not a status document (SPEC §10)
        out["ignoredStatusFiles"] = dict(sorted(decl.ignored_statuses.items()))
    return out


def _commit_info(source: GitSource, sha: str) -> dict[str, str]:
    if not sha:
        return {}
    try:
        out = source._git().show("-s", "--format=%H%x00%an%x00%ct%x00%s", sha)
    except Exception:
        return {"sha": sha}
    full, author, when, subject = [*str(out).split("\0"), "", "", "", ""][:4]
    return {"sha": full, "author": author, "time": format_time(datetime.fromtimestamp(int(when or 0), timezone.utc)),
            "subject": subject}


def timeline(source: GitSource, commit: str, name: str, limit: int = 200) -> tuple[list[dict[str, str]],
                                                                                 list[dict[str, str]]]:
    """(phase transitions oldest first, status commits newest first) from Git history."""
    path = f"{source.path}/status/{name}.yaml" if source.path else f"status/{name}.yaml"
    try:
        log = str(source._git().log(f"-{limit}", "--format=%H%x00%ct%x00%s", commit, "--", path))
    except Exception:
        return [], []
    commits = []
    for line in log.split("\n"):  # not splitlines(): a subject may hold \r, \x1c or U+2028
        if not line:
            continue
        sha, when, subject = [*line.split("\0"), "", "", ""][:3]
        commits.append({"sha": sha, "time": format_time(datetime.fromtimestamp(int(when or 0), timezone.utc)),
                        "subject": subject})
    events: list[dict[str, str]] = []
    previous: tuple[str, str] | None = None
    for c in reversed(commits):
        try:
            raw = source._git().show(f"{c['sha']}:{path}", stdout_as_string=False)
        except Exception:
            continue
        # each old version is untrusted input too: the strict loader, with its limits (an alias
        # bomb in a hand-edited version must not exhaust memory)
        data, _ = read_status_document(raw if isinstance(raw, bytes) else str(raw).encode(), path)
        if data is None:
            continue
        status = data["status"]
        key = (str(status.get("phase", "")), str(status.get("reason", "")))
        if key != previous:
            events.append({"time": c["time"], "phase": key[0], "reason": key[1],
                           "message": str(status.get("message", ""))[:300], "commit": c["sha"]})
            previous = key
    return events, commits


def detail(source: GitSource, commit: str, decl: Declaration, states: dict[str, ExecutionState], name: str,
           renderer: Renderer | None = None, now: datetime | None = None) -> dict[str, Any] | None:
    execution = decl.find(name)
    state = with_invalid(decl, states, now).get(name)
    invalid = next((i for i in decl.invalid if i.name == name), None)
    if execution is None and state is None and invalid is None:
        return None
    out = row(name, execution, state, now or datetime.now(timezone.utc))
    spec_file = execution.file if execution else invalid.file if invalid else ""
    spec = ""
    if spec_file:
        try:
            spec = str(source._git().show(f"{commit}:{spec_file}"))
        except Exception:
            spec = ""
    rendered = ""
    if execution is not None:
        from reconciler.render.renderer import Renderer

        try:
            rendered = (renderer or Renderer()).render_checked(execution).to_yaml()
        except Exception as e:
            rendered = f"# cannot render: {e}"
    try:
        events, status_commits = timeline(source, commit, name)
    except GitError:
        events, status_commits = [], []
    doc = state.to_document()["status"] if state else {}
    dependents = [{"name": e.name, "condition": chain_condition(e),
                   "phase": states[e.name].phase if e.name in states else "Pending",
                   "reason": states[e.name].reason if e.name in states else "NotYetReconciled"}
                  for e in decl.executions if name in e.document.spec.dependencies]
    if dependents:
        out["dependents"] = dependents
    out.update({
        "file": spec_file, "spec": spec, "rendered": rendered,
        "conditions": doc.get("conditions", []), "failureDetails": doc.get("failureDetails", {}),
        "skipDetails": doc.get("skipDetails", {}), "executionStatus": doc.get("executionStatus", {}),
        "observedRevision": doc.get("observedRevision", ""),
        "problems": [str(p) for p in invalid.problems] if invalid else [],
        "timeline": events, "statusCommits": status_commits,
        "declaredCommit": _commit_info(source, execution.origin.introduced_commit
                                       if execution and execution.origin else ""),
        "lastChangedCommit": _commit_info(source, execution.origin.last_commit
                                          if execution and execution.origin else ""),
    })
    return out
