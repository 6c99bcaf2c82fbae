"""What the persistent parse store keeps of one execution file, and how it is read back.

A checked execution file (:class:`~reconciler.declare.execution_file._Parsed`) is written as plain
JSON — its name, problems, chain references, catalog entry and, when it resolved, its
document and resolution — and rebuilt from it exactly (its origin aside).  What is read
back is checked before it is used: the shapes and types of every field, and the document
through the same pydantic model as a parsed one; anything that does not fit raises, and
the caller counts it a miss.
"""

from __future__ import annotations

import sys
from typing import Any

from reconciler.declare.declared import FileOrigin
from reconciler.declare.execution_file import ParsedFile, resolve_execution
from reconciler.declare.model import WorkflowExecution, share_fields_sets
from reconciler.errors import Problem


def _problem_out(p: Problem) -> list[Any]:
    return [p.file, p.line, p.column, p.path, p.rule, p.message]


def _problem_in(v: Any) -> Problem:
    file, line, column, path, rule, message = v
    if not (isinstance(file, str) and isinstance(path, str) and isinstance(rule, str)
            and isinstance(message, str) and (line is None or type(line) is int)
            and (column is None or type(column) is int)):
        raise TypeError("not a problem")
    return Problem(file, line, column, path, rule, message)


def encode_execution(parsed: ParsedFile) -> dict[str, Any] | None:
    """Plain data that rebuilds ``parsed`` exactly (its origin aside); None when it cannot."""
    resolved = parsed.resolved
    out: dict[str, Any] = {
        "n": parsed.name, "np": list(parsed.name_position), "p": [_problem_out(p) for p in parsed.problems],
        "d": [[target, _problem_out(p)] for target, p in parsed.dependencies],
        "w": list(parsed.workflow) if parsed.workflow is not None else None, "r": None,
    }
    if resolved is not None:
        if parsed.data is None:
            return None
        out["r"] = {"doc": parsed.data, "img": resolved.image, "eng": resolved.engine,
                    "pipe": resolved.pipeline_name, "params": [list(kv) for kv in resolved.parameters],
                    "hash": resolved.spec_hash}
    return out


def decode_execution(value: Any, file: str, origin: FileOrigin | None) -> ParsedFile:
    """The ``ParsedFile`` a stored value describes; raises (a miss) on anything that does not fit."""
    name = value["n"]
    line, column = value["np"]
    if not (name is None or isinstance(name, str)) or not all(x is None or type(x) is int for x in (line, column)):
        raise TypeError("bad name")
    problems = [_problem_in(p) for p in value["p"]]
    dependencies = []
    for target, p in value["d"]:
        if not isinstance(target, str):
            raise TypeError("bad dependency")
        dependencies.append((target, _problem_in(p)))
    workflow = value["w"]
    if workflow is not None:
        wid, version = workflow
        if not (isinstance(wid, str) and isinstance(version, str)):
            raise TypeError("bad workflow")
        workflow = (sys.intern(wid), sys.intern(version))  # a few values, 50 000 executions
    item = ParsedFile(file, (line, column), name, problems, None, origin, dependencies, workflow)
    r = value["r"]
    if r is not None:
        image, engine, pipeline, known_hash = r["img"], r["eng"], r["pipe"], r["hash"]
        params = [(_intern(k), _intern(v)) for k, v in r["params"]]
        if type(image) is not str or type(engine) is not str or type(pipeline) is not str \
                or type(known_hash) is not str or problems or len(known_hash) != 64 \
                or not all(type(k) is str and type(v) is str for k, v in params):
            raise TypeError("bad resolution")
        found = (sys.intern(image), sys.intern(engine), sys.intern(pipeline))  # a few values, shared
        execution = share_fields_sets(WorkflowExecution.model_validate(_shared_strings(r["doc"])))  # judged again
        if execution.metadata.name != name or workflow != (execution.spec.workflow_ref.workflow_id,
                                                           execution.spec.workflow_ref.version):
            raise ValueError("resolution does not match its document")
        item.name = execution.metadata.name  # equal: one string for both
        item.resolved = resolve_execution(execution, file, params, found, origin, known_hash)
    return item


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def _shared_strings(doc: Any) -> Any:
    """``doc`` (a stored execution document, not yet validated) with the strings that repeat
    across executions interned — apiVersion, kind, the parameters' names and values, which
    the resolution's parameters then share: ~0.6 KB less per execution.  Anything of another
    shape is left as it is, for the model to judge."""
    if type(doc) is dict:
        for key in ("apiVersion", "kind"):
            if type(doc.get(key)) is str:
                doc[key] = sys.intern(doc[key])
        spec = doc.get("spec")
        if type(spec) is dict and type(spec.get("parameters")) is dict:
            spec["parameters"] = {_intern(k): _intern(v) for k, v in spec["parameters"].items()}
    return doc


def is_internal_result(parsed: ParsedFile) -> bool:
    """An unexpected failure (``internal-error``) is this run's, not the file's: never stored."""
    return any(p.rule == "internal-error" for p in parsed.problems)
