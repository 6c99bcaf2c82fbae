"""The command line: exit codes, output formats, and the commands run on real repositories."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from tests.conftest import CATALOG, PROJECT, WorkRepo, execution_yaml


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def broken_dir(tmp_path: Path) -> Path:
    root = tmp_path / "watched"
    (root / "workflows").mkdir(parents=True)
    (root / "executions").mkdir()
    (root / "workflows" / "w.yaml").write_text(CATALOG)
    (root / "executions" / "good.yaml").write_text(execution_yaml("good"))
    (root / "executions" / "syntax.yaml").write_text("apiVersion: [\n")
    (root / "executions" / "typo.yaml").write_text(execution_yaml("typo", extra="  suspnd: true\n"))
    (root / "executions" / "params.yaml").write_text(
        execution_yaml("params", target="a/Deployment/b", params="{NAMESPACE: x, lower: y}"))
    return root


def test_validate_valid_directory_exits_0(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "w.yaml").write_text(CATALOG)
    code, out, _ = run("validate", str(tmp_path))
    assert code == 0 and "2 file(s) valid" not in out and "valid" in out


def test_validate_broken_directory_exits_1_with_messages(broken_dir: Path) -> None:
    code, out, _ = run("validate", str(broken_dir))
    assert code == 1
    assert "executions/syntax.yaml:2:1: invalid YAML" in out
    assert "executions/typo.yaml:9:3: spec.suspnd: unknown field 'suspnd' (did you mean 'suspend'?) [unknown-field]" in out
    assert "spec.parameters.lower" in out and "[parameter-name]" in out
    assert "missing-parameter" in out
    assert "good.yaml" not in out


def test_validate_json_output(broken_dir: Path) -> None:
    code, out, _ = run("validate", "-o", "json", str(broken_dir))
    data = json.loads(out)
    assert code == 1 and data["valid"] is False and data["filesChecked"] == 5
    rules = {(Path(p["file"]).name, p["rule"]) for p in data["problems"]}
    assert ("typo.yaml", "unknown-field") in rules and ("syntax.yaml", "yaml-syntax") in rules


def test_validate_github_annotations(broken_dir: Path) -> None:
    code, out, _ = run("validate", "-o", "github", str(broken_dir / "executions" / "typo.yaml"))
    assert code == 1
    (line,) = out.strip().splitlines()
    assert line.startswith("::error file=")
    assert "typo.yaml,line=9,col=3,title=unknown-field::spec.suspnd: unknown field" in line


def test_validate_single_file_uses_catalog_of_its_root(broken_dir: Path) -> None:
    code, out, _ = run("validate", str(broken_dir / "executions" / "good.yaml"))
    assert code == 0, out
    code, out, _ = run("validate", str(broken_dir / "executions" / "params.yaml"))
    assert code == 1 and "undeclared" not in out and "parameter-name" in out


@pytest.mark.parametrize("args", [("validate", "/no/such/path"), ("plan", "--repo", "/no/such/repo"),
                                  ("render", "x", "--repo", "/no/such/repo")])
def test_io_errors_exit_2(args: tuple[str, ...]) -> None:
    code, _, err = run(*args)
    assert code == 2 and "error:" in err


def test_usage_error_exits_2() -> None:
    code, _, _ = run("validate", "-o", "xml")
    assert code == 2


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    r = make_repo("repo")
    r.commit("declare", **{
        "ops/workflows/w.yaml": CATALOG,
        "ops/executions/first.yaml": execution_yaml("first"),
        "ops/executions/second.yaml": execution_yaml("second", params="{NAMESPACE: p, MEMORY_LIMIT: 2Gi}"),
        "ops/executions/held.yaml": execution_yaml("held", target="search/Deployment/api", extra="  suspend: true\n"),
        "ops/executions/bad.yaml": "kind: [",
    })
    return r


def test_plan_text_lists_actions_and_run_names(repo: WorkRepo, cache_dir: Path) -> None:
    code, out, _ = run("plan", "--repo", str(repo.path), "--path", "ops", "--cache-dir", str(cache_dir))
    assert code == 1  # bad.yaml is invalid
    lines = {line.split()[2]: line for line in out.splitlines() if line[:1] in "+~=✗"}
    assert "create" in lines["first"] and "wfe-" in lines["first"]
    assert "skip" in lines["second"] and "claimed by first" in lines["second"]
    assert "hold" in lines["held"]
    assert "invalid" in lines["bad.yaml"]


def test_plan_local_subdirectory_selects_sub_path(repo: WorkRepo, cache_dir: Path) -> None:
    _, out, _ = run("plan", "--repo", str(repo.path / "ops"), "--cache-dir", str(cache_dir), "-o", "json")
    data = json.loads(out)
    assert {e["name"]: e["action"] for e in data["executions"]} == {
        "first": "create", "second": "skip", "held": "hold", "bad.yaml": "invalid"}
    assert data["revision"] == repo.git("rev-parse", "HEAD")


def test_plan_markdown_for_a_pull_request(repo: WorkRepo, cache_dir: Path) -> None:
    repo.git("checkout", "-q", "-b", "pr")
    repo.remove("ops/executions/bad.yaml")
    repo.commit("add one", **{"ops/executions/new.yaml": execution_yaml("new", target="x/Deployment/y")})
    code, out, _ = run("plan", "--repo", str(repo.path), "--path", "ops", "--cache-dir", str(cache_dir),
                       "--base", "main", "--head", "pr", "-o", "markdown")
    assert code == 0, out
    assert out.startswith("### kubernaut plan for `")
    assert "| + create | `new` | added | `x/Deployment/y` |" in out
    assert "first" not in out


def test_render_prints_the_manifest(repo: WorkRepo, cache_dir: Path) -> None:
    code, out, _ = run("render", "first", "--repo", str(repo.path), "--path", "ops", "--cache-dir", str(cache_dir))
    assert code == 0
    manifest = yaml.safe_load(out)
    assert manifest["kind"] == "PipelineRun" and manifest["metadata"]["name"].startswith("wfe-")
    code, _, err = run("render", "nope", "--repo", str(repo.path), "--path", "ops", "--cache-dir", str(cache_dir))
    assert code == 2 and "no execution named 'nope'" in err


def test_schema_export_validates_documents() -> None:
    code, out, _ = run("schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "WorkflowExecution"
    jsonschema.validate(yaml.safe_load(execution_yaml()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(execution_yaml(extra="  surprise: 1\n")), schema)
    code, out, _ = run("schema", "--kind", "WorkflowDefinition")
    jsonschema.validate(yaml.safe_load(CATALOG), json.loads(out))


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "reconciler", "--help"], capture_output=True,
                          text=True, cwd=PROJECT, check=False)
    assert proc.returncode == 0 and "validate" in proc.stdout and "plan" in proc.stdout
