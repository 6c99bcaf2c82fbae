"""Per-blob parse results kept on disk, so a fresh process does not parse again what an
earlier one already judged (the service after a restart, every CLI invocation).

A Git blob id names content exactly, so the result of checking one file on its own is a
function of (role, path, blob id, size limit, for an execution the catalog's blob ids)
and of *the code that judged it*.  The store keys every result by those plus a **code
digest**: the hash of the source of every module whose rules decide a result (and of the
versions of the libraries they use), so a changed rule never serves a stale answer — old
entries are simply never asked for again, and pruned.

It is a cache, never a source of truth, and it holds only plain data: SQLite (stdlib) rows
of JSON or of a reader's own plain text (:class:`StoredText`) — no pickle, a cache file
can never run code.  What is read back is checked before it is used (shape and types; a
status row's record fields and the checksum of its document's text — the document passed
the strict checker when this same code wrote the row; an execution's document through the
same pydantic model): a row that does not fit is a miss, never trusted.  Any store error —
a corrupt or truncated file, a locked database, a full disk, a read-only directory — is
logged once and the store is then left out: the answer is the same, only slower.  Several
processes may share one cache directory (SQLite locking, WAL); each load writes its new
results in one transaction.  Entries not used for ``keep_days`` are pruned, and the table is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

_log = logging.getLogger("reconciler.parsestore")

SCHEMA = 1
MAX_ROWS = 400_000  # about four repositories of 50 000 executions and their status files
KEEP_DAYS = 14
_BATCH = 500  # keys per SELECT (well below SQLite's variable limit)
PAGE_SIZE = 16384  # bytes per database page, for a new store


# the modules whose code decides a stored result (a new rule module must be listed here)
_RULE_MODULES = (
    "reconciler.declare.declared", "reconciler.declare.assemble", "reconciler.declare.catalog",
    "reconciler.declare.execution_file", "reconciler.errors", "reconciler.declare.model",
    "reconciler.declare.names", "reconciler.source.parsecache", "reconciler.source.parsecache_rows",
    "reconciler.source.parsecache_status", "reconciler.declare.schema_errors", "reconciler.declare.statusdoc",
    "reconciler.declare.yamldoc",
)


def _digest_of_code() -> str:
    """sha256 of the source of the modules whose rules decide a parse result: the checks
    of an execution file, the catalog and a status document (and what they use: the
    schema, names, YAML loading, problems), and the codecs of the rows written for them.
    What is built later from a result (an execution's state, from a checked status
    document, by :mod:`reconciler.record.status`) decides nothing stored, so it is not here."""
    import pydantic
    import pydantic_core
    import yaml

    h = hashlib.sha256(f"schema {SCHEMA}\0{sys.version}\0{pydantic.VERSION}\0{pydantic_core.__version__}\0"
                       f"{yaml.__version__}\0{getattr(yaml, '__with_libyaml__', False)}\0".encode())
    for name in (*_RULE_MODULES, __name__):
        # found, not imported: the store stays below the modules it keeps results of
        spec = importlib.util.find_spec(name)
        h.update(name.encode() + b"\0")
        if spec is not None and spec.origin:
            h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


_CODE: str | None = None


def code_digest() -> str:
    global _CODE
    if _CODE is None:
        _CODE = _digest_of_code()
    return _CODE


class ParseStore:
    """A SQLite file of (key → JSON) rows; every failure turns it off, never the caller's error."""

    def __init__(self, path: Path, *, code: str | None = None, max_rows: int = MAX_ROWS,
                 keep_days: int = KEEP_DAYS, timeout: float = 2.0):
        self.path = path
        self.code = code if code is not None else code_digest()
        self.max_rows = max_rows
        self.keep_days = keep_days
        self.timeout = timeout
        self.disabled = False
        self.hits = 0
        self.writes = 0  # rows written (new results)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._pruned = False
        self._touch: set[bytes] = set()  # keys read whose use was not recorded today

    # -- keys ------------------------------------------------------------------------------

    def key(self, kind: str, path: str, blob: str, extra: str = "") -> bytes:
        """The row key of one result: the code digest, the role, the file, its blob id and
        whatever else decided it (``extra``)."""
        text = f"{self.code}\0{kind}\0{path}\0{blob}\0{extra}"  # a path may hold escaped non-UTF-8 bytes
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    # -- failure handling ------------------------------------------------------------------

    def _failed(self, what: str, error: BaseException, *, disable: bool = True) -> None:
        if disable and _corrupt(error) and self._db is not None:
            # damaged under us (truncated, overwritten): the next process starts afresh
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if disable:
            self.disabled = True
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
        if not self._warned:
            self._warned = True
            _log.warning("parse store %s: %s (%s); carrying on without it", what, self.path, error)

    def _open(self) -> sqlite3.Connection | None:
        if self.disabled:
            return None
        if self._db is None:
            try:
                self._db = self._connect()
            except sqlite3.DatabaseError as e:
                if not _corrupt(e):
                    self._failed("cannot be opened", e, disable=not _busy(e))
                    return None
                # a damaged cache file: it holds nothing that cannot be parsed again
                self._failed("is damaged and is rebuilt", e, disable=False)
                try:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                    self._db = self._connect()
                except (sqlite3.Error, OSError) as again:
                    self._failed("cannot be rebuilt", again)
                    return None
            except OSError as e:
                self._failed("cannot be opened", e)
                return None
        return self._db

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
        try:
            # before anything is written (a store that exists keeps its size): a row is about
            # 1 KB, which in SQLite's default 4 KB pages spills into an overflow page of its
            # own — 285 MB for 100 000 rows instead of 100 MB, and twice the pages to read
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS parsed (key BLOB PRIMARY KEY, value TEXT NOT NULL, "
                       "used INTEGER NOT NULL, code TEXT NOT NULL DEFAULT '') WITHOUT ROWID")
            if "code" not in {row[1] for row in db.execute("PRAGMA table_info(parsed)")}:
                # a store written before rows named their code: they count as another version's
                db.execute("ALTER TABLE parsed ADD COLUMN code TEXT NOT NULL DEFAULT ''")
            db.execute("SELECT 1 FROM parsed LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    # -- reading and writing ---------------------------------------------------------------

    def get(self, keys: Iterable[bytes]) -> dict[bytes, Any]:
        """key → decoded JSON of the rows found (a row that is not JSON is left out)."""
        found: dict[bytes, Any] = {}
        for batch in self._batches(keys):
            for (key, _), value in zip(batch, _decode([text for _, text in batch]), strict=True):
                if value is not _BAD:  # not ours: a miss
                    found[key] = value
        return found

    def get_text(self, keys: Iterable[bytes]) -> Iterator[list[tuple[bytes, str]]]:
        """The rows found as (key, JSON text), a batch at a time (one query each), for a reader
        that decodes and checks them itself — and may keep the text, far smaller than what it
        decodes to.  Nothing of one batch is held once the next is asked for."""
        return self._batches(keys)

    def _batches(self, keys: Iterable[bytes]) -> Iterator[list[tuple[bytes, str]]]:
        # in key order: each query's keys then sit in a few neighbouring pages of the index,
        # instead of one page each all over the file (a third of the time for 100 000 rows)
        wanted = sorted(keys)
        today = _today()
        for i in range(0, len(wanted), _BATCH):
            chunk = wanted[i:i + _BATCH]
            with self._lock:
                db = self._open()
                if db is None:
                    return
                try:
                    rows = db.execute(f"SELECT key, value, used FROM parsed WHERE key IN "
                                      f"({','.join('?' * len(chunk))})", chunk).fetchall()
                except (sqlite3.Error, OSError) as e:
                    self._failed("cannot be read", e, disable=not _busy(e))
                    return
                batch = [(bytes(key), value) for key, value, _ in rows]
                self._touch.update(bytes(key) for key, _, used in rows if used != today)
            del rows
            yield batch

    def put(self, rows: Mapping[bytes, Any]) -> None:
        """Write these results (and the use of those read since the last put) in one
        transaction; prune old entries once per store."""
        touched = self._touch
        if not rows and not touched:
            return
        with self._lock:
            db = self._open()
            if db is None:
                return
            today = _today()
            try:
                # in key order: a first fill then appends to the index instead of splitting its
                # pages all over (a third of the time, and full pages)
                encoded = [(key, value if isinstance(value, StoredText) else json.dumps(value, separators=(",", ":")),
                            today, self.code) for key, value in sorted(rows.items())]
            except (TypeError, ValueError) as e:
                self._failed("cannot encode a result", e, disable=False)
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("INSERT OR REPLACE INTO parsed (key, value, used, code) VALUES (?, ?, ?, ?)",
                                   encoded)
                    if touched:
                        db.executemany("UPDATE parsed SET used = ? WHERE key = ?", [(today, k) for k in touched])
                    if not self._pruned:
                        self._prune(db, today)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as e:
                self._failed("cannot be written", e, disable=not _busy(e))
                return
            self._touch = set()
            self._pruned = True
            self.writes += len(encoded)

    def _prune(self, db: sqlite3.Connection, today: int) -> None:
        db.execute("DELETE FROM parsed WHERE used < ?", (today - self.keep_days,))
        count = db.execute("SELECT count(*) FROM parsed").fetchone()[0]
        if count > self.max_rows:  # other code versions' rows go first: they can never be read again
            db.execute("DELETE FROM parsed WHERE code != ?", (self.code,))
            count = db.execute("SELECT count(*) FROM parsed").fetchone()[0]
        if count > self.max_rows:  # the least recently used beyond the bound
            db.execute("DELETE FROM parsed WHERE key IN (SELECT key FROM parsed ORDER BY used LIMIT ?)",
                       (count - self.max_rows,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None


class StoredText(str):
    """A row its writer encoded itself (a compact text read back with
    :meth:`ParseStore.get_text` and checked by that reader): stored as it is, not as JSON.
    :meth:`ParseStore.get` counts such a row a miss."""


_BAD = object()


def _decode(values: list[Any]) -> list[Any]:
    """Each value decoded, in one ``json.loads`` of them all when they are all well-formed
    (a key repeated across rows is then one string object: a third less memory, and
    faster); row by row otherwise, a bad one giving ``_BAD``.  Whatever comes out is
    checked by its reader as any row is (shape, types, the strict checkers)."""
    if all(isinstance(v, str) and v[:1] == "{" and v[-1:] == "}" for v in values):  # as every row is written
        try:
            decoded = json.loads("[" + ",".join(values) + "]")
            if isinstance(decoded, list) and len(decoded) == len(values):
                return decoded
        except (ValueError, RecursionError):
            pass
    out: list[Any] = []
    for value in values:
        try:
            out.append(json.loads(value))
        except (ValueError, TypeError, RecursionError):
            out.append(_BAD)
    return out


def _corrupt(error: BaseException) -> bool:
    text = str(error).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _busy(error: BaseException) -> bool:
    """A lock held by another process: this time without the store, next time again with it."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _today() -> int:
    return int(time.time() // 86400)
