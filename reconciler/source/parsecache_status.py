"""Status documents and status files kept by Git blob id (see :mod:`reconciler.parsecache`).

:class:`StatusDocs` checks a status document once per blob (and, with a
:class:`~reconciler.source.parsestore.ParseStore`, once for every process sharing the cache), and
owns the store's status rows: how they are written and how each is checked again when it
is read back.  :class:`StatusFiles` turns a listing of status files into the records and
ignored files of a declaration, deriving them from the last result after a few changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reconciler.declare.declared import gc_paused
from reconciler.declare.statusdoc import (
    PHASES,
    StatusRecord,
    check_status_document,
    file_stem,
    read_status_document,
    record_of,
    valid_execution_name,
)
from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES
from reconciler.source.parsestore import ParseStore, StoredText

_log = logging.getLogger("reconciler.parsecache")

Listing = Mapping[str, str]  # path → blob id
Reader = Callable[[Mapping[str, str]], Mapping[str, bytes | int]]  # path → blob id  ⇒  path → content
Checked = tuple[dict[str, Any] | None, str | None]  # (valid status document, None) or (None, why)
Kept = tuple[StatusRecord | None, str | None]  # (record of a valid document, None) or (None, why)

FAST_LIMIT = 64  # more changed files than this: the full cross-file step (it is O(N) anyway)
READ_CHUNK = 2000  # blobs read (and held) at once


def _is_blob_id(sha: str) -> bool:
    return len(sha) == 40 and not sha.strip("0123456789abcdef")  # only hex digits: nothing left


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
        self._new: dict[bytes, StatusRecord | dict[str, Any]] = {}  # parsed since the last flush, for the store
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
        record = record_of(data, path) if data is not None else None
        kept = (record, None) if record is not None else (None, why)
        stored = self._key(path, sha)
        with self._lock:
            self._remember(key, kept)
            if stored is not None:
                # the record, not its row: the row is made at the flush (a 1 KB string per
                # document held until then, next to the document, left ~10 MB in the heap at
                # 10 000 status files)
                self._new[stored] = record if record is not None else {"w": why}
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
            new, self._new = self._new, {}
        if new and self.store is not None:
            self.store.put({key: status_row(v) if isinstance(v, StatusRecord) else v for key, v in new.items()})

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


_ROW = "S1"  # a valid document's row: S1, name, phase, reason, spec hash, run name, checksum, JSON text
_ROW_START = _ROW + "\0"
_DOC_PREFIX = '{"d":'  # a valid document's row when a field holds a NUL: json.dumps({"d": doc}, compact)


def status_row(record: StatusRecord) -> Any:
    """What the store keeps of a valid status document: its record's fields and its compact
    JSON text, joined by NULs (no field here holds one), so reading it back decodes nothing
    — the fields are checked again and the text against its checksum; ``{"d": document}``
    when that cannot be (a field with a NUL, a document JSON cannot hold exactly)."""
    fields = (record.name, record.phase, record.reason, record.spec_hash, record.run_name)
    text = record.document
    if isinstance(text, str) and text and not any("\0" in f for f in fields):
        return StoredText("\0".join((_ROW, *fields, _checksum(text), text)))
    return {"d": record.raw}


def _checksum(text: str) -> str:
    """Against a damaged row (the store is a cache of this code's own results, not a trust boundary)."""
    return format(zlib.crc32(text.encode()), "08x")


def _record_row(value: str, path: str) -> StatusRecord | None:
    """The record a :func:`status_row` text gives, or None when it does not fit."""
    parts = value.split("\0", 7)
    if len(parts) != 8:
        return None
    _, name, phase, reason, spec_hash, run_name, checksum, text = parts
    if phase not in PHASES or not valid_execution_name(name) or file_stem(path) != f"{name}.yaml" \
            or checksum != _checksum(text):
        return None
    return StatusRecord(name=name, file=path, phase=sys.intern(phase), reason=sys.intern(reason),
                        spec_hash=spec_hash, run_name=run_name, document=text)


def _decode_statuses(batch: list[tuple[bytes, str]], ask: Mapping[bytes, tuple[str, str]]) -> Iterator[
        tuple[bytes, tuple[Kept | None, dict[str, Any] | None]]]:
    """Each stored status row of ``batch`` as (key, (what is kept or None for a miss, the
    document when it was decoded)).  A :func:`status_row` text is split, not decoded; a
    ``{"d": document}`` row is decoded from the document's own text (the row without its
    wrapper), so that exact text — checked, as a parsed document is — is what the record
    keeps; every other row is decoded whole.  A row that does not fit is a miss."""
    for key, value in batch:
        if isinstance(value, str) and value.startswith(_ROW_START):
            record = _record_row(value, ask[key][0])
            yield key, ((record, None) if record is not None else None, None)
            continue
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


class StatusFiles:
    """The status files of a source, by (path, blob id): the records and ignored files of a
    listing, derived from the last result after a few changes.  The base of
    :class:`~reconciler.source.parsecache.ParseCache`, which is also where they are read."""

    def __init__(self, store: ParseStore | None = None):
        self.status_docs = StatusDocs(store=store)
        self.statuses: dict[str, tuple[str, tuple[StatusRecord | None, str]]] = {}  # path → (blob, result)
        self._status_last: _StatusResult | None = None

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
