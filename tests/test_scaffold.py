"""``reconciler new``: by flags and by JSON, missing parameters, name clashes, and the branch
and commit it creates in a real Git work tree (with a push to a real bare remote)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.assemble import load_declaration
from reconciler.tools.scaffold import Request, read_root, unique_name
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git

TARGET = "payments/Deployment/payment-api"


@pytest.fixture
def repo(make_repo: Callable[[str], WorkRepo]) -> WorkRepo:
    work = make_repo("work")
    work.commit("catalog and one execution", **{"workflows/w.yaml": CATALOG,
                                                 "executions/oom.yaml": execution_yaml("oom")})
    return work


def new(repo: WorkRepo, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["new", "--repo", str(repo.path), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_by_flags_writes_a_valid_file_and_prints_its_plan(repo: WorkRepo) -> None:
    code, out, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET,
                         "--param", "MEMORY_LIMIT=1Gi", "--param", "NAMESPACE=payments",
                         "--on-failure-of", "oom", "--on-failure-reason", "OOMKilled",
                         "--rationale", "OOMKilled 5 times", "--confidence", "0.8", "--name", "oom-fallback")
    assert code == 0, err
    path = repo.path / "executions" / "oom-fallback.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["spec"]["parameters"] == {"MEMORY_LIMIT": "1Gi", "NAMESPACE": "payments"}
    assert doc["spec"]["workflowRef"] == {"workflowId": "increase-memory-limit", "version": "1.2.0"}
    assert (doc["spec"]["onFailureOf"], doc["spec"]["onFailureReasons"]) == ("oom", ["OOMKilled"])
    assert doc["spec"]["confidence"] == 0.8 and doc["spec"]["rationale"] == "OOMKilled 5 times"
    assert load_declaration(read_root(repo.path)).problems == []  # valid as validate sees it
    assert "wrote executions/oom-fallback.yaml" in out
    assert "runs only if oom fails (OOMKilled)" in out and "if it fails (OOMKilled): oom-fallback" in out
    assert git(repo.path, "status", "--porcelain") == "?? executions/oom-fallback.yaml"  # nothing committed


def test_by_json_on_stdin_picks_a_unique_name(repo: WorkRepo) -> None:
    request = {"workflow": "increase-memory-limit", "target": TARGET, "after": ["oom"],
               "params": {"MEMORY_LIMIT": "2Gi", "NAMESPACE": "payments"}, "rationale": "from the AI"}
    code, out, err = new(repo, "-f", "-", "-o", "json", stdin=json.dumps(request))
    assert code == 0, err
    data = json.loads(out)
    assert data["valid"] is True and data["file"] == f"executions/{data['name']}.yaml"
    assert data["name"].startswith("increase-memory-limit-payment-api-")
    (entry,) = [e for e in data["plan"]["executions"] if e["name"] == data["name"]]
    assert (entry["action"], entry["reason"], entry["depends_on"]) == ("wait", "WaitingForDependency", ["oom"])
    again = json.loads(new(repo, "-f", "-", "-o", "json", stdin=json.dumps(request))[1])
    assert again["name"] == data["name"] + "-2"  # the first one's file now exists


def test_missing_required_parameter_is_named_and_nothing_is_written(repo: WorkRepo) -> None:
    code, _, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET, "--param", "NAMESPACE=payments")
    assert code == 1
    assert "missing the required parameter(s) MEMORY_LIMIT (New memory limit)" in err
    assert sorted(p.name for p in (repo.path / "executions").iterdir()) == ["oom.yaml"]


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--name", "oom"], 1, "'oom' is already used"),
    (["--on-failure-of", "nope"], 1, "names 'nope', which is not an execution on this branch"),
    (["--version", "9.9.9"], 1, "known versions: 1.2.0"),
    (["--param", "COLOUR=red"], 1, "COLOUR not declared"),
    (["--param", "oops"], 2, "expected NAME=VALUE"),
    (["--push"], 2, "--push needs --branch"),
    (["--on-failure-reason", "Boom"], 2, "onFailureReasons"),
])
def test_bad_proposals(repo: WorkRepo, args: list[str], code: int, words: str) -> None:
    got, _, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET,
                      "--param", "MEMORY_LIMIT=1Gi", "--param", "NAMESPACE=payments", *args)
    assert got == code, err
    assert words in err
    assert sorted(p.name for p in (repo.path / "executions").iterdir()) == ["oom.yaml"]


def test_a_status_file_name_is_never_reused(repo: WorkRepo) -> None:
    """A status file is the history of an execution that may be gone: reusing its name
    would make the new execution look finished."""
    repo.commit("history", **{"status/increase-memory-limit-payment-api-2026-11-21.yaml": "status: {}\n"})
    request = Request(workflow="increase-memory-limit", target=TARGET)
    taken = {"increase-memory-limit-payment-api-2026-11-21"}
    assert unique_name(request, taken, date(2026, 11, 21)) == "increase-memory-limit-payment-api-2026-11-21-2"
    code, _, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET, "--param", "MEMORY_LIMIT=1",
                       "--param", "NAMESPACE=payments", "--name", "increase-memory-limit-payment-api-2026-11-21")
    assert code == 1 and "status history" in err


def test_long_names_are_cut_to_a_dns_label() -> None:
    request = Request(workflow="increase-memory-limit", target="payments/Deployment/" + "a" * 60)
    name = unique_name(request, set(), date(2026, 11, 21))
    assert len(name) <= 63 and not name.endswith("-")
    assert len(unique_name(request, {name}, date(2026, 11, 21))) <= 63


def test_branch_and_commit_then_push(repo: WorkRepo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(repo.path, "remote", "add", "origin", str(remote))
    (repo.path / "notes.txt").write_text("unrelated work in progress\n")
    git(repo.path, "add", "notes.txt")  # staged, and must stay out of the commit
    code, out, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET,
                         "--param", "MEMORY_LIMIT=1Gi", "--param", "NAMESPACE=payments", "--name", "raise-it",
                         "--branch", "kubernaut/raise-it", "--push")
    assert code == 0, err
    assert git(repo.path, "branch", "--show-current") == "kubernaut/raise-it"
    assert git(repo.path, "show", "--name-only", "--format=%s", "HEAD").splitlines() == [
        "Add execution raise-it", "", "executions/raise-it.yaml"]
    assert git(repo.path, "rev-parse", "HEAD~1") == git(repo.path, "rev-parse", "main")
    assert git(repo.path, "status", "--porcelain") == "A  notes.txt"
    assert git(remote, "rev-parse", "kubernaut/raise-it") == git(repo.path, "rev-parse", "HEAD")
    assert "pushed to origin" in out
    again, _, err = new(repo, "--workflow", "increase-memory-limit", "--target", TARGET, "--param", "MEMORY_LIMIT=1",
                        "--param", "NAMESPACE=payments", "--branch", "kubernaut/raise-it")
    assert again == 2 and "already exists" in err
    assert sorted(p.name for p in (repo.path / "executions").iterdir()) == ["oom.yaml", "raise-it.yaml"]
