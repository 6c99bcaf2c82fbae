"""The Git adapter: fetch a repository into a cache and read declared files at a commit.

Everything the reconciler executes comes from here, so two properties matter more than
speed: files are read from the *object database at a resolved commit* (never from a work
tree, which may be dirty or on another branch), and only the tracked branch's commit is
ever handed to the executor.  Both local paths and URLs are fetched into a bare cache
repository, so the source repository is never modified and a half-pushed state is never
read.

Speed still matters at 10 000 files: listing uses one ``git ls-tree``, contents come
through one ``git cat-file --batch`` round, history through one ``git log`` pass, and a
second call at an unchanged commit returns the cached result without re-parsing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git

from .declared import Declaration, FileOrigin, classify, load_declaration
from .errors import GitError, UnknownRevision
from .statusdoc import StatusRecord
from .yamldoc import DEFAULT_MAX_BYTES

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SOURCE_HEAD = "refs/kgr/source-HEAD"
_REV_SUFFIX = re.compile(r"^(.*?)((?:[~^][0-9]*)*)$")


def redact_url(url: str) -> str:
    """The URL without any user, password or token (safe for logs, errors, status)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    return url


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubernaut-reconciler"


@dataclass(frozen=True)
class Snapshot:
    """The declared files under the watched path at one commit."""

    commit: str
    files: dict[str, bytes | int]  # content, or the size of a file too large to read
    origins: dict[str, FileOrigin] = field(default_factory=dict)


