"""The rendered-manifest loader gives exactly ``yaml.safe_load``'s answer (issue 11 point 6).

The reconciler applies what it parsed back from the template's text, so the fast path must
not change a single value: YAML 1.1 resolution as the API server's tooling applies it
(``yes``, ``0755``, ``~``, timestamps), PyYAML's errors, and the full loader for whatever the
short path does not build itself (aliases, merge keys, tagged collections)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.declare.catalog import load_catalog
from reconciler.declare.execution_file import _parse_execution
from reconciler.render.manifestload import load_manifest
from reconciler.render.renderer import Renderer, builtin_templates_dir
from tests.conftest import CATALOG, execution_yaml

SAFE: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

CASES = [
    "a: 1",
    "mode: 0755",  # YAML 1.1 octal: 493, as Kubernetes reads a defaultMode
    "flags: [yes, no, on, off, true, False, y, n]",
    "nothing: ~\nempty:\nnull_word: null",
    "when: 2026-12-01T12:00:00Z\nday: 2026-12-01",
    "floats: [1.5, .inf, -.Inf, 1e3, 6.8523015e+5, 190:20:30.15]",
    "ints: [0x1F, 0b101, -12, +7, 1_000, 190:20:30]",
    "quoted: ['yes', \"0755\", '~', \"2026-12-01\"]",
    "binary: !!binary aGVsbG8=",
    "explicit: !!str 123\nnum: !!int '42'",
    "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2",  # merge key through an alias
    "shared: &s [1, 2]\nagain: *s",
    "set: !!set {a, b}",
    "omap: !!omap [a: 1, b: 2]",
    "dup: 1\ndup: 2",  # PyYAML keeps the last
    "3: int key\ntrue: bool key\n~: null key\n1.5: float key",
    "text: |\n  line one\n  line two\n",
    "cron: '*/5 * * * *'",
    "- a\n- {b: [c, {d: e}]}\n- []\n- {}",
    "",
    "# only a comment",
    "plain scalar document",
]


@pytest.mark.parametrize("text", CASES)
def test_same_value_as_safe_load(text: str) -> None:
    expected = yaml.load(text, Loader=SAFE)
    got = load_manifest(text)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert [(k, type(v)) for k, v in got.items()] == [(k, type(v)) for k, v in expected.items()]


def test_octal_and_booleans_mean_what_kubernetes_reads() -> None:
    got = load_manifest("defaultMode: 0755\nprivileged: yes\nat: 2026-12-01")
    assert got == {"defaultMode": 493, "privileged": True, "at": datetime.date(2026, 12, 1)}


@pytest.mark.parametrize("text", [
    "a: [1, 2",  # unterminated flow sequence
    "a: b\n c: d\n- e",
    "--- 1\n--- 2",  # two documents
    "a: !!int notanumber",
    "a: !custom x",
    "a: *undefined",
    "? [a, b]\n: a sequence as a key",  # unhashable
])
def test_the_errors_are_pyyamls(text: str) -> None:
    with pytest.raises(Exception) as expected:  # PyYAML's own (ValueError for !!int x)
        yaml.load(text, Loader=SAFE)
    with pytest.raises(type(expected.value)):
        load_manifest(text)


def test_every_builtin_template_renders_to_the_same_data() -> None:
    catalog = load_catalog({"workflows/w.yaml": CATALOG.encode()}, 10**6)
    parsed = _parse_execution("executions/x.yaml", execution_yaml(
        "fast-load", params="{NAMESPACE: payments, MEMORY_LIMIT: \"0755\", CONTAINER: yes}").encode(),
        catalog, True, None, 10**6)
    assert parsed.resolved is not None, parsed.problems
    renderer = Renderer(namespace="kubernaut-workflows")
    templates = sorted(p.name for p in builtin_templates_dir().glob("*.yaml.j2"))
    assert templates, "no built-in templates found"
    for engine in ("tekton", "job"):
        execution = parsed.resolved if engine == "tekton" else dataclasses.replace(parsed.resolved, engine="job")
        run = renderer.render(execution)
        assert load_manifest(run.text) == yaml.load(run.text, Loader=SAFE)
        assert run.manifest == yaml.load(run.text, Loader=SAFE)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20), st.dates())
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(documents, st.booleans())
def test_anything_yaml_dump_writes_loads_the_same(data: Any, flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert load_manifest(text) == yaml.load(text, Loader=SAFE)
