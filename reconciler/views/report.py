"""Present validation problems and plans as text, JSON, GitHub annotations or Markdown.

Pure string builders: the CLI chooses one and prints it.  Everything shown here can
contain text from untrusted files (file names, execution names, values in messages,
status files, commit subjects), so each format escapes for its own medium with
:mod:`reconciler.safetext`: every text line is cleaned of control and bidi characters and
guarded against being read as a GitHub Actions workflow command; annotations encode their
data the way the runner decodes it; Markdown posted as a pull-request comment keeps each
value inside its table cell or code span and renders no HTML.  JSON and YAML outputs are
escaped by their encoders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.errors import Problem
from reconciler.safetext import clean, gh_data, gh_property, md_code, md_text, safe_line, safe_lines
from reconciler.views.plan import Action, Plan, PlanEntry

if TYPE_CHECKING:
    from reconciler.record.transitions import CycleResult

SYMBOL = {
    Action.CREATE: "+", Action.SKIP: "~", Action.HOLD: "=", Action.OBSERVE: ">",
    Action.DONE: "✓", Action.INVALID: "✗", Action.REMOVED: "-", Action.WAIT: "…", Action.BLOCKED: "⛔",
}


# -- validation -------------------------------------------------------------------------

def problems_text(problems: Sequence[Problem], checked: int) -> str:
    lines = [str(p) for p in problems]
    files = len({p.file for p in problems})
    if problems:
        lines.append(f"{len(problems)} problem(s) in {files} of {checked} file(s)")
    else:
        lines.append(f"{checked} file(s) valid")
    return safe_lines(lines)


def problem_dict(p: Problem) -> dict[str, object]:
    return {"file": p.file, "line": p.line, "column": p.column, "path": p.path,
            "rule": p.rule, "message": p.message}


def problems_json(problems: Sequence[Problem], checked: int) -> str:
    return json.dumps({"valid": not problems, "filesChecked": checked,
                       "problems": [problem_dict(p) for p in problems]}, indent=2)


def problems_github(problems: Sequence[Problem]) -> str:
    """GitHub Actions workflow commands: each problem becomes an annotation on its line.

    Each annotation is exactly one line that starts with ``::error``: the file, the rule and
    the message are encoded (``%0A`` for a newline, ``%3A`` for a ``:`` in a property), so
    no value can end the command early or start a command of its own."""
    lines = []
    for p in problems:
        props = [f"file={gh_property(p.file)}"]
        if p.line is not None:
            props.append(f"line={p.line}")
            if p.column is not None:
                props.append(f"col={p.column}")
        props.append(f"title={gh_property(p.rule)}")
        field = f"{p.path}: " if p.path else ""
        lines.append(f"::error {','.join(props)}::{gh_data(field + p.message)}")
    return "\n".join(lines)


# -- plan -------------------------------------------------------------------------------

def plan_json(plan: Plan) -> str:
    return json.dumps({
        "revision": plan.revision,
        "baseRevision": plan.base_revision or None,
        "summary": plan.counts(),
        "executions": [e.to_dict() for e in plan.entries],
    }, indent=2, default=str)


def _why(entry: PlanEntry) -> str:
    why = entry.message
    if entry.violations:
        why = "; ".join(entry.violations)
    return why


def plan_rows(plan: Plan, *, change: bool = True) -> Iterator[tuple[str, ...]]:
    """The table's cells, cleaned; ``change=False`` leaves out the CHANGE column (a plan
    without a base)."""
    labels: dict[str, str] = {}  # one "✓ done" string for every done entry, not one each
    for e in plan.entries:
        label = labels.get(e.action)
        if label is None:
            label = labels[e.action] = clean(f"{SYMBOL.get(e.action, '?')} {e.action}")
        if change:
            yield (label, clean(e.name), clean(e.change or "-"), clean(e.target or "-"), clean(e.workflow or "-"),
                   clean(e.run_name or "-"), clean(_why(e)))
        else:
            yield (label, clean(e.name), clean(e.target or "-"), clean(e.workflow or "-"),
                   clean(e.run_name or "-"), clean(_why(e)))


def plan_text_lines(plan: Plan) -> Iterator[str]:
    """The lines of :func:`plan_text`, each cleaned and guarded, one at a time: at 50 000
    executions the CLI prints them in chunks instead of building the whole text first."""
    header: tuple[str, ...] = ("ACTION", "EXECUTION", "CHANGE", "TARGET", "WORKFLOW", "RUN", "WHY")
    with_change = plan.base_revision != ""
    if not with_change:
        header = header[:2] + header[3:]
    yield safe_line(f"Plan for {plan.revision[:12] or 'working tree'}"
                    + (f" (changes since {plan.base_revision[:12]})" if plan.base_revision else ""))
    yield from map(safe_line, _table_lines([header, *plan_rows(plan, change=with_change)]))
    for e in plan.entries:
        for p in e.problems:
            yield safe_line(f"  {p}")
    chains = chain_tree(plan)
    if chains:
        yield safe_line("Chains (who waits on whom):")
        for depth, name, entry, via in chains:
            yield safe_line(f"{'  ' * (depth + 1)}{clean(_chain_line(entry, name, via))}")
    counts = plan.counts()
    yield safe_line(", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing declared")


def plan_text(plan: Plan) -> str:
    return "\n".join(plan_text_lines(plan))


def chunks(lines: Iterable[str], size: int = 4096) -> Iterator[str]:
    """``lines`` joined with newlines, ``size`` lines at a time: printing each chunk as a line
    prints exactly ``"\n".join(lines)`` and a final newline, without ever holding it whole."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield "\n".join(batch)
            batch = []
    if batch:
        yield "\n".join(batch)


