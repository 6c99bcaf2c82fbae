"""Executions share equal workflowRef and executionConfig models, and that changes nothing read.

Thousands of executions name the same workflow and the same (mostly default) run settings:
one instance per distinct value instead of one per execution (``model.share_fields_sets``).
Sharing must be invisible: every dump, comparison, spec hash and rendered manifest is the
same as with the models pydantic built; a different value (or the same values given
differently: the set of fields given is part of ``exclude_unset``) is never shared; an
instance no execution holds any more is not kept.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest

from reconciler.declare.execution_file import spec_hash
from reconciler.declare.model import _SHARED_MODELS, WorkflowExecution, share_fields_sets
from reconciler.render.renderer import Renderer
from tests.test_render import resolve


def _doc(name: str, ref: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"workflowRef": ref, "targetResource": f"ns/Deployment/{name}",
                            "parameters": {"NAMESPACE": "ns", "MEMORY_LIMIT": "1Gi"}}
    if config is not None:
        spec["executionConfig"] = config
    return {"apiVersion": "kubernaut.ai/v1alpha1", "kind": "WorkflowExecution", "metadata": {"name": name},
            "spec": spec}


REF = {"workflowId": "increase-memory-limit", "version": "1.2.0"}
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any], dict[str, Any] | None, bool, bool]] = [
    # (id, ref a, config a, ref b, config b, ref shared, config shared)
    ("same-defaults", REF, None, REF, None, True, True),
    ("same-config", REF, {"timeout": "5m"}, REF, {"timeout": "5m"}, True, True),
    ("other-timeout", REF, {"timeout": "5m"}, REF, {"timeout": "10m"}, True, False),
    ("other-account", REF, {"serviceAccountName": "a"}, REF, {"serviceAccountName": "b"}, True, False),
    ("other-version", REF, None, {**REF, "version": "1.3.0"}, None, False, True),
    ("other-image", {**REF, "containerImage": "quay.io/a/b:1"}, None, {**REF, "containerImage": "quay.io/a/b:2"},
     None, False, True),
    ("engine-given-vs-not", {**REF, "executionEngine": "tekton"}, None, REF, None, False, True),
    ("null-given-vs-absent", {**REF, "pipelineName": None}, None, REF, None, False, True),
    ("empty-config-vs-absent", REF, {}, REF, None, True, True),  # both: no field given
    ("timeout-null-vs-absent", REF, {"timeout": None}, REF, {}, True, False),
]


@pytest.mark.parametrize("ref_a,config_a,ref_b,config_b,ref_shared,config_shared",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_equal_submodels_are_shared_and_read_as_before(
        ref_a: dict[str, Any], config_a: dict[str, Any] | None, ref_b: dict[str, Any],
        config_b: dict[str, Any] | None, ref_shared: bool, config_shared: bool) -> None:
    docs = [json.loads(json.dumps(_doc("a", ref_a, config_a))), json.loads(json.dumps(_doc("b", ref_b, config_b)))]
    plain = [WorkflowExecution.model_validate(d) for d in docs]
    shared = [share_fields_sets(WorkflowExecution.model_validate(d)) for d in docs]
    for p, s in zip(plain, shared, strict=True):
        assert s == p
        for kwargs in ({}, {"by_alias": True}, {"exclude_unset": True}, {"exclude_none": True, "by_alias": True},
                       {"mode": "json", "by_alias": True, "exclude_unset": True}):
            assert s.model_dump(**kwargs) == p.model_dump(**kwargs)
        assert s.model_dump_json(by_alias=True, exclude_unset=True) == p.model_dump_json(by_alias=True,
                                                                                         exclude_unset=True)
        assert s.spec.workflow_ref.model_fields_set == p.spec.workflow_ref.model_fields_set
        assert s.spec.execution_config.model_fields_set == p.spec.execution_config.model_fields_set
        assert spec_hash(s, ()) == spec_hash(p, ())
        assert hash(s.spec.workflow_ref) == hash(p.spec.workflow_ref)
        assert hash(s.spec.execution_config) == hash(p.spec.execution_config)
    a, b = shared
    assert (a.spec.workflow_ref is b.spec.workflow_ref) is ref_shared
    assert (a.spec.execution_config is b.spec.execution_config) is config_shared
    assert a.spec.workflow_ref == b.spec.workflow_ref or not ref_shared


def test_a_rendered_run_is_the_same_with_shared_models() -> None:
    text = ("apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecution\nmetadata: {name: oom}\n"
            "spec:\n  workflowRef: {workflowId: increase-memory-limit, version: \"1.2.0\"}\n"
            "  targetResource: payments/Deployment/payment-api\n"
            "  parameters: {NAMESPACE: payments, MEMORY_LIMIT: 1Gi}\n"
            "  executionConfig: {timeout: 45m, serviceAccountName: runner}\n")
    first, second = resolve(text), resolve(text)  # the second shares the first's sub-models
    assert second.document.spec.workflow_ref is first.document.spec.workflow_ref
    assert second.document.spec.execution_config is first.document.spec.execution_config
    plain = WorkflowExecution.model_validate(second.document.model_dump(by_alias=True, exclude_unset=True))
    assert second.document == plain
    rendered = Renderer().render(second)
    assert rendered.manifest == Renderer().render(first).manifest
    assert rendered.manifest["spec"]["taskRunTemplate"]["serviceAccountName"] == "runner"
    assert rendered.manifest["spec"]["timeouts"]["pipeline"] == "45m"


def test_a_value_no_execution_holds_is_not_kept() -> None:
    ref = {"workflowId": "w", "version": "9.9.9-only-here"}
    held = share_fields_sets(WorkflowExecution.model_validate(_doc("x", ref, {"timeout": "17m"})))
    keys = [k for k in list(_SHARED_MODELS.keys()) if "9.9.9-only-here" in k or "17m" in k]
    assert len(keys) == 2
    del held
    gc.collect()
    assert not [k for k in list(_SHARED_MODELS.keys()) if "9.9.9-only-here" in k or "17m" in k]
