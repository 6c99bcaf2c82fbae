"""From the files of a watched repository to validated, resolved executions (pure).

Input: a mapping of repository-relative path → bytes (read from a Git commit, or from a
directory for ``validate``) plus, optionally, where each file came from in history.
Output: a :class:`Declaration` — the catalog, every execution resolved against it (image,
engine, parameters as strings, spec hash, run name), every invalid file with *all* its
problems, and the recorded statuses.  One bad file never hides or blocks another.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from . import names
from .errors import Problem
from .model import WorkflowDefinition, WorkflowExecution, share_fields_sets
from .schema_errors import translate
from .statusdoc import StatusRecord, parse_status_reporting
from .yamldoc import DEFAULT_MAX_BYTES, YamlDocument, load_documents

DEFAULT_TIMEOUT = "30m"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_PIPELINE = "workflow"
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


# chain fields left out of the hash while they hold their defaults, so the hash of every
# execution written before chains existed is unchanged (no SpecChangedAfterStart on upgrade)
_OMITTED_WHEN_DEFAULT = {"after": [], "onFailureReasons": [], "overrideBreaker": False}


def spec_hash(document: WorkflowExecution, parameters: Iterable[tuple[str, str]]) -> str:
    """sha256 of the canonical declared spec. ``suspend`` is excluded: releasing a held
    execution is not a change of what runs.  The chain fields (``after``, ``onFailureOf``,
    ``onFailureReasons``, ``overrideBreaker``) are included: they decide whether and when it
    runs, so editing them after start is ``SpecChangedAfterStart`` like any other edit."""
    spec = document.spec.model_dump(by_alias=True, exclude={"suspend"}, exclude_none=True)
    for key, default in _OMITTED_WHEN_DEFAULT.items():
        if spec.get(key) == default:
            spec.pop(key, None)
    spec["parameters"] = dict(parameters)
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _single_document(
    raw: bytes | int, file: str, max_bytes: int
) -> tuple[YamlDocument | None, list[Problem]]:
    docs, problems = load_documents(raw, file, max_bytes=max_bytes)
    if problems:
        return None, problems
    docs = [d for d in docs if d.data is not None]
    if not docs:
        return None, [Problem(file, None, None, "", "empty-document", "file holds no YAML document")]
    if len(docs) > 1:
        return None, [
            Problem(file, docs[1].position(())[0], None, "", "multiple-documents",
                    "an execution file holds exactly one document; split it into several files")
        ]
    if not isinstance(docs[0].data, dict):
        return None, [docs[0].problem((), "wrong-type", "the document must be a mapping")]
    return docs[0], []


def _parameter_values(doc: YamlDocument, raw: Any) -> tuple[list[tuple[str, str]], list[Problem]]:
    values: list[tuple[str, str]] = []
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        return values, problems
    for key, value in raw.items():
        path = ("spec", "parameters", key)
        if not names.PARAMETER_NAME.fullmatch(key):
            problems.append(doc.problem(path, "parameter-name",
                                        f"parameter name {key!r} must match ^[A-Z][A-Z0-9_]*$ "
                                        "(UPPER_SNAKE_CASE)"))
        elif key in names.RESERVED_PARAMETERS:
            problems.append(doc.problem(path, "parameter-reserved",
                                        f"{key} is reserved: the reconciler sets it from "
                                        "spec.targetResource"))
        if isinstance(value, bool):
            text = doc.plain_text(path) or ("true" if value else "false")
        elif isinstance(value, int | float):
            text = doc.plain_text(path) or str(value)
        elif isinstance(value, str):
            text = value
        else:
            got = 'null (write "" for an empty value)' if value is None else type(value).__name__
            problems.append(doc.problem(path, "parameter-value",
                                        f"parameter value must be a string, number or boolean, "
                                        f"got {got}"))
            continue
        values.append((key, text))
    return sorted(values), problems


def _against_catalog(
    doc: YamlDocument, execution: WorkflowExecution, params: list[tuple[str, str]],
    catalog: Catalog, have_catalog: bool,
) -> tuple[tuple[str, str, str] | None, list[Problem]]:
    """Resolve (image, engine, pipeline) and check parameters against the catalog."""
    ref = execution.spec.workflow_ref
    base = ("spec", "workflowRef")
    problems: list[Problem] = []
    if not have_catalog:
        if ref.container_image is None:
            return None, [doc.problem((*base, "containerImage"), "missing-field",
                                      "required field 'containerImage' is missing (there is no "
                                      "workflow catalog to supply it)")]
        return (ref.container_image, ref.execution_engine or "tekton",
                ref.pipeline_name or DEFAULT_PIPELINE), []
    wanted = (ref.workflow_id, ref.version)
    broken_in = catalog.broken.get(wanted)
    if broken_in:
        return None, [doc.problem(base, "catalog-entry-invalid",
                                  f"workflow {ref.workflow_id}@{ref.version} is defined by an invalid "
                                  f"or duplicated catalog entry in {', '.join(broken_in)}; fix the "
                                  "catalog first")]
    definition = catalog.entries.get(wanted)
    if definition is None:
        known = sorted(v for (wid, v) in catalog.entries if wid == ref.workflow_id)
        hint = f" (known versions: {', '.join(known)})" if known else " (no such workflowId)"
        if catalog.unreadable:
            hint += f"; {', '.join(catalog.unreadable)} could not be read and may define it"
        path = (*base, "version") if known else (*base, "workflowId")
        return None, [doc.problem(path, "unknown-workflow",
                                  f"workflow {ref.workflow_id}@{ref.version} is not in the "
                                  f"catalog{hint}")]
    d = definition.spec
    for field_name, declared, mine in (
        ("containerImage", d.container_image, ref.container_image),
        ("executionEngine", d.execution_engine, ref.execution_engine),
        ("pipelineName", d.pipeline_name, ref.pipeline_name),
    ):
        if mine is not None and mine != declared:
            problems.append(doc.problem((*base, field_name), "catalog-mismatch",
                                        f"{field_name} {mine!r} differs from the catalog's "
                                        f"{declared!r} for {d.workflow_id}@{d.version}; omit it or "
                                        "make them equal"))
    declared_names = {p.name: p for p in d.parameters}
    given = {k for k, _ in params}
    for key in sorted(given - declared_names.keys()):
        if key in names.RESERVED_PARAMETERS or not names.PARAMETER_NAME.fullmatch(key):
            continue
        problems.append(doc.problem(("spec", "parameters", key), "undeclared-parameter",
                                    f"parameter {key} is not declared by {d.workflow_id}@{d.version}"
                                    f" (declared: {', '.join(sorted(declared_names)) or 'none'})"))
    for p in d.parameters:
        if p.required and p.name not in given:
            about = f" ({p.description.strip()})" if p.description else ""
            problems.append(doc.problem(("spec", "parameters"), "missing-parameter",
                                        f"required parameter {p.name}{about} of "
                                        f"{d.workflow_id}@{d.version} is missing"))
    return (d.container_image, d.execution_engine, d.pipeline_name), problems


@dataclass
class Catalog:
    """The workflow catalog as loaded: the usable definitions, and what could not be used.

    A definition that is invalid, or defined twice, is *not* usable — not even the copy that
    sorts first: which one the author meant is a question for review, and an execution that
    refers to it is invalid (naming the catalog file) in every command, not just ``validate``.
    """

    entries: dict[tuple[str, str], WorkflowDefinition] = field(default_factory=dict)
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # key → where it is defined
    broken: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # key → files
    unreadable: list[str] = field(default_factory=list)  # files whose entries are unknown
    invalid: list[InvalidExecution] = field(default_factory=list)  # per catalog file

    def mark_broken(self, key: tuple[str, str], *files: str) -> None:
        known = self.broken.setdefault(key, [])
        known.extend(f for f in files if f not in known)


def _declared_key(data: Any) -> tuple[str, str] | None:
    """(workflowId, version) of a catalog document, read leniently (even when invalid)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    wid = spec.get("workflowId") if isinstance(spec, dict) else None
    version = spec.get("version") if isinstance(spec, dict) else None
    if isinstance(wid, str) and isinstance(version, str | int | float) and not isinstance(version, bool):
        return (wid, str(version))
    return None


