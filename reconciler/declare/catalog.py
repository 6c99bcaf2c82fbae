"""The workflow catalog of a declaration (pure): loading it, and resolving an execution against it.

A catalog file holds workflow definitions; a definition that is invalid, or defined twice,
is not usable, and an execution that refers to it is invalid naming the catalog file.  An
execution takes its image, engine and pipeline from its catalog entry, and its parameters
are checked against the entry's (undeclared, missing required ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from reconciler.declare import names
from reconciler.declare.declared import InvalidExecution, capped, internal_error
from reconciler.declare.model import WorkflowDefinition, WorkflowExecution
from reconciler.declare.schema_errors import translate
from reconciler.declare.yamldoc import YamlDocument, load_documents
from reconciler.errors import Problem

DEFAULT_PIPELINE = "workflow"


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


def load_catalog(files: Mapping[str, bytes | int], max_bytes: int) -> Catalog:
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
            problems = [internal_error(file, e)]
            catalog.unreadable.append(file)
        if problems:
            catalog.invalid.append(InvalidExecution(file, None, capped(problems)))
    for key in catalog.broken:
        catalog.entries.pop(key, None)
        catalog.files.pop(key, None)
    return catalog


def against_catalog(
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
