"""``reconciler new``: turn a remediation proposal into a valid execution file (and a branch).

People and the AI propose the same way — a workflow from the catalog, a target, parameters,
optionally a chain (``after`` / ``onFailureOf``) — and must end with a file that passes
``validate`` before anyone reviews it.  This module does everything but printing:

* :class:`Request` is the proposal (flags or a JSON object on stdin, the same fields);
* :func:`scaffold` picks the catalog version (the newest unless given), fills a unique
  DNS-1123 name (never one a file *or a status file* already uses: a status file is the
  history of an execution that may be gone, and reusing its name would make the new one look
  finished), checks required parameters, renders the document and validates it against the
  whole watched root exactly as ``validate`` would — nothing is written when it is invalid;
* :func:`commit_on_branch` creates a branch in the user's work tree and commits only that
  file (other staged or unstaged changes stay as they were), optionally pushing it.

Errors are :class:`ScaffoldError` (``invalid``: the proposal is wrong, exit 1; otherwise a
usage or Git problem, exit 2), each naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from reconciler.declare import names
from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import YAML_SUFFIXES, Declaration
from reconciler.declare.model import API_VERSION, FailureReasonName, WorkflowDefinition
from reconciler.errors import Problem
from reconciler.source import gitcmd
from reconciler.views.plan import Plan, plan_declaration

_NOT_NAME = re.compile(r"[^a-z0-9-]+", re.ASCII)
_DASHES = re.compile(r"-{2,}", re.ASCII)


class ScaffoldError(Exception):
    def __init__(self, message: str, *, invalid: bool = False, problems: tuple[Problem, ...] = ()):
        super().__init__(message)
        self.invalid = invalid
        self.problems = problems


class Request(BaseModel):
    """The proposal; JSON keys are camelCase (``onFailureOf``), unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=False)

    workflow: str = Field(description="workflowId from the catalog.")
    version: str | None = Field(None, description="Catalog version; default: the newest.")
    target: str = Field(description='targetResource: "ns/Kind/name" or "Kind/name".')
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    name: str | None = Field(None, description="metadata.name; default: derived and made unique.")
    after: list[str] = Field(default_factory=list)
    on_failure_of: str | None = None
    on_failure_reasons: list[FailureReasonName] = Field(default_factory=list)
    rationale: str | None = None
    confidence: float | None = None
    remediation_request: str | None = Field(None, description="remediationRequestRef.name, for audit.")
    suspend: bool = False


def parse_request(data: Any) -> Request:
    """A request from decoded JSON; ScaffoldError (usage) naming each bad field."""
    if not isinstance(data, dict):
        raise ScaffoldError("the request must be a JSON object")
    data = {("params" if k == "parameters" else k): v for k, v in data.items()}
    try:
        return Request.model_validate(data)
    except ValidationError as e:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or '(request)'}: {err['msg']}"
                 for err in e.errors(include_url=False)]
        raise ScaffoldError("invalid request: " + "; ".join(lines)) from e


@dataclass
class Scaffold:
    name: str
    file: str  # relative to the watched root, e.g. executions/oom-payment-api-2026-11-21.yaml
    path: Path
    text: str
    declaration: Declaration
    plan: Plan = field(default_factory=Plan)


def read_root(root: Path) -> dict[str, bytes | int]:
    """The declared files under ``root`` as ``validate`` reads them (links are not followed)."""
    files: dict[str, bytes | int] = {}
    for top in ("executions", "workflows", "status"):
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for path in sorted(base.rglob("*")):
            if path.suffix in YAML_SUFFIXES and path.is_file() and not path.is_symlink():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _definition(decl: Declaration, request: Request) -> WorkflowDefinition:
    known = sorted((k for k in decl.catalog if k[0] == request.workflow), key=lambda k: _version_key(k[1]))
    if not known:
        ids = sorted({k[0] for k in decl.catalog})
        raise ScaffoldError(f"workflow: {request.workflow!r} is not in the catalog (known: "
                            f"{', '.join(ids) or 'none; add workflows/*.yaml'})", invalid=True)
    if request.version is None:
        return decl.catalog[known[-1]]
    found = decl.catalog.get((request.workflow, request.version))
    if found is None:
        raise ScaffoldError(f"version: {request.workflow}@{request.version} is not in the catalog (known "
                            f"versions: {', '.join(v for _, v in known)})", invalid=True)
    return found


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+_-]", version))


def _taken(decl: Declaration, files: Mapping[str, bytes | int]) -> set[str]:
    used = {e.name for e in decl.executions} | {i.name for i in decl.invalid if i.name} | set(decl.statuses)
    used |= {Path(f).stem for f in files if f.startswith("status/")}
    return used


