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

This module owns :class:`GitSource` and the rules of git's words — which mean a damaged
cache, which must not be shown, what a revision and a sub-path may be; the layers below
it are the bare cache (:mod:`reconciler.source.gitcache`), reading a commit
(:mod:`reconciler.source.gitread`) and history and the load
(:mod:`reconciler.source.githistory`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from reconciler.declare.declared import Declaration, FileOrigin
from reconciler.declare.statusdoc import StatusRecord
from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES
from reconciler.errors import ConfigError, GitCommandFailed, GitError, UnknownRevision
from reconciler.source import gitcmd
from reconciler.source.gitbatch import BatchReader
from reconciler.source.gitcache import _SOURCE_HEAD, CacheDamaged
from reconciler.source.githistory import GitHistory, Snapshot
from reconciler.source.gitread import _FEW
from reconciler.source.parsecache import ParseCache
from reconciler.source.parsestore import ParseStore

_SHA = re.compile(r"^[0-9a-f]{40}$")
_REV_SUFFIX = re.compile(r"^(.*?)((?:[~^][0-9]*)*)$")

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


class GitSource(GitHistory):
    """A watched repository: URL or local path, tracked branch, sub-path, cache directory.

    Its layers: the bare cache (:class:`~reconciler.source.gitcache.GitCache`), reading a
    commit (:class:`~reconciler.source.gitread.GitReading`), history and the load
    (:class:`~reconciler.source.githistory.GitHistory`); what depends on git's words —
    whether they mean a damaged cache, which credentials they must not show — is here."""

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

    # -- git's words ---------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def _secrets(self) -> list[str]:
        from reconciler.source.gitauth import secrets_of  # pydantic, for the credential settings: only when asked

        return secrets_of(self.env)

    def _error(self, what: str, error: GitCommandFailed) -> GitError:
        """``what: <git's cleaned stderr>`` as a GitError — a CacheDamaged when git's
        words point at the cache rather than the remote."""
        text = clean_stderr(error, self.url, self._secrets())
        message = f"{what}: {text}"
        cause = _suspect(str(error.stderr or ""))
        return CacheDamaged(message, redact_text(cause, self._secrets())[:300]) if cause else GitError(message)

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

    def snapshot(self, commit: str, roles: frozenset[str] | None = None) -> Snapshot:
        """The declared files under the watched path at ``commit``, with their history.
        ``roles`` limits it to some of execution/workflow/status."""
        if not _SHA.match(commit):
            raise UnknownRevision(f"{commit!r} is not a commit id")
        return self._healing(lambda: self._snapshot(commit, roles))

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


def clean_stderr(error: GitCommandFailed, url: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """git's stderr, shortened, with every credential redacted (``url`` and ``secrets``
    literally, then anything that looks like one) — safe for errors, logs and status."""
    text = (error.stderr or str(error)).strip().replace("stderr:", "").strip(" '\n")
    extra = [url] if url and url != redact_url(url) else []
    for literal in extra:
        text = text.replace(literal, redact_url(literal))
    return redact_text(text, secrets)[:500]
