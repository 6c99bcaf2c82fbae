"""The cycle test harness: a real repository, the fake API server, an injected clock.

``env`` (registered in conftest) gives each test a repository with a catalog, a running
FakeKubeServer sharing the test's clock with the simulated Tekton and Job controllers,
and a Reconciler wired to both through the official kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from reconciler.gate.checks import Gate
from reconciler.record.transitions import CycleResult, MemoryStatusStore
from reconciler.run.cluster import KubeCluster
from reconciler.run.kube import KubeClient, RetryPolicy
from reconciler.run.lifecycle import Settings
from reconciler.service.cycle import Reconciler
from reconciler.simulator import FakeKubeServer, JobSimulator, TektonSimulator
from reconciler.source.gitsource import GitSource
from tests.conftest import CATALOG, IMAGE, WorkRepo, execution_yaml
from tests.fakekube_client import new_api_client

NS = "kubernaut-workflows"
T0 = datetime(2026, 11, 21, 9, 0, 0, tzinfo=timezone.utc)
TARGET = "payments/Deployment/payment-api"
JOB_CATALOG = f"""\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {{name: cleanup-node-disk-1-0-0}}
spec:
  workflowId: cleanup-node-disk
  version: "1.0.0"
  containerImage: {IMAGE}
  executionEngine: job
  parameters: []
"""
ROLLBACK_CATALOG = CATALOG.replace("increase-memory-limit", "rollback-deployment")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Env:
    def __init__(self, repo: WorkRepo, server: FakeKubeServer, tmp: Path, clock: Clock):
        self.repo = repo
        self.server = server
        self.tmp = tmp
        self.clock = clock
        self.store = MemoryStatusStore()
        self.tekton = TektonSimulator(server)
        self.jobs = JobSimulator(server)
        self.api = new_api_client(server, tmp)
        self.kube = KubeClient(self.api, retry=RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01))
        self.reconciler = self.new_reconciler()

    def new_reconciler(self, *, store: MemoryStatusStore | None = None, dry_run: bool = False,
                       gate: Gate | None = None) -> Reconciler:
        """A fresh process: new Git source object, new clients."""
        source = GitSource(str(self.repo.path), cache_dir=self.tmp / "cache")
        cluster = KubeCluster(self.kube, NS, clock=self.clock)
        return Reconciler(source, cluster, settings=Settings(namespace=NS, cooldown=timedelta(minutes=5)),
                          store=store if store is not None else self.store, clock=self.clock, dry_run=dry_run,
                          gate=gate)

    def cycle(self) -> CycleResult:
        return self.reconciler.run_once()

    def runs(self) -> list[dict[str, Any]]:
        return self.server.list_objects("tekton.dev", "v1", "pipelineruns", NS)

    def jobs_(self) -> list[dict[str, Any]]:
        return self.server.list_objects("batch", "v1", "jobs", NS)

    def posts(self, plural: str) -> int:
        return sum(1 for r in self.server.requests if r.method == "POST" and r.path.endswith(f"/{plural}"))

    def events(self) -> list[str]:
        return [e["reason"] for e in self.server.list_objects("", "v1", "events", NS)]


@pytest.fixture
def env(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[Env]:
    repo = make_repo("repo")
    repo.commit("catalog", **{"workflows/w.yaml": CATALOG, "workflows/job.yaml": JOB_CATALOG,
                              "workflows/rollback.yaml": ROLLBACK_CATALOG})
    clock = Clock()  # one clock for the reconciler and the simulated controllers
    with FakeKubeServer(clock=clock) as server:
        e = Env(repo, server, tmp_path, clock)
        yield e
        e.tekton.close()
        e.jobs.close()
        e.api.close()


def declare(env: Env, name: str, **kw: Any) -> None:
    env.repo.commit(f"declare {name}", **{f"executions/{name}.yaml": execution_yaml(name, **kw)})


def state(result: CycleResult, name: str) -> tuple[str, str]:
    s = result.states[name]
    return (s.phase, s.reason)