def _definition_problems(doc: YamlDocument) -> tuple[WorkflowDefinition | None, list[Problem]]:
    try:
        definition = WorkflowDefinition.model_validate(doc.data)
    except ValidationError as e:
        return None, translate(e, doc, WorkflowDefinition)
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, p in enumerate(definition.spec.parameters):
        path = ("spec", "parameters", i, "name")
        if not names.PARAMETER_NAME.fullmatch(p.name):
            problems.append(doc.problem(path, "parameter-name",
                                        f"parameter name {p.name!r} must match ^[A-Z][A-Z0-9_]*$"))
        elif p.name in names.RESERVED_PARAMETERS:
            problems.append(doc.problem(path, "parameter-reserved",
                                        f"{p.name} is reserved and always passed by the reconciler"))
        if p.name in seen:
            problems.append(doc.problem(path, "duplicate-parameter",
                                        f"parameter {p.name} is declared twice"))
        seen.add(p.name)
    return definition, problems


def _load_catalog(files: Mapping[str, bytes | int], max_bytes: int) -> Catalog:
    catalog = Catalog()
    where: dict[tuple[str, str], str] = {}
    for file in sorted(files):
        problems: list[Problem] = []
        try:
            docs, found = load_documents(files[file], file, max_bytes=max_bytes)
            problems.extend(found)
            if found:
                catalog.unreadable.append(file)
            for doc in docs:
                if doc.data is None:
                    continue
                key = _declared_key(doc.data)
                definition, doc_problems = _definition_problems(doc)
                problems.extend(doc_problems)
                if key is not None and key in where:
                    problems.append(doc.problem(("spec", "version"), "duplicate-workflow",
                                                f"{key[0]}@{key[1]} is already defined in {where[key]}"))
                    catalog.mark_broken(key, where[key], file)
                    continue
                if key is not None:
                    where[key] = file
                if definition is None or doc_problems:
                    if key is not None:
                        catalog.mark_broken(key, file)
                    elif file not in catalog.unreadable:
                        catalog.unreadable.append(file)
                    continue
                catalog.entries[definition.key] = definition
                catalog.files[definition.key] = file
        except Exception as e:  # defence in depth: never the cycle's error
            problems = [_internal_error(file, e)]
            catalog.unreadable.append(file)
        if problems:
            catalog.invalid.append(InvalidExecution(file, None, capped(problems)))
    for key in catalog.broken:
        catalog.entries.pop(key, None)
        catalog.files.pop(key, None)
    return catalog


