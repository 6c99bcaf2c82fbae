"""What the reconciler itself recorded, recovered from the history of ``status/`` in Git.

The status file at the branch tip is not evidence of anything: anyone who can push may
have edited or deleted it (SPEC §10).  What the reconciler wrote is still in the history,
in its own commits, so after a restart or a failover the truth about an execution is
the **newest version of its status file that a commit by the bot identity wrote** —
a later hand edit or deletion is ignored here and overwritten by the next write-back.

This is what makes "at most one run per execution, ever" survive a deleted status file:
an execution whose file once recorded a run is known to have started, whatever the tip
says now.  One ``git log`` over ``status/`` finds, for every file, the bot's newest
commit that touched it; one ``git cat-file --batch`` reads those versions; each goes
through the strict status loader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reconciler.declare.declared import gc_paused
from reconciler.declare.statusdoc import valid_execution_name
from reconciler.errors import GitCommandFailed, GitError
from reconciler.record.status import ExecutionState, from_document
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import clean_stderr


@dataclass(frozen=True)
class Committer:
    """Who the bot commits as; ``None`` fields match anyone (``sync --once``, which has no
    configured identity, takes the newest valid version by anyone)."""

    name: str | None = None
    email: str | None = None

    def matches(self, name: str, email: str) -> bool:
        return (self.name is None or self.name == name) and (self.email is None or self.email == email)


@dataclass
class RecordedStatus:
    states: dict[str, ExecutionState] = field(default_factory=dict)
    blobs: dict[str, str] = field(default_factory=dict)  # name → blob id of that version
    problems: list[str] = field(default_factory=list)  # versions that were ignored, and why
    # name → the bytes of that version, for those read from Git (a version whose verdict
    # the parse cache already held is not read: ``blobs`` names it, the cache has it)
    raw: dict[str, bytes] = field(default_factory=dict)


def recorded_states(source: GitSource, commit: str, prefix: str, committer: Committer,
                    log: logging.Logger | None = None) -> RecordedStatus:
    """For every ``<prefix>status/<name>.yaml`` ever written at or before ``commit``: the
    newest version committed by ``committer`` that is a valid status document."""
    with gc_paused():
        return _recorded_states(source, commit, prefix, committer, log)


def _recorded_states(source: GitSource, commit: str, prefix: str, committer: Committer,
                     log: logging.Logger | None) -> RecordedStatus:
    out = RecordedStatus()
    if not commit:
        return out
    directory = f"{prefix}status"
    try:
        text = source._git().log("--format=%x01%H%x00%cn%x00%ce", "--raw", "--no-abbrev", "--no-renames", "-z",
                                 "--diff-filter=AM", commit, "--", directory)
    except GitCommandFailed as e:
        raise GitError(f"cannot read the history of {directory}/ at {commit[:12]}: "
                       f"{clean_stderr(e, source.url)}") from e
    candidates: dict[str, list[tuple[str, str]]] = {}  # path → (commit, blob) by the bot, newest first
    inside = f"{directory}/"
    for block in text.split("\x01"):
        parts = block.split("\0")
        if len(parts) < 3:
            continue
        sha, name, email = parts[0].strip("\n"), parts[1], parts[2]
        if not committer.matches(name, email):
            continue
        for meta, path in zip(parts[3::2], parts[4::2], strict=False):
            fields = meta.split()
            if len(fields) >= 4 and _directly_in(path, inside, directory):
                candidates.setdefault(path, []).append((sha, fields[3]))
    # newest first; fall back to an older bot version only when the newest is unreadable
    docs = source.parsed.status_docs  # each blob parsed once, shared with the tip's readers (and the store)
    depth = 0
    while candidates:
        wanted = {path: versions[depth] for path, versions in candidates.items() if depth < len(versions)}
        if not wanted:
            break
        docs.fit(len(wanted))
        known = docs.preload({path: blob for path, (_, blob) in wanted.items()})
        blobs = source._read_blobs({path: blob for path, (_, blob) in wanted.items() if path not in known})
        for path, (version, blob) in wanted.items():
            raw = blobs.get(path)
            data, why = known[path] if raw is None else docs.read(raw, path, blob)
            state = from_document(data) if data is not None else None
            if state is None or not valid_execution_name(state.name):
                out.problems.append(f"{path} at {version[:12]}: {why or 'not a status'}")
                continue
            out.states[state.name] = state
            out.blobs[state.name] = blob
            if raw is not None:
                out.raw[state.name] = raw
            candidates.pop(path, None)
        docs.flush()
        candidates = {p: v for p, v in candidates.items() if p in wanted}
        depth += 1
    if out.problems and log is not None:
        for problem in out.problems:
            log.warning("status version ignored", extra={"error": problem})
    return out


def _directly_in(path: str, inside: str, directory: str) -> bool:
    """``PurePosixPath(path).parent == PurePosixPath(directory)``, by string for Git's clean paths."""
    if "//" in path or "/." in path or path.startswith(("./", "/", ".")) or path.endswith("/") \
            or "//" in directory or "." in directory.split("/") or directory.startswith("/") or not directory:
        return PurePosixPath(path).parent == PurePosixPath(directory)
    return path.startswith(inside) and "/" not in path[len(inside):] and path[len(inside):] not in ("", ".")
