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
commit reads and parses only the blobs it changed (:mod:`reconciler.parsecache`, by blob id).

The cache is disposable, so it heals itself: when git's words say the *local* object
database or refs are damaged (a deleted pack, a truncated object, a ref to nothing) and a
local check (fsck, cat-file) agrees, the cache is moved aside, re-initialised and fetched
again — logged as a warning and counted in ``cache_rebuilds`` — and the operation is
retried, without a restart.  A network failure never looks like that, so an outage never
costs a re-clone.  Whatever git prints passes through :func:`redact_text` first: no
credential from a URL, a header or the environment reaches an error, a log or a status.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TypeVar

from . import gitcmd
from .declared import Declaration, FileOrigin, classify, gc_paused
from .errors import ConfigError, GitCommandFailed, GitError, UnknownRevision
from .gitbatch import BatchReader
from .parsecache import ParseCache
from .parsestore import ParseStore
from .statusdoc import StatusRecord
from .yamldoc import DEFAULT_MAX_BYTES

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SOURCE_HEAD = "refs/kgr/source-HEAD"
_REV_SUFFIX = re.compile(r"^(.*?)((?:[~^][0-9]*)*)$")
_GENERATION = "kgr-generation"  # a file in the cache: changes each time the cache is rebuilt
T = TypeVar("T")

# What git prints when the *local* object database or refs are damaged (a deleted or
# truncated pack, a corrupt loose object, a ref to a missing object, a broken pack index).
# A network failure prints none of these; lines from the other side ("remote: ...") are
# not considered.  A match is only a suspicion: it is confirmed locally (fsck, cat-file)
# before the cache is rebuilt.
_DAMAGE = re.compile("|".join([
    r"packfile \S+ cannot be accessed", r"packed object \S+ .*is corrupt", r"loose object \S+ .*is corrupt",
    r"corrupt loose object", r"corrupt packed object", r"\bbad (?:tree |commit |tag |blob )?object\b",
    r"missing (?:blob|tree|commit|tag) [0-9a-f]{7,}", r"did not send all necessary objects",
    r"unable to read (?:tree |commit |blob |tag |sha1 file |object )?[0-9a-f]{7,}", r"unable to unpack",
    r"inflate: data stream error", r"object file \S+ is empty", r"does not point to a valid object",
    r"invalid sha1 pointer", r"index file \S+ is too small", r"non-monotonic index", r"bad pack(?:file)? ",
    r"packfile \S+ does not match index", r"unable to parse object", r"could not read [0-9a-f]{40}",
    r"broken link from", r"not a git repository", r"unable to open object pack directory",
]), re.IGNORECASE)
_SHALLOW = "shallow roots are not allowed to be updated"
_STEP_MAX = 200  # commits a load carries the declared revision and origins across in one log
_FEW = 64  # objects read through the long-lived reader; more go through one ``cat-file --batch``


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


class CacheDamaged(GitError):
    """A git command failed in a way that points at a damaged cache (``cause``: why).

    Raised inside GitSource and handled there (the cache is rebuilt and the operation
    retried); it only escapes when the damage is not confirmed locally or survives a
    rebuild, and then it is an ordinary, retryable GitError."""

    def __init__(self, message: str, cause: str, *, certain: bool = False):
        super().__init__(message)
        self.cause = cause
        self.certain = certain  # no local check needed (an object a tree names is missing)


def _suspect(stderr: str) -> str:
    """The line of git's stderr that suggests a damaged cache, or ""."""
    for line in stderr.splitlines():
        if not line.lstrip().lower().startswith("remote:") and _DAMAGE.search(line):
            return line.strip()
    return ""


