"""Read declared files from a directory for ``reconciler validate`` (pre-commit, PR CI).

Execution is only ever driven from Git commits (gitsource); validation also has to work
on files that are not committed yet.  Given files or directories, this module finds the
watched root each belongs to (the directory holding ``executions/`` or ``workflows/``),
reads that whole root so cross-file rules (duplicate names, the catalog) apply, and says
which files the user asked about.

It reads what Git mode (``GitSource.snapshot``) would read and nothing else: Git never
follows a symbolic link (it stores the link, which the reconciler ignores), so neither
does this — not a linked file, not a linked directory, not a linked ``executions/`` or
``workflows/``, and no path given on the command line that goes through a link below the
root it belongs to.  Nothing outside the watched root is ever read (a link to ``/`` once
walked the whole filesystem).  Links met while reading are skipped, logged as a warning
naming the file, and listed in :attr:`WorkdirResult.ignored`; validity is unchanged,
exactly as the reconciler would see the commit.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import YAML_SUFFIXES, Declaration, classify
from reconciler.declare.yamldoc import DEFAULT_MAX_BYTES
from reconciler.errors import ConfigError, Problem

ROOT_MARKERS = ("executions", "workflows")
_log = logging.getLogger("reconciler.workdir")


@dataclass
class WorkdirResult:
    problems: list[Problem] = field(default_factory=list)
    checked: int = 0
    files: list[str] = field(default_factory=list)  # the files the user asked about
    declarations: list[Declaration] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # symbolic links not followed (as in Git mode)


def _is_root(directory: Path) -> bool:
    """A directory holding executions/ or workflows/ — a linked one counts (so it is found
    and reported as ignored rather than leaving the user with "no directory found")."""
    return any((directory / m).is_symlink() or (directory / m).is_dir() for m in ROOT_MARKERS)


def _root_of(path: Path) -> Path | None:
    """The root ``path`` belongs to, found lexically (``path`` is absolute, not resolved)."""
    is_dir = path.is_dir() and not path.is_symlink()
    for candidate in [path, *path.parents] if is_dir else list(path.parents):
        if _is_root(candidate):
            return candidate
    return None


def _refuse_links(path: Path, root: Path, given: Path) -> None:
    """ConfigError when ``path`` is, or goes through, a symbolic link at or below ``root``."""
    for part in [path, *path.parents]:
        if part.is_symlink():
            raise ConfigError(f"{given}: {_lexical(part)} is a symbolic link; symbolic links are not followed "
                              "(the reconciler ignores them in Git too)")
        if part == root:
            return


def _roots_below(directory: Path) -> list[Path]:
    roots = []
    for top, dirs, _ in os.walk(directory, followlinks=False):  # never into a linked directory
        here = Path(top)
        if any(m in dirs or (here / m).is_symlink() for m in ROOT_MARKERS):
            roots.append(here)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(set(roots))


def _lexical(path: Path) -> str:
    """``path`` as the user would write it (a link is shown, not what it points to)."""
    try:
        return str(path.relative_to(Path(os.path.abspath("."))))
    except ValueError:
        return str(path)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _prefix(root: Path) -> str:
    shown_root = _display(root)
    return "" if shown_root == "." else shown_root


def _key(root: Path, path: Path) -> str:
    """The name a file below ``root`` is loaded (and its problems reported) under — the same
    whether the command runs at the root or inside ``executions/`` (a name relative to the
    current directory once missed every problem, and a broken file was reported valid)."""
    rel = path.relative_to(root).as_posix()
    prefix = _prefix(root)
    return f"{prefix}/{rel}" if prefix else rel


def _walk(directory: Path, ignored: list[Path]) -> list[Path]:
    """Regular files below ``directory``, sorted, without following any link."""
    found: list[Path] = []
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink():
                ignored.append(path)
            elif entry.is_dir(follow_symlinks=False):
                found.extend(_walk(path, ignored))
            elif entry.is_file(follow_symlinks=False):
                found.append(path)
    return found


def _read_file(path: Path, max_bytes: int) -> bytes | int:
    """Content, or the size of a file too large to read; O_NOFOLLOW: a file swapped for a
    link after the directory was listed is refused, not followed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        return info.st_size if info.st_size > max_bytes else handle.read()


def _read_root(root: Path, max_bytes: int) -> tuple[dict[str, bytes | int], str, list[str]]:
    files: dict[str, bytes | int] = {}
    prefix = _prefix(root)
    links: list[Path] = []
    for marker in (*ROOT_MARKERS, "status"):
        base = root / marker
        if base.is_symlink():
            links.append(base)
            continue
        if not base.is_dir():
            continue
        for file in _walk(base, links):
            if file.suffix not in YAML_SUFFIXES:
                continue
            key = _key(root, file)
            if classify(key, prefix) is None:
                continue
            files[key] = _read_file(file, max_bytes)
    ignored = []
    for link in links:
        rel = link.relative_to(root).as_posix()
        shown = f"{prefix}/{rel}" if prefix else rel
        ignored.append(shown)
        _log.warning("symbolic link ignored: %s (not followed, as the reconciler ignores it in Git)", shown,
                     extra={"file": shown})
    return files, prefix, ignored


def validate_paths(paths: list[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> WorkdirResult:
    """Validate files and directories. Raises ConfigError for a path that does not exist
    or that is (or goes through) a symbolic link below its root."""
    roots: dict[Path, set[str] | None] = {}  # root → requested files (None: everything)
    for given in paths:
        path = Path(os.path.abspath(given))  # lexical: a link in it must stay visible
        if not path.exists() and not path.is_symlink():
            raise ConfigError(f"{given}: no such file or directory")
        root = _root_of(path)
        if root is None and path.is_dir() and not path.is_symlink():
            found = _roots_below(path)
            if not found:
                raise ConfigError(f"{given}: no executions/ or workflows/ directory found here or below")
            for r in found:
                roots[r] = None
            continue
        if root is None:
            if path.is_symlink():
                raise ConfigError(f"{given}: is a symbolic link; symbolic links are not followed "
                                  "(the reconciler ignores them in Git too)")
            raise ConfigError(f"{given}: not inside a directory holding executions/ or workflows/")
        _refuse_links(path, root, given)
        if path.is_dir():
            roots[root] = None
        else:
            wanted = roots.setdefault(root, set())
            if wanted is not None:
                wanted.add(_key(root, path))
    result = WorkdirResult()
    for root, wanted in sorted(roots.items()):
        files, prefix, ignored = _read_root(root, max_bytes)
        result.ignored.extend(ignored)
        decl = load_declaration(files, root=prefix, max_bytes=max_bytes)
        result.declarations.append(decl)
        if wanted is None:
            result.checked += len(files)
            result.files.extend(files)
            result.problems.extend(decl.problems)
        else:
            result.checked += len(wanted)
            result.files.extend(wanted)
            result.problems.extend(p for p in decl.problems if p.file in wanted)
    result.problems.sort()
    return result
