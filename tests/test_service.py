"""The service end to end: push → webhook → run → Tekton completes → status commit on the remote.

Real Git remotes, real HTTP (webhook, health, metrics), the fake API server through the
official client. Waits are bounded and woken by the service's own cycle notifications.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.service.app import Service, normalise_repo_url
from reconciler.service.config import load_config
from reconciler.simulator import FakeKubeServer, TektonSimulator
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git
from tests.fakekube_client import new_api_client

NS = "kubernaut-workflows"
SECRET = "webhook-secret-for-tests"
TARGET = "payments/Deployment/payment-api"


class World:
    def __init__(self, tmp: Path, server: FakeKubeServer, seed: WorkRepo):
        self.tmp = tmp
        self.server = server
        self.seed = seed
        self.remote = tmp / "remote.git"
        git(tmp, "init", "-q", "--bare", "-b", "main", str(self.remote))
        seed.git("push", "-q", str(self.remote), "main")
        self.url = f"file://{self.remote}"
        (tmp / "hook-secret").write_text(SECRET + "\n")
        self.tekton = TektonSimulator(server)
        self.services: list[Service] = []

    def service(self, name: str, *, leader: bool = False, options: dict[str, Any] | None = None,
                **overrides: Any) -> Service:
        """A started Service; ``overrides`` are config sections, ``options`` Service arguments."""
        election = {"enabled": leader, "leaseDuration": "3s", "renewDeadline": "2s", "retryPeriod": "1s",
                    "leaseNamespace": "kubernaut-system"}
        data = {
            "repository": {"url": self.url, "pollInterval": "1h", "cacheDir": str(self.tmp / f"cache-{name}"),
                           "commitAuthor": {"name": "kubernaut-bot", "email": "bot@example.invalid"}},
            "execution": {"namespace": NS},
            "leaderElection": election,
            "server": {"healthAddress": "127.0.0.1:0", "metricsAddress": "127.0.0.1:0",
                       "webhookAddress": "127.0.0.1:0", "webhook": {"secretFile": str(self.tmp / "hook-secret")}},
        }
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value}
        path = self.tmp / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        (self.tmp / name).mkdir(exist_ok=True)
        svc = Service(load_config(path, environ={}), api_client=new_api_client(self.server, self.tmp / name),
                      identity=name, **(options or {}))
        svc.start()
        self.services.append(svc)
        return svc

    def push(self, **files: str) -> str:
        return self.seed.commit("change", **files) and self._push()

    def _push(self) -> str:
        # the reconciler pushes status commits to main too: integrate them, as a person would
        self.seed.git("pull", "-q", "--rebase", str(self.remote), "main")
        self.seed.git("push", "-q", str(self.remote), "main")
        return self.seed.git("rev-parse", "HEAD")

    def remote_status(self, name: str) -> dict[str, Any] | None:
        try:
            return yaml.safe_load(git(self.remote, "show", f"main:status/{name}.yaml"))
        except Exception:
            return None

    def webhook(self, svc: Service, *, branch: str = "main", after: str = "1" * 40,
                secret: str = SECRET, repo_url: str | None = None) -> httpx.Response:
        body = json.dumps({"ref": f"refs/heads/{branch}", "before": "0" * 40, "after": after,
                           "repository": {"full_name": "acme/ops", "clone_url": repo_url or self.url,
                                          "ssh_url": ""}, "deleted": False}).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return httpx.post(f"{svc.servers[2].url}/webhook", content=body, headers={
            "X-GitHub-Event": "push", "X-Hub-Signature-256": sig, "X-GitHub-Delivery": "d1",
            "Content-Type": "application/json"})


@contextlib.contextmanager
def service_world(seed: WorkRepo, tmp: Path) -> Iterator[World]:
    """A bare remote seeded with the catalog, the fake API server and its Tekton simulator;
    every service started in it is stopped afterwards."""
    seed.commit("catalog", **{"workflows/w.yaml": CATALOG})
    with FakeKubeServer() as server:
        w = World(tmp, server, seed)
        try:
            yield w
        finally:
            for svc in w.services:
                svc.stop()
            w.tekton.close()


@pytest.fixture
def world(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[World]:
    with service_world(make_repo("seed"), tmp_path) as w:
        yield w


def test_push_webhook_run_complete_status_commit(world: World) -> None:
    svc = world.service("solo")
    assert svc.wait_for(lambda: svc.cycles >= 1, 10)
    head = world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    response = world.webhook(svc, after=head)
    assert response.status_code == 202 and response.json()["triggered"] is True
    created = world.server.wait_for_object("tekton.dev", "v1", "pipelineruns", NS, run_name(TARGET), timeout=10)
    assert created is not None
    assert svc.wait_for(lambda: (world.remote_status("oom") or {}).get("status", {}).get("phase") == "Running", 10)
    world.tekton.start(NS, run_name(TARGET))
    world.tekton.succeed(NS, run_name(TARGET))  # the watch notices; no poll needed
    assert svc.wait_for(lambda: (world.remote_status("oom") or {}).get("status", {}).get("phase") == "Completed",
                        10)
    doc = world.remote_status("oom")
    assert doc is not None and doc["status"]["health"] == "Healthy" and doc["status"]["observedRevision"] == head
    message = git(world.remote, "log", "-1", "--format=%B", "main")
    assert "oom: Running → Completed" in message and f"Reconciled-Revision: {head}" in message
    assert git(world.remote, "log", "-1", "--format=%an", "main") == "kubernaut-bot"
    health = httpx.get(f"{svc.servers[0].url}/readyz")
    assert health.status_code == 200
    metrics = httpx.get(f"{svc.servers[1].url}/metrics").text
    assert 'workflowexecution_total{outcome="Completed",workflow_id="increase-memory-limit"} 1.0' in metrics
    assert "workflowexecution_pipelinerun_creation_total 1.0" in metrics
    # the dashboard on the webhook port serves the same state, with the timeline from Git
    ui = svc.servers[2].url
    (row,) = httpx.get(f"{ui}/api/executions").json()
    assert (row["name"], row["phase"], row["health"]) == ("oom", "Completed", "Healthy")
    detail = httpx.get(f"{ui}/api/executions/oom").json()
    assert [e["phase"] for e in detail["timeline"]] == ["Running", "Completed"]
    assert detail["declaredCommit"]["sha"] == head
    page = httpx.get(f"{ui}/executions/oom")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assert httpx.get(f"{ui}/api/summary").json()["health"] == "Healthy"


def test_status_commits_do_not_trigger_new_work(world: World) -> None:
    svc = world.service("solo")
    world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    svc.trigger()
    assert svc.wait_for(lambda: world.remote_status("oom") is not None, 10)
    settle = svc.cycles
    svc.trigger()  # the next cycle observes the new run (a real change: Tekton has not started it)
    assert svc.wait_for(lambda: svc.cycles > settle, 10)
    commits = svc.store.commits
    for _ in range(3):  # the status commit moved the branch: nothing else must happen
        before = svc.cycles
        svc.trigger()
        assert svc.wait_for(lambda before=before: svc.cycles > before, 10)
    assert svc.store.commits == commits
    assert len(world.server.list_objects("tekton.dev", "v1", "pipelineruns", NS)) == 1


@pytest.mark.parametrize(("kind", "kw"), [
    ("other branch", {"branch": "feature"}),
    ("other repository", {"repo_url": "https://github.com/someone/else.git"}),
])
def test_irrelevant_pushes_do_not_trigger(world: World, kind: str, kw: dict[str, str]) -> None:
    svc = world.service("solo")
    assert world.webhook(svc).json()["triggered"] is True  # the same push for us does trigger
    response = world.webhook(svc, **kw)
    assert response.status_code == 202 and response.json()["triggered"] is False


def test_bad_signature_is_refused_without_a_cycle(world: World) -> None:
    svc = world.service("solo")
    assert svc.wait_for(lambda: svc.cycles >= 1, 10)
    cycles = svc.cycles
    assert world.webhook(svc, secret="wrong").status_code == 401
    assert svc.cycles == cycles and not svc._again.is_set()


def test_remote_unreachable_then_back(world: World) -> None:
    svc = world.service("solo")
    assert svc.wait_for(lambda: svc.cycles >= 1, 10)
    assert httpx.get(f"{svc.servers[0].url}/readyz").status_code == 200
    hidden = world.remote.with_name("hidden.git")
    world.remote.rename(hidden)
    before = svc.cycles
    svc.trigger()
    assert svc.wait_for(lambda: svc.cycles > before, 10)
    svc.readiness_grace = 0.0  # as if the outage had lasted longer than the grace period
    ready = httpx.get(f"{svc.servers[0].url}/readyz")
    assert ready.status_code == 503 and "git unreachable" in ready.text
    assert "kubernaut_reconciler_git_reachable 0.0" in httpx.get(f"{svc.servers[1].url}/metrics").text
    assert httpx.get(f"{svc.servers[0].url}/healthz").status_code == 200  # alive: no crash, no restart
    hidden.rename(world.remote)
    svc.readiness_grace = 60.0
    before = svc.cycles
    svc.trigger()
    assert svc.wait_for(lambda: svc.cycles > before, 10)
    assert httpx.get(f"{svc.servers[0].url}/readyz").status_code == 200


def test_two_instances_one_lease(world: World) -> None:
    a = world.service("replica-a", leader=True)
    b = world.service("replica-b", leader=True)
    assert a.wait_for(lambda: a.is_leader() or b.is_leader(), 10) or b.wait_for(lambda: a.is_leader(), 1)
    leader, standby = (a, b) if a.is_leader() else (b, a)
    assert not standby.is_leader()
    world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    world.webhook(a)
    world.webhook(b)
    assert leader.wait_for(lambda: world.remote_status("oom") is not None, 10)
    assert standby.cycles == 0
    creates = [r for r in world.server.requests if r.method == "POST" and r.path.endswith("/pipelineruns")]
    assert len(creates) == 1
    # the leader dies without releasing the Lease: the standby takes over within the lease duration
    assert leader.elector is not None
    leader.scheduler.shutdown(wait=False)
    leader.elector.stop(release=False)
    assert standby.wait_for(lambda: standby.is_leader(), 0.1) or _eventually(standby.is_leader, 6)
    # the new leader's first cycle pushes the status it observes; our push must come after
    # it, or the two race and ours is rejected as a non-fast-forward
    assert standby.wait_for(lambda: standby.cycles >= 1, 10)
    world.push(**{"executions/disk.yaml": execution_yaml("disk", target="search/Deployment/api")})
    world.webhook(standby)
    assert standby.wait_for(lambda: world.remote_status("disk") is not None, 10)
    assert (world.remote_status("oom") or {})["status"]["phase"] == "Running"


def _eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    import threading

    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        done.wait(0.05)  # waiting for leadership, which has no notification of its own
    return predicate()


@pytest.mark.parametrize(("url", "expected"), [
    ("https://github.com/Acme/Ops.git", "github.com/acme/ops"),
    ("git@github.com:acme/ops.git", "github.com/acme/ops"),
    ("ssh://git@github.com:22/acme/ops", "github.com/acme/ops"),
    ("https://x-access-token:secret@github.com/acme/ops/", "github.com/acme/ops"),
])
def test_repository_urls_match_across_forms(url: str, expected: str) -> None:
    assert normalise_repo_url(url) == expected
