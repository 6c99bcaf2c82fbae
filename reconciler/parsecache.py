"""Parsed and validated files kept by Git blob id, so a cycle parses only what changed.

``git ls-tree`` names every file's blob id; a blob id names its content exactly.  So the
result of checking one file on its own — an execution, the catalog, a status document —
can be kept under (path, blob id) and reused as long as that blob is on the branch: an
unchanged revision parses nothing, one edited file is parsed once, and the others are not
even read from Git.  With a :class:`~reconciler.parsestore.ParseStore` the same results
outlive the process: a restart, or a CLI command, parses only what no process has seen.

What depends on *other* files is never cached with a file: duplicate names and chain
references come from the cross-file step (:func:`declared.assemble`) over the cached
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
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .declared import (
    Catalog,
    Declaration,
    FileOrigin,
    InvalidExecution,
    ResolvedExecution,
    _load_catalog,
    _parse_execution_safely,
    _Parsed,
    _resolve,
    assemble,
    capped,
    gc_paused,
)
from .errors import Problem
from .model import WorkflowExecution, share_fields_sets
from .parsestore import ParseStore
from .statusdoc import StatusRecord, check_status_document, read_status_document, record_of
from .yamldoc import DEFAULT_MAX_BYTES

_log = logging.getLogger("reconciler.parsecache")

Listing = Mapping[str, str]  # path → blob id
Reader = Callable[[Mapping[str, str]], Mapping[str, bytes | int]]  # path → blob id  ⇒  path → content
Checked = tuple[dict[str, Any] | None, str | None]  # (valid status document, None) or (None, why)


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


def _is_blob_id(sha: str) -> bool:
    return len(sha) == 40 and not sha.strip("0123456789abcdef")  # only hex digits: nothing left


Kept = tuple[StatusRecord | None, str | None]  # (record of a valid document, None) or (None, why)


class StatusDocs:
    """Status documents checked by the strict loader, kept by (path, blob id).

    Start-up reads the same status blobs three times — the bot's history (recovery), the
    write-back's check of the tip, the declaration's records — and each later cycle the
    ones that changed: with this, each blob is parsed once (and, with a ``store``, once
    for every process sharing the cache).  What is kept of a valid document is its
    :class:`StatusRecord` (which holds the document as compact JSON text): the records
    and verdicts come from memory as they are, a document is decoded again only for a
    reader that asks for it (:meth:`read`, :meth:`preload`).  Least recently used entries
    beyond ``limit`` (at least twice the largest listing seen) are dropped."""

    def __init__(self, limit: int = 4096, store: ParseStore | None = None):
        self.limit = limit
        self.store = store
        self.parses = 0
        self._docs: OrderedDict[tuple[str, str], Kept] = OrderedDict()
        self._new: dict[bytes, Any] = {}  # results parsed since the last flush, for the store
        self._lock = threading.Lock()  # the write-back and the source read from several threads

    def _key(self, path: str, sha: str) -> bytes | None:
        store = self.store
        if store is None or store.disabled or not _is_blob_id(sha):
            return None
        return store.key("status", path, sha, str(DEFAULT_MAX_BYTES))

    def read(self, raw: bytes | int, path: str, sha: str | None = None) -> Checked:
        """:func:`read_status_document` of ``raw`` at ``path`` (``sha``: its blob id, when known)."""
        found, data = self._read(raw, path, sha)
        if found[0] is None:
            return None, found[1]
        return (data if data is not None else found[0].raw), None

    def _read(self, raw: bytes | int, path: str, sha: str | None) -> tuple[Kept, dict[str, Any] | None]:
        """(what is kept, the document when it was just parsed)."""
        if sha is None:
            sha = _blob_id(raw) if isinstance(raw, bytes) else f"size:{raw}"
        key = (path, sha)
        with self._lock:
            kept = self._docs.get(key)
            if kept is not None:
                self._docs.move_to_end(key)
                return kept, None
        data, why = read_status_document(raw, path)
        self.parses += 1
        kept = (record_of(data, path), None) if data is not None else (None, why)
        stored = self._key(path, sha)
        with self._lock:
            self._remember(key, kept)
            if stored is not None:
                self._new[stored] = {"d": data} if data is not None else {"w": why}
        return kept, data

    def _remember(self, key: tuple[str, str], kept: Kept) -> None:
        self._docs[key] = kept
        self._docs.move_to_end(key)
        while len(self._docs) > self.limit:
            self._docs.popitem(last=False)

    def preload(self, wanted: Mapping[str, str]) -> dict[str, Checked]:
        """path → result for those of ``wanted`` (path → blob id) known in memory or in the
        store — what need not be read from Git at all."""
        out: dict[str, Checked] = {}
        for path, (kept, data) in self._preload(wanted).items():
            record, why = kept
            out[path] = (None, why) if record is None else (data if data is not None else record.raw, None)
        return out

    def verdicts(self, wanted: Mapping[str, str]) -> dict[str, str | None]:
        """path → None (a valid status document) or why it is not, for those of ``wanted``
        known in memory or in the store; no document is decoded for it."""
        return {path: kept[1] for path, (kept, _) in self._preload(wanted).items()}

    def preload_records(self, wanted: Mapping[str, str]) -> dict[str, Kept]:
        """path → (record, None) or (None, why), for those of ``wanted`` known in memory or
        in the store."""
        return {path: kept for path, (kept, _) in self._preload(wanted, keep_data=False).items()}

    def _preload(self, wanted: Mapping[str, str], keep_data: bool = True) -> dict[
            str, tuple[Kept, dict[str, Any] | None]]:
        out: dict[str, tuple[Kept, dict[str, Any] | None]] = {}
        ask: dict[bytes, tuple[str, str]] = {}
        with self._lock:
            for path, sha in wanted.items():
                kept = self._docs.get((path, sha))
                if kept is not None:
                    out[path] = (kept, None)
                    continue
                key = self._key(path, sha)
                if key is not None:
                    ask[key] = (path, sha)
        if not ask or self.store is None:
            return out
        for batch in self.store.get_text(ask):
            for key, (kept, data) in _decode_statuses(batch, ask):
                if kept is None:
                    continue  # a row that does not fit is a miss
                path, sha = ask[key]
                self.store.hits += 1
                with self._lock:
                    self._remember((path, sha), kept)
                out[path] = (kept, data if keep_data else None)
        return out

    def flush(self) -> None:
        """Write what was parsed since the last flush to the store (one transaction)."""
        with self._lock:
            rows, self._new = self._new, {}
        if rows and self.store is not None:
            self.store.put(rows)

    def known(self, path: str, sha: str) -> bool:
        with self._lock:
            return (path, sha) in self._docs

    def fit(self, listing_size: int) -> None:
        """Keep room for at least two listings of this size."""
        self.limit = max(self.limit, 2 * listing_size)

    def record(self, raw: bytes | int, path: str, sha: str | None = None) -> tuple[StatusRecord | None, str]:
        """The record of one status file, or None and why it is ignored (never raises)."""
        try:
            return self.record_of(self._read(raw, path, sha)[0])
        except Exception:  # a damaged status file is treated as absent, never the cycle's error
            _log.warning("unexpected error reading status file %s", path, exc_info=True)
            return None, "this file could not be read"

    @staticmethod
    def record_of(kept: Kept) -> tuple[StatusRecord | None, str]:
        record, why = kept
        if record is not None:
            return record, ""
        return None, why or "not a status document"


_DOC_PREFIX = '{"d":'  # how a valid document's row is written: json.dumps({"d": doc}, separators=(",", ":"))


def _decode_statuses(batch: list[tuple[bytes, str]], ask: Mapping[bytes, tuple[str, str]]) -> Iterator[
        tuple[bytes, tuple[Kept | None, dict[str, Any] | None]]]:
    """Each stored status row of ``batch`` as (key, (what is kept or None for a miss, the
    document)).  A valid document's row is decoded from the document's own text (the row
    without its wrapper), so that exact text — checked, as a parsed document is — is what
    the record keeps; every other row is decoded whole.  A row that does not fit is a miss."""
    for key, value in batch:
        if not (isinstance(value, str) and value.startswith(_DOC_PREFIX) and value.endswith("}")):
            yield key, (_decode_verdict(value), None)
            continue
        text = value[len(_DOC_PREFIX):-1]
        try:  # the text on its own, so what it decodes to is exactly what the record keeps
            data = json.loads(text)
        except (ValueError, RecursionError):
            yield key, (None, None)
            continue
        path = ask[key][0]
        if check_status_document(data, path) is not None:
            yield key, (None, None)
            continue
        yield key, ((record_of(data, path, text), None), data)


def _decode_verdict(value: Any) -> Kept | None:
    """A stored "not a status document" row: (None, why); None when it does not fit."""
    try:
        found = json.loads(value)
        why = found["w"]
        return (None, why) if isinstance(why, str) else None
    except (TypeError, KeyError, ValueError, RecursionError):
        return None


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# -- what the persistent store keeps of one execution file -----------------------------------

def _problem_out(p: Problem) -> list[Any]:
    return [p.file, p.line, p.column, p.path, p.rule, p.message]


def _problem_in(v: Any) -> Problem:
    file, line, column, path, rule, message = v
    if not (isinstance(file, str) and isinstance(path, str) and isinstance(rule, str)
            and isinstance(message, str) and (line is None or type(line) is int)
            and (column is None or type(column) is int)):
        raise TypeError("not a problem")
    return Problem(file, line, column, path, rule, message)


def _encode_execution(parsed: _Parsed) -> dict[str, Any] | None:
    """Plain data that rebuilds ``parsed`` exactly (its origin aside); None when it cannot."""
    resolved = parsed.resolved
    out: dict[str, Any] = {
        "n": parsed.name, "np": list(parsed.name_position), "p": [_problem_out(p) for p in parsed.problems],
        "d": [[target, _problem_out(p)] for target, p in parsed.dependencies],
        "w": list(parsed.workflow) if parsed.workflow is not None else None, "r": None,
    }
    if resolved is not None:
        if parsed.data is None:
            return None
        out["r"] = {"doc": parsed.data, "img": resolved.image, "eng": resolved.engine,
                    "pipe": resolved.pipeline_name, "params": [list(kv) for kv in resolved.parameters],
                    "hash": resolved.spec_hash}
    return out


def _decode_execution(value: Any, file: str, origin: FileOrigin | None) -> _Parsed:
    """The ``_Parsed`` a stored value describes; raises (a miss) on anything that does not fit."""
    name = value["n"]
    line, column = value["np"]
    if not (name is None or isinstance(name, str)) or not all(x is None or type(x) is int for x in (line, column)):
        raise TypeError("bad name")
    problems = [_problem_in(p) for p in value["p"]]
    dependencies = []
    for target, p in value["d"]:
        if not isinstance(target, str):
            raise TypeError("bad dependency")
        dependencies.append((target, _problem_in(p)))
    workflow = value["w"]
    if workflow is not None:
        wid, version = workflow
        if not (isinstance(wid, str) and isinstance(version, str)):
            raise TypeError("bad workflow")
        workflow = (sys.intern(wid), sys.intern(version))  # a few values, 50 000 executions
    item = _Parsed(file, (line, column), name, problems, None, origin, dependencies, workflow)
    r = value["r"]
    if r is not None:
        image, engine, pipeline, known_hash = r["img"], r["eng"], r["pipe"], r["hash"]
        params = [(_intern(k), _intern(v)) for k, v in r["params"]]
        if type(image) is not str or type(engine) is not str or type(pipeline) is not str \
                or type(known_hash) is not str or problems or len(known_hash) != 64 \
                or not all(type(k) is str and type(v) is str for k, v in params):
            raise TypeError("bad resolution")
        found = (sys.intern(image), sys.intern(engine), sys.intern(pipeline))  # a few values, shared
        execution = share_fields_sets(WorkflowExecution.model_validate(_shared_strings(r["doc"])))  # judged again
        if execution.metadata.name != name or workflow != (execution.spec.workflow_ref.workflow_id,
                                                           execution.spec.workflow_ref.version):
            raise ValueError("resolution does not match its document")
        item.name = execution.metadata.name  # equal: one string for both
        item.resolved = _resolve(execution, file, params, found, origin, known_hash)
    return item


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def _shared_strings(doc: Any) -> Any:
    """``doc`` (a stored execution document, not yet validated) with the strings that repeat
    across executions interned — apiVersion, kind, the parameters' names and values, which
    the resolution's parameters then share: ~0.6 KB less per execution.  Anything of another
    shape is left as it is, for the model to judge."""
    if type(doc) is dict:
        for key in ("apiVersion", "kind"):
            if type(doc.get(key)) is str:
                doc[key] = sys.intern(doc[key])
        spec = doc.get("spec")
        if type(spec) is dict and type(spec.get("parameters")) is dict:
            spec["parameters"] = {_intern(k): _intern(v) for k, v in spec["parameters"].items()}
    return doc


def _with_origin(parsed: _Parsed, origin: FileOrigin | None) -> _Parsed:
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
    parsed: _Parsed
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


FAST_LIMIT = 64  # more changed files than this: the full cross-file step (it is O(N) anyway)
READ_CHUNK = 2000  # blobs read (and held) at once


def _order_key(e: ResolvedExecution) -> tuple[int, str]:
    return e.order_key


def _file_of(i: InvalidExecution) -> str:
    return i.file


class ParseCache:
    """The per-blob results of one source; :attr:`parses` counts files actually parsed.

    ``store``: a persistent :class:`ParseStore` consulted before anything is read from Git
    and given every new result (one transaction per load)."""

    def __init__(self, store: ParseStore | None = None):
        self.store = store
        self.status_docs = StatusDocs(store=store)
        self._parses = 0  # execution and catalog files parsed
        self.fast_declarations = 0  # declarations derived from the previous one
        self.catalog_key: tuple[tuple[str, str], ...] | None = None
        self.catalog: Catalog | None = None
        self.catalog_generation = 0  # bumped whenever the catalog is parsed again
        self._catalog_digest = ""
        self._entries: dict[str, _Entry] = {}  # execution file → its result
        self._last: _Assembled | None = None
        self.statuses: dict[str, tuple[str, tuple[StatusRecord | None, str]]] = {}  # path → (blob, result)
        self._status_last: _StatusResult | None = None

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
            for start in range(0, len(missing), READ_CHUNK):  # the decoded rows of one chunk at a time
                chunk = missing[start:start + READ_CHUNK]
                keys = {path: store.key("execution", path, executions[path], extra) for path in chunk}
                found = store.get(keys.values())
                for path in chunk:
                    value = found.pop(keys[path], None)
                    parsed = None
                    if value is not None:
                        try:
                            parsed = _decode_execution(value, path, origins.get(path))
                        except Exception:  # a row that does not fit is a miss, never trusted
                            parsed = None
                    if parsed is None:
                        still.append(path)
                        continue
                    store.hits += 1
                    self._put(path, executions[path], origins.get(path), max_bytes, parsed, catalog, have_catalog)
                del found
            missing = still
        new_rows: dict[bytes, Any] = {}
        for start in range(0, len(missing), READ_CHUNK):
            chunk = missing[start:start + READ_CHUNK]
            contents = read({path: executions[path] for path in chunk})
            for path in chunk:
                origin = origins.get(path)
                parsed = _parse_execution_safely(path, contents[path], catalog, have_catalog, origin, max_bytes,
                                                 keep_data=store is not None)
                self._parses += 1
                if store is not None and not _internal(parsed):
                    value = _encode_execution(parsed)
                    if value is not None:
                        new_rows[store.key("execution", path, executions[path], extra)] = value
                parsed.data = None  # memory: the store has it now
                self._put(path, executions[path], origin, max_bytes, parsed, catalog, have_catalog)
            del contents
        if store is not None:
            store.put(new_rows)

    def _put(self, path: str, sha: str, origin: FileOrigin | None, max_bytes: int, parsed: _Parsed,
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

    def _derive(self, last: _Assembled, changed: set[str], olds: Mapping[str, _Parsed], executions: Listing,
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
            self.catalog = _load_catalog(contents, max_bytes)
            self.catalog_key = key
            self.catalog_generation += 1
            self._catalog_digest = hashlib.sha256(repr(key).encode()).hexdigest()
            self._parses += len(workflows)
        return self.catalog

    # -- status files ----------------------------------------------------------------------

    def status_records(self, files: Listing, read: Reader) -> tuple[dict[str, StatusRecord], dict[str, str]]:
        """(execution name → record, ignored file → why) of these status files; after a few
        changes, the last result with those applied."""
        with gc_paused():
            self.status_docs.fit(len(files))
            last = self._status_last
            if last is not None and files == last[0]:
                return last[1], last[2]
            if last is not None:
                changed = {path for path, _ in files.items() ^ last[0].items()}
                if len(changed) <= FAST_LIMIT:
                    derived = self._status_derive(last, changed, files, read)
                    if derived is not None:
                        return derived
            self._status_update(list(files), files, read)
            if len(self.statuses) != len(files):
                self.statuses = {p: v for p, v in self.statuses.items() if p in files}
            records: dict[str, StatusRecord] = {}
            ignored: dict[str, str] = {}
            statuses = self.statuses
            tail = ""
            for path in sorted(files):
                record, why = statuses[path][1]
                if record is not None:
                    records[record.name] = record
                    tail = path
                else:
                    ignored[path] = why
            self._status_last = (dict(files), records, ignored, tail)
            return records, ignored

    def _status_update(self, paths: list[str], files: Listing, read: Reader) -> None:
        statuses = self.statuses
        missing = [p for p in paths if (statuses.get(p) or ("",))[0] != files[p]]
        if not missing:
            return
        docs = self.status_docs
        known = docs.preload_records({p: files[p] for p in missing})
        for path, found in known.items():
            statuses[path] = (files[path], docs.record_of(found))
        unread = [p for p in missing if p not in known]
        for start in range(0, len(unread), READ_CHUNK):
            chunk = unread[start:start + READ_CHUNK]
            contents = read({p: files[p] for p in chunk})
            for path in chunk:
                statuses[path] = (files[path], docs.record(contents[path], path, files[path]))
            del contents
        docs.flush()

    def _status_derive(self, last: _StatusResult, changed: set[str], files: Listing,
                       read: Reader) -> tuple[dict[str, StatusRecord], dict[str, str]] | None:
        """The last records with ``changed`` applied, in the order a full pass gives (by
        path); None when that order or a name collision is in doubt (the full pass then)."""
        _listing, records0, ignored0, tail = last
        previous = {p: self.statuses[p][1] for p in changed if p in self.statuses}
        self._status_update([p for p in changed if p in files], files, read)
        for path in changed:
            if path not in files:
                self.statuses.pop(path, None)
        records = dict(records0)
        ignored = dict(ignored0)
        replaced: set[str] = set()
        for path, (record, _) in previous.items():
            now = self.statuses[path][1][0] if path in files else None
            if record is not None:
                if records.get(record.name) is not record:
                    return None
                if now is not None and now.name == record.name:
                    records[record.name] = now  # same file, same name: the same place
                    replaced.add(path)
                    continue
                del records[record.name]
            else:
                ignored.pop(path, None)
        for path in sorted(p for p in changed if p in files and p not in replaced):
            record, why = self.statuses[path][1]
            if record is None:
                ignored[path] = why
                continue
            if record.name in records or path <= tail:
                return None  # two files of one name, or a place before the end: the full pass
            records[record.name] = record
            tail = path
        order = list(ignored)  # few, as a rule: kept in path order as a full pass gives it
        if order != sorted(order):
            ignored = {p: ignored[p] for p in sorted(order)}
        self._status_last = (dict(files), records, ignored, tail)
        return records, ignored


_StatusResult = tuple[dict[str, str], dict[str, StatusRecord], dict[str, str], str]  # listing, records,
# ignored, the last path holding a record


def _internal(parsed: _Parsed) -> bool:
    """An unexpected failure (``internal-error``) is this run's, not the file's: never stored."""
    return any(p.rule == "internal-error" for p in parsed.problems)
