"""Every command judges a broken catalog entry the way ``validate`` does.

A workflow defined twice (with different images) or a catalog entry that declares the
reserved parameter used to be reported by ``validate`` and yet planned and *created* by
``plan`` and ``sync`` (which ran whichever definition sorted first).  One validation path now
serves every command: the execution that depends on the broken entry is invalid everywhere,
naming the catalog file, and nothing else is affected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.names import run_name
from reconciler.simulator import FakeKubeServer
from tests.conftest import CATALOG, IMAGE, WorkRepo, execution_yaml

NS = "kubernaut-workflows"
OTHER_IMAGE = "ghcr.io/acme/wf/other@sha256:" + "b" * 64
RESTART = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {name: restart}
spec: {workflowId: restart, version: "1.0.0", containerImage: "ghcr.io/acme/wf/restart:1.0"}
"""
BROKEN = {
    "defined twice": ({"workflows/a.yaml": CATALOG, "workflows/b.yaml": CATALOG.replace(IMAGE, OTHER_IMAGE)},
                      "workflows/b.yaml", "duplicate-workflow"),
    "reserved parameter": ({"workflows/a.yaml": CATALOG + "    - {name: TARGET_RESOURCE}\n"},
                           "workflows/a.yaml", "parameter-reserved"),
}


@pytest.fixture
def server() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as s:
        yield s


@pytest.fixture(params=sorted(BROKEN))
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[WorkRepo, str, str]:
    catalog, bad_file, rule = BROKEN[request.param]
    repo = WorkRepo(tmp_path / "repo")
    repo.commit("declare", **catalog, **{
        "workflows/restart.yaml": RESTART,
        "executions/oom.yaml": execution_yaml("oom"),
        "executions/ok.yaml": execution_yaml("ok", target="search/Deployment/api", params="{}",
                                             workflow='workflowId: restart, version: "1.0.0"'),
    })
    return repo, bad_file, rule


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_every_command_agrees_with_validate(broken: tuple[WorkRepo, str, str], server: FakeKubeServer,
                                            tmp_path: Path) -> None:
    repo, bad_file, rule = broken
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    source = ("--repo", str(repo.path))

    code, out, _ = invoke("validate", "-o", "json", str(repo.path))
    assert code == 1
    found = {(Path(p["file"]).as_posix().split("/repo/")[-1], p["rule"]): p["message"]
             for p in json.loads(out)["problems"]}
    assert (bad_file, rule) in found
    assert bad_file in found[("executions/oom.yaml", "catalog-entry-invalid")]
    assert not any(f == "executions/ok.yaml" for f, _ in found)

    code, out, _ = invoke("plan", *source, "--cache-dir", str(tmp_path / "c1"), "-o", "json")
    assert code == 1
    actions = {e["file"]: e for e in json.loads(out)["executions"]}
    assert actions["executions/oom.yaml"]["action"] == "invalid"
    assert bad_file in actions["executions/oom.yaml"]["problems"][0]["message"]
    assert actions["executions/ok.yaml"]["action"] == "create"
    assert actions[bad_file]["action"] == "invalid"  # the catalog file itself is listed

    code, out, _ = invoke("sync", "--once", "--dry-run", *source, "--kubeconfig", kubeconfig,
                          "--cache-dir", str(tmp_path / "c2"), "-o", "json")
    states = {d["metadata"]["name"]: d["status"] for d in json.loads(out)["executions"]}
    assert (states["oom"]["phase"], states["oom"]["reason"]) == ("Failed", "ConfigurationError")
    assert bad_file in states["oom"]["message"]
    assert states["ok"]["phase"] != "Failed"

    code, out, err = invoke("render", "oom", *source, "--cache-dir", str(tmp_path / "c3"))
    assert code == 1 and out == ""
    assert "catalog-entry-invalid" in err and bad_file in err

    code, out, _ = invoke("status", *source, "--cluster", "--kubeconfig", kubeconfig,
                          "--cache-dir", str(tmp_path / "c4"), "-o", "json")
    assert code == 0, out
    rows = {r["name"]: r for r in json.loads(out)["executions"]}
    assert (rows["oom"]["phase"], rows["oom"]["reason"], rows["oom"]["declared"]) == (
        "Failed", "ConfigurationError", False)
    assert bad_file in rows["oom"]["message"]
    assert rows["ok"]["declared"] is True and rows["ok"]["phase"] != "Failed"

    # and the real thing: one run, for the valid execution only
    code, out, _ = invoke("sync", "--once", *source, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "c5"),
                          "-o", "json")
    runs = [r["metadata"]["name"] for r in server.list_objects("tekton.dev", "v1", "pipelineruns", NS)]
    assert runs == [run_name("search/Deployment/api")]
    states = {d["metadata"]["name"]: d["status"] for d in json.loads(out)["executions"]}
    assert (states["oom"]["phase"], states["oom"]["reason"]) == ("Failed", "ConfigurationError")
