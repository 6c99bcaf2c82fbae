"""Property: whatever YAML-like input arrives — as an execution, a catalog entry or a status
file — validation reports Problems naming that file and never crashes."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.declare.assemble import load_declaration
from reconciler.errors import Problem, ReconcilerError
from reconciler.render.renderer import Renderer
from tests.conftest import CATALOG, execution_yaml

KEYS = ["apiVersion", "kind", "metadata", "name", "spec", "workflowRef", "workflowId", "version",
        "containerImage", "executionEngine", "targetResource", "parameters", "executionConfig",
        "timeout", "serviceAccountName", "suspend", "confidence", "rationale", "labels",
        "NAMESPACE", "MEMORY_LIMIT", "TARGET_RESOURCE", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["kubernaut.ai/v1alpha1", "WorkflowExecution",
                                                           "payments/Deployment/api", "1.2.0", "30m"]))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)),
                                               children, max_size=6)),
    max_leaves=25,
)


def check(raw: bytes) -> None:
    renderer = Renderer()
    try:
        decl = load_declaration({"executions/f.yaml": raw, "workflows/w.yaml": CATALOG.encode()})
        assert all(isinstance(p, Problem) and p.file == "executions/f.yaml" for p in decl.problems)
        for execution in decl.executions:
            renderer.render_checked(execution)
    except ReconcilerError:
        pass
    # the same bytes as a second catalog file, and as a status file: never an exception, and
    # every problem belongs to that file (or, for an execution, names it)
    decl = load_declaration({"workflows/x.yaml": raw, "workflows/w.yaml": CATALOG.encode(),
                             "executions/e.yaml": execution_yaml().encode(), "status/e.yaml": raw})
    assert all(p.file == "workflows/x.yaml" or "workflows/x.yaml" in p.message for p in decl.problems)
    assert len([p for p in decl.problems if p.file == "workflows/x.yaml"]) <= 101


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents_never_crash(doc: Any) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True).encode())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_documents_never_crash(data: st.DataObject) -> None:
    text = execution_yaml()
    position = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.one_of(
        st.text(alphabet="{}[]:,-&*!|>'\"#\n\t %@`?abcZ019\u0661\u00a0\u2028", max_size=8),
        st.sampled_from(["9" * 5000, "0x" + "f" * 5000, "-" + "1" * 200, "1e99999", ".inf", "[" * 500,
                         "{a: " * 100, "!!int " + "9" * 5000, "|\n    "])))
    cut = data.draw(st.integers(0, 5))
    check((text[:position] + insert + text[position + cut:]).encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    check(raw)
