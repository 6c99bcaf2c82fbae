"""Hostile declarations: near-miss formats, crash values, report floods, broken catalogs.

Each class of attack from the hostile-repository corpus, tested as a class:

* every format-checked string field of both documents, with a leading/trailing space,
  newline or non-ASCII digit, is rejected with that field's rule — a ``targetResource: |``
  block scalar must never become a second lock key for one object;
* a value that crashes Python (5 000-digit integers, deep nesting, bad bytes) is that
  file's problem, in execution, catalog and status files alike;
* a file with 90 000 problems is reported in linear work and at most 101 problems;
* an execution that depends on a broken catalog entry is invalid (see test_catalog_agreement.py
  for every command).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reconciler.declare import names
from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import MAX_PROBLEMS_PER_FILE
from reconciler.declare.execution_file import _parameter_values
from reconciler.declare.model import WorkflowExecution
from reconciler.declare.schema_errors import translate
from reconciler.declare.yamldoc import load_documents
from reconciler.views.plan import Action, plan_declaration
from tests.conftest import CATALOG, IMAGE, execution_yaml

EXEC = "executions/x.yaml"
WF = "workflows/w.yaml"


def execution_doc() -> dict[str, Any]:
    """A valid execution using every format-checked string field."""
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": "oom-payment-api", "labels": {"team": "payments"}},
        "spec": {
            "remediationRequestRef": {"name": "rr-7f3a", "namespace": "kubernaut-system"},
            "workflowRef": {"workflowId": "increase-memory-limit", "version": "1.2.0",
                            "containerImage": IMAGE, "executionEngine": "tekton", "pipelineName": "workflow"},
            "targetResource": "payments/Deployment/payment-api",
            "parameters": {"NAMESPACE": "payments", "MEMORY_LIMIT": "1Gi"},
            "executionConfig": {"serviceAccountName": "kubernaut-workflow-runner", "timeout": "30m"},
            "rationale": "free text",
        },
    }


def catalog_doc() -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "increase-memory-limit-1-2-0"},
        "spec": {"workflowId": "increase-memory-limit", "version": "1.2.0", "containerImage": IMAGE,
                 "executionEngine": "tekton", "pipelineName": "workflow",
                 "parameters": [{"name": "NAMESPACE", "required": True},
                                {"name": "MEMORY_LIMIT", "required": True}]},
    }


# (document, path, rule). Not listed, because they are free text passed on verbatim or kept for
# audit only: parameter *values*, rationale, description, labels and annotations.
STRING_FIELDS: list[tuple[str, tuple[str | int, ...], str]] = [
    ("execution", ("apiVersion",), "wrong-value"),
    ("execution", ("kind",), "wrong-value"),
    ("execution", ("metadata", "name"), "name-format"),
    ("execution", ("spec", "remediationRequestRef", "name"), "name-format"),
    ("execution", ("spec", "remediationRequestRef", "namespace"), "name-format"),
    ("execution", ("spec", "workflowRef", "workflowId"), "name-format"),
    ("execution", ("spec", "workflowRef", "version"), "version-format"),
    ("execution", ("spec", "workflowRef", "containerImage"), "image-reference"),
    ("execution", ("spec", "workflowRef", "executionEngine"), "wrong-value"),
    ("execution", ("spec", "workflowRef", "pipelineName"), "name-format"),
    ("execution", ("spec", "targetResource"), "target-format"),
    ("execution", ("spec", "parameters", "<key>"), "parameter-name"),
    ("execution", ("spec", "executionConfig", "serviceAccountName"), "name-format"),
    ("execution", ("spec", "executionConfig", "timeout"), "duration-format"),
    ("catalog", ("apiVersion",), "wrong-value"),
    ("catalog", ("kind",), "wrong-value"),
    ("catalog", ("metadata", "name"), "name-format"),
    ("catalog", ("spec", "workflowId"), "name-format"),
    ("catalog", ("spec", "version"), "version-format"),
    ("catalog", ("spec", "containerImage"), "image-reference"),
    ("catalog", ("spec", "executionEngine"), "wrong-value"),
    ("catalog", ("spec", "pipelineName"), "name-format"),
    ("catalog", ("spec", "parameters", 0, "name"), "parameter-name"),
]
# whitespace of every kind, line breaks, invisible characters and digits that are not ASCII
HOSTILE = [" ", "\t", "\n", "\r\n", "\r", "\v", "\f", "\u00a0", "\u2028", "\u3000", "\u200b", "\ufeff",
           "\u0661", "\uff11", "\u0967", "\u00b2", "\U0001d7ce"]


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _mutated(value: str, where: str, char: str, boundary: int) -> str:
    if where == "prefix":
        return char + value
    if where == "suffix":
        return value + char
    if where == "digit":  # an ASCII digit replaced by a look-alike
        i = next((i for i, c in enumerate(value) if c.isdigit()), None)
        return value + char if i is None else value[:i] + char + value[i + 1:]
    # around a "/" of the target (each of its parts is checked on its own)
    cuts = [i for i, c in enumerate(value) if c == "/"]
    cut = cuts[boundary % len(cuts)] if cuts else len(value)
    return value[:cut] + char + value[cut:] if where == "before-slash" else value[:cut + 1] + char + value[cut + 1:]


def _yaml(doc: dict[str, Any]) -> bytes:
    """JSON is YAML; every non-ASCII character arrives as a YAML escape (\\u0661, \\U0001d7ce)."""
    text = json.dumps(doc, ensure_ascii=False)
    return "".join(c if c.isascii() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                   for c in text).encode()


def _load(execution: dict[str, Any], catalog: dict[str, Any]) -> Any:
    return load_declaration({EXEC: _yaml(execution), WF: _yaml(catalog)})


def test_the_unmutated_documents_are_valid() -> None:
    decl = _load(execution_doc(), catalog_doc())
    assert decl.problems == [] and [e.name for e in decl.executions] == ["oom-payment-api"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(STRING_FIELDS), char=st.sampled_from(HOSTILE),
       where=st.sampled_from(["prefix", "suffix", "digit", "before-slash", "after-slash"]),
       boundary=st.integers(0, 1))
def test_near_miss_values_are_rejected_with_the_fields_rule(
    field: tuple[str, tuple[str | int, ...], str], char: str, where: str, boundary: int,
) -> None:
    kind, path, rule = field
    execution, catalog = execution_doc(), catalog_doc()
    doc = execution if kind == "execution" else catalog
    if path[-1] == "<key>":
        params = _get(doc, path[:-1])
        hostile_key = _mutated("NAMESPACE", where, char, boundary)
        params[hostile_key] = params.pop("NAMESPACE")
        expected_path = "spec.parameters." + hostile_key
    else:
        _set(doc, path, _mutated(_get(doc, path), where, char, boundary))
        expected_path = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
    decl = _load(execution, catalog)
    file = EXEC if kind == "execution" else WF
    found = {(p.file, p.path, p.rule) for p in decl.problems}
    assert (file, expected_path, rule) in found, found
    # never a run (nor a lock key) from a near miss, directly or through the catalog
    assert decl.executions == []
    assert [i.file for i in decl.invalid] == [EXEC]


def test_block_scalar_target_is_not_a_second_lock_key() -> None:
    """The corpus case: the same Deployment, once plain and once as ``|`` (trailing newline)."""
    plain = execution_yaml("first")
    block = execution_yaml("second", params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}").replace(
        "  targetResource: payments/Deployment/payment-api\n",
        "  targetResource: |\n    payments/Deployment/payment-api\n")
    decl = load_declaration({"executions/a.yaml": plain.encode(), "executions/b.yaml": block.encode(),
                             WF: CATALOG.encode()})
    assert {e.target for e in decl.executions} == {"payments/Deployment/payment-api"}
    assert [e.name for e in decl.executions] == ["first"]
    (problem,) = [p for p in decl.problems if p.file == "executions/b.yaml"]
    assert (problem.rule, problem.path, problem.line) == ("target-format", "spec.targetResource", 7)
    assert "\\n" in problem.message  # the newline is shown, not printed
    plan = plan_declaration(decl)
    assert [(e.name, e.action) for e in plan.entries if e.action == Action.CREATE] == [("first", Action.CREATE)]
    assert len({e.run_name for e in plan.entries if e.run_name}) == 1


@pytest.mark.parametrize(("raw", "ok"), [
    ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("24h", 86400), ("0030m", 1800),
    ("30m\n", None), (" 30m", None), ("３0m", None), ("3\u06f0m", None), ("30m ", None), ("1e3s", None),
    ("9" * 5000 + "h", None), ("9" * 8 + "s", None), ("", None), ("0s", None), ("25h", None),
])
def test_timeouts_are_whole_ascii_durations(raw: str, ok: int | None) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            names.parse_duration(raw)
    else:
        assert names.parse_duration(raw) == ok


@pytest.mark.parametrize("bad", ["payments/Deployment/payment-api\n", "payments\n/Deployment/payment-api",
                                 "payments/Deployment\n/payment-api", "payments/Deploymen\u0662/x",
                                 "\npayments/Deployment/payment-api", "payments/Deployment/payment-api\r"])
def test_parse_target_rejects_every_part_with_a_line_break(bad: str) -> None:
    with pytest.raises(ValueError):
        names.parse_target(bad)


# -- values that crash Python become the file's problem -------------------------------------

BIG = "9" * 5000
HEX = "0x" + "f" * 5000
# (case, where the value goes: a function of the value → {path: text}, the value)
CRASHERS = [
    ("5000-digit integer", BIG, "number-too-large"),
    ("5000-digit negative integer", "-" + BIG, "number-too-large"),
    ("5000-digit hex", HEX, "number-too-large"),
    ("5000-digit octal", "0o" + "7" * 5000, "number-too-large"),
    ("101-digit integer", "1" * 101, "number-too-large"),
    ("explicitly tagged integer", "!!int " + BIG, "number-too-large"),
    ("huge float", "1e99999", None),
    ("float of 5000 digits", BIG + ".5", None),
    (".inf", ".inf", None),
    ("-.inf", "-.inf", None),
    (".nan", ".nan", None),
]


def _execution_with(value: str) -> bytes:
    return execution_yaml(extra=f"  confidence: {value}\n").encode()


def _catalog_with(value: str) -> bytes:
    return (CATALOG + f"  description: {value}\n").encode()


def _status_with(value: str) -> bytes:
    return ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecutionStatus\nmetadata: {name: oom-payment-api}\n"
            f"status:\n  phase: Completed\n  reason: {value}\n  executionStatus: {{completedTasks: {value}}}\n").encode()


@pytest.mark.parametrize(("case", "value", "rule"), CRASHERS, ids=[c[0] for c in CRASHERS])
@pytest.mark.parametrize("kind", ["execution", "parameter", "catalog", "status"])
def test_crash_values_are_the_files_problem(kind: str, case: str, value: str, rule: str | None) -> None:
    files: dict[str, bytes | int] = {EXEC: execution_yaml().encode(), WF: CATALOG.encode()}
    if kind == "execution":
        files[EXEC] = _execution_with(value)
    elif kind == "parameter":
        files[EXEC] = execution_yaml(params=f"{{NAMESPACE: p, MEMORY_LIMIT: {value}}}").encode()
    elif kind == "catalog":
        files[WF] = _catalog_with(value)
    else:
        files["status/oom-payment-api.yaml"] = _status_with(value)
    decl = load_declaration(files)  # never raises
    if kind == "status":
        # a damaged status file is treated as absent (the next cycle recomputes it)
        assert decl.problems == [] and [e.name for e in decl.executions] == ["oom-payment-api"]
        if rule is not None:
            assert decl.statuses == {}
        return
    bad_file = WF if kind == "catalog" else EXEC
    if rule is None:  # floats are fine as data; they fail only where a field forbids them
        assert all(p.file == bad_file or bad_file in p.message for p in decl.problems)
        if kind == "parameter":
            assert decl.problems == []
        return
    matching = [p for p in decl.problems if p.rule == rule]
    assert matching and all(p.file == bad_file for p in matching), decl.problems
    assert "too large" in matching[0].message and "quote it" in matching[0].message
    assert matching[0].line is not None
    assert len(matching[0].message) < 200
    assert decl.executions == []  # also through the catalog: the entry is unusable
    others = [p for p in decl.problems if p.file != bad_file]
    assert all(p.file == EXEC and bad_file in p.message for p in others), others


@pytest.mark.parametrize(("case", "raw", "rule"), [
    ("deep flow nesting", b"a: " + b"[" * 100_000 + b"]" * 100_000, "yaml-syntax"),
    ("deep block nesting", b"- " * 900_000 + b"a\n", "yaml-syntax"),
    ("moderately deep nesting", b"a: " + b"[" * 90 + b"]" * 90, "too-complex"),
    ("deep mappings", b"".join(b"  " * i + b"k:\n" for i in range(300)) + b"  " * 300 + b"v\n", "too-complex"),
    ("invalid UTF-8", b"apiVersion: \xff\xfe\n", "encoding"),
    ("lone surrogate bytes", b"kind: \xed\xa0\x80\n", "encoding"),
    ("NUL byte", b"kind: a\x00b\n", "yaml-syntax"),
    ("alias bomb", b"a: &a [x]\nb: [*a, *a]\n", "alias"),
    ("unknown tag", b"a: !!python/name:os.system x\n", "unsupported-tag"),
    ("huge tag", b"a: !" + b"t" * 100_000 + b" x\n", "unsupported-tag"),
    ("huge duplicate key", b"? " + b"k" * 500_000 + b"\n: 1\n? " + b"k" * 500_000 + b"\n: 2\n", "duplicate-key"),
    ("1 MB unknown key", b"apiVersion: kubernaut.ai/v1alpha1\n? " + b"k" * 1_000_000 + b"\n: 1\n", "unknown-field"),
])
@pytest.mark.parametrize("kind", ["execution", "catalog"])
def test_structural_attacks_are_the_files_problem(kind: str, case: str, raw: bytes, rule: str) -> None:
    file = EXEC if kind == "execution" else "workflows/attack.yaml"
    files = {EXEC: execution_yaml().encode(), WF: CATALOG.encode(), file: raw}
    decl = load_declaration(files)
    assert decl.problems, case
    assert all(p.file == file for p in decl.problems), [str(p) for p in decl.problems][:3]
    assert rule in {p.rule for p in decl.problems}, [p.rule for p in decl.problems]
    # the report stays small, whatever the file holds
    assert sum(len(p.message) + len(p.path) for p in decl.problems) < 50_000


def test_every_loader_failure_is_a_problem_in_status_files_too() -> None:
    for raw in (b"[" * 100_000, b"\xff", b"a: &a x\nb: *a\n", _status_with(BIG), b"- " * 900_000):
        decl = load_declaration({"status/x.yaml": raw})
        assert decl.statuses == {} and decl.problems == []


# -- a flood of problems: linear work, bounded report ----------------------------------------

def _flood(count: int, *, where: str) -> bytes:
    if where == "unknown fields":
        body = "".join(f"  unknown{i:05d}: 1\n" for i in range(count))
        return (execution_yaml().replace("spec:\n", "spec:\n" + body)).encode()
    body = "".join(f"    bad_{i:05d}: x\n" for i in range(count))
    return execution_yaml(params="\n" + body).encode()


@pytest.mark.parametrize("where", ["unknown fields", "parameter names"])
def test_a_flood_of_problems_is_reported_in_linear_work(where: str) -> None:
    raw = _flood(90_000, where=where)
    assert 1_200_000 < len(raw) < 2 * 1024 * 1024  # 1.3 MB: under the size and node budgets
    docs, problems = load_documents(raw, EXEC)
    assert problems == []
    (doc,) = docs
    found = _parameter_values(doc, doc.data["spec"].get("parameters"))[1]
    try:
        WorkflowExecution.model_validate(doc.data)
    except ValidationError as error:
        found += translate(error, doc, WorkflowExecution)
    assert len(found) >= 90_000
    # every position was found with a bounded number of node visits per problem (a linear
    # walk per problem would be ~90 000 visits each: 8·10⁹ in all)
    assert doc.steps < 10 * len(found)


@pytest.mark.parametrize("where", ["unknown fields", "parameter names"])
def test_a_flood_of_problems_is_capped_per_file(where: str) -> None:
    decl = load_declaration({EXEC: _flood(90_000, where=where), WF: CATALOG.encode(),
                             "executions/good.yaml": execution_yaml("good", target="a/Deployment/b").encode()})
    mine = [p for p in decl.problems if p.file == EXEC]
    assert len(mine) == MAX_PROBLEMS_PER_FILE + 1
    assert mine[-1].rule == "too-many-problems" and "more problems" in mine[-1].message
    more = int(mine[-1].message.split()[1])
    assert more >= 90_000 - MAX_PROBLEMS_PER_FILE
    assert [e.name for e in decl.executions] == ["good"]  # the flood hides nothing else
    (invalid,) = decl.invalid
    assert len(invalid.problems) == MAX_PROBLEMS_PER_FILE + 1


def test_problem_positions_are_still_exact_after_indexing() -> None:
    text = execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: 1Gi, lower: x, other_bad: y}",
                          extra="  bogus: 1\n  suspnd: true\n")
    decl = load_declaration({EXEC: text.encode(), WF: CATALOG.encode()})
    where = {(p.path, p.rule): (p.line, p.column) for p in decl.problems}
    assert where == {("spec.parameters.lower", "parameter-name"): (8, 49),
                     ("spec.parameters.other_bad", "parameter-name"): (8, 59),
                     ("spec.bogus", "unknown-field"): (9, 3),
                     ("spec.suspnd", "unknown-field"): (10, 3)}


# -- a broken catalog entry makes its executions invalid -------------------------------------

OTHER_IMAGE = "ghcr.io/acme/wf/other@sha256:" + "b" * 64
BROKEN_CATALOGS = [
    ("defined twice with different images",
     {"workflows/a.yaml": CATALOG, "workflows/b.yaml": CATALOG.replace(IMAGE, OTHER_IMAGE)},
     "duplicate-workflow", ["workflows/a.yaml", "workflows/b.yaml"]),
    ("declares the reserved parameter",
     {WF: CATALOG + "    - {name: TARGET_RESOURCE}\n"}, "parameter-reserved", [WF]),
    ("declares a parameter twice", {WF: CATALOG + "    - {name: NAMESPACE}\n"}, "duplicate-parameter", [WF]),
    ("declares a bad parameter name", {WF: CATALOG + "    - {name: lower}\n"}, "parameter-name", [WF]),
    ("has an unknown field", {WF: CATALOG + "  surprise: 1\n"}, "unknown-field", [WF]),
    ("has a bad image", {WF: CATALOG.replace(IMAGE, "not an image")}, "image-reference", [WF]),
    ("has a trailing-newline image", {WF: CATALOG.replace(f"containerImage: {IMAGE}", f'containerImage: "{IMAGE}\\n"')},
     "image-reference", [WF]),
    ("holds a huge integer", {WF: CATALOG + f"  description: {BIG}\n"}, "number-too-large", [WF]),
    ("is not a mapping", {WF: "- " + CATALOG.replace("\n", "\n  ")}, "wrong-type", [WF]),
    ("is a second, invalid copy", {"workflows/a.yaml": CATALOG, "workflows/b.yaml": CATALOG + "  bad: 1\n"},
     "duplicate-workflow", ["workflows/a.yaml", "workflows/b.yaml"]),
]
GOOD_WORKFLOW = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {name: restart}
spec: {workflowId: restart, version: "1.0.0", containerImage: "ghcr.io/acme/wf/restart:1.0"}
"""