def chain_tree(plan: Plan) -> list[tuple[int, str, PlanEntry | None, str]]:
    """The plan's chains as a depth-first tree: (depth, name, its entry or None when it is
    not in this plan, how it hangs on its parent).  A dependent with several predecessors
    appears under each; the roots are the predecessors that depend on nothing shown."""
    by_name = {e.name: e for e in plan.entries}
    children: dict[str, list[tuple[str, str]]] = {}
    for e in plan.entries:
        for parent in e.depends_on:
            fails = next((part for part in e.condition.split("; ") if part.startswith(f"if {parent} fails")), "")
            how = fails.replace(f"if {parent} fails", "if it fails", 1) if fails else "after it"
            children.setdefault(parent, []).append((e.name, how))
    if not children:
        return []
    # every predecessor of an entry is a key of ``children``: the roots are those that hang on nothing
    roots = sorted(n for n in children if n not in by_name or not by_name[n].depends_on)
    out: list[tuple[int, str, PlanEntry | None, str]] = []

    def walk(name: str, depth: int, via: str, seen: frozenset[str]) -> None:
        out.append((depth, name, by_name.get(name), via))
        if name in seen:  # validation rejects cycles; never loop on a broken plan
            return
        for child, how in sorted(children.get(name, [])):
            walk(child, depth + 1, how, seen | {name})

    for root in roots:
        walk(root, 0, "", frozenset())
    return out


def _chain_line(entry: PlanEntry | None, name: str, via: str) -> str:
    head = f"{via}: {name}" if via else name
    if entry is None:
        return f"{head} (not in this plan)"
    return f"{head}  {SYMBOL.get(entry.action, '?')} {entry.action}" + (
        f" ({entry.reason})" if entry.reason else "")


def plan_markdown(plan: Plan) -> str:
    title = f"### kubernaut plan for {md_code(plan.revision[:12])}"
    if plan.base_revision:
        title += f" (changes since {md_code(plan.base_revision[:12])})"
    out = [title, ""]
    counts = plan.counts()
    out.append(" · ".join(f"**{n}** {a}" for a, n in sorted(counts.items())) or "No execution changes.")
    out.append("")
    if plan.entries:
        out.append("| | Execution | Change | Target | Workflow | Run | Why |")
        out.append("|---|---|---|---|---|---|---|")
        for e in plan.entries:
            why = md_text(_why(e))
            if e.violations or e.action == Action.INVALID:
                why = f"**{why}**"
            out.append(
                f"| {SYMBOL.get(e.action, '?')} {e.action} | {md_code(e.name)} | {md_text(e.change or '-')} | "
                f"{md_code(e.target or '-')} | {md_text(e.workflow or '-')} | "
                f"{md_code(e.run_name) if e.run_name else '-'} | {why} |"
            )
    chains = chain_tree(plan)
    if chains:
        out += ["", "#### Chains (who waits on whom)", ""]
        for depth, name, entry, via in chains:
            label = f"{md_text(via)}: {md_code(name, in_table=False)}" if via else md_code(name, in_table=False)
            if entry is None:
                label += " (not in this plan)"
            else:
                label += f" — {SYMBOL.get(entry.action, '?')} {md_text(entry.action)}"
                if entry.reason:
                    label += f" ({md_text(entry.reason)})"
            out.append(f"{'  ' * depth}- {label}")
    problems = [p for e in plan.entries for p in e.problems]
    if problems:
        out += ["", "<details><summary>Validation problems</summary>", ""]
        out += [f"- {md_code(p.location(), in_table=False)} {md_text(p.path)}: {md_text(p.message)} "
                f"({md_code(p.rule, in_table=False)})"
                for p in problems]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# -- reconcile cycle ----------------------------------------------------------------------

