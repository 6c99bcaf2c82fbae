"""The cross-file step of a declaration, and the whole load from files to :class:`Declaration` (pure).

Each execution file is checked on its own (:mod:`reconciler.declare.execution_file`); what
depends on several files is judged here: two files declaring one name (neither runs), a
chain reference to an execution no file declares, and chains that loop back (Tarjan's
strongly connected components, every file of the loop named).  :func:`load_declaration`
classifies the files, loads the catalog, checks every execution, assembles them and reads
the status files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from reconciler.declare.catalog import Catalog, load_catalog
from reconciler.declare.declared import Declaration, FileOrigin, InvalidExecution, capped, classify, gc_paused
from reconciler.declare.execution_file import ParsedFile, parse_execution_safely
from reconciler.declare.statusdoc import StatusRecord, parse_status_reporting
from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES
from reconciler.errors import Problem

_log = logging.getLogger("reconciler.declared")


def load_declaration(
    files: Mapping[str, bytes | int],
    *,
    root: str = "",
    origins: Mapping[str, FileOrigin] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Declaration:
    """Validate and resolve every declared file under ``root``. Never raises for bad input."""
    with gc_paused():
        return _load_declaration(files, root, origins or {}, max_bytes)


def _load_declaration(
    files: Mapping[str, bytes | int], root: str, origins: Mapping[str, FileOrigin], max_bytes: int
) -> Declaration:
    roles: dict[str, dict[str, bytes | int]] = {"execution": {}, "workflow": {}, "status": {}}
    for path, raw in files.items():
        role = classify(path, root)
        if role:
            roles[role][path] = raw
    catalog = load_catalog(roles["workflow"], max_bytes)
    have_catalog = bool(roles["workflow"])
    parsed = [
        parse_execution_safely(file, roles["execution"][file], catalog, have_catalog,
                                origins.get(file), max_bytes)
        for file in sorted(roles["execution"])
    ]
    decl = assemble(catalog, parsed)
    for file in sorted(roles["status"]):
        record, why = status_file(file, roles["status"][file])
        if record is not None:
            decl.statuses[record.name] = record
        else:
            decl.ignored_statuses[file] = why
    return decl


def status_file(file: str, raw: bytes | int) -> tuple[StatusRecord | None, str]:
    """One status file: its record, or None and why it is ignored (never raises)."""
    try:
        record, why = parse_status_reporting(raw, file)
    except Exception:  # a damaged status file is treated as absent, never the cycle's error
        _log.warning("unexpected error reading status file %s", file, exc_info=True)
        record, why = None, "this file could not be read"
    return record, "" if record is not None else why or "not a status document"


def assemble(catalog: Catalog, parsed: list[ParsedFile]) -> Declaration:
    """The cross-file step: from the catalog and every execution file checked on its own
    (sorted by file) to the declaration — duplicate names and chain references are judged
    here, across files.  The items' problem lists are extended: pass copies of cached ones
    (:meth:`ParsedFile.copy`)."""
    decl = Declaration()
    decl.catalog = catalog.entries
    decl.invalid_catalog = catalog.invalid
    decl.catalog_files = catalog.files
    for bad in catalog.invalid:
        decl.problems.extend(bad.problems)
    files_by_name: dict[str, list[str]] = {}
    for item in parsed:
        if item.name is not None:
            files_by_name.setdefault(item.name, []).append(item.file)
    _check_dependencies(parsed)
    for item in parsed:
        others = [f for f in files_by_name.get(item.name or "", []) if f != item.file]
        if others:
            # Neither runs: which one the author meant is a question for review.
            line, col = item.name_position
            item.problems.append(Problem(item.file, line, col, "metadata.name", "duplicate-name",
                                         f"name {item.name!r} is also used by {', '.join(others)}"))
        if item.resolved is not None and not item.problems:
            decl.executions.append(item.resolved)
        else:
            problems = capped(item.problems)
            decl.invalid.append(InvalidExecution(item.file, item.name, problems, item.origin))
            decl.problems.extend(problems)
    decl.executions.sort(key=lambda e: e.order_key)
    return decl


def _check_dependencies(parsed: list[ParsedFile]) -> None:
    """Cross-file rules of chains (SPEC §3a): every referenced execution exists on the
    branch (``dependency-missing``), and no chain loops back (``dependency-cycle``, naming
    every file of the loop).  Problems go to the file holding the bad reference."""
    files = {item.name: item.file for item in parsed if item.name is not None}
    graph: dict[str, list[str]] = {}
    for item in parsed:
        if item.name is None:
            continue
        for target, template in item.dependencies:
            if target not in files:
                item.problems.append(replace(template, message=(
                    f"{template.path} names {target!r}, which is not an execution on this branch (no file under "
                    "executions/ declares it)")))
            else:
                graph.setdefault(item.name, []).append(target)
    for loop in _cycles(graph):
        members = set(loop)
        shown = " -> ".join(f"{n} ({files[n]})" for n in (*loop, loop[0]))
        # every file of the loop's names that holds a reference into it (two files may
        # declare one name: the one without such a reference is not part of the loop)
        for item in parsed:
            if item.name not in members:
                continue
            into = next((t for target, t in item.dependencies if target in members), None)
            if into is None:
                continue
            item.problems.append(replace(into, rule="dependency-cycle",
                                         message=f"dependency cycle: {shown}; none of them could ever start"))


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative so a
    chain of thousands cannot overflow the stack), each in a stable order starting at its
    smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph.get(node, [])
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(_loop_order(component, graph))
    return sorted(out)


def _loop_order(component: list[str], graph: Mapping[str, list[str]]) -> list[str]:
    """The members of a cycle in the order of one walk around it, from the smallest name."""
    members = set(component)
    start = min(component)
    order = [start]
    while len(order) < len(component):
        nxt = next((n for n in graph.get(order[-1], []) if n in members and n not in order), None)
        if nxt is None:  # not a simple loop: list the rest by name
            order += sorted(members - set(order))
            break
        order.append(nxt)
    return order
