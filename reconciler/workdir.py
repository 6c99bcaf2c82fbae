"""Read declared files from a directory for ``reconciler validate`` (pre-commit, PR CI).

Execution is only ever driven from Git commits (gitsource); validation also has to work
on files that are not committed yet.  Given files or directories, this module finds the
watched root each belongs to (the directory holding ``executions/`` or ``workflows/``),
reads that whole root so cross-file rules (duplicate names, the catalog) apply, and says
which files the user asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .declared import YAML_SUFFIXES, Declaration, classify, load_declaration
from .errors import ConfigError, Problem
from .yamldoc import DEFAULT_MAX_BYTES

ROOT_MARKERS = ("executions", "workflows")


@dataclass
class WorkdirResult:
    problems: list[Problem] = field(default_factory=list)
    checked: int = 0
    files: list[str] = field(default_factory=list)  # the files the user asked about
    declarations: list[Declaration] = field(default_factory=list)


def _is_root(directory: Path) -> bool:
    return any((directory / m).is_dir() for m in ROOT_MARKERS)


def _root_of(path: Path) -> Path | None:
    for candidate in [path, *path.parents] if path.is_dir() else list(path.parents):
        if _is_root(candidate):
            return candidate
    return None


def _roots_below(directory: Path) -> list[Path]:
    roots = []
    for marker in ROOT_MARKERS:
        for found in directory.rglob(marker):
            hidden = any(part.startswith(".") for part in found.relative_to(directory).parts)
            if found.is_dir() and not hidden:
                roots.append(found.parent)
    return sorted(set(roots))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_root(root: Path, max_bytes: int) -> tuple[dict[str, bytes | int], str]:
    files: dict[str, bytes | int] = {}
    shown_root = _display(root)
    prefix = "" if shown_root == "." else shown_root
    for marker in (*ROOT_MARKERS, "status"):
        base = root / marker
        if not base.is_dir():
            continue
        for file in sorted(base.rglob("*")):
            if file.suffix not in YAML_SUFFIXES or not file.is_file() or file.is_symlink():
                continue
            rel = file.relative_to(root).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            if classify(key, prefix) is None:
                continue
            size = file.stat().st_size
            files[key] = size if size > max_bytes else file.read_bytes()
    return files, prefix


def validate_paths(paths: list[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> WorkdirResult:
    """Validate files and directories. Raises ConfigError for a path that does not exist."""
    roots: dict[Path, set[str] | None] = {}  # root → requested files (None: everything)
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        root = _root_of(path.resolve())
        if root is None and path.is_dir():
            found = _roots_below(path.resolve())
            if not found:
                raise ConfigError(f"{path}: no executions/ or workflows/ directory found here or below")
            for r in found:
                roots[r] = None
            continue
        if root is None:
            raise ConfigError(f"{path}: not inside a directory holding executions/ or workflows/")
        if path.is_dir():
            roots[root] = None
        else:
            wanted = roots.setdefault(root, set())
            if wanted is not None:
                wanted.add(_display(path.resolve()))
    result = WorkdirResult()
    for root, wanted in sorted(roots.items()):
        files, prefix = _read_root(root, max_bytes)
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