def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned columns; cells must already be cleaned (an escape is wider than its character)."""
    return list(_table_lines(rows))


def _table_lines(rows: list[tuple[str, ...]]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]


def format_cycle(result: CycleResult, output: str, intentions: list[str] | None = None) -> str:
    """The outcome of one cycle: every execution's state, errors, dry-run intentions."""
    states = [result.states[name] for name in sorted(result.states)]
    if output == "json":
        data: dict[str, Any] = {"revision": result.revision, "clusterUnknown": result.cluster_unknown,
                                "executions": [s.to_document() for s in states], "errors": result.errors}
        if intentions is not None:
            data["dryRun"] = {"wouldDo": intentions}
        return json.dumps(data, indent=2, default=str)
    if output == "yaml":
        return yaml.safe_dump_all([s.to_document() for s in states], sort_keys=False, allow_unicode=True)
    rows: list[tuple[str, ...]] = [("EXECUTION", "PHASE", "REASON", "SYNC", "HEALTH", "TARGET", "RUN", "MESSAGE")]
    for s in states:
        rows.append(tuple(clean(c) for c in (
            s.name, s.phase, s.reason or "-", s.sync, s.health, s.target or "-",
            s.execution_ref.name if s.execution_ref else "-", s.message.replace("\n", " ")[:160])))
    out = [f"Revision {result.revision[:12] or '?'}" + (" (cluster unknown)" if result.cluster_unknown else "")]
    out += _table(rows)
    if intentions is not None:
        out.append("Dry run — would do:" if intentions else "Dry run — nothing to change.")
        out += [f"  {i}" for i in intentions]
    out += [f"error: {e}" for e in result.errors]
    return safe_lines(out)


# -- status / get / diff -------------------------------------------------------------------

def format_status(rows: list[dict[str, Any]], output: str, summary: dict[str, Any]) -> str:
    if output == "json":
        return json.dumps({"summary": summary, "executions": rows}, indent=2)
    if output == "yaml":
        return yaml.safe_dump({"summary": summary, "executions": rows}, sort_keys=False, allow_unicode=True)
    header: tuple[str, ...] = ("NAME", "TARGET", "WORKFLOW", "PHASE", "SYNC", "HEALTH", "AGE", "DURATION", "RUN")
    if output == "wide":
        header = (*header, "REASON", "MESSAGE")
    table: list[tuple[str, ...]] = [header]
    for r in rows:
        cells = [r["name"], r["target"] or "-", r["workflow"] or "-", r["phase"], r["sync"], r["health"],
                 r["age"] or "-", r["duration"] or "-", r["run"] or "-"]
        if output == "wide":
            cells += [r["reason"] or "-", r["message"].replace("\n", " ")[:120]]
        table.append(tuple(clean(c) for c in cells))
    counts = ", ".join(f"{n} {p}" for p, n in summary["phases"].items() if n)
    lines = [f"{summary['repository']} @ {summary['branch']} ({summary['revision'][:12]}): "
             f"health {summary['health']}; {counts or 'nothing declared'}"]
    lines += _table(table) if rows else ["no executions match"]
    ignored = summary.get("ignoredStatusFiles") or {}
    if ignored:
        lines.append(f"{len(ignored)} status file(s) ignored: not valid status documents, never trusted:")
        lines += [f"  {clean(path)}: {clean(why)}" for path, why in ignored.items()]
    return safe_lines(lines)


