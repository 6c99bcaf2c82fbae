"""`status`, `get`, `wait`, `diff` on real repositories (and the fake cluster for --cluster/diff)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.names import run_name
from reconciler.record.status import ExecutionState, RunRef
from reconciler.record.writeback_git import status_yaml
from reconciler.simulator import FakeKubeServer
from tests.conftest import CATALOG, WorkRepo, execution_yaml

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def recorded(name: str, phase: str, reason: str, **kw: object) -> str:
    state = ExecutionState(name=name, phase=phase, reason=reason, message=f"{name} {phase}", sync="Synced",
                           health={"Completed": "Healthy", "Failed": "Degraded"}.get(phase, "Progressing"),
                           workflow="increase-memory-limit@1.2.0", **kw)  # type: ignore[arg-type]
    return status_yaml(state).decode()


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    r = WorkRepo(tmp_path / "repo")
    r.commit("declare", **{
        "workflows/w.yaml": CATALOG,
        "executions/done.yaml": execution_yaml("done", extra="  suspend: false\n"),
        "executions/broken.yaml": execution_yaml("broken", target="search/Deployment/api"),
        "executions/new.yaml": execution_yaml("new", target="ingress/Deployment/nginx").replace(
            "metadata:\n  name: new\n", "metadata:\n  name: new\n  labels: {team: edge}\n"),
    })
    r.commit("status", **{
        "status/done.yaml": recorded("done", "Running", "Running", start_time=T0,
                                     execution_ref=RunRef("PipelineRun", "kubernaut-workflows", "wfe-1")),
    })
    r.commit("status", **{
        "status/done.yaml": recorded("done", "Completed", "Succeeded", start_time=T0,
                                     completion_time=T0 + timedelta(minutes=2, seconds=38),
                                     execution_ref=RunRef("PipelineRun", "kubernaut-workflows", "wfe-1")),
        "status/broken.yaml": recorded("broken", "Failed", "OOMKilled", failure_details={
            "reason": "OOMKilled", "naturalLanguageSummary": "broken ran out of memory in step apply."}),
    })
    return r


def args(repo: WorkRepo, tmp: Path, *extra: str) -> list[str]:
    return [*extra, "--repo", str(repo.path), "--cache-dir", str(tmp / "cache")]


def test_status_table_and_filters(repo: WorkRepo, tmp_path: Path) -> None:
    code, out, _ = invoke("status", *args(repo, tmp_path))
    assert code == 0
    assert "health Degraded" in out.splitlines()[0]
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(lines) == {"done", "broken", "new"}
    assert "Completed" in lines["done"] and "2m38s" in lines["done"] and "Healthy" in lines["done"]
    assert "Failed" in lines["broken"] and "Degraded" in lines["broken"]
    assert "Pending" in lines["new"] and "OutOfSync" in lines["new"]
    _, out, _ = invoke("status", "--phase", "Failed", *args(repo, tmp_path))
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["broken"]
    _, out, _ = invoke("status", "-l", "team=edge", "-o", "json", *args(repo, tmp_path))
    assert [r["name"] for r in json.loads(out)["executions"]] == ["new"]
    _, out, _ = invoke("status", "--health", "Healthy", "-o", "wide", *args(repo, tmp_path))
    assert "REASON" in out and "Succeeded" in out


def test_get_shows_failure_summary_commits_and_timeline(repo: WorkRepo, tmp_path: Path) -> None:
    code, out, _ = invoke("get", "broken", *args(repo, tmp_path))
    assert code == 0
    assert "broken ran out of memory in step apply." in out
    assert "Declared in:" in out and "declare" in out
    code, out, _ = invoke("get", "done", "-o", "json", *args(repo, tmp_path))
    data = json.loads(out)
    assert [(e["phase"], e["reason"]) for e in data["timeline"]] == [("Running", "Running"),
                                                                       ("Completed", "Succeeded")]
    assert len(data["statusCommits"]) == 2 and data["rendered"].startswith("apiVersion: tekton.dev/v1")
    assert yaml.safe_load(data["spec"])["metadata"]["name"] == "done"
    code, _, err = invoke("get", "nope", *args(repo, tmp_path))
    assert code == 2 and "no execution named 'nope'" in err


@pytest.mark.parametrize(("name", "wanted", "code"), [
    ("done", "Completed", 0),
    ("broken", "Completed", 1),
    ("new", "Completed", 2),  # still Pending when the 1s timeout ends
])
def test_wait_exit_codes(repo: WorkRepo, tmp_path: Path, name: str, wanted: str, code: int) -> None:
    result, _, _ = invoke("wait", name, "--for", f"phase={wanted}", "--timeout", "1s", "--interval", "1s",
                          *args(repo, tmp_path))
    assert result == code


@pytest.fixture
def server() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as s:
        yield s


def test_diff_against_the_cluster(server: FakeKubeServer, tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "r")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom")})
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kc"))
    common = ["--repo", str(repo.path), "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "c")]
    code, out, _ = invoke("diff", *common)
    assert code == 1 and f"+ oom: {run_name('payments/Deployment/payment-api')} would be created" in out
    invoke("sync", "--once", *common)
    code, out, _ = invoke("diff", *common)
    assert code == 0 and "in sync" in out
    server.create_object("tekton.dev", "v1", "pipelineruns", {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "wfe-ghost", "namespace": "kubernaut-workflows", "labels": {
            "app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler",
            "kubernaut.ai/workflow-execution": "ghost"}},
        "spec": {"pipelineRef": {"name": "x"}}})
    code, out, _ = invoke("diff", *common)
    assert code == 1 and "! ghost: run wfe-ghost exists but nothing declares it" in out
    code, _, _ = invoke("diff", "--repo", str(repo.path), "--kubeconfig", str(tmp_path / "missing"))
    assert code == 2


def test_status_with_cluster_view(server: FakeKubeServer, tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "r")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/oom.yaml": execution_yaml("oom")})
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kc"))
    common = ["--repo", str(repo.path), "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "c")]
    invoke("sync", "--once", *common)
    _, out, _ = invoke("status", "--cluster", "-o", "json", *common)
    (row,) = json.loads(out)["executions"]
    assert row["phase"] == "Running" and row["run"] == run_name("payments/Deployment/payment-api")
    _, out, _ = invoke("status", "-o", "json", *common)  # Git alone knows nothing yet
    assert json.loads(out)["executions"][0]["reason"] == "NotYetReconciled"


def test_status_names_the_status_files_it_ignores(repo: WorkRepo, tmp_path: Path) -> None:
    """status/ is untrusted input (SPEC §10): a file that is not a valid status document is
    ignored and `reconciler status` says which and why."""
    repo.commit("hostile", **{
        "status/pwned.yaml": recorded("done", "Completed", "Succeeded").replace("name: done", "name: ../executions/pwned"),
        "status/other.yaml": recorded("done", "Completed", "Succeeded"),  # name does not match the file
    })
    code, out, _ = invoke("status", *args(repo, tmp_path))
    assert code == 0
    assert "2 status file(s) ignored" in out
    assert "status/pwned.yaml: status/pwned.yaml: metadata.name: must be a DNS-1123 label" in out
    assert "status/other.yaml: status/other.yaml: metadata.name: 'done' does not match the file name" in out
    _, js, _ = invoke("status", "-o", "json", *args(repo, tmp_path))
    assert set(json.loads(js)["summary"]["ignoredStatusFiles"]) == {"status/pwned.yaml", "status/other.yaml"}


def test_timeline_reads_old_status_versions_with_the_strict_loader(repo: WorkRepo, tmp_path: Path) -> None:
    """Each version of a status file in the history is untrusted input: a hand-committed alias
    bomb is skipped by the strict loader (yaml.safe_load would expand it into gigabytes)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    repo.commit("bomb", **{"status/done.yaml": bomb})
    repo.commit("restore", **{"status/done.yaml": recorded("done", "Completed", "Succeeded", start_time=T0,
                                                         execution_ref=RunRef("PipelineRun", "kubernaut-workflows", "wfe-1"))})
    code, out, _ = invoke("get", "done", "-o", "json", *args(repo, tmp_path))
    assert code == 0
    phases = [e["phase"] for e in json.loads(out)["timeline"]]
    assert phases == ["Running", "Completed"]
