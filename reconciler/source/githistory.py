"""The history of a watched source and the load that builds its declaration.

For every declared file: the commit that last changed it and the one that added it (one
``git log`` pass, then only what was pushed since); for every commit: its *declared
revision*, the last commit that changed executions/ or workflows/ (status commits do not
move it, so writing status never looks like new work).  :meth:`GitHistory.load` builds
the validated :class:`~reconciler.declare.declared.Declaration` at a commit: executions and the
catalog once per declared revision, status files at the commit itself, and only the
blobs the :class:`~reconciler.source.parsecache.ParseCache` does not hold are read and parsed.
A :class:`Snapshot` is the declared files themselves at a commit, with their origins.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from reconciler.declare.declared import Declaration, FileOrigin, gc_paused
from reconciler.errors import GitCommandFailed
from reconciler.source.gitread import GitReading
from reconciler.source.parsecache import ParseCache

_STEP_MAX = 200  # commits a load carries the declared revision and origins across in one log
_DECLARED_ROLES = frozenset({"execution", "workflow"})
_STATUS_ROLES = frozenset({"status"})


@dataclass(frozen=True)
class Snapshot:
    """The declared files under the watched path at one commit."""

    commit: str
    files: dict[str, bytes | int]  # content, or the size of a file too large to read
    origins: dict[str, FileOrigin] = field(default_factory=dict)


class GitHistory(GitReading):
    """Declared revisions, file origins, and the declaration at a commit."""

    # set by GitSource.__init__
    parsed: ParseCache
    parse_count: int
    stepped: int
    _declarations: OrderedDict[str, Declaration]
    _load_lock: threading.RLock
    _declared_of: dict[str, str]
    _declared_found: set[str]

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

    def _snapshot(self, commit: str, roles: frozenset[str] | None) -> Snapshot:
        self._ensure_commit(commit)
        wanted = self._listing(commit, roles)
        files: dict[str, bytes | int] = dict(self._read_sized(wanted))
        wants_history = roles is None or bool(roles & {"execution", "workflow"})
        return Snapshot(commit, files, self._origins(commit, self.path) if wants_history else {})

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
        # one origin per (last, first) pair of commits: files added and last changed together
        # (as most are, in batches) share it — 50 000 paths, a few distinct origins
        shared: dict[tuple[tuple[str, int, int], tuple[str, int, int]], FileOrigin] = {}
        origins: dict[str, FileOrigin] = {}
        for path, newest in last.items():
            oldest = first[path]
            origin = shared.get((newest, oldest))
            if origin is None:
                origin = shared[(newest, oldest)] = FileOrigin(newest[0], newest[1], oldest[0], oldest[1], oldest[2])
            origins[path] = origin
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
        if decl is None and declared == commit and commit not in self._statuses:
            self._listings_together(commit, [_DECLARED_ROLES, _STATUS_ROLES])  # one diff-tree for both
        if decl is None:
            listing = self._listing(declared, _DECLARED_ROLES)
            by_role = self._listing_by_role(declared, _DECLARED_ROLES)
            self.parse_count += 1
            decl = self.parsed.declaration(
                by_role["execution"], by_role["workflow"],
                lambda shas: self._read_sized({p: listing[p] for p in shas}),
                self._origins(declared, self.path), self.max_file_bytes)
            decl.revision = declared
            self._declarations[declared] = decl
            while len(self._declarations) > 4:
                self._declarations.popitem(last=False)
        else:
            self._declarations.move_to_end(declared)
        cached = self._statuses.get(commit)
        if cached is None:
            status = self._listing(commit, _STATUS_ROLES)
            cached = self.parsed.status_records(
                self._listing_by_role(commit, _STATUS_ROLES)["status"],
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
