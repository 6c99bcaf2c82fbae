"""The Git adapter: fetch a repository into a cache and read declared files at a commit.

Everything the reconciler executes comes from here, so two properties matter more than
speed: files are read from the *object database at a resolved commit* (never from a work
tree, which may be dirty or on another branch), and only the tracked branch's commit is
ever handed to the executor.  Both local paths and URLs are fetched into a bare cache
repository, so the source repository is never modified and a half-pushed state is never
read.

Speed still matters at 10 000 files: listing uses one ``git ls-tree``, contents come
through one ``git cat-file --batch`` round, history through one ``git log`` pass, and a
second call at an unchanged commit returns the cached result without re-parsing.  A new
commit reads and parses only the blobs it changed (:mod:`reconciler.source.parsecache`, by blob id).

The cache is disposable, so it heals itself: when git's words say the *local* object
database or refs are damaged (a deleted pack, a truncated object, a ref to nothing) and a
local check (fsck, cat-file) agrees, the cache is moved aside, re-initialised and fetched
again — logged as a warning and counted in ``cache_rebuilds`` — and the operation is
retried, without a restart.  A network failure never looks like that, so an outage never
costs a re-clone.  Whatever git prints passes through :func:`redact_text` first: no
credential from a URL, a header or the environment reaches an error, a log or a status.

This module owns :class:`GitSource`: which repository, branch and sub-path, and what a
revision may be.  Its layers are the bare cache (:mod:`reconciler.source.gitcache`),
reading a commit (:mod:`reconciler.source.gitread`) and history and the load
(:mod:`reconciler.source.githistory`); what git's words mean — which say the cache is damaged,
which must not be shown — is :mod:`reconciler.source.gitwords`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from reconciler.declare.declared import Declaration, FileOrigin
from reconciler.declare.statusdoc import StatusRecord
from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES
from reconciler.errors import ConfigError, GitCommandFailed, UnknownRevision
from reconciler.source import gitcmd
from reconciler.source.gitbatch import BatchReader
from reconciler.source.gitcache import _SOURCE_HEAD
from reconciler.source.githistory import GitHistory, Snapshot
from reconciler.source.gitwords import (
    is_commit_id,
    is_scp_url,
    split_revision,
    suspect,
)
from reconciler.source.parsecache import ParseCache
from reconciler.source.parsestore import ParseStore


def check_sub_path(path: str) -> str:
    """The watched sub-path, normalised (``./team-a/`` → ``team-a``; empty = the root).

    Raises ConfigError for one that could leave the repository: absolute, or with ``..``
    (even ``a/../b``: a sub-path names a directory of the repository, nothing to compute).
    """
    shown = f"repository sub-path {path!r} (--path, repository.path)"
    if "\0" in path or "\\" in path:
        raise ConfigError(f"{shown}: must be a relative POSIX path (no NUL or backslash)")
    if path.startswith("/"):
        raise ConfigError(f"{shown}: is absolute; give the directory relative to the repository root, "
                          f"e.g. {path.strip('/') or '(empty for the root)'!r}")
    parts = [part for part in PurePosixPath(path).parts if part != "."]
    if ".." in parts:
        raise ConfigError(f"{shown}: contains '..' and could leave the repository; give the directory "
                          "relative to the repository root without '..'")
    return "/".join(parts)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubernaut-reconciler"


class GitSource(GitHistory):
    """A watched repository: URL or local path, tracked branch, sub-path, cache directory.

    Its layers: the bare cache (:class:`~reconciler.source.gitcache.GitCache`), reading a
    commit (:class:`~reconciler.source.gitread.GitReading`), history and the load
    (:class:`~reconciler.source.githistory.GitHistory`); this class adds the settings and
    the revisions."""

    def __init__(
        self,
        url: str,
        *,
        branch: str = "main",
        path: str = "",
        cache_dir: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_BYTES,
        env: dict[str, str] | None = None,
        logger: logging.Logger | None = None,
        parse_store: bool = True,
    ):
        self.url = url
        self.branch = branch
        self.path = check_sub_path(path)
        self.max_file_bytes = max_file_bytes
        self.log = logger or logging.getLogger("reconciler.git")
        self.env = dict(env or {})
        local = Path(url).expanduser()
        self.is_local = "://" not in url and not is_scp_url(url) and local.exists()
        self.fetch_url = str(local.resolve()) if self.is_local else url
        key = hashlib.sha256(self.fetch_url.encode()).hexdigest()[:16]
        self.cache_path = (cache_dir or default_cache_dir()) / f"{key}.git"
        self._repo: gitcmd.Repository | None = None
        self._declarations: OrderedDict[str, Declaration] = OrderedDict()
        self._statuses: dict[str, tuple[dict[str, StatusRecord], dict[str, str]]] = {}
        self._load_lock = threading.RLock()
        self._refs_fresh = False  # fetch_all() ran since this object was made
        self.parse_count = 0  # declared revisions assembled (status-only commits re-use one)
        # per-blob results (``parsed.parses`` counts files parsed), kept on disk beside the
        # cache too, so the next process (a restart, a CLI command) parses only what is new
        self.parsed = ParseCache(ParseStore(Path(f"{self.cache_path}.parses.sqlite")) if parse_store else None)
        self.cache_rebuilds = 0  # damaged caches this object rebuilt (a metric for the service)
        self.fetches_done = 0
        self._generation = ""  # the cache generation the open repository belongs to
        self._healing_now = threading.local()
        # refspecs fetched along with the tracked branch (the write-back's view of the same
        # branch: one round trip per cycle, not two), and how many such fetches succeeded
        self.also_fetch: list[str] = []
        self.fetches = 0
        # (fetches, the branch's commit) after the last fetch of it ("" until it is known): one
        # fetch set the tracked branch and every also_fetch ref of the same remote branch alike
        self.fetched: tuple[int, str] = (0, "")
        self._declared_of: dict[str, str] = {}  # commit → its declared revision (immutable)
        self._declared_found: set[str] = set()  # revisions git named (not a commit standing for itself)
        self._listings: dict[frozenset[str], tuple[str, dict[str, tuple[str, int]]]] = {}  # last, per roles
        self._by_role: dict[frozenset[str], tuple[str, dict[str, dict[str, str]]]] = {}  # see _listing_by_role
        self._roles: dict[str, str | None] = {}  # path → classify(path, self.path)
        self._origins_at: tuple[str, dict[str, FileOrigin], int] | None = None  # commit, origins, commits
        self._batch: BatchReader | None = None  # long-lived cat-file for small reads (a fast path only)
        self._loaded: str = ""  # the commit load() read last: the next one is read as a step from it
        self.stepped = 0  # loads whose revision and origins were carried from the last one (one log)

    # -- revisions ---------------------------------------------------------------------

    def fetch(self) -> str:
        """Fetch the tracked branch and return the commit it points at."""
        return self._healing(self._fetch_branch)

    def _fetch_branch(self) -> str:
        self._fetch(f"+refs/heads/{self.branch}:refs/heads/{self.branch}", *self.also_fetch)
        self.fetches += 1
        self.fetched = (self.fetches, "")
        try:
            tip = str(self._git().rev_parse("--verify", "--quiet", f"refs/heads/{self.branch}^{{commit}}"))
            self.fetched = (self.fetches, tip)
            return tip
        except GitCommandFailed as e:
            if suspect(str(e.stderr or "")):
                raise self._error(f"cannot read branch {self.branch!r} in the cache", e) from e
            raise UnknownRevision(
                f"branch {self.branch!r} not found in {self.display_url}"
            ) from e

    def resolve(self, rev: str) -> str:
        """A commit id for a branch, tag, remote-tracking ref, HEAD or sha (with ~N/^N)."""
        if rev.startswith("-") or not rev or any(c in rev for c in " \t\n:"):
            raise UnknownRevision(f"{rev!r} is not a revision")
        return self._healing(lambda: self._resolve(rev))

    def _resolve(self, rev: str) -> str:
        base, suffix = split_revision(rev)
        candidates = [rev]
        if base == "HEAD":
            head = _SOURCE_HEAD if self.is_local else f"refs/heads/{self.branch}"
            candidates = [f"{head}{suffix}"]
        if not is_commit_id(rev) and not self._refs_fresh:
            # names move: never resolve a branch, tag or HEAD from a stale cache
            self.fetch_all()
            self._refs_fresh = True
        for attempt in range(2):
            for candidate in candidates:
                try:
                    return str(self._git().rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}"))
                except GitCommandFailed as e:
                    if suspect(str(e.stderr or "")):
                        raise self._error(f"cannot resolve {rev!r} in the cache", e) from e
                    continue
            if attempt == 0:
                self.fetch_all()
        raise UnknownRevision(f"revision {rev!r} not found in {self.display_url}")

    # -- reading -----------------------------------------------------------------------

    def snapshot(self, commit: str, roles: frozenset[str] | None = None) -> Snapshot:
        """The declared files under the watched path at ``commit``, with their history.
        ``roles`` limits it to some of execution/workflow/status."""
        if not is_commit_id(commit):
            raise UnknownRevision(f"{commit!r} is not a commit id")
        return self._healing(lambda: self._snapshot(commit, roles))
