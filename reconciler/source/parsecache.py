"""Parsed and validated files kept by Git blob id, so a cycle parses only what changed.

``git ls-tree`` names every file's blob id; a blob id names its content exactly.  So the
result of checking one file on its own — an execution, the catalog, a status document —
can be kept under (path, blob id) and reused as long as that blob is on the branch: an
unchanged revision parses nothing, one edited file is parsed once, and the others are not
even read from Git.  With a :class:`~reconciler.source.parsestore.ParseStore` the same results
outlive the process: a restart, or a CLI command, parses only what no process has seen.

What depends on *other* files is never cached with a file: duplicate names and chain
references come from the cross-file step (:func:`declared_assemble.assemble`) over the cached
per-file results, and an execution's catalog checks are kept only together with the
catalog entry they were made against — when that entry changes (or disappears, or becomes
broken), the execution is checked again.  When only a few files changed and none of them
(before or after) shares a name with another file or takes part in a chain — as referrer
or as target — no other file's verdict can change, and the declaration is the previous one
with those files' own verdicts swapped in (in time proportional to the change); anything
else runs the full cross-file step.  A cached invalid file therefore stays invalid with
exactly the same problems, and an error caused by another file still appears when only
that other file changed.

Entries not used by the last load are dropped, so memory follows the branch, not history.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.declare.assemble import assemble
from reconciler.declare.catalog import Catalog, load_catalog
from reconciler.declare.declared import Declaration, FileOrigin, InvalidExecution, ResolvedExecution, capped, gc_paused
from reconciler.declare.execution_file import ParsedFile, parse_execution_safely
from reconciler.source.parsecache_rows import decode_execution, encode_execution, is_internal_result
from reconciler.source.parsecache_status import FAST_LIMIT, READ_CHUNK, Listing, Reader, StatusFiles
from reconciler.source.parsestore import ParseStore


def _catalog_view(catalog: Catalog, have_catalog: bool, workflow: tuple[str, str] | None) -> Any:
    """Everything about ``catalog`` that an execution referring to ``workflow`` was checked
    against (see ``declared._against_catalog``): equal views ⇒ the same problems."""
    if workflow is None:  # invalid before the catalog was consulted
        return None
    if not have_catalog:
        return False
    broken = tuple(catalog.broken.get(workflow, ()))
    definition = catalog.entries.get(workflow)
    if definition is not None or broken:
        return (broken, definition)
    known = tuple(sorted(v for (wid, v) in catalog.entries if wid == workflow[0]))
    return (broken, None, known, tuple(catalog.unreadable))


def _with_origin(parsed: ParsedFile, origin: FileOrigin | None) -> ParsedFile:
    """``parsed`` as it would have been parsed with ``origin`` (the origin goes nowhere else)."""
    new = parsed.copy()
    new.origin = origin
    if parsed.resolved is not None:
        new.resolved = replace(parsed.resolved, origin=origin)
    return new


@dataclass(slots=True)  # one per execution file: no per-instance __dict__
class _Entry:
    sha: str
    origin: FileOrigin | None
    max_bytes: int
    parsed: ParsedFile
    view: Any
    catalog: int = 0  # the catalog generation the view was last checked against


@dataclass
class _Assembled:
    """The last declaration and what tells which files a change can affect."""

    listing: dict[str, str]  # path → blob id it was built from
    generation: int  # catalog generation
    max_bytes: int
    decl: Declaration
    names: dict[str, list[str]]  # name → files declaring it (valid or not)
    referenced: set[str]  # every name some file's after/onFailureOf refers to


def _order_key(e: ResolvedExecution) -> tuple[int, str]:
    return e.order_key


def _file_of(i: InvalidExecution) -> str:
    return i.file


class ParseCache(StatusFiles):
    """The per-blob results of one source; :attr:`parses` counts files actually parsed.

    ``store``: a persistent :class:`ParseStore` consulted before anything is read from Git
    and given every new result (one transaction per load)."""

    def __init__(self, store: ParseStore | None = None):
        super().__init__(store)
        self.store = store
        self._parses = 0  # execution and catalog files parsed
        self.fast_declarations = 0  # declarations derived from the previous one
        self.catalog_key: tuple[tuple[str, str], ...] | None = None
        self.catalog: Catalog | None = None
        self.catalog_generation = 0  # bumped whenever the catalog is parsed again
        self._catalog_digest = ""
        self._entries: dict[str, _Entry] = {}  # execution file → its result
        self._last: _Assembled | None = None

    @property
    def parses(self) -> int:
        """Execution, catalog and status files parsed (a miss in memory and in the store each)."""
        return self._parses + self.status_docs.parses

    # -- executions and the catalog --------------------------------------------------------

    def declaration(self, executions: Listing, workflows: Listing, read: Reader,
                    origins: Mapping[str, FileOrigin], max_bytes: int) -> Declaration:
        """The declaration of these execution and catalog files (path → blob id), reading
        through ``read`` only the blobs whose results are not kept.  When only a few files
        changed since the last call (and nothing they touch crosses files), it is derived
        from the last one; otherwise the full cross-file step runs — the same answer."""
        with gc_paused():
            catalog = self._catalog(workflows, read, max_bytes)
            have_catalog = bool(workflows)
            last = self._last
            changed = self._changed(last, executions, origins, max_bytes) if last is not None else None
            if last is not None and changed is not None:
                olds = {p: self._entries[p].parsed for p in changed if p in self._entries}
                self._refresh([p for p in changed if p in executions], executions, origins, catalog,
                              have_catalog, max_bytes, read)
                for path in changed:
                    if path not in executions:
                        self._entries.pop(path, None)
                decl = self._derive(last, changed, olds, executions, catalog)
                if decl is not None:
                    self.fast_declarations += 1
                    return decl
            else:
                self._refresh(list(executions), executions, origins, catalog, have_catalog, max_bytes, read)
                if len(self._entries) != len(executions):
                    self._entries = {p: e for p, e in self._entries.items() if p in executions}
            return self._assemble(executions, catalog, max_bytes)

    def _changed(self, last: _Assembled, executions: Listing, origins: Mapping[str, FileOrigin],
                 max_bytes: int) -> set[str] | None:
        """The files whose result may differ from the last declaration's; None when the
        catalog or the limit changed or too many files did (the full step then)."""
        if last.generation != self.catalog_generation or last.max_bytes != max_bytes:
            return None
        if executions == last.listing:
            changed: set[str] = set()
        else:
            changed = {path for path, _ in executions.items() ^ last.listing.items()}
            if len(changed) > FAST_LIMIT:
                return None
        get = origins.get
        for path, entry in self._entries.items():
            origin = get(path)
            if origin is not entry.origin and origin != entry.origin:
                changed.add(path)
                if len(changed) > FAST_LIMIT:
                    return None
        return changed

    def _refresh(self, paths: list[str], executions: Listing, origins: Mapping[str, FileOrigin],
                 catalog: Catalog, have_catalog: bool, max_bytes: int, read: Reader) -> None:
        """Bring the entries of ``paths`` up to date: kept, re-originated, from the store, or parsed."""
        generation = self.catalog_generation
        missing: list[str] = []
        for path in paths:
            sha, origin = executions[path], origins.get(path)
            entry = self._entries.get(path)
            if entry is not None and entry.sha == sha and entry.max_bytes == max_bytes and (
                    entry.catalog == generation
                    or entry.view == _catalog_view(catalog, have_catalog, entry.parsed.workflow)):
                entry.catalog = generation  # same catalog object: the view is the same
                if origin is not entry.origin and origin != entry.origin:
                    entry.parsed, entry.origin = _with_origin(entry.parsed, origin), origin
                continue
            missing.append(path)
        if not missing:
            return
        store = self.store if self.store is not None and not self.store.disabled else None
        extra = f"{max_bytes}\0{self._catalog_digest}"
        if store is not None:
            still: list[str] = []
            # asked in key order, so each chunk's rows sit together in the store's index (a
            # third of the reading time); the declaration is assembled in path order anyway
            keys = {path: store.key("execution", path, executions[path], extra) for path in missing}
            by_key = sorted(missing, key=keys.__getitem__)
            for start in range(0, len(by_key), READ_CHUNK):  # the decoded rows of one chunk at a time
                chunk = by_key[start:start + READ_CHUNK]
                found = store.get([keys[path] for path in chunk])
                for path in chunk:
                    value = found.pop(keys[path], None)
                    parsed = None
                    if value is not None:
                        try:
                            parsed = decode_execution(value, path, origins.get(path))
                        except Exception:  # a row that does not fit is a miss, never trusted
                            parsed = None
                    if parsed is None:
                        still.append(path)
                        continue
                    store.hits += 1
                    self._put(path, executions[path], origins.get(path), max_bytes, parsed, catalog, have_catalog)
                del found
            missed = set(still)
            missing = [path for path in missing if path in missed]  # parsed in the order asked
        new_rows: dict[bytes, Any] = {}
        for start in range(0, len(missing), READ_CHUNK):
            chunk = missing[start:start + READ_CHUNK]
            contents = read({path: executions[path] for path in chunk})
            for path in chunk:
                origin = origins.get(path)
                parsed = parse_execution_safely(path, contents[path], catalog, have_catalog, origin, max_bytes,
                                                 keep_data=store is not None)
                self._parses += 1
                if store is not None and not is_internal_result(parsed):
                    value = encode_execution(parsed)
                    if value is not None:
                        new_rows[store.key("execution", path, executions[path], extra)] = value
                parsed.data = None  # memory: the store has it now
                self._put(path, executions[path], origin, max_bytes, parsed, catalog, have_catalog)
            del contents
        if store is not None:
            store.put(new_rows)

    def _put(self, path: str, sha: str, origin: FileOrigin | None, max_bytes: int, parsed: ParsedFile,
             catalog: Catalog, have_catalog: bool) -> None:
        self._entries[path] = _Entry(sha, origin, max_bytes, parsed,
                                     _catalog_view(catalog, have_catalog, parsed.workflow), self.catalog_generation)

    def _assemble(self, executions: Listing, catalog: Catalog, max_bytes: int) -> Declaration:
        """The full cross-file step over every entry, and the indexes the next change needs."""
        entries = self._entries
        items = [entries[path].parsed.copy() for path in sorted(executions)]
        names: dict[str, list[str]] = {}
        referenced: set[str] = set()
        for item in items:
            if item.name is not None:
                names.setdefault(item.name, []).append(item.file)
            for target, _ in item.dependencies:
                referenced.add(target)
        decl = assemble(catalog, items)
        self._last = _Assembled(dict(executions), self.catalog_generation, max_bytes, decl, names, referenced)
        return decl

    def _derive(self, last: _Assembled, changed: set[str], olds: Mapping[str, ParsedFile], executions: Listing,
                catalog: Catalog) -> Declaration | None:
        """The last declaration with ``changed`` applied, when no other file's result can
        depend on them: none of them (before or after) takes part in a chain or shares a
        name.  Then each changed file is judged by its own problems alone, as the full step
        would judge it, and every other file keeps its verdict.  None: do the full step."""
        news = {p: self._entries[p].parsed for p in changed if p in executions}
        touched: dict[str, list[str]] = {}
        for item in (*olds.values(), *news.values()):
            if item.dependencies:
                return None
            if item.name is not None:
                if item.name in last.referenced:
                    return None
                touched[item.name] = []
        for name in touched:
            held = [f for f in last.names.get(name, []) if f not in changed]
            held += sorted(p for p, item in news.items() if item.name == name)
            if len(held) > 1 or len(last.names.get(name, [])) > 1:
                return None  # a duplicate appears or disappears: other files' verdicts change
            touched[name] = held
        prev = last.decl
        executions_out = list(prev.executions)
        invalid = list(prev.invalid)
        index = dict(prev.index())
        for path in sorted(changed):
            old = olds.get(path)
            if old is not None:
                if old.resolved is not None and not old.problems:
                    at = bisect.bisect_left(executions_out, old.resolved.order_key, key=_order_key)
                    if at >= len(executions_out) or executions_out[at] is not old.resolved:
                        return None  # not where it must be: never guess
                    del executions_out[at]
                    index.pop(old.resolved.name, None)
                else:
                    at = bisect.bisect_left(invalid, path, key=_file_of)
                    if at >= len(invalid) or invalid[at].file != path:
                        return None
                    del invalid[at]
            new = news.get(path)
            if new is None:
                continue
            if new.resolved is not None and not new.problems:
                bisect.insort(executions_out, new.resolved, key=_order_key)
                index[new.resolved.name] = new.resolved
            else:
                bisect.insort(invalid, InvalidExecution(path, new.name, capped(new.problems), new.origin),
                              key=_file_of)
        decl = Declaration(executions=executions_out, invalid=invalid, catalog=catalog.entries,
                           invalid_catalog=catalog.invalid, catalog_files=catalog.files)
        decl.problems = [p for bad in catalog.invalid for p in bad.problems]
        decl.problems.extend(itertools.chain.from_iterable(i.problems for i in invalid))
        decl._by_name = index
        for name, held in touched.items():
            if held:
                last.names[name] = held
            else:
                last.names.pop(name, None)
        self._last = _Assembled(dict(executions), last.generation, last.max_bytes, decl, last.names,
                                last.referenced)
        return decl

    def _catalog(self, workflows: Listing, read: Reader, max_bytes: int) -> Catalog:
        # duplicate workflow definitions are a cross-file rule of the catalog: it is kept
        # whole, by the blob ids of all its files (it is small and rarely changes)
        key = tuple(sorted(workflows.items()))
        if self.catalog is None or key != self.catalog_key:
            contents = read(dict(workflows)) if workflows else {}
            self.catalog = load_catalog(contents, max_bytes)
            self.catalog_key = key
            self.catalog_generation += 1
            self._catalog_digest = hashlib.sha256(repr(key).encode()).hexdigest()
            self._parses += len(workflows)
        return self.catalog