def format_detail(d: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(d, indent=2)
    if output == "yaml":
        return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    c = clean  # values are cleaned before padding, so columns stay aligned
    out = [f"Name:         {d['name']}", f"Target:       {d['target']}",
           f"Workflow:     {d['workflow']} ({d['engine']})",
           f"Phase:        {d['phase']}" + (f" ({d['reason']})" if d["reason"] else ""),
           f"Sync/Health:  {d['sync']} / {d['health']}", f"Run:          {d['run'] or '-'}",
           f"Started:      {d['startTime'] or '-'}", f"Completed:    {d['completionTime'] or '-'}",
           f"Duration:     {d['duration'] or '-'}", f"File:         {d['file'] or '-'}",
           f"Message:      {d['message']}"]
    if d.get("dependsOn"):
        out.append(f"Waits on:     {', '.join(d['dependsOn'])} ({d.get('condition', '')})")
    for dependent in d.get("dependents") or []:
        out.append(f"Dependent:    {dependent['name']} runs {dependent['condition'].replace(d['name'], 'this')}: "
                   f"{dependent['phase']} ({dependent['reason']})")
    declared = d.get("declaredCommit") or {}
    if declared:
        out.append(f"Declared in:  {declared.get('sha', '')[:12]} {declared.get('subject', '')} "
                   f"({declared.get('author', '')}, {declared.get('time', '')})")
    changed = d.get("lastChangedCommit") or {}
    if changed and changed.get("sha") != declared.get("sha"):
        out.append(f"Last changed: {changed.get('sha', '')[:12]} {changed.get('subject', '')}")
    failure = d.get("failureDetails") or {}
    if failure:
        out += ["", "Failure:", f"  {failure.get('naturalLanguageSummary', failure.get('message', ''))}"]
        for key in ("reason", "failedTaskName", "failedStepName", "exitCode", "executionTimeBeforeFailure",
                    "wasExecutionFailure"):
            if key in failure:
                out.append(f"  {key}: {failure[key]}")
    skip = d.get("skipDetails") or {}
    if skip:
        out += ["", "Skip/wait details:"] + [f"  {k}: {v}" for k, v in skip.items()]
    if d.get("problems"):
        out += ["", "Problems:"] + [f"  {p}" for p in d["problems"]]
    if d.get("conditions"):
        out += ["", "Conditions:"] + [f"  {k['type']}={k['status']} {k['reason']}: {k['message'][:120]} "
                                      f"({k['lastTransitionTime']})" for k in d["conditions"]]
    if d.get("timeline"):
        out += ["", "Timeline (from Git history):"] + [
            f"  {c(e['time'])}  {c(e['phase']):<10} {c(e['reason']):<20} {c(e['commit'][:12])}"
            for e in d["timeline"]]
    if d.get("statusCommits"):
        out += ["", "Status commits:"] + [f"  {s['sha'][:12]} {s['time']} {s['subject']}"
                                          for s in d["statusCommits"][:10]]
    return safe_lines(out)


def format_diff(decl: Any, states: dict[str, Any], runs: dict[str, dict[str, Any]], renderer: Any) -> tuple[str, bool]:
    """Declared versus cluster, one line per difference and a unified diff for changed specs."""
    import difflib

    from reconciler.render.renderer import to_yaml
    from reconciler.run.lifecycle import run_info

    lines: list[str] = []
    held: list[str] = []  # suspended: declared intent, not drift (shown, not counted)
    declared = {e.name: e for e in decl.executions}
    for name, execution in sorted(declared.items()):
        state = states.get(name)
        run = runs.get(execution.run_name)
        info = run_info(run) if run else None
        if state is None or (not state.started and not state.terminal):
            if execution.document.spec.suspend:
                held.append(f"= {name}: suspended (spec.suspend: true); {execution.run_name} is created "
                            "when it is set to false")
                continue
            why = f"{state.reason}: {state.message}" if state is not None and state.reason else "not applied yet"
            lines.append(f"+ {name}: {execution.run_name} would be created ({why})")
            continue
        if state.spec_hash and state.spec_hash != execution.spec_hash:
            lines.append(f"~ {name}: edited after start; the edit is not applied (SpecChangedAfterStart)")
            if run is not None:
                wanted = to_yaml({"spec": renderer.render_checked(execution).manifest.get("spec")}).splitlines()
                actual = to_yaml({"spec": run.get("spec")}).splitlines()
                lines += [f"    {d}" for d in difflib.unified_diff(actual, wanted, "cluster", "declared", lineterm="")]
            continue
        if state.phase == "Running" and (info is None or info.execution != name):
            lines.append(f"- {name}: run {execution.run_name} is missing from the cluster")
    owners = set(declared) | set(states)
    for run_name, run in sorted(runs.items()):
        info = run_info(run)
        if info.execution and info.execution not in owners:
            lines.append(f"! {info.execution}: run {run_name} exists but nothing declares it")
    if not lines:
        summary = "in sync: every declared execution is applied or recorded" + (", or suspended" if held else "")
        return safe_lines([summary, *held]), False
    return safe_lines([*lines, *held]), True
