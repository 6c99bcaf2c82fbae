"""The Git plumbing of the status write-back: the bytes, the commit, its check, the listing.

:mod:`reconciler.record.writeback` decides what to write and when it is durable, and runs the
push/retry loop; this module builds what it pushes and reads what the branch holds, every
git call through :mod:`reconciler.source.gitcmd` (the source's ``_git()`` or ``gitcmd.run``):

* the canonical bytes of a status file (the same state always gives the same bytes) and
  the blob id Git gives them, computed locally;
* the commit message listing every transition, with its trailers;
* the commit itself, built in the bare cache with ``git fast-import`` (no work tree) from
  validated names and quoted paths, and checked before it is pushed: it may touch the
  expected ``status/<name>.yaml`` files and nothing else;
* the status directory's tree kept parsed between commits (:class:`StatusTrees`): a commit
  puts its few files into it and names the new tree to fast-import, instead of fast-import
  reading and writing all 10 000 entries (:mod:`reconciler.source.gitpack`);
* the entries of ``status/`` at a tip (``ls-tree``), or what changed there between two
  tips (one ``diff-tree``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from reconciler.declare.statusdoc import valid_execution_name
from reconciler.errors import GitCommandFailed, GitError
from reconciler.record.status import ExecutionState
from reconciler.record.transitions import Transition
from reconciler.source import gitcmd
from reconciler.source.gitpack import TreeEntries, object_id, pack_objects, write_pack
from reconciler.source.gitsource import GitSource
from reconciler.source.gitwords import clean_stderr

__all__ = ["StatusTrees", "blob_id", "build_commit", "check_commit", "commit_message", "list_status_tree",
           "status_tree_changes", "status_yaml"]

_Dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def status_yaml(state: ExecutionState) -> bytes:
    """The canonical bytes of a status file: the same state always gives the same bytes."""
    header = "# Written by kubernaut-gitops-reconciler. Do not edit: changes are overwritten.\n"
    body: str = yaml.dump(state.to_document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=2**31 - 1)
    return (header + body).encode("utf-8")


def blob_id(data: bytes) -> str:
    """The id Git gives these bytes as a blob (``git hash-object``), computed locally."""
    return object_id("blob", data).hex()


_SAFE_PATH = re.compile(r"[A-Za-z0-9._/-]+", re.ASCII)


def _quote_path(path: str) -> str:
    """A quoted path for the fast-import stream. Only plain path characters are allowed:
    names are validated DNS-1123 labels and the prefix is a checked sub-path, so anything
    else is a bug that must not reach the stream."""
    if not _SAFE_PATH.fullmatch(path) or ".." in path.split("/"):
        raise GitError(f"refusing to write the path {path!r}")
    return f'"{path}"'


def commit_message(changed: list[str], transitions: list[Transition], revision: str,
                   restored: frozenset[str] = frozenset()) -> str:
    by_name = {t.name: t for t in transitions}
    lines = []
    for name in changed:
        t = by_name.get(name)
        if t is None and name in restored:
            lines.append(f"- {name}: status restored (the file on the branch was edited or deleted "
                         "outside the reconciler)")
        elif t is None:
            lines.append(f"- {name}: status updated")
        else:
            arrow = f"{t.from_phase or 'new'} → {t.to_phase}"
            run = f", run {t.run}" if t.run else ""
            lines.append(f"- {name}: {arrow} ({t.reason or t.to_phase}{run})")
    if len(changed) == 1:
        name = changed[0]
        verb = by_name[name].to_phase if name in by_name else "restore" if name in restored else "update"
        subject = f"status: {verb} {name}"
    else:
        subject = f"status: {len(changed)} executions changed"
    return (f"{subject}\n\n" + "\n".join(lines) + "\n\n"
            f"Reconciled-Revision: {revision}\nExecutions-Changed: {len(changed)}\n")




def list_status_tree(source: GitSource, tip: str, directory: str) -> list[tuple[str, str, str, str]]:
    """(status "A", mode, blob id, path) of every entry directly under ``directory`` at ``tip``."""
    try:
        listing = source._git().ls_tree("-z", tip, "--", f"{directory}/")
    except GitCommandFailed as e:
        raise GitError(f"cannot list {directory}/ at {tip[:12]}: {clean_stderr(e, source.url)}") from e
    out = []
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, _, sha = meta.split()
        out.append(("A", mode, sha, path))
    return out



def status_tree_changes(source: GitSource, old: str, tip: str,
                        directory: str) -> list[tuple[str, str, str, str]] | None:
    """What changed directly under ``directory`` between two tips (one ``diff-tree``);
    None when a full listing is simpler — many changes, or any below a subdirectory
    (``ls-tree`` lists a subdirectory itself, as one entry)."""
    try:
        out = str(source._git().diff_tree("-r", "-z", "--raw", "--no-renames", "--no-abbrev", old, tip,
                                               "--", f"{directory}/"))
    except GitCommandFailed:
        return None  # e.g. the old tip is gone after a rebuilt cache: list it all
    fields = out.split("\0")
    changes = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        if not meta.startswith(":"):
            continue
        _, new_mode, _, new_sha, status = meta[1:].split()
        if path.rsplit("/", 1)[0] != directory:
            return None  # not a direct child: never guess, list it all
        changes.append((status[:1], new_mode, new_sha, path))
    return changes if len(changes) <= 5000 else None



def check_commit(source: GitSource, parent: str, commit: str, expected: set[str]) -> None:
    """Before anything is pushed: the commit changes exactly the expected status files."""
    args = ["-r", "-z", "--no-renames", "--name-status"]
    args += [parent, commit] if parent else ["--root", commit]
    try:
        out = str(source._git().diff_tree(*args))
    except GitCommandFailed as e:
        raise GitError(f"cannot check the status commit: {clean_stderr(e, source.url)}") from e
    fields = [f for f in out.split("\0") if f]
    if not parent and fields and fields[0] == commit:
        fields = fields[1:]
    touched = dict(zip(fields[1::2], fields[0::2], strict=False))
    if set(touched) != expected or any(kind not in ("A", "M") for kind in touched.values()):
        raise GitError(f"refusing to push a status commit that touches {sorted(touched)[:5]} "
                       f"instead of {sorted(expected)[:5]}")



class StatusTrees:
    """The status directory's tree as the last status commit left it, kept parsed, so the next
    commit puts its few files in place instead of having fast-import read and write all
    10 000 entries again (:mod:`reconciler.source.gitpack`).  One per store, used under its lock."""

    def __init__(self) -> None:
        self._held: tuple[str, TreeEntries] | None = None  # tree id, its entries
        self.spliced = 0  # trees built here (the rest: by fast-import)

    def forget(self) -> None:
        self._held = None

    def splice(self, source: GitSource, parent: str, directory: str, files: dict[str, bytes]) -> str | None:
        """The id of ``directory``'s tree at ``parent`` with ``files`` put in, that tree and the
        blobs written to the cache in a pack of their own; None when it is not done here — a
        path that is not ``<directory>/<name>.yaml``, no such tree yet, a tree or a cache this
        does not handle — and fast-import then builds it all."""
        if not parent or not files or any(not _direct_status_file(path, directory) for path in files):
            return None
        reader = source._reader()
        found = reader.info([f"{parent}:{directory}"])
        if not found:
            return None
        tree, kind, _ = found[f"{parent}:{directory}"]
        if kind != "tree" or len(tree) != 40:  # (a SHA-256 cache is left to fast-import)
            return None
        held, self._held = self._held, None
        if held is not None and held[0] == tree:
            entries = held[1]
        else:
            raw = reader.contents([tree], kind="tree")
            if raw is None:
                return None
            try:
                entries = TreeEntries.parse(raw[tree])
            except ValueError:
                return None
        objects: dict[bytes, tuple[str, bytes]] = {}
        for path, data in sorted(files.items()):
            blob = object_id("blob", data)
            objects[blob] = ("blob", data)
            entries.put_file(path.rpartition("/")[2].encode(), blob)
        contents = entries.raw()
        new_tree = object_id("tree", contents)
        objects[new_tree] = ("tree", contents)
        try:
            write_pack(Path(source.cache_path) / "objects" / "pack", *pack_objects(list(objects.values())))
        except OSError:
            return None
        self._held = (new_tree.hex(), entries)
        self.spliced += 1
        return new_tree.hex()


def _direct_status_file(path: str, directory: str) -> bool:
    head, _, file = path.rpartition("/")
    return head == directory and file.endswith(".yaml") and valid_execution_name(file[:-5])


def build_commit(source: GitSource, branch: str, name: str, email: str, parent: str, files: dict[str, bytes],
                 message: str, *, tree: tuple[str, str] | None = None) -> str:
    """A commit of ``files`` on top of ``parent`` built with git fast-import (no work tree).
    ``tree``: (directory, id) — the directory's new tree, already in the cache with every
    file of ``files`` in it (:class:`StatusTrees`), is named instead of the files.

    The objects stay in the small pack fast-import writes (``unpackLimit=0``): unpacked,
    every status commit left the whole ``status/`` tree (390 KB at 10 000 files) as a
    loose object and took 10-15 ms longer; ``gc --auto`` after a fetch folds the packs
    together, with deltas, as usual."""
    when = f"{int(time.time())} +0000"
    who = f"{name} <{email}>"
    if any(c in who for c in "\n\0") or who.count("<") != 1 or who.count(">") != 1:
        raise GitError("the commit identity holds characters a commit header cannot")
    out = bytearray()
    ref = f"refs/kgr/status-out/{branch}"
    msg = message.encode("utf-8")
    out += f"commit {ref}\nmark :1\nauthor {who} {when}\ncommitter {who} {when}\ndata {len(msg)}\n".encode()
    out += msg + b"\n"
    if parent:
        out += f"from {parent}\n".encode()
    if tree is not None:
        out += f"M 040000 {tree[1]} {_quote_path(tree[0])}\n".encode()
    else:
        for path, data in sorted(files.items()):
            out += f"M 100644 inline {_quote_path(path)}\ndata {len(data)}\n".encode() + data + b"\n"
    out += b"\nget-mark :1\ndone\n"  # the commit's id on stdout: no rev-parse afterwards
    env = {**os.environ, **source.env}
    try:
        done = gitcmd.run(["-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--done",
                               "--force"], input=bytes(out),
                              cwd=source.cache_path, check=True, env=env)
    except subprocess.CalledProcessError as e:
        raise GitError(f"cannot build the status commit: {e.stderr.decode(errors='replace')[:300]}") from e
    commit = done.stdout.decode(errors="replace").strip()
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise GitError(f"cannot build the status commit: fast-import answered {commit[:80]!r}")
    return commit
