"""From the files of a watched repository to validated, resolved executions: what a load gives.

Input: a mapping of repository-relative path → bytes (read from a Git commit, or from a
directory for ``validate``) plus, optionally, where each file came from in history.
Output: a :class:`Declaration` — the catalog, every execution resolved against it (image,
engine, parameters as strings, spec hash, run name), every invalid file with *all* its
problems, and the recorded statuses.  One bad file never hides or blocks another.

This module owns the result and its vocabulary: the :class:`Declaration` with its name
index, the resolved and invalid executions, where a file comes from, which role a path
plays, and how one file's problems are capped.  The rules that produce it are in
:mod:`reconciler.declare.execution_file` (one execution file on its own),
:mod:`reconciler.declare.catalog` (the workflow catalog and what an execution takes from
it) and :mod:`reconciler.declare.assemble` (the checks across files, and the whole load).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from reconciler.declare import names
from reconciler.declare.model import WorkflowDefinition, WorkflowExecution
from reconciler.declare.statusdoc import StatusRecord
from reconciler.errors import Problem

YAML_SUFFIXES = (".yaml", ".yml")
MAX_PROBLEMS_PER_FILE = 100

_log = logging.getLogger("reconciler.declared")


@dataclass(frozen=True, slots=True)  # one per declared file: no per-instance __dict__
class FileOrigin:
    """Where a declared file comes from in Git history (absent for work-tree validation)."""

    last_commit: str
    last_commit_time: int
    introduced_commit: str
    introduced_time: int
    introduced_seq: int = 0  # position of the introducing commit in history, oldest first


@dataclass(frozen=True, slots=True)  # one per execution, kept for the whole process: no __dict__
class ResolvedExecution:
    """A valid execution with every default applied: exactly what will be rendered."""

    name: str
    file: str
    document: WorkflowExecution
    workflow_id: str
    version: str
    image: str
    engine: str
    pipeline_name: str
    target: str
    parameters: tuple[tuple[str, str], ...]
    service_account: str
    timeout: str
    timeout_seconds: int
    suspend: bool
    spec_hash: str
    origin: FileOrigin | None = None

    @property
    def run_name(self) -> str:
        return names.run_name(self.target)

    @property
    def target_label(self) -> str:
        return names.label_value(self.target)

    @property
    def labels(self) -> Mapping[str, str]:
        return self.document.metadata.labels

    @property
    def order_key(self) -> tuple[int, str]:
        """First merged, first served: the commit that introduced the file (its place in
        history, which commit timestamps with one-second resolution cannot tell), then the name."""
        return (self.origin.introduced_seq if self.origin else 0, self.name)


@dataclass(frozen=True)
class InvalidExecution:
    file: str
    name: str | None
    problems: tuple[Problem, ...]
    origin: FileOrigin | None = None


@dataclass
class Declaration:
    revision: str = ""  # the declared revision (last commit touching executions/ or workflows/)
    executions: list[ResolvedExecution] = field(default_factory=list)
    invalid: list[InvalidExecution] = field(default_factory=list)
    catalog: dict[tuple[str, str], WorkflowDefinition] = field(default_factory=dict)
    statuses: dict[str, StatusRecord] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # every problem of every file
    # catalog files with problems (``name`` is None); their entries are not in ``catalog``
    # and the executions that refer to them are in ``invalid``
    invalid_catalog: list[InvalidExecution] = field(default_factory=list)
    catalog_files: dict[tuple[str, str], str] = field(default_factory=dict)  # key → its file
    # status files that are not valid status documents: never trusted, shown by `reconciler status`
    ignored_statuses: dict[str, str] = field(default_factory=dict)  # file → why

    # name → execution, built on first use (valid names are unique: duplicates are invalid)
    _by_name: dict[str, ResolvedExecution] | None = field(default=None, init=False, repr=False, compare=False)

    def find(self, name: str) -> ResolvedExecution | None:
        """O(1): views and the cycle ask this once per execution."""
        return self.index().get(name)

    def index(self) -> dict[str, ResolvedExecution]:
        """name → execution (built once; shared with copies that hold the same executions)."""
        index = self._by_name
        if index is None or len(index) != len(self.executions):
            index = self._by_name = {e.name: e for e in self.executions}
        return index

    def share_index(self, other: Declaration) -> None:
        """Take ``other``'s name index: ``self`` holds the very same executions list."""
        if other.executions is self.executions:
            self._by_name = other.index()

    @property
    def valid(self) -> bool:
        return not self.problems


def classify(path: str, root: str = "") -> str | None:
    """Role of a file by its place under the watched path: execution, workflow, status.

    Git gives clean paths (no ``//``, ``.`` or trailing ``/``): those are judged with plain
    string operations (a ``PurePosixPath`` costs ~25 us, 10 000 times a load); anything
    else goes through :func:`_classify_path`, the definition these must agree with."""
    if root in ("", "."):
        rel = path
    elif _clean(root) and path.startswith(root) and path[len(root):len(root) + 1] == "/":
        rel = path[len(root) + 1:]
    else:
        return _classify_path(path, root)
    if not _clean(rel):
        return _classify_path(path, root)
    top, _, rest = rel.partition("/")
    name = rel[rel.rfind("/") + 1:]
    dot = name.rfind(".")
    if not (0 < dot < len(name) - 1) or name[dot:] not in YAML_SUFFIXES:
        return None
    if top == "executions" and rest:
        return "execution"
    if rest and "/" not in rest and top in ("workflows", "status"):
        return "workflow" if top == "workflows" else "status"
    return None


def _clean(path: str) -> bool:
    return bool(path) and path != "." and "//" not in path and "/./" not in path and \
        not path.startswith(("/", "./")) and not path.endswith(("/", "/."))


def _classify_path(path: str, root: str = "") -> str | None:
    """:func:`classify` by ``PurePosixPath`` (normalising what Git never gives)."""
    rel = PurePosixPath(path)
    if root not in ("", "."):
        try:
            rel = rel.relative_to(root)
        except ValueError:
            return None
    if rel.suffix not in YAML_SUFFIXES or not rel.parts:
        return None
    top = rel.parts[0]
    if top == "executions" and len(rel.parts) >= 2:
        return "execution"
    if top == "workflows" and len(rel.parts) == 2:
        return "workflow"
    if top == "status" and len(rel.parts) == 2:
        return "status"
    return None


def internal_error(file: str, error: Exception) -> Problem:
    _log.warning("unexpected error checking %s", file, exc_info=True)
    return Problem(file, None, None, "", "internal-error",
                   f"this file could not be checked ({type(error).__name__}); please report it")


def capped(problems: Iterable[Problem], limit: int = MAX_PROBLEMS_PER_FILE) -> tuple[Problem, ...]:
    """The first ``limit`` problems of one file, sorted, then one "and N more problems":
    a hostile file must not turn into a report of hundreds of megabytes."""
    ordered = sorted(problems)
    if len(ordered) <= limit:
        return tuple(ordered)
    first_left_out = ordered[limit]
    more = Problem(first_left_out.file, first_left_out.line, first_left_out.column, "",
                   "too-many-problems",
                   f"and {len(ordered) - limit} more problems in this file (only the first "
                   f"{limit} are reported)")
    return (*ordered[:limit], more)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing thousands of files allocates millions of short-lived, acyclic objects; the
    cyclic collector's repeated full passes over them cost a third of the time. Reference
    counting still frees them; the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
