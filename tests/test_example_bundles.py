"""The example watched repository's workflow bundles agree with its catalog and with Tekton.

``examples-repo/`` is what users copy.  These tests keep its three layers consistent:

* every ``bundles/<id>/pipeline.yaml`` is a valid ``tekton.dev/v1`` Pipeline, checked against
  the ``v1`` ``openAPIV3Schema`` of the real Tekton CRD in ``../shared/tekton/``;
* each Pipeline declares exactly the catalog's parameters plus ``TARGET_RESOURCE``, with a
  default for every optional parameter and none for a required one (a default on a required
  parameter would hide a missing value; a missing default on an optional one makes Tekton
  reject the run when the execution leaves it out);
* every catalog image is pinned by a sha256 digest, and the job workflow's entrypoint reads
  each declared parameter from the environment.

The scripts themselves follow the secure Tekton practice the examples teach: parameters reach
a step only through ``env`` — never ``$(params.X)`` inside a script, where a value would
become shell code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT / "examples-repo"
SHARED = Path(__file__).resolve().parents[2] / "shared"
PIPELINE_CRD = SHARED / "tekton" / "300-pipeline.yaml"

RESERVED = "TARGET_RESOURCE"
DIGEST = re.compile(r"^[0-9a-f]{64}$")
TEKTON_VAR = re.compile(r"\$\((params|tasks|context|results|workspaces|steps)\.[^)]*\)")


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _catalog() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted((EXAMPLES / "workflows").glob("*.yaml")):
        doc = _load(path)
        entries[doc["spec"]["workflowId"]] = doc
    return entries


CATALOG = _catalog()
TEKTON_IDS = sorted(i for i, d in CATALOG.items() if d["spec"].get("executionEngine", "tekton") == "tekton")
JOB_IDS = sorted(i for i, d in CATALOG.items() if d["spec"].get("executionEngine") == "job")
BUNDLES = sorted(p.parent.name for p in (EXAMPLES / "bundles").glob("*/pipeline.yaml"))


@pytest.fixture(scope="module")
def pipeline_schema() -> dict[str, Any]:
    if not PIPELINE_CRD.is_file():
        pytest.skip(f"{PIPELINE_CRD} is absent (shared/ is provided in CI): cannot validate against Tekton's CRD")
    crd = _load(PIPELINE_CRD)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _pipeline(workflow_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = _load(EXAMPLES / "bundles" / workflow_id / "pipeline.yaml")
    return doc


def _steps(pipeline: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    spec = pipeline["spec"]
    return [(task["name"], task, step)
            for task in [*spec.get("tasks", []), *spec.get("finally", [])]
            for step in task["taskSpec"]["steps"]]


def test_the_example_repository_is_complete() -> None:
    assert len(CATALOG) == 6
    assert JOB_IDS == ["cleanup-node-disk"]
    # Every Tekton workflow has a Pipeline to bundle, and nothing else has one.
    assert BUNDLES == TEKTON_IDS
    for workflow_id in JOB_IDS:
        assert (EXAMPLES / "bundles" / workflow_id / "Dockerfile").is_file()
        assert (EXAMPLES / "bundles" / workflow_id / "entrypoint.sh").is_file()


@pytest.mark.parametrize("workflow_id", BUNDLES)
def test_pipeline_validates_against_the_tekton_v1_crd(workflow_id: str, pipeline_schema: dict[str, Any]) -> None:
    pipeline = _pipeline(workflow_id)
    jsonschema.validate(pipeline, pipeline_schema)
    assert pipeline["apiVersion"] == "tekton.dev/v1"
    assert pipeline["kind"] == "Pipeline"
    assert pipeline["metadata"]["name"] == CATALOG[workflow_id]["spec"].get("pipelineName", "workflow")


@pytest.mark.parametrize("workflow_id", BUNDLES)
def test_pipeline_params_are_the_catalog_params_plus_target_resource(workflow_id: str) -> None:
    declared = {p["name"]: p for p in CATALOG[workflow_id]["spec"].get("parameters", [])}
    assert RESERVED not in declared, "TARGET_RESOURCE is reserved: the reconciler always passes it"
    params = {p["name"]: p for p in _pipeline(workflow_id)["spec"]["params"]}

    assert set(params) == {*declared, RESERVED}
    assert "default" not in params[RESERVED]
    for name, catalog_param in declared.items():
        assert params[name].get("type", "string") == "string", f"{name}: the reconciler passes strings"
        if catalog_param.get("required", False):
            assert "default" not in params[name], f"required {name} must not have a default in the Pipeline"
        else:
            assert "default" in params[name], f"optional {name} needs a default in the Pipeline"
            assert isinstance(params[name]["default"], str)


@pytest.mark.parametrize("workflow_id", sorted(CATALOG))
def test_catalog_image_is_pinned_by_digest(workflow_id: str) -> None:
    spec = CATALOG[workflow_id]["spec"]
    repository, sep, digest = spec["containerImage"].partition("@sha256:")
    assert sep, f"{spec['containerImage']} is not pinned by digest"
    assert DIGEST.match(digest), f"digest {digest!r} is not 64 lowercase hex characters"
    assert repository == f"ghcr.io/acme-sre/kubernaut-workflows/{workflow_id}"
    assert CATALOG[workflow_id]["metadata"]["name"] == f"{workflow_id}-{spec['version'].replace('.', '-')}"


@pytest.mark.parametrize("workflow_id", BUNDLES)
def test_pipeline_wiring_is_consistent(workflow_id: str) -> None:
    """Every task param is declared by its taskSpec, every step env refers to a task param,
    every runAfter names a task, and every pipeline param is used somewhere."""
    spec = _pipeline(workflow_id)["spec"]
    pipeline_params = {p["name"] for p in spec["params"]}
    task_names = {t["name"] for t in spec["tasks"]}
    used: set[str] = set()
    for task in spec["tasks"]:
        assert set(task.get("runAfter", [])) <= task_names
        passed = {p["name"]: p["value"] for p in task.get("params", [])}
        accepted = {p["name"] for p in task["taskSpec"].get("params", [])}
        assert set(passed) == accepted, f"task {task['name']}: params passed != params declared"
        for value in passed.values():
            for ref in re.findall(r"\$\(params\.([A-Za-z0-9_-]+)\)", value):
                assert ref in pipeline_params, f"task {task['name']} uses undeclared $(params.{ref})"
                used.add(ref)
            for ref in re.findall(r"\$\(tasks\.([a-z0-9-]+)\.results\.([a-z0-9-]+)\)", value):
                producer = next(t for t in spec["tasks"] if t["name"] == ref[0])
                assert ref[1] in {r["name"] for r in producer["taskSpec"].get("results", [])}
        for step in task["taskSpec"]["steps"]:
            for env in step.get("env", []):
                for ref in re.findall(r"\$\(params\.([A-Za-z0-9_-]+)\)", env.get("value", "")):
                    assert ref in accepted, f"step {step['name']} uses undeclared $(params.{ref})"
    assert used == pipeline_params, f"unused pipeline params: {pipeline_params - used}"


@pytest.mark.parametrize("workflow_id", BUNDLES)
def test_steps_take_parameters_only_through_env(workflow_id: str) -> None:
    for task_name, _task, step in _steps(_pipeline(workflow_id)):
        where = f"{workflow_id}: task {task_name}, step {step['name']}"
        script = step.get("script", "")
        assert script.startswith("#!"), f"{where}: script needs a shebang"
        assert re.search(r"^\s*set -eu", script, re.MULTILINE), f"{where}: script must fail fast"
        # Only result *paths* (chosen by Tekton, not by users) may be substituted into scripts.
        leaked = [m.group(0) for m in TEKTON_VAR.finditer(script) if not m.group(0).startswith("$(results.")]
        assert not leaked, f"{where}: {leaked} interpolated into the script; pass it as env instead"
        for field in ("command", "args"):
            assert not any(TEKTON_VAR.search(str(a)) for a in step.get(field, [])), f"{where}: {field}"


@pytest.mark.parametrize("workflow_id", BUNDLES)
def test_steps_run_unprivileged(workflow_id: str) -> None:
    for task_name, _task, step in _steps(_pipeline(workflow_id)):
        ctx = step.get("securityContext", {})
        where = f"{workflow_id}: task {task_name}, step {step['name']}"
        assert ctx.get("runAsNonRoot") is True, where
        assert isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0, where
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
        assert ":" in step["image"].rsplit("/", 1)[-1] or "@sha256:" in step["image"], f"{where}: unpinned image"


@pytest.mark.parametrize("workflow_id", JOB_IDS)
def test_job_entrypoint_reads_every_parameter_from_env(workflow_id: str) -> None:
    bundle = EXAMPLES / "bundles" / workflow_id
    script = (bundle / "entrypoint.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    for name in [RESERVED, *(p["name"] for p in CATALOG[workflow_id]["spec"].get("parameters", []))]:
        assert f"${{{name}" in script, f"entrypoint.sh never reads ${name}"
    dockerfile = (bundle / "Dockerfile").read_text(encoding="utf-8")
    user = re.search(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert user and user.group(1).split(":")[0] not in ("0", "root"), "the image must run as non-root"
    assert re.search(r"^ENTRYPOINT \[", dockerfile, re.MULTILINE), "exec-form ENTRYPOINT expected"