def _internal_error(file: str, error: Exception) -> Problem:
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


def load_declaration(
    files: Mapping[str, bytes | int],
    *,
    root: str = "",
    origins: Mapping[str, FileOrigin] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Declaration:
    """Validate and resolve every declared file under ``root``. Never raises for bad input."""
    with gc_paused():
        return _load_declaration(files, root, origins or {}, max_bytes)


def _load_declaration(
    files: Mapping[str, bytes | int], root: str, origins: Mapping[str, FileOrigin], max_bytes: int
) -> Declaration:
    roles: dict[str, dict[str, bytes | int]] = {"execution": {}, "workflow": {}, "status": {}}
    for path, raw in files.items():
        role = classify(path, root)
        if role:
            roles[role][path] = raw
    catalog = _load_catalog(roles["workflow"], max_bytes)
    have_catalog = bool(roles["workflow"])
    parsed = [
        _parse_execution_safely(file, roles["execution"][file], catalog, have_catalog,
                                origins.get(file), max_bytes)
        for file in sorted(roles["execution"])
    ]
    decl = assemble(catalog, parsed)
    for file in sorted(roles["status"]):
        record, why = status_file(file, roles["status"][file])
        if record is not None:
            decl.statuses[record.name] = record
        else:
            decl.ignored_statuses[file] = why
    return decl


def status_file(file: str, raw: bytes | int) -> tuple[StatusRecord | None, str]:
    """One status file: its record, or None and why it is ignored (never raises)."""
    try:
        record, why = parse_status_reporting(raw, file)
    except Exception:  # a damaged status file is treated as absent, never the cycle's error
        _log.warning("unexpected error reading status file %s", file, exc_info=True)
        record, why = None, "this file could not be read"
    return record, "" if record is not None else why or "not a status document"


def assemble(catalog: Catalog, parsed: list[_Parsed]) -> Declaration:
    """The cross-file step: from the catalog and every execution file checked on its own
    (sorted by file) to the declaration — duplicate names and chain references are judged
    here, across files.  The items' problem lists are extended: pass copies of cached ones
    (:meth:`_Parsed.copy`)."""
    decl = Declaration()
    decl.catalog = catalog.entries
    decl.invalid_catalog = catalog.invalid
    decl.catalog_files = catalog.files
    for bad in catalog.invalid:
        decl.problems.extend(bad.problems)
    files_by_name: dict[str, list[str]] = {}
    for item in parsed:
        if item.name is not None:
            files_by_name.setdefault(item.name, []).append(item.file)
    _check_dependencies(parsed)
    for item in parsed:
        others = [f for f in files_by_name.get(item.name or "", []) if f != item.file]
        if others:
            # Neither runs: which one the author meant is a question for review.
            line, col = item.name_position
            item.problems.append(Problem(item.file, line, col, "metadata.name", "duplicate-name",
                                         f"name {item.name!r} is also used by {', '.join(others)}"))
        if item.resolved is not None and not item.problems:
            decl.executions.append(item.resolved)
        else:
            problems = capped(item.problems)
            decl.invalid.append(InvalidExecution(item.file, item.name, problems, item.origin))
            decl.problems.extend(problems)
    decl.executions.sort(key=lambda e: e.order_key)
    return decl


@dataclass(slots=True)  # one per execution file, kept by the parse cache: no per-instance __dict__
class _Parsed:
    """One execution file after checking; keeps no YAML nodes (memory at 10 000 files)."""

    file: str
    name_position: tuple[int | None, int | None]
    name: str | None
    problems: list[Problem]
    resolved: ResolvedExecution | None
    origin: FileOrigin | None
    # (name, problem for it) for each dependency: the problem is built up front,
    # positioned on the reference, and used only if the reference turns out to be wrong
    dependencies: list[tuple[str, Problem]] = field(default_factory=list)
    # (workflowId, version) it refers to, once the document is valid: the catalog entry its
    # catalog checks depend on (a cache keeps the result while that entry is unchanged)
    workflow: tuple[str, str] | None = None
    # the YAML data of a resolved execution, kept only when asked (``keep_data``) and only
    # until a persistent store has written it (it rebuilds ``resolved.document``)
    data: Any = None

    def copy(self) -> _Parsed:
        """A copy whose problem list the cross-file step may extend (the cached one stays as parsed)."""
        return _Parsed(self.file, self.name_position, self.name, list(self.problems), self.resolved, self.origin,
                       self.dependencies, self.workflow, self.data)


def _parse_execution_safely(
    file: str, raw: bytes | int, catalog: Catalog, have_catalog: bool, origin: FileOrigin | None,
    max_bytes: int, keep_data: bool = False,
) -> _Parsed:
    """:func:`_parse_execution`, with any unexpected failure turned into this file's problem."""
    try:
        return _parse_execution(file, raw, catalog, have_catalog, origin, max_bytes, keep_data)
    except Exception as e:
        return _Parsed(file, (None, None), None, [_internal_error(file, e)], None, origin)


def _parse_execution(
    file: str, raw: bytes | int, catalog: Catalog, have_catalog: bool, origin: FileOrigin | None,
    max_bytes: int, keep_data: bool = False,
) -> _Parsed:
    doc, problems = _single_document(raw, file, max_bytes)
    item = _Parsed(file, (None, None), None, problems, None, origin)
    if doc is None:
        return item
    raw_meta = doc.data.get("metadata")
    raw_name = raw_meta.get("name") if isinstance(raw_meta, dict) else None
    if isinstance(raw_name, str) and len(raw_name) <= 63 and names.DNS1123_LABEL.fullmatch(raw_name):
        item.name = raw_name
        item.name_position = doc.position(("metadata", "name"))
    raw_spec = doc.data.get("spec")
    params, param_problems = _parameter_values(
        doc, raw_spec.get("parameters") if isinstance(raw_spec, dict) else None
    )
    problems.extend(param_problems)
    try:
        execution = share_fields_sets(WorkflowExecution.model_validate(doc.data))
    except ValidationError as e:
        problems.extend(translate(e, doc, WorkflowExecution))
        return item
    item.workflow = (execution.spec.workflow_ref.workflow_id, execution.spec.workflow_ref.version)
    item.dependencies, dependency_problems = _dependency_references(doc, execution)
    problems.extend(dependency_problems)
    found, catalog_problems = _against_catalog(doc, execution, params, catalog, have_catalog)
    problems.extend(catalog_problems)
    if found is not None and not problems:
        item.resolved = _resolve(execution, file, params, found, origin)
        if keep_data:
            item.data = doc.data
    return item


def _dependency_references(
    doc: YamlDocument, execution: WorkflowExecution,
) -> tuple[list[tuple[str, Problem]], list[Problem]]:
    """The execution's references to others (checked across files later), and what is wrong
    within this file alone: a reference to itself, after and onFailureOf naming the same
    execution (it could never run), onFailureReasons without onFailureOf."""
    spec = execution.spec
    name = execution.metadata.name
    refs: list[tuple[str, Problem]] = []
    problems: list[Problem] = []
    paths: list[tuple[str, tuple[str | int, ...]]] = [(n, ("spec", "after", i)) for i, n in enumerate(spec.after)]
    if spec.on_failure_of:
        paths.append((spec.on_failure_of, ("spec", "onFailureOf")))
    for target, path in paths:
        if target == name:
            problems.append(doc.problem(path, "dependency-cycle",
                                        f"{name} depends on itself ({doc.file}); it could never start"))
            continue
        refs.append((target, doc.problem(path, "dependency-missing", "")))
    if spec.on_failure_of and spec.on_failure_of in spec.after:
        problems.append(doc.problem(("spec", "onFailureOf"), "dependency-contradiction",
                                    f"{spec.on_failure_of} is in both after (must complete) and onFailureOf "
                                    "(must fail): this execution could never start"))
    if spec.on_failure_reasons and not spec.on_failure_of:
        problems.append(doc.problem(("spec", "onFailureReasons"), "dependency-reasons",
                                    "onFailureReasons narrows onFailureOf, which is not set"))
    return refs, problems


def _check_dependencies(parsed: list[_Parsed]) -> None:
    """Cross-file rules of chains (SPEC §3a): every referenced execution exists on the
    branch (``dependency-missing``), and no chain loops back (``dependency-cycle``, naming
    every file of the loop).  Problems go to the file holding the bad reference."""
    files = {item.name: item.file for item in parsed if item.name is not None}
    graph: dict[str, list[str]] = {}
    for item in parsed:
        if item.name is None:
            continue
        for target, template in item.dependencies:
            if target not in files:
                item.problems.append(replace(template, message=(
                    f"{template.path} names {target!r}, which is not an execution on this branch (no file under "
                    "executions/ declares it)")))
            else:
                graph.setdefault(item.name, []).append(target)
    for loop in _cycles(graph):
        members = set(loop)
        shown = " -> ".join(f"{n} ({files[n]})" for n in (*loop, loop[0]))
        # every file of the loop's names that holds a reference into it (two files may
        # declare one name: the one without such a reference is not part of the loop)
        for item in parsed:
            if item.name not in members:
                continue
            into = next((t for target, t in item.dependencies if target in members), None)
            if into is None:
                continue
            item.problems.append(replace(into, rule="dependency-cycle",
                                         message=f"dependency cycle: {shown}; none of them could ever start"))


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative so a
    chain of thousands cannot overflow the stack), each in a stable order starting at its
    smallest name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph.get(node, [])
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(_loop_order(component, graph))
    return sorted(out)


