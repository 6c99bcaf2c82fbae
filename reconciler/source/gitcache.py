"""The bare cache repository of a watched source: open, lock, heal, fetch.

Both local paths and URLs are fetched into a bare cache repository (every git call goes
through :mod:`reconciler.source.gitcmd`), so the source repository is never modified and a
half-pushed state is never read.  The cache is disposable, so it heals itself: when git's
words say the *local* object database or refs are damaged and a local check agrees, the
cache is moved aside, re-initialised and fetched again — logged as a warning and counted
in ``cache_rebuilds`` — and the operation is retried, without a restart.  Several sources
and threads may share one cache: a file lock serialises fetches and rebuilds, and a
generation file tells a sharer that the cache was rebuilt under it.

:class:`GitCache` is the lowest layer of :class:`~reconciler.source.gitsource.GitSource`; what
the words git prints mean (damage, or what they must not reveal) is decided by
:mod:`reconciler.source.gitwords`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from reconciler.declare.declared import FileOrigin
from reconciler.declare.statusdoc import StatusRecord
from reconciler.errors import GitCommandFailed, GitError
from reconciler.source import gitcmd
from reconciler.source.gitbatch import BatchReader
from reconciler.source.gitwords import clean_stderr, object_ids, redact_text, redact_url, suspect

_SOURCE_HEAD = "refs/kgr/source-HEAD"
_GENERATION = "kgr-generation"  # a file in the cache: changes each time the cache is rebuilt
_SHALLOW = "shallow roots are not allowed to be updated"
# git asks ``maintenance run --auto`` after every fetch: one more process (5-8 ms of a cycle's
# fetch) that nearly always finds nothing to do. The cache turns that off in its own config
# and asks once every MAINTENANCE_EVERY fetches (the first of each process included), so its
# packs are folded together as before, a little later.
MAINTENANCE_EVERY = 20
_NO_AUTO_MAINTENANCE = "[maintenance]\n\tauto = false\n"
T = TypeVar("T")


class CacheDamaged(GitError):
    """A git command failed in a way that points at a damaged cache (``cause``: why).

    Raised inside GitSource and handled there (the cache is rebuilt and the operation
    retried); it only escapes when the damage is not confirmed locally or survives a
    rebuild, and then it is an ordinary, retryable GitError."""

    def __init__(self, message: str, cause: str, *, certain: bool = False):
        super().__init__(message)
        self.cause = cause
        self.certain = certain  # no local check needed (an object a tree names is missing)


class GitCache:
    """The cache repository of one source, and how it is opened, locked, healed and fetched."""

    # set by GitSource.__init__
    url: str
    cache_path: Path
    env: dict[str, str]
    log: logging.Logger
    fetch_url: str
    is_local: bool
    cache_rebuilds: int
    fetches_done: int  # fetches this object ran (see MAINTENANCE_EVERY)
    _repo: gitcmd.Repository | None
    _batch: BatchReader | None
    _refs_fresh: bool
    _generation: str
    _healing_now: threading.local
    # what is read through the cache, forgotten when it is rebuilt
    _statuses: dict[str, tuple[dict[str, StatusRecord], dict[str, str]]]
    _listings: dict[frozenset[str], tuple[str, dict[str, tuple[str, int]]]]
    _by_role: dict[frozenset[str], tuple[str, dict[str, dict[str, str]]]]
    _origins_at: tuple[str, dict[str, FileOrigin], int] | None
    _loaded: str

    # -- git's words (what they mean: reconciler.source.gitwords) ------------------------

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
        cause = suspect(str(error.stderr or ""))
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
        for sha in object_ids(error.cause):
            read = gitcmd.run(["cat-file", "-p", sha], cwd=self.cache_path, env=env, check=False)
            if read.returncode != 0:
                return True
        self.log.info("git error looked like cache damage but the cache checks out; not rebuilding",
                      extra={"cache": str(self.cache_path), "cause": error.cause})
        return False

    # -- low level ---------------------------------------------------------------------

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
            self._own_maintenance()
        return self._repo

    def _own_maintenance(self) -> None:
        """``maintenance.auto=false`` in the cache's config (see MAINTENANCE_EVERY); a cache
        another process is configuring right now is left to it."""
        try:
            if _NO_AUTO_MAINTENANCE in (self.cache_path / "config").read_text(errors="replace"):
                return
            gitcmd.run(["config", "maintenance.auto", "false"], cwd=self.cache_path, check=False,
                       env={**os.environ, **self.env})
        except OSError:
            pass  # only an optimisation: git then keeps maintaining after each fetch itself

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
            self._by_role = {}
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
        self.fetches_done += 1
        if self.fetches_done % MAINTENANCE_EVERY == 1:
            self._maintain()
        if _SHALLOW in stderr:
            raise GitError(
                f"{self.display_url} is a shallow clone (made with --depth): the reconciler needs the "
                "whole history of the branch. Run `git fetch --unshallow` in it, or clone without --depth.")

    def _maintain(self) -> None:
        """What git's fetch would have run itself: ``maintenance run --auto`` (which folds the
        packs with ``gc --auto``, in the background as git does it). Never an error of the fetch."""
        try:
            done = gitcmd.run(["maintenance", "run", "--auto", "--quiet"], cwd=self.cache_path, check=False,
                              env={**os.environ, **self.env})
        except OSError as e:
            self.log.warning("git maintenance could not start", extra={"cache": str(self.cache_path), "error": str(e)})
            return
        if done.returncode != 0:
            error = redact_text(done.stderr.decode(errors="replace"), self._secrets())
            self.log.warning("git maintenance failed", extra={"cache": str(self.cache_path), "error": error[:300]})

    def fetch_all(self) -> None:
        """Fetch every branch and tag (and, for a local path, its HEAD and remote-tracking
        refs) so ``resolve`` can take any revision a user types."""
        specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        if self.is_local:
            specs += ["+refs/remotes/*:refs/remotes/*", f"+HEAD:{_SOURCE_HEAD}"]
        self._fetch(*specs)
