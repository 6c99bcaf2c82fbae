"""Every validation rule, table-driven: the rule id, the field path, the line and the words."""

from __future__ import annotations

import pytest

from reconciler.declare.assemble import load_declaration
from reconciler.errors import Problem
from tests.conftest import CATALOG, IMAGE, execution_yaml

FILE = "executions/x.yaml"


def problems_for(text: str, *, catalog: bool = True, extra_files: dict[str, str] | None = None) -> list[Problem]:
    files: dict[str, bytes | int] = {FILE: text.encode()}
    if catalog:
        files["workflows/increase-memory-limit.yaml"] = CATALOG.encode()
    for k, v in (extra_files or {}).items():
        files[k] = v.encode()
    return load_declaration(files).problems


def test_valid_execution_has_no_problems() -> None:
    assert problems_for(execution_yaml()) == []


# (description, document, rule, field path, substring of the message, line)
CASES = [
    ("unknown top-level field", execution_yaml() + "statuss: {}\n", "unknown-field", "statuss",
     "unknown field 'statuss'", 9),
    ("typo gets a suggestion", execution_yaml(extra="  parametrs: {}\n"), "unknown-field",
     "spec.parametrs", "did you mean 'parameters'", 9),
    ("wrong apiVersion", execution_yaml().replace("kubernaut.ai/v1alpha1", "kubernaut.ai/v1"),
     "wrong-value", "apiVersion", "must be 'kubernaut.ai/v1alpha1'", 1),
    ("wrong kind", execution_yaml().replace("kind: WorkflowExecution", "kind: Workflow"),
     "wrong-value", "kind", "'WorkflowExecution'", 2),
    ("unquoted version is a number", execution_yaml(workflow="workflowId: increase-memory-limit, version: 1.20"),
     "wrong-type", "spec.workflowRef.version", 'quote it: "1.20"', 6),
    ("suspend must be boolean", execution_yaml(extra='  suspend: "yes"\n'), "wrong-type",
     "spec.suspend", "must be true or false", 9),
    ("yes is a string, not a boolean", execution_yaml(extra="  suspend: yes\n"), "wrong-type",
     "spec.suspend", "the string 'yes'", 9),
    ("missing workflowRef", execution_yaml().replace(
        '  workflowRef: {workflowId: increase-memory-limit, version: "1.2.0"}\n', ""),
     "missing-field", "spec.workflowRef", "required field 'workflowRef' is missing", 5),
    ("bad metadata.name", execution_yaml(name="OOM_Payment"), "name-format", "metadata.name",
     "DNS-1123 label", 4),
    ("name too long", execution_yaml(name="a" * 64), "name-format", "metadata.name", "at most 63", 4),
    ("hostile name", execution_yaml(name='"../../etc/passwd"'), "name-format", "metadata.name",
     "'../../etc/passwd'", 4),
    ("target with one part", execution_yaml(target="payment-api"), "target-format",
     "spec.targetResource", "must be 'namespace/Kind/name' or 'Kind/name'", 7),
    ("target lowercase kind", execution_yaml(target="payments/deployment/payment-api"),
     "target-format", "spec.targetResource", "kind 'deployment' must be a Kubernetes Kind", 7),
    ("target bad namespace", execution_yaml(target="Pay_ments/Deployment/x"), "target-format",
     "spec.targetResource", "namespace 'Pay_ments'", 7),
    ("target bad name", execution_yaml(target="payments/Deployment/Payment API"),
     "target-format", "spec.targetResource", "name 'Payment API'", 7),
    ("target with four parts", execution_yaml(target="a/b/Deployment/c"), "target-format",
     "spec.targetResource", "must be", 7),
    ("parameter key lowercase", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: 1Gi, memory: x}"),
     "parameter-name", "spec.parameters.memory", "must match ^[A-Z][A-Z0-9_]*$", 8),
    ("parameter key starts with digit", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: 1Gi, 1X: x}"),
     "parameter-name", "spec.parameters.1X", "UPPER_SNAKE_CASE", 8),
    ("reserved TARGET_RESOURCE", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: 1Gi, TARGET_RESOURCE: x}"),
     "parameter-reserved", "spec.parameters.TARGET_RESOURCE", "reserved", 8),
    ("null parameter value", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: }"),
     "parameter-value", "spec.parameters.MEMORY_LIMIT", 'write "" for an empty value', 8),
    ("list parameter value", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: [1Gi]}"),
     "parameter-value", "spec.parameters.MEMORY_LIMIT", "got list", 8),
    ("parameters not a mapping", execution_yaml(params="[NAMESPACE]"), "wrong-type",
     "spec.parameters", "must be a mapping", 8),
    ("undeclared parameter", execution_yaml(params="{NAMESPACE: p, MEMORY_LIMIT: 1Gi, REPLICAS: '3'}"),
     "undeclared-parameter", "spec.parameters.REPLICAS", "not declared by increase-memory-limit@1.2.0", 8),
    ("missing required parameter", execution_yaml(params="{NAMESPACE: p}"), "missing-parameter",
     "spec.parameters", "required parameter MEMORY_LIMIT (New memory limit)", 8),
    ("unknown workflow version", execution_yaml(workflow='workflowId: increase-memory-limit, version: "9.9.9"'),
     "unknown-workflow", "spec.workflowRef.version", "known versions: 1.2.0", 6),
    ("unknown workflow id", execution_yaml(workflow='workflowId: nope, version: "1.0.0"'),
     "unknown-workflow", "spec.workflowRef.workflowId", "no such workflowId", 6),
    ("image differs from catalog", execution_yaml(
        workflow=f'workflowId: increase-memory-limit, version: "1.2.0", containerImage: "{IMAGE[:-1]}b"'),
     "catalog-mismatch", "spec.workflowRef.containerImage", "differs from the catalog", 6),
    ("engine differs from catalog", execution_yaml(
        workflow='workflowId: increase-memory-limit, version: "1.2.0", executionEngine: job'),
     "catalog-mismatch", "spec.workflowRef.executionEngine", "'job' differs", 6),
    ("engine not allowed", execution_yaml(
        workflow='workflowId: increase-memory-limit, version: "1.2.0", executionEngine: argo'),
     "wrong-value", "spec.workflowRef.executionEngine", "'tekton' or 'job'", 6),
    ("bad image reference", execution_yaml(
        workflow='workflowId: increase-memory-limit, version: "1.2.0", containerImage: "not an image"'),
     "image-reference", "spec.workflowRef.containerImage", "not a valid OCI image reference", 6),
    ("bad timeout", execution_yaml(extra="  executionConfig: {timeout: 30 minutes}\n"),
     "duration-format", "spec.executionConfig.timeout", "not a duration", 9),
    ("zero timeout", execution_yaml(extra="  executionConfig: {timeout: 0s}\n"),
     "duration-format", "spec.executionConfig.timeout", "longer than 0s", 9),
    ("timeout over a day", execution_yaml(extra="  executionConfig: {timeout: 25h}\n"),
     "duration-format", "spec.executionConfig.timeout", "24h maximum", 9),
    ("timeout with a trailing newline", execution_yaml(extra='  executionConfig: {timeout: "30m\\n"}\n'),
     "duration-format", "spec.executionConfig.timeout", "not a duration", 9),
    ("timeout with a non-ASCII digit", execution_yaml(extra="  executionConfig: {timeout: \u0663\u0660m}\n"),
     "duration-format", "spec.executionConfig.timeout", "not a duration", 9),
    ("timeout of 5000 digits", execution_yaml(extra="  executionConfig: {timeout: " + "9" * 5000 + "m}\n"),
     "duration-format", "spec.executionConfig.timeout", "24h maximum", 9),
    ("target as a block scalar", execution_yaml(target="|\n    payments/Deployment/payment-api"),
     "target-format", "spec.targetResource", "'payment-api\\n'", 7),
    ("name with a trailing newline", execution_yaml(name='"oom-payment-api\\n"'), "name-format",
     "metadata.name", "DNS-1123 label", 4),
    ("parameter key with a trailing newline", execution_yaml(params='{NAMESPACE: p, MEMORY_LIMIT: 1Gi, "TARGET_RESOURCE\\n": x}'),
     "parameter-name", "spec.parameters.TARGET_RESOURCE\n", "UPPER_SNAKE_CASE", 8),
    ("image with a trailing newline", execution_yaml(
        workflow=f'workflowId: increase-memory-limit, version: "1.2.0", containerImage: "{IMAGE}\\n"'),
     "image-reference", "spec.workflowRef.containerImage", "not a valid OCI image reference", 6),
    ("version with a trailing newline", execution_yaml(workflow='workflowId: increase-memory-limit, version: "1.2.0\\n"'),
     "version-format", "spec.workflowRef.version", "must look like 1.2.0", 6),
    ("integer of 5000 digits", execution_yaml(extra="  confidence: " + "9" * 5000 + "\n"), "number-too-large",
     "spec.confidence", "integer of 5000 digits is too large", 9),
    ("bad service account", execution_yaml(extra="  executionConfig: {serviceAccountName: Runner!}\n"),
     "name-format", "spec.executionConfig.serviceAccountName", "DNS-1123 subdomain", 9),
    ("confidence above 1", execution_yaml(extra="  confidence: 1.5\n"), "out-of-range",
     "spec.confidence", "less than or equal to 1", 9),
    ("confidence as string", execution_yaml(extra='  confidence: "high"\n'), "wrong-type",
     "spec.confidence", "must be a number", 9),
    ("duplicate key", execution_yaml(extra="  suspend: true\n  suspend: false\n"), "duplicate-key",
     "spec.suspend", "appears twice", 10),
    ("invalid YAML", "apiVersion: [\n", "yaml-syntax", "", "invalid YAML", 2),
    ("tab indentation", "apiVersion: x\n\tkind: y\n", "yaml-syntax", "", "invalid YAML", 2),
    ("python tag", execution_yaml(extra="  rationale: !!python/object/apply:os.system [id]\n"),
     "unsupported-tag", "spec.rationale", "is not allowed", 9),
    ("alias", execution_yaml(extra="  rationale: &a x\n  suspend: *a\n"), "alias", "",
     "aliases", 10),
    ("two documents", execution_yaml() + "---\n" + execution_yaml(name="other"), "multiple-documents",
     "", "exactly one document", 10),
    ("empty file", "", "empty-document", "", "no YAML document", None),
    ("not a mapping", "- a\n- b\n", "wrong-type", "", "must be a mapping", 1),
    ("binary garbage", "\udcff", "encoding", "", "not valid UTF-8", None),
]