def unique_name(request: Request, taken: set[str], today: date) -> str:
    """``<workflow>-<target name>-<date>``, cut to fit 63 characters, then ``-2``, ``-3``…"""
    target = names.parse_target(request.target)
    base = f"{request.workflow}-{target.name}-{today.isoformat()}"
    base = _DASHES.sub("-", _NOT_NAME.sub("-", base.lower())).strip("-")
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        candidate = base[: 63 - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
    raise ScaffoldError("name: could not find a free name; pass --name")


def render_document(request: Request, name: str, workflow_version: str) -> str:
    spec: dict[str, Any] = {}
    if request.remediation_request:
        spec["remediationRequestRef"] = {"name": request.remediation_request}
    spec["workflowRef"] = {"workflowId": request.workflow, "version": workflow_version}
    spec["targetResource"] = request.target
    spec["parameters"] = {k: v if isinstance(v, str) else _scalar_text(v) for k, v in sorted(request.params.items())}
    for key, value in (("after", request.after), ("onFailureOf", request.on_failure_of),
                       ("onFailureReasons", request.on_failure_reasons), ("confidence", request.confidence),
                       ("rationale", request.rationale)):
        if value not in (None, []):
            spec[key] = value
    if request.suspend:
        spec["suspend"] = True
    doc = {"apiVersion": API_VERSION, "kind": "WorkflowExecution", "metadata": {"name": name}, "spec": spec}
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return "# scaffolded by `reconciler new`: review before merging\n" + text


def _scalar_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def scaffold(request: Request, root: Path, *, today: date) -> Scaffold:
    """Validate the proposal against the watched ``root`` and render its file (not written)."""
    try:
        names.parse_target(request.target)
    except ValueError as e:
        raise ScaffoldError(f"target: {e}", invalid=True) from None
    files = read_root(root)
    decl = load_declaration(files)
    definition = _definition(decl, request)
    declared = {p.name for p in definition.spec.parameters}
    missing = [p for p in definition.spec.parameters if p.required and p.name not in request.params]
    if missing:
        about = "; ".join(f"{p.name}{f' ({p.description.strip()})' if p.description else ''}" for p in missing)
        raise ScaffoldError(f"params: {definition.spec.workflow_id}@{definition.spec.version} is missing the "
                            f"required parameter(s) {about} (--param NAME=VALUE)", invalid=True)
    if definition.spec.parameters:
        unknown = sorted(set(request.params) - declared)
        if unknown:
            raise ScaffoldError(f"params: {', '.join(unknown)} not declared by {definition.spec.workflow_id}@"
                                f"{definition.spec.version} (declared: {', '.join(sorted(declared))})", invalid=True)
    taken = _taken(decl, files)
    if request.name is not None:
        if request.name in taken:
            raise ScaffoldError(f"name: {request.name!r} is already used by an execution or its status "
                                "history; choose another or leave --name out", invalid=True)
        name = request.name
    else:
        name = unique_name(request, taken, today)
    rel = f"executions/{name}.yaml"
    text = render_document(request, name, definition.spec.version)
    with_new = load_declaration({**files, rel: text.encode()})
    mine = tuple(p for p in with_new.problems if p.file == rel)
    if mine:
        raise ScaffoldError(f"the scaffolded {rel} would be invalid", invalid=True, problems=mine)
    plan = plan_declaration(with_new)
    related = {name, *(request.after or []), *([request.on_failure_of] if request.on_failure_of else [])}
    plan.entries = [e for e in plan.entries if e.name in related]
    return Scaffold(name, rel, root / rel, text, with_new, plan)


def write(result: Scaffold) -> None:
    result.path.parent.mkdir(parents=True, exist_ok=True)
    with open(result.path, "x", encoding="utf-8") as out:  # never overwrite
        out.write(result.text)


def _git(cwd: Path, *args: str) -> str:
    done = gitcmd.run(args, cwd=cwd, text=True)
    if done.returncode != 0:
        raise ScaffoldError(f"git {args[0]}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def check_branch(root: Path, branch: str) -> None:
    """Before anything is written: a work tree, a valid and unused branch name."""
    _git(root, "rev-parse", "--show-toplevel")
    if gitcmd.run(["check-ref-format", "--branch", branch], cwd=root).returncode:
        raise ScaffoldError(f"--branch: {branch!r} is not a valid branch name")
    if gitcmd.run(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=root).returncode == 0:
        raise ScaffoldError(f"--branch: {branch} already exists")


def commit_on_branch(result: Scaffold, branch: str, *, push: bool = False, remote: str = "origin") -> str:
    """Switch the work tree to a new ``branch`` from HEAD and commit only the new file.
    Returns the commit id; with ``push``, pushes the branch to ``remote`` (never forced)."""
    root = result.path.parent.parent
    _git(root, "switch", "-c", branch)
    _git(root, "add", "--", str(result.path))
    message = (f"Add execution {result.name}\n\nScaffolded by `reconciler new`; validated against the "
               "catalog. Merging this pull request approves the run.")
    _git(root, "commit", "-q", "-m", message, "--only", "--", str(result.path))
    commit = _git(root, "rev-parse", "HEAD")
    if push:
        _git(root, "push", "-q", "-u", remote, f"refs/heads/{branch}:refs/heads/{branch}")
    return commit