# Where a URL can carry a credential: the user-info (``https://oauth2:TOKEN@host``, a
# password with an unencoded "/" included) and the query string.  Every query *value* of
# a URL is redacted, not only the ones with credential-like names: a Git remote is
# identified by its host and path, and the names used for tokens are open-ended
# (``private_token``, ``access_token``, ``sig``, ``X-Amz-Signature``, ...).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^:/?#\s@'\"<>`]*(?::[^\s'\"<>`]*)?@")
_QUERY_VALUE = re.compile(r"([?&;][^=&#;]*=)[^&#;]*")
_SCP_PASSWORD = re.compile(r"^[^@/\s:]+:[^@\s]*@(?=[^:/\s]+:)")  # user:token@host:path
# credential-looking assignments and headers anywhere in git's output (GIT_TRACE, curl)
_CREDENTIAL_WORDS = r"(?:token|password|passwd|secret|key|signature|credential)"
_ASSIGNMENT = re.compile(rf"(?i)\b([\w.-]*{_CREDENTIAL_WORDS}[\w.-]*\s*[=:]\s*)(?!\*\*\*)[^\s&'\",;]+")
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization:\s*)(?:(?:basic|bearer|token)\s+)?[^\s'\"]+")


def _redact_one_url(url: str) -> str:
    url = _USERINFO.sub(r"\1***@", url)
    head, mark, rest = url.partition("?")
    return head + mark + _QUERY_VALUE.sub(r"\1***", "?" + rest)[1:] if mark else url


def redact_url(url: str) -> str:
    """The URL without any user, password or token (safe for logs, errors, status)."""
    if "://" not in url:
        return _SCP_PASSWORD.sub("***@", url)  # git@host:path keeps its (public) user
    return _redact_one_url(url)


def redact_text(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` (an error message, git's stderr) with every credential it may carry
    replaced by ``***``: user-info and query values of URLs, ``Authorization`` headers,
    ``token=``/``password:``-style assignments, and the literal ``secrets`` given."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_IN_TEXT.sub(lambda m: _redact_one_url(m.group(0)), text)
    text = _USERINFO.sub(r"\1***@", text)  # a password holding a space or a quote
    text = _AUTH_HEADER.sub(r"\1***", text)
    return _ASSIGNMENT.sub(r"\1***", text)


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
        parse_store: bool = True,
    ):
        self.url = url
        self.branch = branch
        self.path = check_sub_path(path)
        self.max_file_bytes = max_file_bytes
        self.log = logger or logging.getLogger("reconciler.git")
        self.env = dict(env or {})
        local = Path(url).expanduser()
        self.is_local = "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and local.exists()
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
        self._generation = ""  # the cache generation the open repository belongs to
        self._healing_now = threading.local()
        # refspecs fetched along with the tracked branch (the write-back's view of the same
        # branch: one round trip per cycle, not two), and how many such fetches succeeded
        self.also_fetch: list[str] = []
        self.fetches = 0
        self._declared_of: dict[str, str] = {}  # commit → its declared revision (immutable)
        self._declared_found: set[str] = set()  # revisions git named (not a commit standing for itself)
        self._listings: dict[frozenset[str], tuple[str, dict[str, tuple[str, int]]]] = {}  # last, per roles
        self._roles: dict[str, str | None] = {}  # path → classify(path, self.path)
        self._origins_at: tuple[str, dict[str, FileOrigin], int] | None = None  # commit, origins, commits
        self._batch: BatchReader | None = None  # long-lived cat-file for small reads (a fast path only)
        self._loaded: str = ""  # the commit load() read last: the next one is read as a step from it
        self.stepped = 0  # loads whose revision and origins were carried from the last one (one log)

    # -- low level ---------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def _git(self) -> gitcmd.Commands:
        return self._open().git

    def _open(self) -> gitcmd.Repository:
        if self._repo is not None and not (self.cache_path / "HEAD").exists():
            self._forget_repo()  # the cache directory was removed (or rebuilt) under us
        if self._repo is None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._repo = gitcmd.open_repository(self.cache_path,
                                                    init_bare=not (self.cache_path / "HEAD").exists())
            except (GitCommandFailed, OSError) as e:
                raise GitError(f"cannot open cache repository {self.cache_path}: {e}") from e
            self._repo.git.update_environment(**{"GIT_TERMINAL_PROMPT": "0", **self.env})
            self._generation = self._read_generation()
        return self._repo

    def _reader(self) -> BatchReader:
        self._open()  # the cache exists and is the one the reader should read
        if self._batch is None:
            self._batch = BatchReader(self.cache_path, {"GIT_TERMINAL_PROMPT": "0", **self.env})
        return self._batch

    def _forget_repo(self) -> None:
        if self._repo is not None:
            self._repo.close()
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        self._repo = None
        self._refs_fresh = False

    def _read_generation(self) -> str:
        try:
            return (self.cache_path / _GENERATION).read_text().strip()
        except OSError:
            return ""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.cache_path}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _secrets(self) -> list[str]:
        from .gitauth import secrets_of  # gitauth imports config: keep this module light

        return secrets_of(self.env)

    def _error(self, what: str, error: GitCommandFailed) -> GitError:
        """``what: <git's cleaned stderr>`` as a GitError — a CacheDamaged when git's
        words point at the cache rather than the remote."""
        text = _clean_stderr(error, self.url, self._secrets())
        message = f"{what}: {text}"
        cause = _suspect(str(error.stderr or ""))
        return CacheDamaged(message, redact_text(cause, self._secrets())[:300]) if cause else GitError(message)

    # -- self-healing cache ---------------------------------------------------------------

    def _healing(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; if it fails because the cache is damaged, rebuild the cache
        from the remote and run it again — at most one rebuild per call, so a remote that
        is itself broken is not cloned again and again.  Nested calls leave it to the
        outermost one."""
        if getattr(self._healing_now, "active", False):
            return operation()
        self._healing_now.active = True
        rebuilt = False
        try:
            for _ in range(3):  # reopen (another sharer rebuilt it), rebuild, give up
                try:
                    return operation()
                except CacheDamaged as e:
                    if rebuilt:
                        self.log.error("git cache still failing after a rebuild; the remote may be damaged",
                                       extra={"cache": str(self.cache_path), "cause": e.cause})
                        raise
                    if not e.certain and not self._confirm_damage(e):
                        raise
                    rebuilt = self._recover(e.cause)
            return operation()
        finally:
            self._healing_now.active = False

    def _confirm_damage(self, error: CacheDamaged) -> bool:
        """Whether the cache is really damaged, checked without the network: fsck of the
        reachable objects, then a full read of any object the error names."""
        env = {**os.environ, **self.env}
        try:
            fsck = gitcmd.run(["fsck", "--connectivity-only", "--no-dangling", "--no-progress"],
                                  cwd=self.cache_path, text=True, env=env, check=False)
        except OSError:
            return True  # the cache directory itself is gone
        if fsck.returncode != 0:
            found = (fsck.stderr or fsck.stdout).strip().splitlines()
            error.cause = f"{error.cause} (fsck: {found[0] if found else 'failed'})"
            return True
        for sha in sorted(set(re.findall(r"\b[0-9a-f]{40}\b", error.cause))):
            read = gitcmd.run(["cat-file", "-p", sha], cwd=self.cache_path, env=env, check=False)
            if read.returncode != 0:
                return True
        self.log.info("git error looked like cache damage but the cache checks out; not rebuilding",
                      extra={"cache": str(self.cache_path), "cause": error.cause})
        return False

    def _recover(self, cause: str) -> bool:
        """Rebuild the damaged cache (True), or only reopen it when another GitSource or
        thread sharing it has rebuilt it since this one opened it (False)."""
        with self._locked():
            if self._repo is not None and self._read_generation() != self._generation:
                self._forget_repo()
                return False
            self.log.warning("git cache damaged; rebuilding it from the remote",
                             extra={"cache": str(self.cache_path), "cause": cause,
                                    "repository": self.display_url})
            self._forget_repo()
            aside = self.cache_path.with_name(f"{self.cache_path.name}.damaged-{uuid.uuid4().hex[:8]}")
            try:
                if self.cache_path.exists():
                    os.replace(self.cache_path, aside)
                gitcmd.open_repository(self.cache_path, init_bare=True).close()
                (self.cache_path / _GENERATION).write_text(uuid.uuid4().hex + "\n")
            except (OSError, GitCommandFailed) as e:
                raise GitError(f"cannot rebuild the damaged cache {self.cache_path}: {e}") from e
            finally:
                shutil.rmtree(aside, ignore_errors=True)
            self.cache_rebuilds += 1  # parsed declarations stay valid: they are keyed by commit id
            self._statuses = {}  # but whether a commit is in the new cache is asked again
            self._listings = {}
            self._origins_at = None
            self._loaded = ""
        return True

    # -- fetching ------------------------------------------------------------------------

    def _fetch(self, *refspecs: str) -> None:
        self._healing(lambda: self._fetch_once(refspecs))

    def _fetch_once(self, refspecs: tuple[str, ...]) -> None:
        with self._locked():
            try:
                _, _, stderr = self._git().fetch("--quiet", "--prune", "--no-tags", "--", self.fetch_url,
                                                 *refspecs, with_extended_output=True)
            except GitCommandFailed as e:
                raise self._error(f"fetch from {self.display_url} failed", e) from e
        if _SHALLOW in stderr:
            raise GitError(
                f"{self.display_url} is a shallow clone (made with --depth): the reconciler needs the "
                "whole history of the branch. Run `git fetch --unshallow` in it, or clone without --depth.")

    # -- revisions ---------------------------------------------------------------------

    def fetch(self) -> str:
        """Fetch the tracked branch and return the commit it points at."""
        return self._healing(self._fetch_branch)

    def _fetch_branch(self) -> str:
        self._fetch(f"+refs/heads/{self.branch}:refs/heads/{self.branch}", *self.also_fetch)
        self.fetches += 1
        try:
            return str(self._git().rev_parse("--verify", "--quiet", f"refs/heads/{self.branch}^{{commit}}"))
        except GitCommandFailed as e:
            if _suspect(str(e.stderr or "")):
                raise self._error(f"cannot read branch {self.branch!r} in the cache", e) from e
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
        return self._healing(lambda: self._resolve(rev))

    def _resolve(self, rev: str) -> str:
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
                except GitCommandFailed as e:
                    if _suspect(str(e.stderr or "")):
                        raise self._error(f"cannot resolve {rev!r} in the cache", e) from e
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
        return self._healing(lambda: self._declared_revision(commit))

    def _declared_revision(self, commit: str) -> str:
        known = self._declared_of.get(commit)
        if known is not None:  # a commit's history never changes
            return known
        try:
            found = self._git().log("-1", "--format=%H", commit, "--", *self._declared_paths())
        except GitCommandFailed as e:
            raise self._error(f"cannot read history at {commit[:12]}", e) from e
        self._remember_declared(commit, str(found).strip())
        return self._declared_of[commit]

    def _remember_declared(self, commit: str, found: str) -> None:
        """``commit``'s declared revision is ``found`` (the last commit that changed
        executions/ or workflows/), or ``commit`` itself when none ever did."""
        if len(self._declared_of) > 256:
            self._declared_of.clear()
            self._declared_found.clear()
        self._declared_of[commit] = found or commit
        if found:
            self._declared_found.add(found)

    def _step_from_loaded(self, commit: str) -> None:
        """The declared revision and file origins of ``commit`` carried forward from the
        commit loaded last, by one ``git log`` of the commits in between (the usual push: a
        few commits on top).  It answers what ``git log -1 -- executions workflows`` and
        :meth:`_origins_since` would (for a linear run of commits they list the same
        commits and names) with one process instead of three.  Anything else — a merge, a
        rewritten branch, a long run — leaves the caches alone and the full reads run."""
        base = self._loaded
        base_declared = self._declared_of.get(base) if base else None
        if base_declared is None or base == commit or commit in self._declared_of:
            return
        try:
            log = self._git().log("--format=%x01%H %P %ct", "--name-only", "--no-renames", "-z",
                                  f"--max-count={_STEP_MAX + 1}", f"{base}..{commit}")
        except GitCommandFailed:
            return
        blocks = _log_blocks(log)  # newest first
        if not blocks or len(blocks) > _STEP_MAX or blocks[0][0][0] != commit:
            return
        for index, (header, _) in enumerate(blocks):  # one parent each, chained, down to base
            below = blocks[index + 1][0][0] if index + 1 < len(blocks) else base
            if len(header) != 3 or header[1] != below:
                return
        tops = self._declared_paths()  # what ``git log -- <tops>`` would list: each, and below
        under = tuple(f"{top}/" for top in tops)
        touching = [(header[0], int(header[2]), [n for n in names if n in tops or n.startswith(under)])
                    for header, names in blocks]
        touching = [block for block in touching if block[2]]
        if not touching:
            if base_declared not in self._declared_found:
                return  # nothing was ever declared: the revision is the commit itself, ask git
            self._remember_declared(commit, base_declared)
            self.stepped += 1
            return
        self._remember_declared(commit, touching[0][0])
        self.stepped += 1
        if self._origins_at is not None and self._origins_at[0] == base_declared:
            origins, count = self._carried(self._origins_at[1], self._origins_at[2], touching)
            self._origins_at = (touching[0][0], origins, count)

    def _declared_paths(self) -> list[str]:
        root = f"{self.path}/" if self.path else ""
        return [f"{root}executions", f"{root}workflows"]

    def snapshot(self, commit: str, roles: frozenset[str] | None = None) -> Snapshot:
        """The declared files under the watched path at ``commit``, with their history.
        ``roles`` limits it to some of execution/workflow/status."""
        if not _SHA.match(commit):
            raise UnknownRevision(f"{commit!r} is not a commit id")
        return self._healing(lambda: self._snapshot(commit, roles))

    def _snapshot(self, commit: str, roles: frozenset[str] | None) -> Snapshot:
        self._ensure_commit(commit)
        wanted = self._listing(commit, roles)
        files: dict[str, bytes | int] = dict(self._read_sized(wanted))
        wants_history = roles is None or bool(roles & {"execution", "workflow"})
        return Snapshot(commit, files, self._origins(commit, self.path) if wants_history else {})

    def _listing(self, commit: str, roles: frozenset[str] | None) -> dict[str, tuple[str, int]]:
        """path → (blob id, size) of the declared files under the watched path at ``commit``
        (nothing is read).  The first listing is one ``ls-tree``; the next ones are the last
        listing plus a ``diff-tree`` against its commit, so a new commit costs what it changed.
        The result is shared: callers must not modify it."""
        key = frozenset(roles) if roles else frozenset()
        previous = self._listings.get(key)
        if previous is not None and previous[0] == commit:
            return previous[1]
        listed = self._listing_since(previous, commit, roles) if previous is not None else None
        if listed is None:
            listed = self._full_listing(commit, roles)
        self._listings[key] = (commit, listed)
        return listed

    def _where(self, roles: frozenset[str] | None) -> list[str]:
        root = self.path
        tops = {"execution": "executions", "workflow": "workflows", "status": "status"}
        return [f"{root}/{tops[r]}" if root else tops[r] for r in sorted(roles)] if roles else [root or "."]

    def _role(self, path: str) -> str | None:
        role = self._roles.get(path, "?")
        if role == "?":
            if len(self._roles) > 200_000:
                self._roles.clear()
            role = self._roles[path] = classify(path, self.path)
        return role

    def _wanted(self, roles: frozenset[str] | None, mode: str, kind: str, path: str) -> bool:
        role = self._role(path)
        # submodules and symlinks are never followed
        return kind == "blob" and mode != "120000" and role is not None and (roles is None or role in roles)

    def _full_listing(self, commit: str, roles: frozenset[str] | None) -> dict[str, tuple[str, int]]:
        try:
            listing = self._git().ls_tree("-r", "-z", "--long", commit, "--", *self._where(roles))
        except GitCommandFailed as e:
            raise self._error(f"cannot list {self.path or '/'} at {commit[:12]}", e) from e
        wanted: dict[str, tuple[str, int]] = {}
        for entry in listing.split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, kind, sha, size = meta.split()
            if not self._wanted(roles, mode, kind, path):
                continue
            if not size.isdigit():  # ls-tree says "BAD" when the blob cannot be read
                raise CacheDamaged(f"cannot read {path} at {commit[:12]} from the cache {self.cache_path}",
                                   f"object {sha} ({path}) is missing or unreadable", certain=True)
            wanted[path] = (sha, int(size))
        return wanted

    def _listing_since(self, previous: tuple[str, dict[str, tuple[str, int]]], commit: str,
                       roles: frozenset[str] | None) -> dict[str, tuple[str, int]] | None:
        """``previous`` (a commit and its listing) brought to ``commit`` by one ``diff-tree``
        (and one ``cat-file --batch-check`` for the sizes of what it changed); None when a
        full listing is simpler (many changes)."""
        try:
            out = self._git().diff_tree("-r", "-z", "--raw", "--no-renames", "--no-abbrev", previous[0], commit,
                                        "--", *self._where(roles))
        except GitCommandFailed as e:
            raise self._error(f"cannot compare {previous[0][:12]} with {commit[:12]}", e) from e
        fields = out.split("\0")
        changes: list[tuple[str, str, str, str]] = []  # (status, mode, sha, path)
        for i in range(0, len(fields) - 1, 2):
            meta, path = fields[i], fields[i + 1]
            if not meta.startswith(":"):
                continue
            _, new_mode, _, new_sha, status = meta[1:].split()
            changes.append((status, new_mode, new_sha, path))
        if len(changes) > 2000:
            return None
        listed = dict(previous[1])
        sizes = self._sizes([sha for status, _, sha, _ in changes if status != "D"])
        for status, mode, sha, path in changes:
            listed.pop(path, None)
            kind = "commit" if mode == "160000" else "blob"
            if status == "D" or not self._wanted(roles, mode, kind, path):
                continue
            size = sizes.get(sha)
            if size is None:
                raise CacheDamaged(f"cannot read {path} at {commit[:12]} from the cache {self.cache_path}",
                                   f"object {sha} ({path}) is missing or unreadable", certain=True)
            listed[path] = (sha, size)
        return listed

    def _sizes(self, shas: list[str]) -> dict[str, int]:
        """blob id → size, through one ``git cat-file --batch-check`` (absent: unreadable)."""
        if not shas:
            return {}
        if len(shas) <= _FEW:
            known = self._reader().info(shas)
            if known is not None:
                return {sha: size for sha, (_, kind, size) in known.items() if kind == "blob"}
        try:
            proc = gitcmd.run(["cat-file", "--batch-check"], input="".join(f"{s}\n" for s in shas).encode(),
                                  cwd=self.cache_path, check=False, env={**os.environ, **self.env})
        except OSError as e:
            raise GitError(f"cannot read objects from the cache: {e}") from e
        sizes: dict[str, int] = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "blob" and parts[2].isdigit():
                sizes[parts[0]] = int(parts[2])
        return sizes

    def _read_sized(self, wanted: Mapping[str, tuple[str, int]]) -> dict[str, bytes | int]:
        """The contents of ``wanted`` (path → (blob id, size)); a file larger than the limit
        is given as its size, unread."""
        files: dict[str, bytes | int] = {}
        small = {p: sha for p, (sha, size) in wanted.items() if size <= self.max_file_bytes}
        for path, (_, size) in wanted.items():
            if path not in small:
                files[path] = size
        files.update(self._read_blobs(small))
        return files

    def _ensure_commit(self, commit: str) -> None:
        peeled = f"{commit}^{{commit}}"
        known = self._reader().info([peeled])
        if known is not None and known[peeled][1] == "commit":
            return
        for attempt in range(2):
            try:
                self._git().cat_file("-e", f"{commit}^{{commit}}")
                return
            except GitCommandFailed as e:
                if _suspect(str(e.stderr or "")):
                    raise self._error(f"cannot read commit {commit[:12]} in the cache", e) from e
                if attempt == 0:
                    self.fetch_all()
        raise UnknownRevision(f"commit {commit[:12]} not found in {self.display_url}")

    def _read_blobs(self, shas: dict[str, str]) -> dict[str, bytes]:
        """The contents of ``shas`` (path → blob id) through one ``git cat-file --batch``.

        Every id comes from a tree of the cache, so one reported ``missing`` (or any reply
        that is not ``<sha> blob <size>``) means the cache is damaged: CacheDamaged."""
        if not shas:
            return {}
        self._git()  # the cache repository exists (and is the current one)
        unique = list(dict.fromkeys(shas.values()))
        if len(unique) <= _FEW:
            read = self._reader().contents(unique)
            if read is not None:
                return {path: read[sha] for path, sha in shas.items()}
        request = "".join(f"{sha}\n" for sha in unique).encode()
        try:
            proc = gitcmd.run(["cat-file", "--batch"], input=request, cwd=self.cache_path, check=False,
                              env={**os.environ, **self.env})
        except OSError as e:
            raise GitError(f"cannot read objects from the cache: {e}") from e
        stderr = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            lines = stderr.splitlines()
            cause = _suspect(stderr) or (lines[-1] if lines else f"cat-file exited with {proc.returncode}")
            raise CacheDamaged(f"cannot read objects from the cache {self.cache_path}: "
                               f"{redact_text(stderr, self._secrets())[:300]}", cause)
        out = proc.stdout
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in unique:
            header_end = out.find(b"\n", pos)
            header = out[pos:header_end].split(b" ") if header_end >= 0 else [b"<truncated reply>"]
            if len(header) != 3 or header[0].decode(errors="replace") != sha or header[1] != b"blob" \
                    or not header[2].isdigit() or header_end + 1 + int(header[2]) > len(out):
                what = b" ".join(header).decode(errors="replace")
                raise CacheDamaged(f"cannot read object {sha[:12]} from the cache {self.cache_path}: {what}",
                                   f"object {sha} {what.removeprefix(sha).strip() or 'unreadable'}",
                                   certain=True)
            start = header_end + 1
            size = int(header[2])
            blobs[sha] = out[start:start + size]
            pos = start + size + 1
        return {path: blobs[sha] for path, sha in shas.items()}

    def _origins(self, commit: str, root: str) -> dict[str, FileOrigin]:
        """For every declared file: the commit that last changed it and the one that added it.

        The first call reads the whole history of executions/ and workflows/ (one ``git log``);
        later ones, when the new commit only adds a linear run of commits to the one before
        (the usual push), read just those commits and carry the rest forward — the same result
        as reading it all, at the cost of what was pushed."""
        previous = self._origins_at
        if previous is not None and previous[0] == commit:
            return previous[1]
        found = self._origins_since(previous, commit, root) if previous is not None else None
        if found is None:
            found = self._origins_full(commit, root)
        self._origins_at = (commit, found[0], found[1])
        return found[0]

    def _origin_log(self, commit: str, root: str, since: str = "") -> list[tuple[str, int, list[str]]]:
        """(commit, time, paths) of each commit touching the declared paths, newest first."""
        specs = [f"{root}/executions" if root else "executions", f"{root}/workflows" if root else "workflows"]
        what = f"{since}..{commit}" if since else commit
        try:
            log = self._git().log("--format=%x01%H %ct", "--name-only", "--no-renames", "-z", what, "--", *specs)
        except GitCommandFailed as e:
            raise self._error(f"cannot read history at {commit[:12]}", e) from e
        return [(header[0], int(header[1]), names) for header, names in _log_blocks(log)]

    def _origins_full(self, commit: str, root: str) -> tuple[dict[str, FileOrigin], int]:
        blocks = self._origin_log(commit, root)
        last: dict[str, tuple[str, int, int]] = {}
        first: dict[str, tuple[str, int, int]] = {}
        for index, (sha, ts, names) in enumerate(blocks):  # newest first
            stamp = (sha, ts, len(blocks) - index)
            for name in names:
                last.setdefault(name, stamp)
                first[name] = stamp
        origins = {
            path: FileOrigin(last[path][0], last[path][1], first[path][0], first[path][1], first[path][2])
            for path in last
        }
        return origins, len(blocks)

    def _origins_since(self, previous: tuple[str, dict[str, FileOrigin], int], commit: str,
                       root: str) -> tuple[dict[str, FileOrigin], int] | None:
        """``previous`` carried forward to ``commit``; None unless ``commit`` descends from it
        by a linear run of commits (a merge may reorder history: read it all then)."""
        base, origins, count = previous
        try:
            chain = str(self._git().rev_list("--parents", f"{base}..{commit}")).split("\n")
        except GitCommandFailed:
            return None
        links = [line.split() for line in chain if line.strip()]
        if not links or any(len(link) != 2 for link in links):
            return None  # nothing new (not a descendant), or a merge or a root commit in the run
        if any(links[i][1] != links[i + 1][0] for i in range(len(links) - 1)) or links[-1][1] != base:
            return None
        return self._carried(origins, count, self._origin_log(commit, root, since=base))

    @staticmethod
    def _carried(origins: dict[str, FileOrigin], count: int,
                 blocks: list[tuple[str, int, list[str]]]) -> tuple[dict[str, FileOrigin], int]:
        """``origins`` (after ``count`` commits) brought forward by ``blocks``: the
        newer commits that touched declared files, newest first, with those files."""
        updated = dict(origins)
        total = count + len(blocks)
        for index, (sha, ts, names) in enumerate(reversed(blocks)):  # oldest first
            seq = count + index + 1
            for name in names:
                held = updated.get(name)
                if held is None:
                    updated[name] = FileOrigin(sha, ts, sha, ts, seq)
                else:
                    updated[name] = FileOrigin(sha, ts, held.introduced_commit, held.introduced_time,
                                               held.introduced_seq)
        return updated, total

    def load(self, commit: str) -> Declaration:
        with self._load_lock, gc_paused():  # the dashboard reads while a cycle runs
            return self._healing(lambda: self._load(commit))

    def _load(self, commit: str) -> Declaration:
        """The validated declaration at ``commit``.

        Executions and the catalog are assembled once per *declared* revision (a status-only
        commit re-uses the previous result); status files are read at ``commit`` itself.
        Either way only the blobs the :class:`ParseCache` does not hold are read and parsed.
        """
        if commit not in self._statuses:  # the commit loaded last is there: no git call at all
            self._ensure_commit(commit)
            self._step_from_loaded(commit)
        declared = self.declared_revision(commit)
        decl = self._declarations.get(declared)
        if decl is None:
            listing = self._listing(declared, frozenset({"execution", "workflow"}))
            sizes = {path: size for path, (_, size) in listing.items()}
            by_role: dict[str, dict[str, str]] = {"execution": {}, "workflow": {}}
            for path, (sha, _) in listing.items():
                by_role[self._role(path) or "execution"][path] = sha
            self.parse_count += 1
            decl = self.parsed.declaration(
                by_role["execution"], by_role["workflow"],
                lambda shas: self._read_sized({p: (sha, sizes[p]) for p, sha in shas.items()}),
                self._origins(declared, self.path), self.max_file_bytes)
            decl.revision = declared
            self._declarations[declared] = decl
            while len(self._declarations) > 4:
                self._declarations.popitem(last=False)
        else:
            self._declarations.move_to_end(declared)
        cached = self._statuses.get(commit)
        if cached is None:
            status = self._listing(commit, frozenset({"status"}))
            cached = self.parsed.status_records(
                {path: sha for path, (sha, _) in status.items()},
                lambda shas: self._read_sized({p: status[p] for p in shas}))
            self._statuses = {commit: cached}
        out = replace(decl, statuses=cached[0], ignored_statuses=cached[1])
        out.share_index(decl)
        self._loaded = commit
        return out


def _log_blocks(log: str) -> list[tuple[list[str], list[str]]]:
    """``git log --format=%x01<fields> --name-only -z`` as (header fields, file names) per commit."""
    out = []
    for block in (b for b in log.split("\x01") if b.strip("\0\n")):
        header, _, names = block.partition("\0")
        out.append((header.split(), [n.strip("\n") for n in names.split("\0") if n.strip("\n")]))
    return out


def _clean_stderr(error: GitCommandFailed, url: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """git's stderr, shortened, with every credential redacted (``url`` and ``secrets``
    literally, then anything that looks like one) — safe for errors, logs and status."""
    text = (error.stderr or str(error)).strip().replace("stderr:", "").strip(" '\n")
    extra = [url] if url and url != redact_url(url) else []
    for literal in extra:
        text = text.replace(literal, redact_url(literal))
    return redact_text(text, secrets)[:500]
