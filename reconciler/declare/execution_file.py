"""One execution file checked on its own (pure): from bytes to a resolved execution or its problems.

What does not depend on any other file is judged here — one YAML document, the schema,
parameter names and values, what a chain reference says within the file, the catalog
checks against the entry it names — and the result (:class:`ParsedFile`) keeps no YAML
nodes, so a parse cache can hold one per file.  Duplicate names and whether a chain's
references exist or loop are judged across files (:mod:`reconciler.declare.assemble`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from reconciler.declare import names
from reconciler.declare.catalog import Catalog, against_catalog
from reconciler.declare.declared import FileOrigin, ResolvedExecution, internal_error
from reconciler.declare.model import WorkflowExecution, share_fields_sets
from reconciler.declare.schema_errors import translate
from reconciler.declare.yamldoc import YamlDocument, load_documents
from reconciler.errors import Problem

DEFAULT_TIMEOUT = "30m"
DEFAULT_SERVICE_ACCOUNT = "default"


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


@dataclass(slots=True)  # one per execution file, kept by the parse cache: no per-instance __dict__
class ParsedFile:
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

    def copy(self) -> ParsedFile:
        """A copy whose problem list the cross-file step may extend (the cached one stays as parsed)."""
        return ParsedFile(self.file, self.name_position, self.name, list(self.problems), self.resolved, self.origin,
                       self.dependencies, self.workflow, self.data)


def parse_execution_safely(
    file: str, raw: bytes | int, catalog: Catalog, have_catalog: bool, origin: FileOrigin | None,
    max_bytes: int, keep_data: bool = False,
) -> ParsedFile:
    """:func:`_parse_execution`, with any unexpected failure turned into this file's problem."""
    try:
        return _parse_execution(file, raw, catalog, have_catalog, origin, max_bytes, keep_data)
    except Exception as e:
        return ParsedFile(file, (None, None), None, [internal_error(file, e)], None, origin)


def _parse_execution(
    file: str, raw: bytes | int, catalog: Catalog, have_catalog: bool, origin: FileOrigin | None,
    max_bytes: int, keep_data: bool = False,
) -> ParsedFile:
    doc, problems = _single_document(raw, file, max_bytes)
    item = ParsedFile(file, (None, None), None, problems, None, origin)
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
    found, catalog_problems = against_catalog(doc, execution, params, catalog, have_catalog)
    problems.extend(catalog_problems)
    if found is not None and not problems:
        item.resolved = resolve_execution(execution, file, params, found, origin)
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


def resolve_execution(
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
