"""`reconciler doctor` against the fake API server and a real Git remote over HTTP.

A ready cluster passes every check; each way it can be unready (a missing CRD, a
forbidden verb via the fake's RBAC switch, a missing ServiceAccount, a bad Git token, the
bundles resolver off, no webhook secret) fails exactly that check, with its fix, and
exit 1; an unreadable configuration is exit 2.  One SelfSubjectAccessReview per verb and
resource is sent, no more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.simulator import FakeKubeServer
from reconciler.tools.doctor import LEASE_VERBS, NEEDED
from reconciler.tools.testdrive import packaged_examples, seed_remote
from tests.githttp import GitHttpServer

NS = "kubernaut-workflows"
TOKEN = "ghp_S3cretTokenValue0123456789abcdef"
ACCOUNTS = ("kubernaut-workflow-runner", "kubernaut-node-maintenance")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpServer]:
    examples = packaged_examples()
    assert examples is not None
    work = tmp_path_factory.mktemp("doctor-git")
    seed_remote(examples, work)
    with GitHttpServer(work, "x-access-token", TOKEN) as server:
        yield server


@pytest.fixture
def ready(tmp_path: Path) -> Iterator[FakeKubeServer]:
    """A cluster with everything the reconciler needs."""
    with FakeKubeServer() as server:
        server.create_object("", "v1", "namespaces", {"metadata": {"name": NS}})
        server.create_object("", "v1", "configmaps", {
            "metadata": {"name": "resolvers-feature-flags"}, "data": {"enable-bundles-resolver": "true"}},
            namespace="tekton-pipelines-resolvers")
        for name in ACCOUNTS:
            server.create_object("", "v1", "serviceaccounts", {"metadata": {"name": name}}, namespace=NS)
        yield server


def _write_config(server: FakeKubeServer, remote: GitHttpServer, tmp: Path, *, token: str = TOKEN,
                  webhook_secret: bool = True, leader: bool = False) -> Path:
    (tmp / "token").write_text(token)
    (tmp / "webhook").write_text("s3cret-webhook")
    config = {
        "repository": {"url": remote.url("remote.git"), "cacheDir": str(tmp / "cache"),
                       "auth": {"tokenFile": str(tmp / "token")}},
        "execution": {"namespace": NS},
        "kubernetes": {"kubeconfig": str(server.write_kubeconfig(tmp / "kubeconfig"))},
        "leaderElection": {"enabled": leader},
        "server": {"webhook": {"secretFile": str(tmp / "webhook")} if webhook_secret else {}},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp / "config.yaml"


def _run(config: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    runner = CliRunner()
    as_json = runner.invoke(main, ["doctor", "--config", str(config), "-o", "json"])
    text = runner.invoke(main, ["doctor", "--config", str(config)])
    assert as_json.exit_code == text.exit_code, text.output
    checks = {c["check"]: c for c in json.loads(as_json.output)}
    assert TOKEN not in text.output and TOKEN not in as_json.output
    return text.exit_code, checks, text.output


def _doctor(server: FakeKubeServer, remote: GitHttpServer, tmp: Path,
            **kw: Any) -> tuple[int, dict[str, dict[str, Any]], str]:
    return _run(_write_config(server, remote, tmp, **kw))


def _failed(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, c in checks.items() if c["status"] == "fail"}


def test_a_ready_cluster_and_repository_pass_every_check(ready: FakeKubeServer, remote: GitHttpServer,
                                                         tmp_path: Path) -> None:
    ready.clear_requests()
    code, checks, text = _doctor(ready, remote, tmp_path, leader=True)
    assert code == 0, text
    assert _failed(checks) == set()
    assert {"API server", "Tekton PipelineRun CRD", "Tekton bundles resolver", "execution namespace", "Git",
            "webhook secret", *(f"ServiceAccount {a}" for a in ACCOUNTS)} <= set(checks)
    assert "all checks passed" in text
    # one review per verb and resource (two runs of doctor: text and json)
    reviews = [r for r in ready.requests if r.path.endswith("/selfsubjectaccessreviews")]
    per_run = sum(len(verbs) for _, _, verbs in NEEDED) + len(LEASE_VERBS)
    assert len(reviews) == 2 * per_run
    asked = [(r.body["spec"]["resourceAttributes"]["verb"], r.body["spec"]["resourceAttributes"]["resource"],
              r.body["spec"]["resourceAttributes"].get("subresource", "")) for r in reviews[:per_run]]
    assert len(set(asked)) == per_run


Breakage = Callable[[FakeKubeServer], Any]


@pytest.mark.parametrize(("breakage", "failed", "fix"), [
    (lambda s: s.unregister("tekton.dev", "pipelineruns"), {"Tekton PipelineRun CRD"}, "install Tekton Pipelines"),
    (lambda s: s.forbid("create", "pipelineruns", namespace=NS),
     {f"RBAC: create pipelineruns.tekton.dev in {NS}"}, "rbac-reconciler.yaml"),
    (lambda s: s.forbid("get", "pods/log"), {f"RBAC: get pods/log in {NS}"}, "rbac-reconciler.yaml"),
    (lambda s: s.delete_object("", "v1", "serviceaccounts", NS, "kubernaut-node-maintenance"),
     {"ServiceAccount kubernaut-node-maintenance"}, "kubectl create serviceaccount"),
    (lambda s: s.modify_object("", "v1", "configmaps", "tekton-pipelines-resolvers", "resolvers-feature-flags",
                               lambda cm: cm["data"].update({"enable-bundles-resolver": "false"})),
     {"Tekton bundles resolver"}, "enable-bundles-resolver"),
    (lambda s: s.delete_object("", "v1", "namespaces", None, NS), {"execution namespace"}, "kubectl create namespace"),
], ids=["missing-crd", "forbidden-create", "forbidden-subresource", "missing-serviceaccount", "bundles-off",
        "missing-namespace"])
def test_each_unready_cluster_fails_that_check_with_its_fix(ready: FakeKubeServer, remote: GitHttpServer,
                                                            tmp_path: Path, breakage: Breakage, failed: set[str],
                                                            fix: str) -> None:
    breakage(ready)
    code, checks, text = _doctor(ready, remote, tmp_path)
    assert code == 1, text
    assert _failed(checks) == failed, text
    for name in failed:
        assert fix in checks[name]["fix"]
    assert "fix: " in text


def test_bad_git_credentials_fail_the_git_check_without_printing_the_token(
        ready: FakeKubeServer, remote: GitHttpServer, tmp_path: Path) -> None:
    code, checks, text = _doctor(ready, remote, tmp_path, token="ghp_wrongTokenValue0000000000000000000")
    assert code == 1
    assert _failed(checks) == {"Git"}
    assert "repository.auth" in checks["Git"]["fix"]
    assert "ghp_wrongTokenValue" not in text


def test_no_webhook_secret_fails_that_check(ready: FakeKubeServer, remote: GitHttpServer, tmp_path: Path) -> None:
    code, checks, _ = _doctor(ready, remote, tmp_path, webhook_secret=False)
    assert code == 1 and _failed(checks) == {"webhook secret"}


def test_an_unreachable_api_server_fails_and_skips_the_cluster_checks(remote: GitHttpServer, tmp_path: Path) -> None:
    server = FakeKubeServer().start()
    config = _write_config(server, remote, tmp_path)
    server.stop()
    code, checks, _ = _run(config)
    assert code == 1
    assert checks["API server"]["status"] == "fail" and "unreachable" in checks["API server"]["detail"]
    assert "Tekton PipelineRun CRD" not in checks and checks["Git"]["status"] == "pass"


@pytest.mark.parametrize("content", ["repository: [unclosed", "repository: {url: 3, pollInterval: soon}"])
def test_an_unreadable_or_invalid_configuration_is_exit_2(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.yaml").write_text(content)
    result = CliRunner().invoke(main, ["doctor", "--config", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2
    assert "config.yaml" in result.output
