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
* status files are never deleted: they are the history.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import git
import yaml

from .cycle import Transition
from .errors import GitError
from .gitsource import GitSource, _clean_stderr
from .status import ExecutionState, from_document

_Dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class Identity:
    name: str = "kubernaut-reconciler"
    email: str = "kubernaut-reconciler@users.noreply.invalid"


def status_yaml(state: ExecutionState) -> bytes:
    """The canonical bytes of a status file: the same state always gives the same bytes."""
    header = "# Written by kubernaut-gitops-reconciler. Do not edit: changes are overwritten.\n"
    body: str = yaml.dump(state.to_document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=2**31 - 1)
    return (header + body).encode("utf-8")


def commit_message(changed: list[str], transitions: list[Transition], revision: str) -> str:
    by_name = {t.name: t for t in transitions}
    lines = []
    for name in changed:
        t = by_name.get(name)
        if t is None:
            lines.append(f"- {name}: status updated")
        else:
            arrow = f"{t.from_phase or 'new'} → {t.to_phase}"
            run = f", run {t.run}" if t.run else ""
            lines.append(f"- {name}: {arrow} ({t.reason or t.to_phase}{run})")
    subject = (f"status: {by_name[changed[0]].to_phase if len(changed) == 1 and changed[0] in by_name else 'update'}"
               f" {changed[0]}" if len(changed) == 1 else f"status: {len(changed)} executions changed")
    return (f"{subject}\n\n" + "\n".join(lines) + "\n\n"
            f"Reconciled-Revision: {revision}\nExecutions-Changed: {len(changed)}\n")


class GitStatusStore:
    """A StatusStore that commits ``status/<name>.yaml`` files and pushes them."""

    def __init__(self, source: GitSource, *, branch: str | None = None, identity: Identity | None = None,
                 attempts: int = 8, base_delay: float = 0.2, max_delay: float = 5.0,
                 sleep: Callable[[float], None] | None = None, logger: logging.Logger | None = None):
        self.source = source
        self.branch = branch or source.branch
        self.identity = identity or Identity()
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stopping = threading.Event()  # set on shutdown: stop retrying at a safe point
        self.sleep = sleep or self.stopping.wait
        self.log = logger or logging.getLogger("reconciler.writeback")
        self._states: dict[str, ExecutionState] | None = None
        self._written: dict[str, bytes] = {}  # name → bytes last known to be on the remote
        self._lock = threading.Lock()
        self.commits = 0
        self.failures = 0
        self.last_commit = ""
        self.pending = False  # a write-back failed; the next save retries it

    @property
    def _prefix(self) -> str:
        return f"{self.source.path}/status/" if self.source.path else "status/"

    def _ref(self) -> str:
        return f"refs/kgr/status/{self.branch}"

    def _fetch_tip(self) -> str:
        """Fetch the status branch; "" when it does not exist yet."""
        try:
            self.source._fetch(f"+refs/heads/{self.branch}:{self._ref()}")
        except GitError as e:
            if "couldn't find remote ref" in str(e).lower():
                return ""
            raise
        return str(self.source._git().rev_parse(self._ref())).strip()

    def load(self) -> dict[str, ExecutionState]:
        """The recorded states: read from the status branch once, then kept in memory."""
        with self._lock:
            if self._states is None:
                self._states = {}
                tip = self._fetch_tip()
                if tip:
                    files = self.source.snapshot(tip, frozenset({"status"})).files
                    for path, raw in files.items():
                        if isinstance(raw, int):
                            continue
                        try:
                            data = yaml.safe_load(raw)
                        except yaml.YAMLError:
                            self.log.warning("unreadable status file ignored", extra={"file": path})
                            continue
                        state = from_document(data) if isinstance(data, dict) else None
                        if state is not None:
                            self._states[state.name] = state
                            self._written[state.name] = raw
            return dict(self._states)

    def save(self, states: dict[str, ExecutionState], transitions: list[Transition], revision: str) -> None:
        """Commit and push every status whose file changed. Raises GitError when the push
        keeps failing; the states are kept, so the next save retries."""
        with self._lock:
            self._states = dict(states)
            wanted = {name: status_yaml(state) for name, state in states.items()}
            changed = sorted(n for n, data in wanted.items() if self._written.get(n) != data)
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

    def _push(self, wanted: dict[str, bytes], changed: list[str], transitions: list[Transition],
              revision: str) -> None:
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.stopping.is_set():
                raise GitError("shutting down: status push abandoned; the next leader writes it")
            tip = self._fetch_tip()
            on_remote = self._remote_files(tip, changed)
            todo = [n for n in changed if on_remote.get(n) != wanted[n]]
            if not todo:  # someone (a previous attempt whose reply was lost) already pushed it
                self._written.update({n: wanted[n] for n in changed})
                return
            commit = self._commit(tip, {n: wanted[n] for n in todo}, commit_message(todo, transitions, revision))
            try:
                self.source._git().push("--quiet", "--porcelain", "--", self.source.fetch_url,
                                        f"{commit}:refs/heads/{self.branch}")
            except git.GitCommandError as e:
                # rejected (someone pushed meanwhile) or the remote is unreachable: fetch the
                # new tip, rebuild the same files on it, try again — never force
                text = _clean_stderr(e, self.source.url)
                if attempt == self.attempts:
                    raise GitError(f"pushing status to {self.source.display_url} failed after "
                                   f"{attempt} attempts: {text}") from e
                self.log.info("status push failed; retrying on the new tip",
                              extra={"attempt": attempt, "branch": self.branch, "error": text[:200]})
                self._backoff(attempt)
                continue
            self._written.update({n: wanted[n] for n in changed})
            self.commits += 1
            self.last_commit = commit
            self.log.info("status committed", extra={"commit": commit, "executions": len(todo),
                                                      "revision": revision, "branch": self.branch})
            return

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        self.sleep(delay * (0.5 + random.random()))

    def _remote_files(self, tip: str, names: list[str]) -> dict[str, bytes]:
        if not tip:
            return {}
        files = self.source.snapshot(tip, frozenset({"status"})).files
        out = {}
        for name in names:
            raw = files.get(f"{self._prefix}{name}.yaml")
            if isinstance(raw, bytes):
                out[name] = raw
        return out

    def _commit(self, parent: str, files: dict[str, bytes], message: str) -> str:
        """A commit of ``files`` on top of ``parent`` built with git fast-import (no work tree)."""
        when = f"{int(time.time())} +0000"
        who = f"{self.identity.name} <{self.identity.email}>"
        out = bytearray()
        ref = f"refs/kgr/status-out/{self.branch}"
        msg = message.encode("utf-8")
        out += f"commit {ref}\nauthor {who} {when}\ncommitter {who} {when}\ndata {len(msg)}\n".encode()
        out += msg + b"\n"
        if parent:
            out += f"from {parent}\n".encode()
        for name, data in sorted(files.items()):
            out += f"M 100644 inline {self._prefix}{name}.yaml\ndata {len(data)}\n".encode() + data + b"\n"
        out += b"done\n"
        env = {**os.environ, **self.source.env}
        try:
            subprocess.run(["git", "fast-import", "--quiet", "--done", "--force"], input=bytes(out),
                           cwd=self.source.cache_path, check=True, capture_output=True, env=env)
            commit = subprocess.run(["git", "rev-parse", ref], cwd=self.source.cache_path, check=True,
                                    capture_output=True, text=True, env=env).stdout.strip()
        except subprocess.CalledProcessError as e:
            raise GitError(f"cannot build the status commit: {e.stderr.decode(errors='replace')[:300]}") from e
        return commit