def _loop_order(component: list[str], graph: Mapping[str, list[str]]) -> list[str]:
    """The members of a cycle in the order of one walk around it, from the smallest name."""
    members = set(component)
    start = min(component)
    order = [start]
    while len(order) < len(component):
        nxt = next((n for n in graph.get(order[-1], []) if n in members and n not in order), None)
        if nxt is None:  # not a simple loop: list the rest by name
            order += sorted(members - set(order))
            break
        order.append(nxt)
    return order


_TIMEOUTS: dict[str, tuple[str, int]] = {}  # declared timeout -> (canonical, seconds): a few values


def _timeout(raw: str) -> tuple[str, int]:
    """The canonical form and seconds of a declared timeout (ValueError if bad), remembered:
    50 000 executions declare a handful of distinct timeouts."""
    known = _TIMEOUTS.get(raw)
    if known is None:
        seconds = names.parse_duration(raw)
        known = (names.format_duration(seconds), seconds)
        if len(_TIMEOUTS) < 1024:
            _TIMEOUTS[raw] = known
    return known


def _resolve(
    execution: WorkflowExecution, file: str, params: list[tuple[str, str]],
    found: tuple[str, str, str], origin: FileOrigin | None, known_hash: str | None = None,
) -> ResolvedExecution:
    """The execution with every default applied (``known_hash``: its spec hash, computed
    before by this same code — a persistent parse store keeps it)."""
    image, engine, pipeline = found
    config = execution.spec.execution_config
    timeout, seconds = _timeout(config.timeout or DEFAULT_TIMEOUT)
    return ResolvedExecution(
        name=execution.metadata.name,
        file=file,
        document=execution,
        workflow_id=execution.spec.workflow_ref.workflow_id,
        version=execution.spec.workflow_ref.version,
        image=image,
        engine=engine,
        pipeline_name=pipeline,
        target=execution.spec.target_resource,
        parameters=tuple(params),
        service_account=config.service_account_name or DEFAULT_SERVICE_ACCOUNT,
        timeout=timeout,
        timeout_seconds=seconds,
        suspend=execution.spec.suspend,
        spec_hash=known_hash if known_hash is not None else spec_hash(execution, params),
        origin=origin,
    )
