"""Benchmark the service end to end (real Git remote, real HTTP, fake API server).

    python bench/bench_service.py                  # 50 samples per path
    python bench/bench_service.py --samples 20

Figures (p50 / p95 / max):
  1. git push → run created, via the push webhook;
  2. git push → run created, by polling alone (poll interval 1 s);
  3. a run's terminal condition → its status commit visible on the remote;
  4. write-back of 1 000 status changes in one cycle (one commit): seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from reconciler.declare.names import run_name  # noqa: E402
from reconciler.record.status import ExecutionState  # noqa: E402
from reconciler.record.writeback import GitStatusStore  # noqa: E402
from reconciler.service.app import Service  # noqa: E402
from reconciler.service.config import load_config  # noqa: E402
from reconciler.simulator import FakeKubeServer, TektonSimulator  # noqa: E402
from reconciler.source.gitsource import GitSource  # noqa: E402
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git  # noqa: E402
from tests.fakekube_client import new_api_client  # noqa: E402

NS = "kubernaut-workflows"
SECRET = "bench-secret"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def show(label: str, values: list[float]) -> None:
    print(f"{label:<48} n={len(values):<3} p50 {pct(values, 0.5) * 1000:7.0f} ms   "
          f"p95 {pct(values, 0.95) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms", flush=True)


def service(tmp: Path, server: FakeKubeServer, url: str, name: str, poll: str) -> Service:
    (tmp / "secret").write_text(SECRET)
    data: dict[str, Any] = {
        "repository": {"url": url, "pollInterval": poll, "cacheDir": str(tmp / f"cache-{name}")},
        "execution": {"namespace": NS}, "leaderElection": {"enabled": False},
        "server": {"healthAddress": "127.0.0.1:0", "metricsAddress": "127.0.0.1:0", "webhookAddress": "127.0.0.1:0",
                   "webhook": {"secretFile": str(tmp / "secret")}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp / name).mkdir(exist_ok=True)
    svc = Service(load_config(path, environ={}), api_client=new_api_client(server, tmp / name), identity=name)
    svc.start()
    return svc


def webhook(svc: Service, url: str, after: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": after,
                       "repository": {"full_name": "acme/ops", "clone_url": url}}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    httpx.post(f"{svc.servers[2].url}/webhook", content=body,
               headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig, "Content-Type": "application/json"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp())
    seed = WorkRepo(tmp / "seed")
    seed.commit("catalog", **{"workflows/w.yaml": CATALOG})
    remote = tmp / "remote.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(remote))
    seed.git("push", "-q", str(remote), "main")
    url = f"file://{remote}"

    def push(name: str) -> str:
        seed.commit(name, **{f"executions/{name}.yaml": execution_yaml(name, target=f"ns/Deployment/{name}")})
        for _ in range(30):  # the reconciler pushes status too: pull --rebase and retry, like a person
            seed.git("pull", "-q", "--rebase", str(remote), "main")
            try:
                seed.git("push", "-q", str(remote), "main")
                break
            except Exception:  # rejected: someone pushed meanwhile
                continue
        return seed.git("rev-parse", "HEAD")

    with FakeKubeServer() as server:
        tekton = TektonSimulator(server)
        for path_name, poll in (("webhook", "1h"), ("poll", "1s")):
            svc = service(tmp, server, url, path_name, poll)
            svc.wait_for(lambda svc=svc: svc.cycles >= 1, 30)
            latencies = []
            for i in range(args.samples):
                name = f"{path_name}-{i:03d}"
                started = time.perf_counter()
                head = push(name)
                if path_name == "webhook":
                    webhook(svc, url, head)
                found = server.wait_for_object("tekton.dev", "v1", "pipelineruns", NS,
                                               run_name(f"ns/Deployment/{name}"), timeout=30)
                assert found is not None, name
                latencies.append(time.perf_counter() - started)
            show(f"git push -> run created ({path_name})", latencies)
            if path_name == "webhook":
                terminal = []
                for i in range(args.samples):
                    name = f"webhook-{i:03d}"
                    tekton.start(NS, run_name(f"ns/Deployment/{name}"))
                    started = time.perf_counter()
                    tekton.succeed(NS, run_name(f"ns/Deployment/{name}"))
                    svc.wait_for(lambda n=name, s=svc: (s.store.load().get(n) or ExecutionState(n)).phase
                                 == "Completed" and not s.store.pending, 30)
                    terminal.append(time.perf_counter() - started)
                show("run terminal -> status commit on the remote", terminal)
            svc.stop()
        tekton.close()

    store = GitStatusStore(GitSource(url, cache_dir=tmp / "cache-bulk"))
    store.load()
    states = {f"bulk-{i:04d}": ExecutionState(f"bulk-{i:04d}", phase="Running", reason="Running",
                                               message="bench") for i in range(1000)}
    started = time.perf_counter()
    store.save(states, [], "bench")
    elapsed = time.perf_counter() - started
    commits = git(remote, "log", "-1", "--format=%s", "main")
    print(f"write-back of 1000 status changes: {elapsed:.2f} s in one commit ({commits!r})")
    threading.Event().wait(0)


if __name__ == "__main__":
    main()
