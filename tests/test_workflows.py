"""The GitHub Actions workflows (the project's CI and the examples-repo's review gate) are
checked by a workflow linter: check-jsonschema with its vendored GitHub workflow schema
(offline; actionlint has no wheel for every platform).  Plus what a schema cannot see: the
review gate must not install a package that is not published, and must pass ``--policy``
where its comment says so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

WORKFLOWS = sorted([*PROJECT.glob(".github/workflows/*.y*ml"), *PROJECT.glob("examples-repo/.github/workflows/*.y*ml")])
LINTER = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")


def test_there_are_workflows_to_check() -> None:
    names = {p.relative_to(PROJECT).as_posix() for p in WORKFLOWS}
    assert {".github/workflows/ci.yml", "examples-repo/.github/workflows/remediation-pr.yaml"} <= names


@pytest.mark.skipif(LINTER is None, reason="check-jsonschema is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_workflow_passes_the_linter(workflow: Path) -> None:
    done = subprocess.run([str(LINTER), "--builtin-schema", "vendor.github-workflows", str(workflow)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linter_catches_a_broken_workflow(tmp_path: Path) -> None:
    if LINTER is None:
        pytest.skip("check-jsonschema is not installed")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    steps: [{run: true, uses: 3}]\n")
    done = subprocess.run([str(LINTER), "--builtin-schema", "vendor.github-workflows", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0


def _runs(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text())
    return [str(step.get("run", "")) for job in doc["jobs"].values() for step in job.get("steps", [])]


def test_the_review_gate_installs_a_pinned_build_and_passes_the_policy() -> None:
    gate = PROJECT / "examples-repo/.github/workflows/remediation-pr.yaml"
    runs = _runs(gate)
    installs = [r for r in runs if "pip install" in r]
    assert installs and all("git+" in r and "@${RECONCILER_REF}" in r for r in installs)  # not an unpublished name
    assert any("reconciler validate" in r and "--policy" in r for r in runs)
    assert any("reconciler plan" in r and "policy" in r for r in runs)


def test_ci_runs_lint_types_tests_on_pull_requests_and_builds_on_tags() -> None:
    doc = yaml.safe_load((PROJECT / ".github/workflows/ci.yml").read_text())
    triggers = doc[True] if True in doc else doc["on"]  # YAML 1.1 reads `on:` as True
    assert "pull_request" in triggers and "v*" in triggers["push"]["tags"]
    assert any(".ci/run" in r for r in _runs(PROJECT / ".github/workflows/ci.yml"))
    release = "\n".join(_runs(PROJECT / ".github/workflows/ci.yml"))
    assert "python -m build" in release
    assert any(step.get("uses", "").startswith("docker/build-push-action") for step in doc["jobs"]["release"]["steps"])
