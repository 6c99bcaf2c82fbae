"""CLI fixes of issue 12, each pinned by a test that failed before it.

* ``config check``: exit codes as its help says (2 unreadable, 1 invalid, 0 valid even with
  warnings);
* ``reconciler run`` on a port in use: one clear line, exit 2, no traceback;
* ``validate FILE`` from inside ``executions/`` checks the file against the catalog;
* ``status``/``get`` show an invalid execution as ``Failed``/``ConfigurationError``/``Degraded``;
  ``sync --dry-run`` exits 1 when anything is invalid;
* ``wait`` fails at once (exit 2) on an unknown execution or a ``--for`` that cannot happen, and
  waits for ``health=`` and ``sync=`` values too;
* ``diff``: a suspended execution is declared intent, not drift (exit 0 when it is the only
  difference);
* ``plan --base`` in a work tree plans the checked-out commit and names ignored uncommitted
  changes; a ``--path``/``--repo`` that declares nothing is an error (exit 2);
* ``config check``: a typo is reported at file:line:col with "did you mean", like executions.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.simulator import FakeKubeServer
from tests.conftest import CATALOG, PROJECT, WorkRepo, execution_yaml


@pytest.mark.parametrize(("content", "code"), [
    (None, 2),                                                # no such file
    ("repository: [unclosed", 2),                             # not YAML
    ("- a list", 2),                                          # not a mapping
    ("repository: {url: /tmp/x, pollInterval: soon}", 1),     # invalid setting
    ("repository: {url: /tmp/x}", 0),                         # valid; warns (no webhook secret) → still 0
])
def test_config_check_exit_codes_follow_its_help(tmp_path: Path, content: str | None, code: int) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert result.exit_code == code, result.output


def test_run_on_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
            "users": [{"name": "x", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({
            "repository": {"url": str(tmp_path / "nowhere"), "cacheDir": str(tmp_path / "cache")},
            "kubernetes": {"kubeconfig": str(tmp_path / "kubeconfig")},
            "server": {"healthAddress": f"127.0.0.1:{port}", "metricsAddress": "127.0.0.1:0",
                       "webhookAddress": "127.0.0.1:0"}}))
        done = subprocess.run([sys.executable, "-m", "reconciler", "run", "--config", str(tmp_path / "config.yaml")],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot start" in errors[0] and "health" in errors[0], done.stderr


@pytest.mark.parametrize(("cwd", "arg"), [
    ("", "executions/oom-payment-api-2026-11-21.yaml"),        # at the root (always worked)
    ("executions", "oom-payment-api-2026-11-21.yaml"),         # inside executions/ (reported valid)
    ("executions", "./oom-payment-api-2026-11-21.yaml"),
    ("executions/nodes", "../oom-payment-api-2026-11-21.yaml"),
])
def test_validate_a_file_from_inside_executions_checks_it_against_the_catalog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd: str, arg: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(PROJECT / "examples-repo", repo)
    broken = repo / "executions" / "oom-payment-api-2026-11-21.yaml"
    text = broken.read_text()
    assert "workflowId:" in text
    broken.write_text(re.sub(r"workflowId: .*", "workflowId: no-such-workflow", text, count=1))
    monkeypatch.chdir(repo / cwd)
    result = CliRunner().invoke(main, ["validate", arg])
    assert result.exit_code == 1, result.output
    assert "unknown-workflow" in result.output and "oom-payment-api-2026-11-21.yaml:" in result.output
    assert "1 problem(s) in 1 of 1 file(s)" in result.output


def _invalid_repo(tmp_path: Path) -> WorkRepo:
    repo = WorkRepo(tmp_path / "declared")
    repo.commit("declare", **{
        "workflows/w.yaml": CATALOG,
        "executions/good.yaml": execution_yaml("good"),
        "executions/bad.yaml": execution_yaml("bad", target="search/Deployment/api",
                                              params="{NAMESPACE: search}"),  # MEMORY_LIMIT missing
    })
    return repo


def test_status_shows_an_invalid_execution_as_failed_configuration_error(tmp_path: Path) -> None:
    repo = _invalid_repo(tmp_path)
    common = ["--repo", str(repo.path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["status", "-o", "json", *common])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {r["name"]: r for r in data["executions"]}
    bad = by_name["bad"]
    assert (bad["phase"], bad["reason"], bad["health"]) == ("Failed", "ConfigurationError", "Degraded")
    assert "executions/bad.yaml" in bad["message"] and "MEMORY_LIMIT" in bad["message"]
    assert (by_name["good"]["phase"], by_name["good"]["health"]) == ("Pending", "Progressing")
    assert data["summary"]["health"] == "Degraded"
    assert data["summary"]["phases"]["Failed"] == 1
    detail = CliRunner().invoke(main, ["get", "bad", "-o", "json", *common])
    assert json.loads(detail.stdout)["reason"] == "ConfigurationError", detail.output


@pytest.mark.parametrize(("invalid", "code"), [(True, 1), (False, 0)])
def test_sync_dry_run_exits_1_when_anything_is_invalid(tmp_path: Path, invalid: bool, code: int) -> None:
    repo = _invalid_repo(tmp_path)
    if not invalid:
        repo.remove("executions/bad.yaml")
        repo.commit("drop the invalid one")
    result = CliRunner().invoke(main, ["sync", "--once", "--dry-run", "--repo", str(repo.path),
                                       "--cache-dir", str(tmp_path / "cache"),
                                       "--kubeconfig", str(tmp_path / "no-kubeconfig")])
    assert result.exit_code == code, result.output


@pytest.mark.parametrize(("name", "condition", "error"), [
    ("nobody", "phase=Completed", "no execution named 'nobody'"),
    ("good", "phase=Done", "--for takes phase=<"),
    ("good", "phase=completed", "--for takes phase=<"),   # values are case-sensitive, as shown
    ("good", "health=Fine", "--for takes phase=<"),
    ("good", "colour=red", "--for takes phase=<"),
    ("good", "phase", "--for takes phase=<"),
])
def test_wait_fails_at_once_on_what_can_never_happen(tmp_path: Path, name: str, condition: str,
                                                     error: str) -> None:
    repo = _invalid_repo(tmp_path)
    result = CliRunner().invoke(main, ["wait", name, "--for", condition, "--timeout", "1s", "--interval", "1s",
                                       "--repo", str(repo.path), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2
    assert f"error: {error}" in result.stderr and "still" not in result.stderr, result.stderr


@pytest.mark.parametrize(("name", "condition", "code"), [
    ("bad", "health=Degraded", 0),     # invalid: Failed/ConfigurationError/Degraded at once
    ("bad", "phase=Completed", 1),     # ended Failed: it will never complete
    ("good", "sync=OutOfSync", 0),
    ("good", "health=Progressing", 0),
])
def test_wait_for_health_and_sync(tmp_path: Path, name: str, condition: str, code: int) -> None:
    repo = _invalid_repo(tmp_path)
    result = CliRunner().invoke(main, ["wait", name, "--for", condition, "--timeout", "1s", "--interval", "1s",
                                       "--repo", str(repo.path), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == code, result.output


@pytest.mark.parametrize(("also_unapplied", "code"), [(False, 0), (True, 1)])
def test_diff_does_not_count_a_suspension_as_drift(tmp_path: Path, also_unapplied: bool, code: int) -> None:
    repo = WorkRepo(tmp_path / "declared")
    files = {"workflows/w.yaml": CATALOG,
             "executions/held.yaml": execution_yaml("held", extra="  suspend: true\n")}
    if also_unapplied:
        files["executions/fresh.yaml"] = execution_yaml("fresh", target="search/Deployment/api")
    repo.commit("declare", **files)
    with FakeKubeServer() as server:
        kubeconfig = str(server.write_kubeconfig(tmp_path / "kc"))
        result = CliRunner().invoke(main, ["diff", "--repo", str(repo.path), "--kubeconfig", kubeconfig,
                                           "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == code, result.output
    assert "= held: suspended (spec.suspend: true)" in result.stdout
    assert "+ held" not in result.stdout
    assert ("+ fresh:" in result.stdout) is also_unapplied


def test_plan_base_in_a_work_tree_plans_the_checked_out_commit_and_names_uncommitted_changes(
        tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "declared")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/old.yaml": execution_yaml("old")})
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("add one", **{"executions/added.yaml": execution_yaml("added", target="search/Deployment/api")})
    repo.write("executions/draft.yaml", execution_yaml("draft", target="edge/Deployment/nginx"))  # not committed
    result = CliRunner().invoke(main, ["plan", "--base", "main", "-o", "json", "--repo", str(repo.path),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    planned = {e["name"] for e in json.loads(result.stdout)["executions"]}
    assert "added" in planned and "draft" not in planned and "old" not in planned
    assert "note: 1 uncommitted change(s) in the work tree are ignored" in result.stderr


def test_plan_in_a_clean_work_tree_says_nothing_about_uncommitted_changes(tmp_path: Path) -> None:
    repo = WorkRepo(tmp_path / "declared")
    repo.commit("declare", **{"workflows/w.yaml": CATALOG, "executions/old.yaml": execution_yaml("old")})
    result = CliRunner().invoke(main, ["plan", "--repo", str(repo.path), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0 and "uncommitted" not in result.stderr, result.output


@pytest.mark.parametrize("where", ["--path", "--repo"])
def test_plan_of_a_place_that_declares_nothing_is_an_error(tmp_path: Path, where: str) -> None:
    repo = WorkRepo(tmp_path / "declared")
    repo.commit("declare", **{"deploy/workflows/w.yaml": CATALOG,
                              "deploy/executions/old.yaml": execution_yaml("old"), "docs/README.md": "hi\n"})
    args = ["--path", "docs", "--repo", str(repo.path)] if where == "--path" else ["--repo", str(repo.path / "docs")]
    result = CliRunner().invoke(main, ["plan", *args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert "--path docs holds no executions/ or workflows/" in result.stderr
    good = CliRunner().invoke(main, ["plan", "--path", "deploy", "--repo", str(repo.path),
                                     "--cache-dir", str(tmp_path / "cache")])
    assert good.exit_code == 0 and "old" in good.stdout, good.output


@pytest.mark.parametrize(("content", "expected"), [
    ("repository:\n  url: /tmp/x\n  pollIntervall: 1m\n",
     "config.yaml:3:3: repository.pollIntervall: unknown field 'pollIntervall' (did you mean 'pollInterval'?)"),
    ("repository:\n  url: /tmp/x\nserver:\n  healthAdress: 127.0.0.1:1\n",
     "config.yaml:4:3: server.healthAdress: unknown field 'healthAdress' (did you mean 'healthAddress'?)"),
    ("repository:\n  url: /tmp/x\n  poll_interval: soon\n",   # snake_case spelling is found too
     "config.yaml:3:3: repository.pollInterval: Value error, 'soon' is not a duration"),
    ("repository:\n  url: /tmp/x\nnotifications:\n  webhooks:\n    - {name: a, url: 'http://x', sekretEnv: X}\n",
     "config.yaml:5:34: notifications.webhooks.[0].sekretEnv: unknown field 'sekretEnv' (did you mean 'secretEnv'?)"),
    ("repositry:\n  url: /tmp/x\n", "config.yaml:1:1: repositry: unknown field 'repositry' (did you mean 'repository'?)"),
])
def test_config_typo_gets_file_line_column_and_did_you_mean(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{tmp_path}/{expected}" in result.stderr, result.stderr