@pytest.mark.parametrize(("case", "text", "rule", "path", "words", "line"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule(case: str, text: str, rule: str, path: str, words: str, line: int | None) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    files: dict[str, bytes | int] = {FILE: raw, "workflows/w.yaml": CATALOG.encode()}
    problems = load_declaration(files).problems
    matching = [p for p in problems if p.rule == rule]
    assert matching, f"expected rule {rule}, got {[str(p) for p in problems]}"
    problem = matching[0]
    assert problem.file == FILE
    assert problem.path == path
    assert words in problem.message, problem.message
    assert problem.line == line
    assert f"[{rule}]" in str(problem) and str(problem).startswith(FILE)


def test_image_required_without_catalog() -> None:
    problems = problems_for(execution_yaml(), catalog=False)
    assert [(p.rule, p.path) for p in problems] == [("missing-field", "spec.workflowRef.containerImage")]
    assert "no workflow catalog" in problems[0].message


def test_no_catalog_accepts_any_parameters_with_image() -> None:
    text = execution_yaml(workflow=f'workflowId: x, version: "1", containerImage: "{IMAGE}"',
                          params="{ANYTHING: goes}")
    assert problems_for(text, catalog=False) == []


def test_several_errors_in_one_file_are_all_reported() -> None:
    text = execution_yaml(name="Bad_Name", target="nope",
                          params="{lower: x, TARGET_RESOURCE: y, MEMORY_LIMIT: }",
                          extra="  confidence: 7\n  unknownField: 1\n")
    rules = sorted(p.rule for p in problems_for(text))
    assert rules == sorted(["name-format", "target-format", "parameter-name", "parameter-reserved",
                            "parameter-value", "out-of-range", "unknown-field"])


def test_duplicate_names_across_files_invalidate_both() -> None:
    other = "executions/nested/y.yaml"
    decl = load_declaration({FILE: execution_yaml().encode(), other: execution_yaml().encode(),
                             "workflows/w.yaml": CATALOG.encode()})
    assert decl.executions == []
    by_file = {p.file: p for p in decl.problems if p.rule == "duplicate-name"}
    assert set(by_file) == {FILE, other}
    assert other in by_file[FILE].message and FILE in by_file[other].message


def test_one_bad_file_does_not_block_others() -> None:
    decl = load_declaration({
        FILE: b"apiVersion: [",
        "executions/good.yaml": execution_yaml(name="good").encode(),
        "workflows/w.yaml": CATALOG.encode(),
    })
    assert [e.name for e in decl.executions] == ["good"]
    assert [i.file for i in decl.invalid] == [FILE]


@pytest.mark.parametrize(("yaml_value", "expected"), [
    ("1.10", "1.10"), ("3", "3"), ("true", "true"), ("yes", "yes"), ("0x1F", "0x1F"),
    ("'007'", "007"), ('"with: colon"', "with: colon"), ("2026-11-21", "2026-11-21"),
    ("1e3", "1e3"), ('""', ""),
])
def test_parameter_values_keep_their_written_text(yaml_value: str, expected: str) -> None:
    text = execution_yaml(params=f"{{NAMESPACE: p, MEMORY_LIMIT: {yaml_value}}}")
    decl = load_declaration({FILE: text.encode(), "workflows/w.yaml": CATALOG.encode()})
    assert decl.problems == []
    assert dict(decl.executions[0].parameters)["MEMORY_LIMIT"] == expected


def test_catalog_rules() -> None:
    bad_catalog = CATALOG.replace("{name: CONTAINER, required: false}", "{name: container}") + \
        "    - {name: TARGET_RESOURCE}\n    - {name: NAMESPACE}\n"
    decl = load_declaration({"workflows/w.yaml": bad_catalog.encode(),
                             "workflows/dup.yaml": CATALOG.encode()})
    rules = sorted((p.file, p.rule) for p in decl.problems)
    # files load in path order, so the second definition (w.yaml) is the duplicate
    assert rules == [("workflows/w.yaml", "duplicate-parameter"),
                     ("workflows/w.yaml", "duplicate-workflow"),
                     ("workflows/w.yaml", "parameter-name"),
                     ("workflows/w.yaml", "parameter-reserved")]


def test_catalog_rules_invalidate_the_executions_that_use_them() -> None:
    decl = load_declaration({FILE: execution_yaml().encode(),
                             "workflows/w.yaml": (CATALOG + "    - {name: TARGET_RESOURCE}\n").encode()})
    assert decl.executions == [] and decl.catalog == {}
    (invalid,) = decl.invalid
    assert [(p.rule, p.path) for p in invalid.problems] == [("catalog-entry-invalid", "spec.workflowRef")]
    assert "workflows/w.yaml" in invalid.problems[0].message
    assert [i.file for i in decl.invalid_catalog] == ["workflows/w.yaml"]


def test_file_too_large_is_rejected_without_parsing() -> None:
    decl = load_declaration({FILE: 5_000_000, "workflows/w.yaml": CATALOG.encode()})
    assert [p.rule for p in decl.problems] == ["file-too-large"]
    big = execution_yaml(extra="  rationale: " + "x" * 3_000_000 + "\n").encode()
    assert [p.rule for p in load_declaration({FILE: big}).problems] == ["file-too-large"]


def test_files_outside_the_layout_are_ignored() -> None:
    decl = load_declaration({"README.yaml": b"[", "bundles/x/pipeline.yaml": b"[",
                             "executions/readme.md": b"["})
    assert decl.problems == [] and decl.executions == []


def test_spec_hash_ignores_suspend_but_not_parameters() -> None:
    def hash_of(text: str) -> str:
        decl = load_declaration({FILE: text.encode(), "workflows/w.yaml": CATALOG.encode()})
        return decl.executions[0].spec_hash

    base = hash_of(execution_yaml())
    assert hash_of(execution_yaml(extra="  suspend: true\n")) == base
    assert hash_of(execution_yaml(params="{NAMESPACE: payments, MEMORY_LIMIT: 2Gi}")) != base
