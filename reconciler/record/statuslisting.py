"""What the status branch's tip holds, by execution name, and which of its files are unusable.

The write-back compares blob ids, never contents: a state is durable when the tip holds
exactly its bytes (SPEC §10).  So it needs, at every tip it sees, the blob id of each
``status/<name>.yaml`` and the verdict on each file (a hand-edited or hostile file is
ignored, and named).  That listing is one ``ls-tree`` the first time; after it, one
``diff-tree`` from the tip listed last, and after our own push nothing at all — the files
just pushed are known, and their verdicts are the strict loader's on the bytes pushed.
"""

from __future__ import annotations

import logging

from reconciler.declare.declared import gc_paused
from reconciler.declare.statusdoc import valid_execution_name
from reconciler.record.writeback_git import list_status_tree, status_tree_changes
from reconciler.source.gitsource import GitSource

__all__ = ["NOT_REGULAR", "StatusListing"]

NOT_REGULAR = "not a regular file"


class StatusListing:
    """The listing of one status directory (``<path>/status``) at the tips it is asked about."""

    def __init__(self, source: GitSource, directory: str, log: logging.Logger):
        self.source = source
        self.directory = directory
        self.log = log
        self.checked: dict[str, str | None] = {}  # blob id → why that file is ignored (None: valid)
        self.ignored: dict[str, str] = {}  # path at the tip → why it is not a usable status file
        # tip; name → blob id; path → why, found from the tree alone; name → why its file is
        # not a status document (the verdicts of the blobs listed)
        self._listed: tuple[str, dict[str, str], dict[str, str], dict[str, str]] | None = None

    def blobs_at(self, tip: str) -> dict[str, str]:
        """name → blob id of every usable-looking status file at ``tip``; other files under
        status/ are recorded in :attr:`ignored`.  From the tip listed last it costs what
        changed in between (one ``diff-tree``); otherwise one ``ls-tree``."""
        with gc_paused():
            return self._blobs_at(tip)

    def _blobs_at(self, tip: str) -> dict[str, str]:
        if not tip:
            self._listed = ("", {}, {}, {})
            return {}
        directory = self.directory
        listed = self._listed
        entries: list[tuple[str, str, str, str]] | None = None  # (status, mode, sha, path)
        if listed is not None and listed[0]:
            entries = status_tree_changes(self.source, listed[0], tip, directory)
        if entries is not None and listed is not None:
            blobs, ignored, refused = dict(listed[1]), dict(listed[2]), dict(listed[3])
            judged: set[str] | None = set()  # the names whose verdict may have changed: those listed
        else:
            blobs, ignored, refused, judged = {}, {}, {}, None  # None: every name
            entries = list_status_tree(self.source, tip, directory)
        for status, mode, sha, path in entries:
            file = path[len(directory) + 1:]
            name = file[:-5] if file.endswith(".yaml") else ""
            if name:
                blobs.pop(name, None)
                refused.pop(name, None)
                if judged is not None:
                    judged.add(name)
            ignored.pop(path, None)
            if status == "D":
                continue
            kind = "commit" if mode == "160000" else "tree" if mode == "040000" else "blob"
            if kind != "blob" or mode == "120000":
                ignored[path] = NOT_REGULAR
            elif not valid_execution_name(name):
                ignored[path] = "the file name is not <execution name>.yaml with a DNS-1123 name"
            else:
                blobs[name] = sha
        candidates = blobs if judged is None else {n: blobs[n] for n in judged if n in blobs}
        unchecked = {n: sha for n, sha in candidates.items() if sha not in self.checked}
        if unchecked:
            docs = self.source.parsed.status_docs  # parsed once, shared with recovery and the source
            docs.fit(len(blobs))
            paths = {f"{directory}/{n}.yaml": sha for n, sha in unchecked.items()}
            known = docs.verdicts(paths)  # no document decoded: only whether each is one
            contents = self.source._read_blobs({p: sha for p, sha in paths.items() if p not in known})
            for path, sha in paths.items():
                raw = contents.get(path)
                why = known[path] if raw is None else docs.read(raw, path, sha)[1]
                self.checked[sha] = why
            docs.flush()
        for name, sha in candidates.items():
            why = self.checked.get(sha)
            if why is not None:
                refused[name] = why
        self._listed = (tip, dict(blobs), dict(ignored), dict(refused))
        for name, why in refused.items():
            ignored[f"{directory}/{name}.yaml"] = why
        if ignored or self.ignored:
            for path, why in sorted(ignored.items()):
                if self.ignored.get(path) != why:
                    self.log.warning("status file ignored", extra={"file": path, "error": why})
        self.ignored = dict(sorted(ignored.items()))
        return blobs

    def not_regular(self) -> set[str]:
        """The names whose ``<name>.yaml`` at the listed tip is not a regular file (a directory,
        a link, a submodule): writing that file would replace or delete what is there, which a
        status commit never does (its check refuses it), so those few are not written."""
        listed = self._listed
        prefix = f"{self.directory}/"
        return {path[len(prefix):-5] for path, why in (listed[2] if listed else {}).items()
                if why == NOT_REGULAR and path.startswith(prefix) and path.endswith(".yaml")}

    def pushed(self, built_on: str, commit: str, files: dict[str, bytes], blobs: dict[str, str]) -> None:
        """Our own push of ``commit`` (built on ``built_on``) is the new listed tip: the next
        listing starts from it, so the files just written are not read back from Git and
        checked again (after 10 000 runs were created, a listing from the tip before the push
        re-read all 10 000).  Their verdicts are the strict loader's, on the bytes pushed —
        through the shared document cache, so nothing is parsed twice — exactly what reading
        them back would give."""
        listed = self._listed
        if listed is None or listed[0] != built_on:
            return  # the listing is not of the commit we built on: the next one diffs from it
        docs = self.source.parsed.status_docs
        refused = dict(listed[3])
        for name, blob in blobs.items():
            path = f"{self.directory}/{name}.yaml"
            self.checked[blob] = why = docs.read(files[path], path, blob)[1]
            refused.pop(name, None)
            if why is not None:
                refused[name] = why
        docs.flush()  # and into the parse store: the next process need not parse them either
        ignored = {p: why for p, why in listed[2].items() if p not in files}
        self._listed = (commit, {**listed[1], **blobs}, ignored, refused)
