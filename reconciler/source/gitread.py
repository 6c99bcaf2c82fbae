"""Reading a commit of the cache: which declared files it holds, and their contents.

Files are read from the *object database at a resolved commit* (never from a work tree,
which may be dirty or on another branch).  A listing is one ``git ls-tree``; the next one
is the last listing plus a ``diff-tree`` against its commit, so a new commit costs what it
changed.  Sizes come from one ``cat-file --batch-check`` and small reads go through the
long-lived reader (:mod:`reconciler.source.gitbatch`); a file larger than the limit is given as
its size, unread.  An object a tree names that cannot be read means the cache is damaged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from reconciler.declare.declared import classify
from reconciler.errors import GitCommandFailed, GitError, UnknownRevision
from reconciler.source import gitcmd
from reconciler.source.gitcache import CacheDamaged, GitCache
from reconciler.source.gitwords import redact_text, suspect

_FEW = 64  # objects read through the long-lived reader; more go through one ``cat-file --batch``


class GitReading(GitCache):
    """Listings, sizes and contents of the declared files at a commit of the cache."""

    # set by GitSource.__init__
    path: str
    max_file_bytes: int
    _roles: dict[str, str | None]

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
            cause = suspect(stderr) or (lines[-1] if lines else f"cat-file exited with {proc.returncode}")
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

    def _listing(self, commit: str, roles: frozenset[str] | None) -> dict[str, tuple[str, int]]:
        """path → (blob id, size) of the declared files under the watched path at ``commit``
        (nothing is read).  The first listing is one ``ls-tree``; the next ones are the last
        listing plus a ``diff-tree`` against its commit, so a new commit costs what it changed.
        The result is shared: callers must not modify it."""
        key = frozenset(roles) if roles else frozenset()
        previous = self._listings.get(key)
        if previous is not None and previous[0] == commit:
            return previous[1]
        changes = self._changes(previous[0], commit, roles) if previous is not None else None
        if changes is not None:
            self._apply(key, commit, changes, self._sizes([sha for status, _, sha, _ in changes if status != "D"]))
        else:
            self._listings[key] = (commit, self._full_listing(commit, roles))
        return self._listings[key][1]

    def _listing_by_role(self, commit: str, roles: frozenset[str]) -> dict[str, dict[str, str]]:
        """The listing at ``commit`` as role → path → blob id (what the parse cache is given),
        kept beside the listing and brought forward with the same changes, so a new commit
        costs what it changed here too.  Shared: callers must not modify it."""
        listing = self._listing(commit, roles)
        held = self._by_role.get(roles)
        if held is None or held[0] != commit:
            split: dict[str, dict[str, str]] = {role: {} for role in roles}
            for path, (sha, _) in listing.items():
                split[self._role(path) or ""][path] = sha
            held = self._by_role[roles] = (commit, split)
        return held[1]

    def _listings_together(self, commit: str, keys: list[frozenset[str]]) -> None:
        """Bring the listings of ``keys`` (role sets) to ``commit`` with *one* ``diff-tree`` when
        they were all last made at one same other commit (a new commit after a load: the
        declared files and the status files); otherwise leave them to :meth:`_listing`."""
        previous = [self._listings.get(key) for key in keys]
        bases = {p[0] for p in previous if p is not None}
        if len(bases) != 1 or None in previous or commit in bases or not all(keys):  # (): every role
            return
        changes = self._changes(bases.pop(), commit, frozenset().union(*keys))
        if changes is not None:
            sizes = self._sizes([sha for status, _, sha, _ in changes if status != "D"])
            for key in keys:
                self._apply(key, commit, changes, sizes)

    def _changes(self, old: str, commit: str, roles: frozenset[str] | None) -> list[tuple[str, str, str, str]] | None:
        """(status, mode, blob id, path) of what changed under the places of ``roles`` from
        ``old`` to ``commit`` (one ``diff-tree``); None when a full listing is simpler (many
        changes)."""
        try:
            out = self._git().diff_tree("-r", "-z", "--raw", "--no-renames", "--no-abbrev", old, commit,
                                        "--", *self._where(roles))
        except GitCommandFailed as e:
            raise self._error(f"cannot compare {old[:12]} with {commit[:12]}", e) from e
        fields = out.split("\0")
        changes: list[tuple[str, str, str, str]] = []  # (status, mode, sha, path)
        for i in range(0, len(fields) - 1, 2):
            meta, path = fields[i], fields[i + 1]
            if not meta.startswith(":"):
                continue
            _, new_mode, _, new_sha, status = meta[1:].split()
            changes.append((status, new_mode, new_sha, path))
        return changes if len(changes) <= 2000 else None

    def _apply(self, key: frozenset[str], commit: str, changes: list[tuple[str, str, str, str]],
               sizes: dict[str, int]) -> None:
        """The listing of ``key`` (and its split by role, when it is at the same commit) with
        ``changes`` applied: only the files of its roles are kept."""
        base, previous = self._listings[key]
        roles = key or None
        listed = dict(previous)
        held = self._by_role.get(key)
        split = {role: dict(files) for role, files in held[1].items()} if held is not None and held[0] == base \
            else None
        for status, mode, sha, path in changes:
            if listed.pop(path, None) is not None and split is not None:
                split[self._role(path) or ""].pop(path, None)
            kind = "commit" if mode == "160000" else "blob"
            if status == "D" or not self._wanted(roles, mode, kind, path):
                continue
            size = sizes.get(sha)
            if size is None:
                raise CacheDamaged(f"cannot read {path} at {commit[:12]} from the cache {self.cache_path}",
                                   f"object {sha} ({path}) is missing or unreadable", certain=True)
            listed[path] = (sha, size)
            if split is not None:
                split[self._role(path) or ""][path] = sha
        self._listings[key] = (commit, listed)
        if split is not None:
            self._by_role[key] = (commit, split)
        else:
            self._by_role.pop(key, None)

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
                failure = self._error(f"cannot read commit {commit[:12]} in the cache", e)
                if isinstance(failure, CacheDamaged):  # git's words point at the cache
                    raise failure from e
                if attempt == 0:
                    self.fetch_all()
        raise UnknownRevision(f"commit {commit[:12]} not found in {self.display_url}")

