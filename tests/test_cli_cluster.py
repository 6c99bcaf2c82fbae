"""`sync --once`, `sync --dry-run` and `plan --cluster` against the fake API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.names import run_name
from reconciler.simulator import FakeKubeServer, TektonSimulator
from tests.conftest import CATALOG, EXAMPLES, WorkRepo, execution_yaml

NS = "kubernaut-workflows"


@pytest.fixture
def server() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as s:
        yield s


@pytest.fixture
def kubeconfig(server: FakeKubeServer, tmp_path: Path) -> str:
    return str(server.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    r = WorkRepo(tmp_path / "repo")
    r.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/a.yaml": execution_yaml("a"),
                           "executions/b.yaml": execution_yaml("b", target="search/Deployment/api",
                                                               extra="  suspend: true\n")})
    return r


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_sync_once_creates_runs(server: FakeKubeServer, kubeconfig: str, repo: WorkRepo, tmp_path: Path) -> None:
    code, out, _ = invoke("sync", "--once", "--repo", str(repo.path), "--kubeconfig", kubeconfig,
                          "--cache-dir", str(tmp_path / "c"), "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    phases = {d["metadata"]["name"]: (d["status"]["phase"], d["status"]["reason"]) for d in data["executions"]}
    assert phases == {"a": ("Running", "Running"), "b": ("Pending", "Suspended")}
    names = [r["metadata"]["name"] for r in server.list_objects("tekton.dev", "v1", "pipelineruns", NS)]
    assert names == [run_name("payments/Deployment/payment-api")]


def test_sync_dry_run_writes_nothing(server: FakeKubeServer, kubeconfig: str, repo: WorkRepo,
                                     tmp_path: Path) -> None:
    code, out, _ = invoke("sync", "--once", "--dry-run", "--repo", str(repo.path), "--kubeconfig", kubeconfig,
                          "--cache-dir", str(tmp_path / "c"))
    assert code == 0
    assert f"create PipelineRun {NS}/{run_name('payments/Deployment/payment-api')}" in out
    assert server.list_objects("tekton.dev", "v1", "pipelineruns", NS) == []
    assert {r.method for r in server.requests} == {"GET"}


def test_sync_without_once_is_a_usage_error(repo: WorkRepo) -> None:
    code, _, err = invoke("sync", "--repo", str(repo.path))
    assert code == 2 and "--once" in err


def test_sync_exit_2_when_api_unreachable(repo: WorkRepo, tmp_path: Path) -> None:
    server = FakeKubeServer().start()
    config = str(server.write_kubeconfig(tmp_path / "kc"))
    server.stop()
    code, _, _ = invoke("sync", "--once", "--repo", str(repo.path), "--kubeconfig", config,
                        "--cache-dir", str(tmp_path / "c"))
    assert code == 2


def test_dry_run_without_any_cluster_plans_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = invoke("sync", "--once", "--dry-run", "--repo", str(EXAMPLES), "--cache-dir", str(tmp_path / "c"))
    assert code == 0, out + err
    assert "planning against an empty cluster" in err
    assert "oom-payment-api-2026-11-21" in out and "create PipelineRun" in out
    assert "create Job" in out


def test_plan_with_cluster_view(server: FakeKubeServer, kubeconfig: str, repo: WorkRepo, tmp_path: Path) -> None:
    invoke("sync", "--once", "--repo", str(repo.path), "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "c"))
    TektonSimulator(server).start(NS, run_name("payments/Deployment/payment-api"))
    repo.commit("another on the busy target", **{"executions/c.yaml": execution_yaml("c", params="{NAMESPACE: p, MEMORY_LIMIT: 3Gi}")})
    code, out, _ = invoke("plan", "--cluster", "--repo", str(repo.path), "--kubeconfig", kubeconfig,
                          "--cache-dir", str(tmp_path / "c2"), "-o", "json")
    assert code == 0, out
    actions = {e["name"]: (e["action"], e.get("reason", "")) for e in json.loads(out)["executions"]}
    assert actions["a"][0] == "observe"
    assert actions["b"] == ("hold", "Suspended")
    assert actions["c"] == ("skip", "ResourceBusy")
    assert len(server.list_objects("tekton.dev", "v1", "pipelineruns", NS)) == 1
