"""Write execution status back to Git: one commit per cycle, pushed without force (SPEC §7).

The status files are the audit trail, so the rules are strict:

* a file is written only when its content changes, and all changes of one cycle go into
  one commit by the configured bot identity, whose message lists every transition and
  carries ``Reconciled-Revision:`` and ``Executions-Changed:`` trailers;
* commits are built in the bare cache with ``git fast-import`` on top of the status
  branch's *current* tip — no work tree, no merge — and pushed as a fast-forward;
* a rejected push (someone pushed meanwhile) means: fetch, rebuild the same files on the
  new tip, push again, with backoff.  Nothing is ever force-pushed, so no foreign commit
  can be lost; and because status is recomputed every cycle from the cluster plus the
  previous status, a write-back that finally fails is repaired by the next one;
* status files are never deleted: they are the history;
* the remote is the only proof of durability: a file counts as written when the fetched
  tip of the status branch holds exactly its bytes (blob ids compared, nothing re-read),
  which is what the cycle asks before it releases a lock (SPEC §10);
* status is monotonic: when a push is rebuilt on a new tip, a file the bot (another
  replica) already moved further — terminal beats started beats pending — is left as it is;
* the import stream is built only from validated names and quoted paths, and the commit
  is checked before it is pushed: it may touch ``status/<name>.yaml`` of the expected
  names and nothing else (a hostile name can never add, delete or rename another file);
* every push attempt, retries included, checks leadership right before it is sent.

The bytes, the commit (fast-import, with the status tree put together in place when it can
be) and its check are :mod:`reconciler.record.writeback_git`'s, what the tip holds is
:mod:`reconciler.record.statuslisting`'s; this module is the store and its push/retry loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress
from operator import is_not, itemgetter, ne

from reconciler.declare.statusdoc import read_status_document, status_path, valid_execution_name
from reconciler.errors import GitCommandFailed, GitError, NotLeader
from reconciler.record.status import ExecutionState, from_document, progress_rank
from reconciler.record.statushistory import Committer, recorded_states
from reconciler.record.statuslisting import StatusListing
from reconciler.record.transitions import Transition
from reconciler.record.writeback_git import (
    StatusTrees,
    blob_id,
    build_commit,
    check_commit,
    commit_message,
    status_yaml,
)
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import clean_stderr


@dataclass(frozen=True)
class Identity:
    name: str = "kubernaut-reconciler"
    email: str = "kubernaut-reconciler@users.noreply.invalid"


class GitStatusStore:
    """A StatusStore that commits ``status/<name>.yaml`` files and pushes them.

    It is *authoritative*: after a restart its states come from the bot's own commits
    (:mod:`statushistory`), never from whatever the tip's files say now.
    """

    authoritative = True

    def __init__(self, source: GitSource, *, branch: str | None = None, identity: Identity | None = None,
                 attempts: int = 8, base_delay: float = 0.2, max_delay: float = 5.0,
                 sleep: Callable[[float], None] | None = None, logger: logging.Logger | None = None,
                 fence: Callable[[], bool] | None = None):
        self.source = source
        self.branch = branch or source.branch
        self.identity = identity or Identity()
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stopping = threading.Event()  # set on shutdown: stop retrying at a safe point
        self.sleep = sleep or self.stopping.wait
        self.log = logger or logging.getLogger("reconciler.writeback")
        self.fence = fence or (lambda: True)  # leadership, checked right before every push
        self._states: dict[str, ExecutionState] | None = None
        # name → (state, its bytes, their blob id); bytes None: a recovered version not read
        # from Git (its verdict was in the parse cache) — read by blob id if it is ever pushed
        self._bytes: dict[str, tuple[ExecutionState, tuple[bytes | None, str]]] = {}
        self._known: dict[str, str] = {}  # name → blob id the bot last wrote (or recovered)
        self._tip = ""  # the status branch's tip as last fetched or pushed
        self._tip_blobs: dict[str, str] = {}  # name → blob id of status/<name>.yaml at _tip
        self._listing = StatusListing(source, f"{self._prefix}status", self.log)  # what the tip holds
        self._lock = threading.Lock()
        self.commits = 0
        self.failures = 0
        self.last_commit = ""
        self.pending = False  # a write-back failed; the next save retries it
        # the status branch is the tracked branch (the default): the source's fetch of it
        # updates our ref too, and a refresh right after that fetch needs no second one
        self._shares_fetch = self.branch == source.branch
        if self._shares_fetch:
            spec = f"+refs/heads/{self.branch}:{self._ref()}"
            if spec not in source.also_fetch:
                source.also_fetch.append(spec)
        self._fetches_seen = -1  # source.fetches when this store last read its tip
        self._pushed_from = ""  # the tip the last status commit was built on
        self._tip_fresh = False  # _tip was fetched by this cycle's refresh (see refresh)
        # the states the last save was given (valid names only) and their (bytes, blob id):
        # see _wanted_for
        self._saved: dict[str, ExecutionState] = {}
        self._trees = StatusTrees()  # the status tree, kept parsed between commits
        self._spliced = False  # the last commit's status tree was put together in place
        self._wanted: dict[str, tuple[bytes | None, str]] = {}

    @property
    def ignored(self) -> dict[str, str]:
        """Path at the tip → why it is not a usable status file."""
        return self._listing.ignored

    @property
    def _prefix(self) -> str:
        return f"{self.source.path}/" if self.source.path else ""

    def _ref(self) -> str:
        return f"refs/kgr/status/{self.branch}"

    def _fetch_tip(self, *, reuse: bool = False) -> str:
        """Fetch the status branch; "" when it does not exist yet.  ``reuse``: when the
        source has fetched the (same) branch since this store last looked, take that tip —
        it is as fresh as a fetch of our own would be (a cycle's fetch step, just before)."""
        fetches = self.source.fetches
        if not (reuse and self._shares_fetch and fetches and fetches != self._fetches_seen):  # (0: never fetched)
            try:
                self.source._fetch(f"+refs/heads/{self.branch}:{self._ref()}")
            except GitError as e:
                if "couldn't find remote ref" in str(e).lower():
                    return ""
                raise
        else:
            # that fetch wrote our ref from the same remote branch as the tracked one, whose
            # commit it already asked git for: no second rev-parse
            counted, tip = self.source.fetched
            if counted == fetches and tip:
                self._fetches_seen = fetches
                return tip
        self._fetches_seen = fetches
        return str(self.source._git().rev_parse(self._ref())).strip()

    def load(self) -> dict[str, ExecutionState]:
        """The recorded states: recovered from the bot's commits once, then kept in memory.
        Once recovered, reading never waits for a push in progress (the dashboard calls this)."""
        known = self._states  # one reference read: save() replaces the dict, never mutates it
        if known is not None:
            return dict(known)
        with self._lock:
            if self._states is None:
                tip = self._fetch_tip()
                recorded = recorded_states(self.source, tip, self._prefix,
                                           Committer(self.identity.name, self.identity.email), self.log)
                self._states = dict(recorded.states)
                self._known = dict(recorded.blobs)
                # the bytes of a recovered state are those the bot wrote for it: serialise again
                # only once the state changes (10 000 dumps at start-up otherwise)
                for name, blob in recorded.blobs.items():
                    self._bytes[name] = (recorded.states[name], (recorded.raw.get(name), blob))
                self._tip, self._tip_blobs = tip, self._listing.blobs_at(tip)
            return dict(self._states)

    def states_token(self) -> object | None:
        """The mapping of recorded states itself (None before recovery), for identity checks
        only: every change replaces it, nothing mutates it, so the same object means the same
        states (the cycle's quiet mark).  Never modify it."""
        return self._states

    def forget(self) -> None:
        """Drop what memory holds (on becoming leader: another replica may have written
        since); the next load recovers from the bot's commits on the remote."""
        with self._lock:
            self._states = None

    def refresh(self) -> None:
        """Fetch the status branch's tip (once per cycle): what is durable, what was edited."""
        with self._lock:
            tip = self._fetch_tip(reuse=True)
            if tip != self._tip:
                self._tip, self._tip_blobs = tip, self._listing.blobs_at(tip)
            # the cycle's first push attempt builds on this tip instead of fetching once more:
            # if the branch moved meanwhile the push is refused (never forced) and the retry fetches
            self._tip_fresh = True

    def durable(self, name: str, state: ExecutionState) -> bool:
        """True when the last fetched tip of the remote branch holds exactly this state's file."""
        with self._lock:
            return self._tip_blobs.get(name) == self._serialise(name, state)[1]

    def _serialise(self, name: str, state: ExecutionState) -> tuple[bytes | None, str]:
        """(bytes — None when not read yet —, blob id) of ``state``'s status file: the very
        pair kept for it (a save holds 10 000 of them; no copy each)."""
        cached = self._bytes.get(name)
        if cached is not None and (cached[0] is state or cached[0] == state):
            return cached[1]
        data = status_yaml(state)
        pair = (data, blob_id(data))
        self._bytes[name] = (state, pair)
        return pair

    def _materialise(self, wanted: dict[str, tuple[bytes | None, str]], names: list[str]) -> None:
        """Fill in the bytes of recovered versions among ``names`` (by blob id, from the cache)."""
        unread = {status_path(self._prefix, n): wanted[n][1] for n in names if wanted[n][0] is None}
        if not unread:
            return
        contents = self.source._read_blobs(unread)
        for n in names:
            if wanted[n][0] is None:
                data = contents[status_path(self._prefix, n)]
                if blob_id(data) != wanted[n][1]:
                    raise GitError(f"the cache returned other bytes for {n}'s recorded status")
                wanted[n] = pair = (data, wanted[n][1])
                self._bytes[n] = (self._bytes[n][0], pair)

    def save(self, states: dict[str, ExecutionState], transitions: list[Transition], revision: str) -> None:
        """Commit and push every status whose file on the remote differs from the state.
        Raises GitError when the push keeps failing; the states are kept, so the next
        save retries."""
        with self._lock:
            self._states = dict(states)
            wanted = self._wanted_for(states)
            names = list(wanted)
            tip = self._tip_blobs
            changed = sorted(compress(names, map(ne, map(tip.get, names), map(itemgetter(1), wanted.values()))))
            if not changed:
                self.pending = False
                return
            try:
                self._push(wanted, changed, transitions, revision)
            except GitError:
                self.failures += 1
                self.pending = True
                raise
            self.pending = False

    def _wanted_for(self, states: dict[str, ExecutionState]) -> dict[str, tuple[bytes | None, str]]:
        """(bytes, blob id) of the file of every state with a valid name.  A state that is the
        very object the last save was given keeps that save's entry — its name was checked and
        its bytes are a function of the state — so a cycle that changed a few states of 10 000
        checks and serialises those few (found by one C-level pass, as ``maybe_active`` does)."""
        before = self._saved
        names = list(states)
        stale = list(compress(names, map(is_not, map(before.get, names), states.values())))
        wanted, accepted = dict(self._wanted), dict(states)
        for gone in wanted.keys() - accepted.keys():
            del wanted[gone]
        for name in stale:
            state = states[name]
            if not valid_execution_name(name) or state.name != name:
                self.log.error("status not written: the name is not a valid execution name",
                               extra={"execution": repr(name)[:80]})
                del accepted[name]
                wanted.pop(name, None)
                continue
            wanted[name] = self._serialise(name, state)
        self._saved, self._wanted = accepted, wanted
        return wanted

    def _push(self, wanted: dict[str, tuple[bytes | None, str]], changed: list[str], transitions: list[Transition],
              revision: str) -> None:
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.stopping.is_set():
                raise GitError("shutting down: status push abandoned; the next leader writes it")
            tip = self._tip if attempt == 1 and self._tip_fresh else self._fetch_tip()
            self._tip_fresh = False
            if tip != self._tip:
                self._tip, self._tip_blobs = tip, self._listing.blobs_at(tip)
            todo = [n for n in changed if self._tip_blobs.get(n) != wanted[n][1]]
            blocked = self._listing.not_regular().intersection(todo)
            for name in sorted(blocked):  # the others are still written: one such path blocks only itself
                self.log.error("status not written: the branch holds something other than a regular file "
                               "at its path; remove it there", extra={"execution": name,
                                                                      "file": status_path(self._prefix, name)})
            todo = [n for n in todo if n not in blocked]
            self._materialise(wanted, todo)
            todo = [n for n in todo if not self._further_on_tip(n, wanted[n][0] or b"")]
            if not todo:  # already there (a previous attempt whose reply was lost), or further on
                return
            restored = frozenset(n for n in todo if self._known.get(n) == wanted[n][1])
            files = {status_path(self._prefix, n): wanted[n][0] or b"" for n in todo}
            message = commit_message(todo, transitions, revision, restored)
            commit = self._commit(tip, files, message)
            self._pushed_from = tip
            try:
                self._check_commit(tip, commit, set(files))
            except GitError as e:
                if not self._spliced:
                    raise
                # the tree put together in place is wrong somehow: never push it; fast-import
                # builds the whole commit instead, and that one is checked the same way
                self.log.warning("status tree built in place failed its check; building it with fast-import",
                                 extra={"error": str(e)[:200]})
                self._trees.forget()
                commit = self._commit(tip, files, message, splice=False)
                self._check_commit(tip, commit, set(files))
            if not self.fence():
                raise NotLeader("leadership lost: status push not sent")
            try:
                self.source._git().push("--quiet", "--porcelain", "--", self.source.fetch_url,
                                        f"{commit}:refs/heads/{self.branch}")
            except GitCommandFailed as e:
                # rejected (someone pushed meanwhile) or the remote is unreachable: fetch the
                # new tip, rebuild the same files on it, try again — never force
                text = clean_stderr(e, self.source.url)
                if attempt == self.attempts:
                    raise GitError(f"pushing status to {self.source.display_url} failed after "
                                   f"{attempt} attempts: {text}") from e
                self.log.info("status push failed; retrying on the new tip",
                              extra={"attempt": attempt, "branch": self.branch, "error": text[:200]})
                self._backoff(attempt)
                continue
            for n in todo:
                self._tip_blobs[n] = self._known[n] = wanted[n][1]
            self._tip = commit
            self._listing.pushed(self._pushed_from, commit, files, {n: wanted[n][1] for n in todo})
            self.commits += 1
            self.last_commit = commit
            self.log.info("status committed", extra={"commit": commit, "executions": len(todo),
                                                      "restored": len(restored), "revision": revision,
                                                      "branch": self.branch})
            return

    def _further_on_tip(self, name: str, data: bytes) -> bool:
        """Monotonic status: the tip holds a version of this file, written by the bot (another
        replica, a previous leader), that is further on than ours — keep it, never regress."""
        sha = self._tip_blobs.get(name)
        if sha is None or sha == self._known.get(name) or self._listing.checked.get(sha) is not None:
            return False  # nothing there, our own last write (ours is newer), or not a status
        path = status_path(self._prefix, name)
        theirs_raw = self.source._read_blobs({path: sha}).get(path, b"")
        theirs_doc, _ = read_status_document(theirs_raw, path)
        ours_doc, _ = read_status_document(data, path)
        theirs = from_document(theirs_doc) if theirs_doc else None
        ours = from_document(ours_doc) if ours_doc else None
        if theirs is None or ours is None or theirs == ours:
            return False
        mine, other = progress_rank(ours), progress_rank(theirs)
        if other < mine or (other == mine and other < 2):
            return False  # ours is further on, or the fresher observation of the same stage
        # theirs is further on, or both are terminal: terminal is final, the first outcome stands
        try:
            committer = str(self.source._git().log("-1", "--format=%cn%x00%ce", self._tip, "--", path))
        except GitCommandFailed:
            return False
        if committer != f"{self.identity.name}\0{self.identity.email}":
            return False  # a hand edit: restored to the truth
        self.log.warning("status on the branch is further on than ours; kept",
                         extra={"execution": name, "theirs": theirs.phase, "ours": ours.phase})
        if self._states is not None and progress_rank(self._states.get(name, ours)) < progress_rank(theirs):
            self._states = {**self._states, name: theirs}  # copy on write: load() reads without the lock
        return True

    def _commit(self, parent: str, files: dict[str, bytes], message: str, *, splice: bool = True) -> str:
        """A commit of ``files`` on ``parent`` by this store's identity (:func:`build_commit`);
        the status tree put together in place (:class:`StatusTrees`) when it can be."""
        directory = f"{self._prefix}status"
        tree = self._trees.splice(self.source, parent, directory, files) if splice else None
        self._spliced = tree is not None
        who = (self.identity.name, self.identity.email)
        if tree is not None:
            try:
                return build_commit(self.source, self.branch, *who, parent, files, message, tree=(directory, tree))
            except GitError as e:  # e.g. the tree is unreadable: never a reason to write nothing
                self.log.warning("fast-import refused the status tree built in place; building it whole",
                                 extra={"error": str(e)[:200]})
                self._trees.forget()
                self._spliced = False
        return build_commit(self.source, self.branch, *who, parent, files, message)

    def _check_commit(self, parent: str, commit: str, expected: set[str]) -> None:
        check_commit(self.source, parent, commit, expected)  # before anything is pushed

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        self.sleep(delay * (0.5 + random.random()))