class GitSource:
    """A watched repository: URL or local path, tracked branch, sub-path, cache directory."""

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
    ):
        self.url = url
        self.branch = branch
        self.path = path.strip("/")
        self.max_file_bytes = max_file_bytes
        self.log = logger or logging.getLogger("reconciler.git")
        self.env = dict(env or {})
        local = Path(url).expanduser()
        self.is_local = "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and local.exists()
        self.fetch_url = str(local.resolve()) if self.is_local else url
        key = hashlib.sha256(self.fetch_url.encode()).hexdigest()[:16]
        self.cache_path = (cache_dir or default_cache_dir()) / f"{key}.git"
        self._repo: git.Repo | None = None
        self._declarations: OrderedDict[str, Declaration] = OrderedDict()
        self._statuses: dict[str, dict[str, StatusRecord]] = {}
        self._load_lock = threading.RLock()
        self._refs_fresh = False  # fetch_all() ran since this object was made
        self.parse_count = 0  # how many times files were actually parsed (observable caching)

    # -- low level ---------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def _git(self) -> git.Git:
        return self._open().git

    def _open(self) -> git.Repo:
        if self._repo is None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if (self.cache_path / "HEAD").exists():
                    self._repo = git.Repo(self.cache_path)
                else:
                    self._repo = git.Repo.init(self.cache_path, bare=True)
            except (git.GitError, OSError) as e:
                raise GitError(f"cannot open cache repository {self.cache_path}: {e}") from e
            self._repo.git.update_environment(**{"GIT_TERMINAL_PROMPT": "0", **self.env})
        return self._repo

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.cache_path}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _fetch(self, *refspecs: str) -> None:
        with self._locked():
            try:
                self._git().fetch("--quiet", "--prune", "--no-tags", "--", self.fetch_url, *refspecs)
            except git.GitCommandError as e:
                raise GitError(
                    f"fetch from {self.display_url} failed: {_clean_stderr(e, self.url)}"
                ) from e

    # -- revisions ---------------------------------------------------------------------

    def fetch(self) -> str:
        """Fetch the tracked branch and return the commit it points at."""
        self._fetch(f"+refs/heads/{self.branch}:refs/heads/{self.branch}")
        try:
            return str(self._git().rev_parse("--verify", "--quiet", f"refs/heads/{self.branch}^{{commit}}"))
        except git.GitCommandError as e:
            raise UnknownRevision(
                f"branch {self.branch!r} not found in {self.display_url}"
            ) from e

    def fetch_all(self) -> None:
        """Fetch every branch and tag (and, for a local path, its HEAD and remote-tracking
        refs) so ``resolve`` can take any revision a user types."""
        specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        if self.is_local:
            specs += ["+refs/remotes/*:refs/remotes/*", f"+HEAD:{_SOURCE_HEAD}"]
        self._fetch(*specs)

    def resolve(self, rev: str) -> str:
        """A commit id for a branch, tag, remote-tracking ref, HEAD or sha (with ~N/^N)."""
        if rev.startswith("-") or not rev or any(c in rev for c in " \t\n:"):
            raise UnknownRevision(f"{rev!r} is not a revision")
        base, suffix = _REV_SUFFIX.match(rev).groups()  # type: ignore[union-attr]
        candidates = [rev]
        if base == "HEAD":
            head = _SOURCE_HEAD if self.is_local else f"refs/heads/{self.branch}"
            candidates = [f"{head}{suffix}"]
        if not _SHA.match(rev) and not self._refs_fresh:
            # names move: never resolve a branch, tag or HEAD from a stale cache
            self.fetch_all()
            self._refs_fresh = True
        for attempt in range(2):
            for candidate in candidates:
                try:
                    return str(self._git().rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}"))
                except git.GitCommandError:
                    continue
            if attempt == 0:
                self.fetch_all()
        raise UnknownRevision(f"revision {rev!r} not found in {self.display_url}")

    # -- reading -----------------------------------------------------------------------

    def declared_revision(self, commit: str) -> str:
        """The last commit at or before ``commit`` that changed executions/ or workflows/.

        Status commits do not move it: this is what ``observedRevision`` records and what
        parsing is cached by, so writing status never looks like new work (no feedback loop).
        """
        try:
            found = self._git().log("-1", "--format=%H", commit, "--", *self._declared_paths())
        except git.GitCommandError as e:
            raise GitError(f"cannot read history at {commit[:12]}: {_clean_stderr(e, self.url)}") from e
        return str(found).strip() or commit

    def _declared_paths(self) -> list[str]:
        root = f"{self.path}/" if self.path else ""
        return [f"{root}executions", f"{root}workflows"]

    def snapshot(self, commit: str, roles: frozenset[str] | None = None) -> Snapshot:
        """The declared files under the watched path at ``commit``, with their history.
        ``roles`` limits it to some of execution/workflow/status."""
        if not _SHA.match(commit):
            raise UnknownRevision(f"{commit!r} is not a commit id")
        self._ensure_commit(commit)
        root = self.path
        try:
            listing = self._git().ls_tree("-r", "-z", "--long", commit, "--", root or ".")
        except git.GitCommandError as e:
            raise GitError(f"cannot list {root or '/'} at {commit[:12]}: {_clean_stderr(e, self.url)}") from e
        wanted: dict[str, tuple[str, int]] = {}
        for entry in listing.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, kind, sha, size = meta.split()
            role = classify(path, root)
            if kind != "blob" or mode == "120000" or role is None or (roles is not None and role not in roles):
                continue  # submodules and symlinks are never followed
            wanted[path] = (sha, int(size))
        files: dict[str, bytes | int] = {}
        small = {p: sha for p, (sha, size) in wanted.items() if size <= self.max_file_bytes}
        for path, (_, size) in wanted.items():
            if path not in small:
                files[path] = size
        files.update(self._read_blobs(small))
        wants_history = roles is None or bool(roles & {"execution", "workflow"})
        return Snapshot(commit, files, self._origins(commit, root) if wants_history else {})

    def _ensure_commit(self, commit: str) -> None:
        for attempt in range(2):
            try:
                self._git().cat_file("-e", f"{commit}^{{commit}}")
                return
            except git.GitCommandError:
                if attempt == 0:
                    self.fetch_all()
        raise UnknownRevision(f"commit {commit[:12]} not found in {self.display_url}")

    def _read_blobs(self, shas: dict[str, str]) -> dict[str, bytes]:
        if not shas:
            return {}
        request = "".join(f"{sha}\n" for sha in shas.values()).encode()
        try:
            proc = subprocess.run(
                ["git", "cat-file", "--batch"], input=request, capture_output=True,
                cwd=self.cache_path, check=True, env={**os.environ, **self.env},
            )
        except (subprocess.CalledProcessError, OSError) as e:
            raise GitError(f"cannot read objects from the cache: {e}") from e
        out = proc.stdout
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in shas.values():
            header_end = out.index(b"\n", pos)
            _, _, size = out[pos:header_end].split(b" ")
            start = header_end + 1
            blobs[sha] = out[start:start + int(size)]
            pos = start + int(size) + 1
        return {path: blobs[sha] for path, sha in shas.items()}

    def _origins(self, commit: str, root: str) -> dict[str, FileOrigin]:
        """For every declared file: the commit that last changed it and the one that added it."""
        specs = [f"{root}/executions" if root else "executions", f"{root}/workflows" if root else "workflows"]
        try:
            log = self._git().log("--format=%x01%H %ct", "--name-only", "--no-renames", "-z",
                                  commit, "--", *specs)
        except git.GitCommandError as e:
            raise GitError(f"cannot read history at {commit[:12]}: {_clean_stderr(e, self.url)}") from e
        last: dict[str, tuple[str, int, int]] = {}
        first: dict[str, tuple[str, int, int]] = {}
        blocks = [b for b in log.split("\x01") if b.strip("\0\n")]
        for index, block in enumerate(blocks):  # newest first
            header, _, names = block.partition("\0")
            sha, ts = header.split()
            stamp = (sha, int(ts), len(blocks) - index)
            for name in names.split("\0"):
                name = name.strip("\n")
                if not name:
                    continue
                last.setdefault(name, stamp)
                first[name] = stamp
        return {
            path: FileOrigin(last[path][0], last[path][1], first[path][0], first[path][1], first[path][2])
            for path in last
        }

    def load(self, commit: str) -> Declaration:
        with self._load_lock:  # the dashboard reads while a cycle runs
            return self._load(commit)

    def _load(self, commit: str) -> Declaration:
        """The validated declaration at ``commit``.

        Executions and the catalog are parsed once per *declared* revision (a status-only
        commit re-uses the previous parse); status files are read at ``commit`` itself.
        """
        self._ensure_commit(commit)
        declared = self.declared_revision(commit)
        decl = self._declarations.get(declared)
        if decl is None:
            snap = self.snapshot(declared, frozenset({"execution", "workflow"}))
            self.parse_count += 1
            decl = load_declaration(snap.files, root=self.path, origins=snap.origins,
                                    max_bytes=self.max_file_bytes)
            decl.revision = declared
            self._declarations[declared] = decl
            while len(self._declarations) > 4:
                self._declarations.popitem(last=False)
        else:
            self._declarations.move_to_end(declared)
        statuses = self._statuses.get(commit)
        if statuses is None:
            status_files = self.snapshot(commit, frozenset({"status"})).files
            statuses = load_declaration(status_files, root=self.path, max_bytes=self.max_file_bytes).statuses
            self._statuses = {commit: statuses}
        return replace(decl, statuses=statuses)


def _clean_stderr(error: git.GitCommandError, url: str) -> str:
    text = (error.stderr or str(error)).strip().replace("stderr:", "").strip(" '\n")
    if url and url != redact_url(url):
        text = text.replace(url, redact_url(url))
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)[:500]
