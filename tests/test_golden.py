"""Golden files: each example execution renders to its checked-in manifest.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``
and review the diff like any other change to what runs in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import Declaration
from reconciler.render.renderer import Renderer
from tests.conftest import EXAMPLES
from tests.test_render import assert_valid_pipelinerun

GOLDEN = Path(__file__).parent / "golden"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def example_declaration() -> Declaration:
    files: dict[str, bytes | int] = {
        p.relative_to(EXAMPLES).as_posix(): p.read_bytes() for p in EXAMPLES.rglob("*.yaml")
    }
    return load_declaration(files)


DECL = example_declaration()


def test_examples_are_valid_and_complete() -> None:
    assert DECL.problems == []
    assert len(DECL.executions) >= 6
    assert {e.engine for e in DECL.executions} == {"tekton", "job"}
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(e.name for e in DECL.executions)


@pytest.mark.parametrize("name", sorted(e.name for e in DECL.executions))
def test_example_renders_to_golden(name: str) -> None:
    execution = DECL.find(name)
    assert execution is not None
    text = Renderer().render_checked(execution, REVISION).to_yaml()
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", sorted(e.name for e in DECL.executions if e.engine == "tekton"))
def test_example_pipelineruns_validate_against_tekton(name: str, shared_dir: Path) -> None:
    execution = DECL.find(name)
    assert execution is not None
    assert_valid_pipelinerun(Renderer().render_checked(execution, REVISION).manifest, shared_dir)
