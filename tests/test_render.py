"""Rendering: structure, Tekton schema validity, injection resistance, determinism."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import ResolvedExecution
from reconciler.errors import TemplateError
from reconciler.render.renderer import Renderer, builtin_templates_dir, yaml_scalar
from tests.conftest import CATALOG, IMAGE, execution_yaml


def resolve(text: str, catalog: bool = True) -> ResolvedExecution:
    files: dict[str, bytes | int] = {"executions/x.yaml": text.encode()}
    if catalog:
        files["workflows/w.yaml"] = CATALOG.encode()
    decl = load_declaration(files)
    assert decl.problems == [], [str(p) for p in decl.problems]
    return decl.executions[0]


@functools.cache
def _crd_schema(shared: str, file: str) -> dict[str, Any]:
    crd = yaml.safe_load(Path(shared, "tekton", file).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def assert_valid_pipelinerun(manifest: dict[str, Any], shared: Path) -> None:
    jsonschema.validate(manifest, _crd_schema(str(shared), "300-pipelinerun.yaml"))


def test_pipelinerun_shape_follows_spec() -> None:
    execution = resolve(execution_yaml(extra="  executionConfig: {serviceAccountName: runner, timeout: 1h30m}\n"))
    run = Renderer(namespace="kubernaut-workflows").render(execution, "c0ffee")
    m = run.manifest
    assert (m["apiVersion"], m["kind"]) == ("tekton.dev/v1", "PipelineRun")
    assert m["metadata"]["name"] == execution.run_name and execution.run_name.startswith("wfe-")
    assert len(execution.run_name) == 4 + 16
    assert m["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler",
        "kubernaut.ai/workflow-execution": "oom-payment-api",
        "kubernaut.ai/workflow-id": "increase-memory-limit",
        "kubernaut.ai/target-resource": "payments__Deployment__payment-api",
    }
    ann = m["metadata"]["annotations"]
    assert ann["kubernaut.ai/target-resource"] == "payments/Deployment/payment-api"
    assert ann["reconciler.kubernaut.ai/git-revision"] == "c0ffee"
    assert ann["reconciler.kubernaut.ai/spec-hash"] == execution.spec_hash
    assert m["spec"]["pipelineRef"] == {"resolver": "bundles", "params": [
        {"name": "bundle", "value": IMAGE}, {"name": "name", "value": "workflow"},
        {"name": "kind", "value": "pipeline"}]}
    assert m["spec"]["params"] == [
        {"name": "MEMORY_LIMIT", "value": "1Gi"}, {"name": "NAMESPACE", "value": "payments"},
        {"name": "TARGET_RESOURCE", "value": "payments/Deployment/payment-api"}]
    assert m["spec"]["taskRunTemplate"]["serviceAccountName"] == "runner"
    assert m["spec"]["timeouts"] == {"pipeline": "1h30m"}


def test_defaults_service_account_and_timeout() -> None:
    m = Renderer().render(resolve(execution_yaml())).manifest
    assert m["spec"]["taskRunTemplate"]["serviceAccountName"] == "default"
    assert m["spec"]["timeouts"]["pipeline"] == "30m"


def test_job_engine_renders_a_restricted_job() -> None:
    text = execution_yaml(workflow=f'workflowId: cleanup, version: "1.0.0", containerImage: "{IMAGE}", '
                                   'executionEngine: job', target="Node/worker-1",
                          params="{MODE: aggressive}", extra="  executionConfig: {timeout: 10m}\n")
    run = Renderer().render(resolve(text, catalog=False))
    m = run.manifest
    assert (m["apiVersion"], m["kind"]) == ("batch/v1", "Job")
    assert m["spec"]["backoffLimit"] == 0
    assert m["spec"]["activeDeadlineSeconds"] == 600
    pod = m["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "workflow" and container["image"] == IMAGE
    assert container["env"] == [{"name": "MODE", "value": "aggressive"},
                                {"name": "TARGET_RESOURCE", "value": "Node/worker-1"}]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert m["spec"]["template"]["metadata"]["labels"] == m["metadata"]["labels"]


def test_rendered_pipelinerun_validates_against_tekton_crd(shared_dir: Path) -> None:
    assert_valid_pipelinerun(Renderer().render(resolve(execution_yaml())).manifest, shared_dir)


def test_schema_check_catches_a_broken_pipelinerun(shared_dir: Path) -> None:
    manifest = Renderer().render(resolve(execution_yaml())).manifest
    manifest["spec"]["timeouts"] = {"pipeline": 30}
    with pytest.raises(jsonschema.ValidationError):
        assert_valid_pipelinerun(manifest, shared_dir)


HOSTILE_VALUES = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}x{% endfor %}",
    "x\n  evil: true",
    "x\nkind: Pod",
    "'] , {name: X",
    "\"}, {name: INJECTED, value: \"1",
    "a: b",
    "- item",
    "&anchor value",
    "*alias",
    "!!python/object/apply:os.system ['id']",
    "# comment",
    "value # trailing",
    "\"quoted\"",
    "back\\slash\\",
    "tab\there",
    "\x00nul\x07bell\x1bescape\x7fdel\x85nel\u2028ls\u2029ps\ufeffbom",
    "emoji 🙂 and ünïcödé",
    "\ud800 lone surrogate",
    "---\napiVersion: v1",
    "...",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=[repr(v[:20]) for v in HOSTILE_VALUES])
def test_hostile_parameter_values_stay_data(value: str) -> None:
    base = resolve(execution_yaml())
    params = (("MEMORY_LIMIT", value), ("NAMESPACE", "payments"))
    execution = replace(base, parameters=params)
    m = Renderer().render(execution).manifest
    expected = value.replace("\ud800", "\ufffd")
    assert m["spec"]["params"] == [
        {"name": "MEMORY_LIMIT", "value": expected}, {"name": "NAMESPACE", "value": "payments"},
        {"name": "TARGET_RESOURCE", "value": "payments/Deployment/payment-api"}]
    assert set(m) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(m["spec"]) == {"pipelineRef", "params", "taskRunTemplate", "timeouts"}


@pytest.mark.parametrize("field", ["rationale", "remediation"])
def test_hostile_text_in_other_fields_stays_data(field: str) -> None:
    extra = ('  rationale: "{{ 7*7 }}\\n  evil: true"\n' if field == "rationale"
             else "  remediationRequestRef: {name: rr-1, namespace: kubernaut-system}\n")
    m = Renderer().render(resolve(execution_yaml(extra=extra))).manifest
    assert "evil" not in m["spec"]


def test_hostile_names_through_custom_template(tmp_path: Path) -> None:
    """Even a careless template that interpolates inside a flow list cannot be broken."""
    template = (builtin_templates_dir() / "pipelinerun.yaml.j2").read_text().replace(
        "  params:\n{% for param in params %}\n    - name: {{ param.name }}\n      value: {{ param.value }}\n{% endfor %}\n",
        "  params: [{% for param in params %}{name: {{ param.name }}, value: {{ param.value }}}, {% endfor %}]\n",
    )
    assert "params: [{%" in template
    (tmp_path / "pipelinerun.yaml.j2").write_text(template)
    base = resolve(execution_yaml())
    execution = replace(base, parameters=(("MEMORY_LIMIT", "'] , {name: X"), ("NAMESPACE", "}], evil: [")))
    m = Renderer(tmp_path).render(execution).manifest
    assert [p["name"] for p in m["spec"]["params"]] == ["MEMORY_LIMIT", "NAMESPACE", "TARGET_RESOURCE"]
    assert m["spec"]["params"][1]["value"] == "}], evil: ["


def test_output_is_deterministic() -> None:
    execution = resolve(execution_yaml())
    first = Renderer().render(execution, "abc").to_yaml()
    second = Renderer().render(resolve(execution_yaml()), "abc").to_yaml()
    assert first == second
    assert first.encode() == Renderer().render(execution, "abc").to_yaml().encode()


def test_custom_templates_dir_overrides_one_template(tmp_path: Path) -> None:
    text = (builtin_templates_dir() / "pipelinerun.yaml.j2").read_text()
    (tmp_path / "pipelinerun.yaml.j2").write_text(
        text.replace("  timeouts:\n", "  timeouts:\n    finally: 5m\n"))
    m = Renderer(tmp_path).render(resolve(execution_yaml())).manifest
    assert m["spec"]["timeouts"] == {"finally": "5m", "pipeline": "30m"}


@pytest.mark.parametrize(("edit", "words"), [
    (lambda t: t.replace("name: {{ execution.run_name }}", "name: my-run"), "metadata.name must be"),
    (lambda t: t.replace("kind: PipelineRun", "kind: TaskRun"), "must produce tekton.dev/v1 PipelineRun"),
    (lambda t: t.replace("    kubernaut.ai/workflow-execution: {{ execution.name }}\n", ""),
     "kubernaut.ai/workflow-execution"),
    (lambda t: t.replace("{{ execution.image }}", "{{ execution.imag }}"), "failed for"),
    (lambda t: t + "\n  : : [\n", "invalid YAML"),
    (lambda t: t.replace("{{ namespace }}", "default"), "metadata.namespace must be"),
])
def test_broken_custom_templates_are_refused(tmp_path: Path, edit: Any, words: str) -> None:
    text = (builtin_templates_dir() / "pipelinerun.yaml.j2").read_text()
    (tmp_path / "pipelinerun.yaml.j2").write_text(edit(text))
    with pytest.raises(TemplateError, match=words.replace(".", r"\.").replace("(", r"\(")):
        Renderer(tmp_path).render_checked(resolve(execution_yaml()))


def test_sandbox_blocks_attribute_escape(tmp_path: Path) -> None:
    text = (builtin_templates_dir() / "pipelinerun.yaml.j2").read_text()
    (tmp_path / "pipelinerun.yaml.j2").write_text(
        text + "\n# {{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(TemplateError):
        Renderer(tmp_path).render_checked(resolve(execution_yaml()))


def test_missing_templates_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        Renderer(tmp_path / "nope")


@pytest.mark.parametrize(("value", "expected"), [
    (None, "null"), (True, "true"), (3, "3"), (1.5, "1.5"), ("a", '"a"'), ("a\"b", '"a\\"b"'),
    ("line\nbreak", '"line\\nbreak"'), (["a", 1], '["a", 1]'), ({"k": "v"}, '{"k": "v"}'),
    (float("nan"), '"nan"'),
])
def test_yaml_scalar(value: Any, expected: str) -> None:
    out = yaml_scalar(value)
    assert out == expected
    loaded = yaml.safe_load(f"k: {out}")["k"]
    if isinstance(value, str):
        assert loaded == value
