"""Benchmark the reconcile cycle against the in-repo fake API server (over real HTTP).

    python bench/bench_cycle.py                # N = 1000 executions on distinct targets
    python bench/bench_cycle.py --n 200 --latency-samples 20

Figures:
  1. one cycle that creates N runs: seconds until all exist, creates per second;
  2. lock decision time per execution, excluding any API round trip (the pure
     ``decide_start`` over the cluster view), mean and p99;
  3. latency from a run's terminal condition (written by the simulated Tekton controller)
     to the reconciler's recorded phase, via the watch follower: p50 / p95 / max.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.record.transitions import MemoryStatusStore  # noqa: E402
from reconciler.run.cluster import KubeCluster  # noqa: E402
from reconciler.run.follow import RunFollower  # noqa: E402
from reconciler.run.kube import KubeClient  # noqa: E402
from reconciler.run.lifecycle import Settings, decide_start, run_info  # noqa: E402
from reconciler.service.cycle import Reconciler  # noqa: E402
from reconciler.simulator import FakeKubeServer, TektonSimulator  # noqa: E402
from reconciler.source.gitsource import GitSource  # noqa: E402
from tests.conftest import CATALOG, WorkRepo, execution_yaml  # noqa: E402
from tests.fakekube_client import new_api_client  # noqa: E402

NS = "kubernaut-workflows"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    repo = WorkRepo(tmp / "repo")
    files = {"workflows/w.yaml": CATALOG}
    for i in range(args.n):
        files[f"executions/e{i:05d}.yaml"] = execution_yaml(f"e{i:05d}", target=f"ns-{i % 40}/Deployment/app-{i:05d}")
    repo.commit("bench", **files)

    with FakeKubeServer() as server:
        api = new_api_client(server, tmp)
        kube = KubeClient(api)
        store = MemoryStatusStore()
        source = GitSource(str(repo.path), cache_dir=tmp / "cache")
        reconciler = Reconciler(source, KubeCluster(kube, NS), settings=Settings(namespace=NS), store=store)
        source.load(source.fetch())  # parse outside the timing: measured by bench_declared.py

        t0 = time.perf_counter()
        result = reconciler.run_once()
        elapsed = time.perf_counter() - t0
        created = len(server.list_objects("tekton.dev", "v1", "pipelineruns", NS))
        assert created == args.n and not result.errors, (created, result.errors[:3])
        print(f"cycle creating {args.n} runs: {elapsed:.2f} s, {args.n / elapsed:.0f} creates/s "
              f"(each create is one POST plus one Event POST over HTTP)")

        # 2. lock decision, pure
        decl = source.load(result.revision)
        runs = {r["metadata"]["name"]: r for r in server.list_objects("tekton.dev", "v1", "pipelineruns", NS)}
        now = datetime.now(timezone.utc)
        settings = Settings(namespace=NS, cooldown=timedelta(minutes=5))
        timings = []
        for execution in decl.executions:
            start = time.perf_counter()
            run = runs.get(execution.run_name)
            decide_start(execution, None, run_info(run) if run else None, {}, now, settings, result.revision)
            timings.append((time.perf_counter() - start) * 1000)
        print(f"lock decision per execution (no API round trip): mean {statistics.mean(timings):.3f} ms, "
              f"p99 {percentile(timings, 0.99):.3f} ms")

        # 3. terminal condition -> recorded phase, through the watch
        tekton = TektonSimulator(server)
        marks: dict[str, float] = {}
        latencies: list[float] = []
        done = threading.Event()

        def on_change(name: str) -> None:
            reconciler.observe_now({name})
            state = store.states.get(name)
            if state is not None and state.terminal and name in marks:
                latencies.append(time.perf_counter() - marks.pop(name))
                if len(latencies) >= args.latency_samples:
                    done.set()

        follower = RunFollower(kube, NS, on_change, watch_timeout=30)
        follower.start()
        follower.ready.wait(10)
        for execution in decl.executions[: args.latency_samples]:
            tekton.start(NS, execution.run_name)
            marks[execution.name] = time.perf_counter()
            tekton.succeed(NS, execution.run_name)
            deadline = time.perf_counter() + 10
            while execution.name in marks and time.perf_counter() < deadline:
                time.sleep(0.001)  # the benchmark paces itself; tests never sleep
        done.wait(30)
        follower.stop()
        if latencies:
            print(f"terminal condition -> recorded phase (watch), {len(latencies)} runs: "
                  f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms")
        api.close()


if __name__ == "__main__":
    main()
