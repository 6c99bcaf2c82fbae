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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from . import names
from .errors import Problem
from .model import WorkflowDefinition, WorkflowExecution
from .schema_errors import translate
from .statusdoc import StatusRecord, parse_status
from .yamldoc import DEFAULT_MAX_BYTES, YamlDocument, load_documents

DEFAULT_TIMEOUT = "30m"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_PIPELINE = "workflow"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class FileOrigin:
    """Where a declared file comes from in Git history (absent for work-tree validation)."""

    last_commit: str
    last_commit_time: int
    introduced_commit: str
    introduced_time: int
    introduced_seq: int = 0  # position of the introducing commit in history, oldest first


@dataclass(frozen=True)
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
    problems: list[Problem] = field(default_factory=list)

    def find(self, name: str) -> ResolvedExecution | None:
        return next((e for e in self.executions if e.name == name), None)

    @property
    def valid(self) -> bool:
        return not self.problems


def classify(path: str, root: str = "") -> str | None:
    """Role of a file by its place under the watched path: execution, workflow, status."""
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


def spec_hash(document: WorkflowExecution, parameters: Iterable[tuple[str, str]]) -> str:
    """sha256 of the canonical declared spec. ``suspend`` is excluded: releasing a held
    execution is not a change of what runs."""
    spec = document.spec.model_dump(by_alias=True, exclude={"suspend"}, exclude_none=True)
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
        if not names.PARAMETER_NAME.match(key):
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
    catalog: Mapping[tuple[str, str], WorkflowDefinition], have_catalog: bool,
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
    definition = catalog.get((ref.workflow_id, ref.version))
    if definition is None:
        known = sorted(v for (wid, v) in catalog if wid == ref.workflow_id)
        hint = f" (known versions: {', '.join(known)})" if known else " (no such workflowId)"
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
        if key in names.RESERVED_PARAMETERS or not names.PARAMETER_NAME.match(key):
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


def _load_catalog(
    files: Mapping[str, bytes | int], max_bytes: int
) -> tuple[dict[tuple[str, str], WorkflowDefinition], list[Problem]]:
    catalog: dict[tuple[str, str], WorkflowDefinition] = {}
    where: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for file in sorted(files):
        docs, found = load_documents(files[file], file, max_bytes=max_bytes)
        problems.extend(found)
        for doc in docs:
            if doc.data is None:
                continue
            try:
                definition = WorkflowDefinition.model_validate(doc.data)
            except ValidationError as e:
                problems.extend(translate(e, doc, WorkflowDefinition))
                continue
            seen: set[str] = set()
            for i, p in enumerate(definition.spec.parameters):
                path = ("spec", "parameters", i, "name")
                if not names.PARAMETER_NAME.match(p.name):
                    problems.append(doc.problem(path, "parameter-name",
                                                f"parameter name {p.name!r} must match ^[A-Z][A-Z0-9_]*$"))
                elif p.name in names.RESERVED_PARAMETERS:
                    problems.append(doc.problem(path, "parameter-reserved",
                                                f"{p.name} is reserved and always passed by the reconciler"))
                if p.name in seen:
                    problems.append(doc.problem(path, "duplicate-parameter",
                                                f"parameter {p.name} is declared twice"))
                seen.add(p.name)
            if definition.key in catalog:
                problems.append(doc.problem(("spec", "version"), "duplicate-workflow",
                                            f"{definition.key[0]}@{definition.key[1]} is already "
                                            f"defined in {where[definition.key]}"))
                continue
            catalog[definition.key] = definition
            where[definition.key] = file
    return catalog, problems


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
    decl = Declaration()
    decl.catalog, catalog_problems = _load_catalog(roles["workflow"], max_bytes)
    decl.problems.extend(catalog_problems)
    have_catalog = bool(roles["workflow"])
    parsed = [
        _parse_execution(file, roles["execution"][file], decl.catalog, have_catalog,
                         origins.get(file), max_bytes)
        for file in sorted(roles["execution"])
    ]
    files_by_name: dict[str, list[str]] = {}
    for item in parsed:
        if item.name is not None:
            files_by_name.setdefault(item.name, []).append(item.file)
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
            problems = tuple(sorted(item.problems))
            decl.invalid.append(InvalidExecution(item.file, item.name, problems, item.origin))
            decl.problems.extend(problems)
    for file in sorted(roles["status"]):
        record = parse_status(roles["status"][file], file)
        if record is not None:
            decl.statuses[record.name] = record
    decl.executions.sort(key=lambda e: e.order_key)
    return decl


@dataclass
class _Parsed:
    """One execution file after checking; keeps no YAML nodes (memory at 10 000 files)."""

    file: str
    name_position: tuple[int | None, int | None]
    name: str | None
    problems: list[Problem]
    resolved: ResolvedExecution | None
    origin: FileOrigin | None


def _parse_execution(
    file: str, raw: bytes | int, catalog: Mapping[tuple[str, str], WorkflowDefinition],
    have_catalog: bool, origin: FileOrigin | None, max_bytes: int,
) -> _Parsed:
    doc, problems = _single_document(raw, file, max_bytes)
    item = _Parsed(file, (None, None), None, problems, None, origin)
    if doc is None:
        return item
    raw_meta = doc.data.get("metadata")
    raw_name = raw_meta.get("name") if isinstance(raw_meta, dict) else None
    if isinstance(raw_name, str) and names.DNS1123_LABEL.match(raw_name) and len(raw_name) <= 63:
        item.name = raw_name
        item.name_position = doc.position(("metadata", "name"))
    raw_spec = doc.data.get("spec")
    params, param_problems = _parameter_values(
        doc, raw_spec.get("parameters") if isinstance(raw_spec, dict) else None
    )
    problems.extend(param_problems)
    try:
        execution = WorkflowExecution.model_validate(doc.data)
    except ValidationError as e:
        problems.extend(translate(e, doc, WorkflowExecution))
        return item
    found, catalog_problems = _against_catalog(doc, execution, params, catalog, have_catalog)
    problems.extend(catalog_problems)
    if found is not None and not problems:
        item.resolved = _resolve(execution, file, params, found, origin)
    return item


def _resolve(
    execution: WorkflowExecution, file: str, params: list[tuple[str, str]],
    found: tuple[str, str, str], origin: FileOrigin | None,
) -> ResolvedExecution:
    image, engine, pipeline = found
    config = execution.spec.execution_config
    timeout = config.timeout or DEFAULT_TIMEOUT
    seconds = names.parse_duration(timeout)
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
        timeout=names.format_duration(seconds),
        timeout_seconds=seconds,
        suspend=execution.spec.suspend,
        spec_hash=spec_hash(execution, params),
        origin=origin,
    )
