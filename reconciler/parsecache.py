"""Parsed and validated files kept by Git blob id, so a cycle parses only what changed.

``git ls-tree`` names every file's blob id; a blob id names its content exactly.  So the
result of checking one file on its own — an execution, the catalog, a status document —
can be kept under (path, blob id) and reused as long as that blob is on the branch: an
unchanged revision parses nothing, one edited file is parsed once, and the others are not
even read from Git.

What depends on *other* files is never cached with a file: duplicate names and chain
references are recomputed on every load from the cached per-file results
(:func:`declared.assemble`), and an execution's catalog checks are kept only together with
the catalog entry they were made against — when that entry changes (or disappears, or
becomes broken), the execution is checked again.  A cached invalid file therefore stays
invalid with exactly the same problems, and an error caused by another file still appears
when only that other file changed.

Entries not used by the last load are dropped, so memory follows the branch, not history.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .declared import (
    Catalog,
    Declaration,
    FileOrigin,
    _load_catalog,
    _parse_execution_safely,
    _Parsed,
    assemble,
    gc_paused,
)
from .statusdoc import StatusRecord, read_status_document, record_of

_log = logging.getLogger("reconciler.parsecache")

Listing = Mapping[str, str]  # path → blob id
Reader = Callable[[Mapping[str, str]], Mapping[str, bytes | int]]  # path → blob id  ⇒  path → content


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


class StatusDocs:
    """Status documents checked by the strict loader, kept by (path, blob id).

    Start-up reads the same status blobs three times — the bot's history (recovery), the
    write-back's check of the tip, the declaration's records — and each later cycle the
    ones that changed: with this, each blob is parsed once.  Least recently used entries
    beyond ``limit`` (at least twice the largest listing seen) are dropped."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.parses = 0
        self._docs: OrderedDict[tuple[str, str], tuple[dict[str, Any] | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()  # the write-back and the source read from several threads

    def read(self, raw: bytes | int, path: str, sha: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """:func:`read_status_document` of ``raw`` at ``path`` (``sha``: its blob id, when known)."""
        if sha is None:
            sha = _blob_id(raw) if isinstance(raw, bytes) else f"size:{raw}"
        key = (path, sha)
        with self._lock:
            found = self._docs.get(key)
            if found is not None:
                self._docs.move_to_end(key)
                return found
        found = read_status_document(raw, path)
        self.parses += 1
        with self._lock:
            self._docs[key] = found
            while len(self._docs) > self.limit:
                self._docs.popitem(last=False)
        return found

    def known(self, path: str, sha: str) -> bool:
        with self._lock:
            return (path, sha) in self._docs

    def fit(self, listing_size: int) -> None:
        """Keep room for at least two listings of this size."""
        self.limit = max(self.limit, 2 * listing_size)

    def record(self, raw: bytes | int, path: str, sha: str | None = None) -> tuple[StatusRecord | None, str]:
        """The record of one status file, or None and why it is ignored (never raises)."""
        try:
            data, why = self.read(raw, path, sha)
            if data is not None:
                return record_of(data, path), ""
        except Exception:  # a damaged status file is treated as absent, never the cycle's error
            _log.warning("unexpected error reading status file %s", path, exc_info=True)
            return None, "this file could not be read"
        return None, why or "not a status document"


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Entry:
    parsed: _Parsed
    view: Any
    catalog: int = 0  # the catalog generation the view was last checked against


@dataclass
class ParseCache:
    """The per-blob results of one source; :attr:`parses` counts files actually parsed."""

    executions: dict[tuple[str, str, FileOrigin | None, int], _Entry] = field(default_factory=dict)
    statuses: dict[tuple[str, str], tuple[StatusRecord | None, str]] = field(default_factory=dict)
    catalog_key: tuple[tuple[str, str], ...] | None = None
    catalog: Catalog | None = None
    catalog_generation: int = 0  # bumped whenever the catalog is parsed again
    parses: int = 0  # execution, catalog and status files parsed (a cache miss each)
    status_docs: StatusDocs = field(default_factory=StatusDocs)

    def declaration(self, executions: Listing, workflows: Listing, read: Reader,
                    origins: Mapping[str, FileOrigin], max_bytes: int) -> Declaration:
        """The declaration of these execution and catalog files (path → blob id), reading
        through ``read`` only the blobs whose results are not kept."""
        with gc_paused():
            catalog = self._catalog(workflows, read, max_bytes)
            have_catalog = bool(workflows)
            keys = {path: (path, sha, origins.get(path), max_bytes) for path, sha in executions.items()}
            kept: dict[tuple[str, str, FileOrigin | None, int], _Entry] = {}
            missing: dict[str, str] = {}
            for path, key in keys.items():
                entry = self.executions.get(key)
                if entry is not None and (entry.catalog == self.catalog_generation or entry.view == _catalog_view(
                        catalog, have_catalog, entry.parsed.workflow)):
                    entry.catalog = self.catalog_generation  # same catalog object: the view is the same
                    kept[key] = entry
                else:
                    missing[path] = executions[path]
            contents = read(missing) if missing else {}
            for path in missing:
                key = keys[path]
                parsed = _parse_execution_safely(path, contents[path], catalog, have_catalog, key[2], max_bytes)
                self.parses += 1
                kept[key] = _Entry(parsed, _catalog_view(catalog, have_catalog, parsed.workflow),
                                   self.catalog_generation)
            self.executions = kept
            return assemble(catalog, [kept[keys[path]].parsed.copy() for path in sorted(keys)])

    def _catalog(self, workflows: Listing, read: Reader, max_bytes: int) -> Catalog:
        # duplicate workflow definitions are a cross-file rule of the catalog: it is kept
        # whole, by the blob ids of all its files (it is small and rarely changes)
        key = tuple(sorted(workflows.items()))
        if self.catalog is None or key != self.catalog_key:
            contents = read(dict(workflows)) if workflows else {}
            self.catalog = _load_catalog(contents, max_bytes)
            self.catalog_key = key
            self.catalog_generation += 1
            self.parses += len(workflows)
        return self.catalog

    def status_records(self, files: Listing, read: Reader) -> tuple[dict[str, StatusRecord], dict[str, str]]:
        """(execution name → record, ignored file → why) of these status files."""
        with gc_paused():
            self.status_docs.fit(len(files))
            keys = {path: (path, sha) for path, sha in files.items()}
            missing = {path: sha for path, sha in files.items() if keys[path] not in self.statuses}
            contents = read(missing) if missing else {}
            kept = {keys[path]: self.statuses[keys[path]] for path in files if path not in missing}
            for path in missing:
                kept[keys[path]] = self.status_docs.record(contents[path], path, files[path])
                self.parses += 1
            self.statuses = kept
            records: dict[str, StatusRecord] = {}
            ignored: dict[str, str] = {}
            for path in sorted(files):
                record, why = kept[keys[path]]
                if record is not None:
                    records[record.name] = record
                else:
                    ignored[path] = why
            return records, ignored