@pytest.mark.parametrize(("case", "catalog", "rule", "named"), BROKEN_CATALOGS, ids=[c[0] for c in BROKEN_CATALOGS])
def test_executions_of_a_broken_catalog_entry_are_invalid(case: str, catalog: dict[str, str], rule: str,
                                                          named: list[str]) -> None:
    files = {k: v.encode() for k, v in catalog.items()}
    files[EXEC] = execution_yaml().encode()
    files["workflows/restart.yaml"] = GOOD_WORKFLOW.encode()
    files["executions/ok.yaml"] = execution_yaml("ok", target="a/Deployment/b", params="{}",
                                                 workflow='workflowId: restart, version: "1.0.0"').encode()
    decl = load_declaration(files)
    assert rule in {p.rule for p in decl.problems if p.file in catalog}
    assert [e.name for e in decl.executions] == ["ok"]  # an unrelated execution still runs
    (invalid,) = decl.invalid
    assert invalid.file == EXEC and invalid.name == "oom-payment-api"
    (problem,) = invalid.problems
    assert problem.rule in ("catalog-entry-invalid", "unknown-workflow")
    for file in named:
        assert file in problem.message
    assert ("increase-memory-limit", "1.2.0") not in decl.catalog
    # plan agrees with validate: the dependent is invalid and the catalog file is listed
    plan = plan_declaration(decl)
    actions = {e.file: e.action for e in plan.entries}
    assert actions[EXEC] == Action.INVALID and actions["executions/ok.yaml"] == Action.CREATE
    assert {f for f in catalog if any(p.file == f for p in decl.problems)} <= {
        e.file for e in plan.entries if e.action == Action.INVALID}
    assert plan.failed


def test_an_unreadable_catalog_file_is_named_for_workflows_not_found() -> None:
    decl = load_declaration({"workflows/broken.yaml": b"spec: [", EXEC: execution_yaml().encode(),
                             "workflows/restart.yaml": GOOD_WORKFLOW.encode()})
    (invalid,) = decl.invalid
    (problem,) = invalid.problems
    assert problem.rule == "unknown-workflow" and "workflows/broken.yaml could not be read" in problem.message
