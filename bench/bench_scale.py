"""Scale benchmark (issue 11): a cycle costs what changed, not the size of the repository.

    python bench/bench_scale.py                      # N = 1000, 10000, 50000
    python bench/bench_scale.py --sizes 1000,10000   # a quicker run
    python bench/bench_scale.py --reps 5 --churn-seconds 120

For each N a synthetic repository is written with ``git fast-import`` into a bare remote
(one commit: the catalog and N executions on distinct targets), the bot's status for all
of them is committed by the write-back itself, and the figures below are measured against
the in-repo fake API server over real HTTP.  Each figure is min / median / max of
``--reps`` repetitions, printed next to its target and to the bare baseline it is judged
against, measured in the same run:

  idle        a cycle with nothing changed, every execution terminal   vs  bare `git fetch`
  edit/add    one execution file edited / added: load, and the cycle    (targets in ms)
  running     a cycle with min(N, --running-max) runs Running, nothing changed: time and
              API requests per cycle (must not grow with N); the follow job's time
  start-up    new objects (a restart on the warm Git cache) to the first cycle done
  status/plan `reconciler status` / `plan` as subprocesses: wall time and peak RSS
  --version   `reconciler --version`                                   vs  `python -c pass`
  render      render + check of one manifest                           vs  `yaml.load` of it
  churn       `reconciler run` as its own process, edits and adds for --churn-seconds: its RSS
              (peak, least-squares slope in MB/min)
  per-exec    first full load per execution (each a fresh process on an empty cache), largest N
              against the smallest (--only-load: just this)

Wall-clock figures are printed, never asserted: tests assert behaviour only.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.record.status import ExecutionState, RunRef, with_summary  # noqa: E402
from reconciler.record.writeback import GitStatusStore  # noqa: E402
from reconciler.run.cluster import KubeCluster  # noqa: E402
from reconciler.run.follow import RunFollower  # noqa: E402
from reconciler.run.kube import KubeClient  # noqa: E402
from reconciler.run.lifecycle import Settings  # noqa: E402
from reconciler.service.cycle import Reconciler  # noqa: E402
from reconciler.simulator import FakeKubeServer, TektonSimulator  # noqa: E402
from reconciler.source.gitsource import GitSource  # noqa: E402
from tests.conftest import CATALOG, execution_yaml  # noqa: E402
from tests.fakekube_client import new_api_client  # noqa: E402
from tests.procs import Proc, eventually  # noqa: E402

NS = "kubernaut-workflows"
PY = sys.executable
ROWS: list[tuple[str, str, str, str, str]] = []  # N, figure, measured, target, baseline


def stats(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    v = [x * scale for x in values]
    return f"{min(v):.0f} / {statistics.median(v):.0f} / {max(v):.0f} {unit}"


def row(n: int | str, figure: str, measured: str, target: str = "", baseline: str = "") -> None:
    ROWS.append((str(n), figure, measured, target, baseline))
    print(f"  [{n}] {figure}: {measured}   target {target or '-'}   baseline {baseline or '-'}", flush=True)


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def git(cwd: Path, *args: str, data: bytes | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, input=data, capture_output=True, check=True,
                          env=env).stdout.decode()


def fast_import(remote: Path, files: dict[str, str], message: str, parent: bool) -> None:
    """One commit on main with ``files`` added or replaced (no work tree, no index)."""
    when = f"{int(time.time())} +0000"
    out = bytearray(f"commit refs/heads/main\nauthor dev <dev@example.com> {when}\n"
                    f"committer dev <dev@example.com> {when}\ndata {len(message)}\n{message}\n".encode())
    if parent:
        out += b"from refs/heads/main^0\n"
    for path, text in files.items():
        data = text.encode()
        out += f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n"
    out += b"done\n"
    git(remote, "fast-import", "--quiet", "--done", data=bytes(out))


def name(i: int) -> str:
    return f"e{i:05d}"


def target(i: int) -> str:
    return f"ns-{i % 50}/Deployment/app-{i:05d}"


def make_remote(tmp: Path, n: int, label: str = "") -> Path:
    remote = tmp / f"remote-{n}{label}.git"
    git(tmp, "init", "--quiet", "--bare", "-b", "main", str(remote))
    files = {"workflows/w.yaml": CATALOG}
    files.update({f"executions/{name(i)}.yaml": execution_yaml(name(i), target=target(i)) for i in range(n)})
    fast_import(remote, files, "seed", parent=False)
    return remote


class World:
    """One 'process': Git source, write-back, cluster through the watch-fed cache."""

    def __init__(self, remote: Path, cache: Path, server: FakeKubeServer, tmp: Path):
        self.api = new_api_client(server, tmp)
        self.kube = KubeClient(self.api)
        self.source = GitSource(str(remote), cache_dir=cache)
        self.store = GitStatusStore(self.source)
        self.follower = RunFollower(self.kube, NS, lambda _: None)
        self.follower.start()
        self.follower.ready.wait(60)
        self.cluster = KubeCluster(self.kube, NS, cache=self.follower.cache)
        self.reconciler = Reconciler(self.source, self.cluster, settings=Settings(namespace=NS),
                                     store=self.store)

    def close(self) -> None:
        self.follower.stop()
        self.api.close()  # type: ignore[no-untyped-call]


def seed_terminal_status(remote: Path, cache: Path) -> None:
    """Every execution Completed, committed by the write-back (the bot) in one commit."""
    source = GitSource(str(remote), cache_dir=cache)
    decl = source.load(source.fetch())
    now = datetime.now(timezone.utc).replace(microsecond=0)
    states = {}
    for e in decl.executions:
        state = ExecutionState(
            name=e.name, phase="Completed", reason="Succeeded", message="all tasks succeeded",
            observed_revision=decl.revision, spec_hash=e.spec_hash, workflow=f"{e.workflow_id}@{e.version}",
            target=e.target, execution_ref=RunRef("PipelineRun", NS, e.run_name, "uid-" + e.name),
            start_time=now - timedelta(minutes=3), completion_time=now - timedelta(minutes=1))
        states[e.name] = with_summary(state, e.spec_hash, now=now)
    GitStatusStore(source).save(states, [], decl.revision)


def bare_fetch(remote: Path, tmp: Path) -> Callable[[], None]:
    clone = tmp / "bare-fetch.git"
    if not clone.exists():
        git(tmp, "init", "--quiet", "--bare", str(clone))
        git(clone, "fetch", "--quiet", str(remote), "+refs/heads/main:refs/heads/main")

    def fetch() -> None:
        git(clone, "fetch", "--quiet", "--prune", "--no-tags", str(remote), "+refs/heads/main:refs/heads/main")
    return fetch


_HWM = ("import atexit, runpy, sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            sys.stderr.write('KGR-HWM ' + line.split()[1] + '\\n')\n"
        "atexit.register(hwm)\n"
        "sys.argv = ['reconciler'] + sys.argv[1:]\n"
        "runpy.run_module('reconciler', run_name='__main__')\n")


def child(args: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of ``python -m reconciler ARGS`` in a fresh process; the peak is
    the process's own VmHWM read at exit (a forked child's ru_maxrss starts at the parent's)."""
    started = time.perf_counter()
    proc = subprocess.run([PY, "-c", _HWM, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{args} failed: {proc.stderr.decode()[-500:]}")
    marks = [line.split()[1] for line in proc.stderr.decode().splitlines() if line.startswith("KGR-HWM ")]
    return seconds, int(marks[-1]) / 1024 if marks else 0.0


_FIRST_LOAD = ("import sys, time\n"
               "from pathlib import Path\n"
               "from reconciler.source.gitsource import GitSource\n"
               "remote, cold, warm = sys.argv[1], Path(sys.argv[2]), sys.argv[3]\n"
               "GitSource(warm, cache_dir=cold / 'warm-up').load(GitSource(warm, cache_dir=cold / 'warm-up').fetch())\n"
               "commit = GitSource(remote, cache_dir=cold).fetch()\n"
               "started = time.perf_counter()\n"
               "GitSource(remote, cache_dir=cold).load(commit)\n"
               "print(time.perf_counter() - started)\n")


def first_load(remote: Path, cold: Path) -> float:
    """Seconds of a fresh process's first load of ``remote`` on an empty cache (the fetch before
    it is not counted), in a child process of its own; the process first loads a 10-execution
    repository, so what it pays once (lazy imports, the first validators) is not counted."""
    warm = cold.parent / "remote-10-warm.git"
    if not warm.exists():
        make_remote(cold.parent, 10, "-warm")
    out = subprocess.run([PY, "-c", _FIRST_LOAD, str(remote), str(cold), str(warm)], capture_output=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    shutil.rmtree(cold, ignore_errors=True)
    return float(out.stdout.decode().split()[-1])


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def render_check(reps: int) -> None:
    """Render + check of one manifest (point 6), against the same check through ``yaml.load``."""
    import yaml

    from reconciler.declare.catalog import load_catalog
    from reconciler.declare.execution_file import _parse_execution
    from reconciler.render.renderer import Renderer

    catalog = load_catalog({"workflows/w.yaml": CATALOG.encode()}, 10**6)
    executions = [_parse_execution(f"executions/{name(i)}.yaml", execution_yaml(name(i), target=target(i)).encode(),
                                   catalog, True, None, 10**6).resolved for i in range(1000)]
    renderer = Renderer(namespace=NS)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    ours = timed(lambda: [renderer.render_checked(e) for e in executions if e is not None], reps)
    texts = [renderer.render(e).text for e in executions if e is not None]
    theirs = timed(lambda: [yaml.load(t, Loader=loader) for t in texts], reps)
    row("-", "render + check one manifest", stats(ours, 1000.0, "us"), "",
        f"yaml.load (CSafeLoader) alone {stats(theirs, 1000.0, 'us')}")


def bench_size(n: int, args: argparse.Namespace, tmp: Path, server: FakeKubeServer) -> float:
    print(f"\nN = {n}", flush=True)
    if args.only_churn:
        churn(n, args, tmp)
        return 0.0
    started = time.perf_counter()
    remote = make_remote(tmp, n)
    cache = tmp / f"cache-{n}"
    row(n, "generate (fast-import)", f"{time.perf_counter() - started:.1f} s")
    if args.only_cli:
        seed_terminal_status(remote, cache)
        cli(n, args, tmp, remote)
        return 0.0

    # first full load: per-execution cost of parsing (the 1.2x growth figure), each in a fresh
    # process on a fresh cache (no parse store), so no round before it shapes its heap
    firsts = [first_load(remote, tmp / f"cold-{n}-{k}") for k in range(args.reps)]
    first = statistics.median(firsts)
    row(n, "first full load (fresh process, cold cache)",
        f"{stats(firsts)} (median {first / n * 1e6:.0f} us/execution)")
    if args.only_load:
        return first / n
    seed_terminal_status(remote, cache)

    # start-up: a restart on the warm Git cache, to the first cycle done
    def start_up() -> World:
        world = World(remote, cache, server, tmp)
        world.reconciler.run_once()
        return world

    worlds: list[World] = []
    startups = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        worlds.append(start_up())
        startups.append(time.perf_counter() - t0)
        if len(worlds) > 1:
            worlds.pop(0).close()
    world = worlds[-1]
    row(n, "start-up to first cycle done", stats(startups), "<= 2000 ms at 10 000")

    # idle cycle vs bare fetch
    fetch = bare_fetch(remote, tmp)
    fetches = timed(fetch, args.reps)
    idle = timed(world.reconciler.run_once, args.reps)
    ratio = statistics.median(idle) / statistics.median(fetches)
    row(n, "idle cycle (all terminal)", f"{stats(idle)} ({ratio:.1f}x fetch)", "<= 50 ms at 10 000, <= 3x fetch",
        f"git fetch {stats(fetches)}")

    # one file edited / added: load, and the cycle
    loads, cycles = [], []
    for k in range(args.reps):
        edit = k % 2 == 0
        i = k if edit else n + k
        params = f"{{NAMESPACE: payments, MEMORY_LIMIT: {k + 2}Gi}}" if edit else \
            "{NAMESPACE: payments, MEMORY_LIMIT: 1Gi}"
        fast_import(remote, {f"executions/{name(i)}.yaml": execution_yaml(name(i), target=target(i) + "-x",
                                                                         params=params)},
                    f"change {k}", parent=True)
        c = world.source.fetch()
        t0 = time.perf_counter()
        world.source.load(c)  # the running process's load of the new commit, alone
        loads.append(time.perf_counter() - t0)
        cycles.append(loads[-1] + timed(world.reconciler.run_once, 1)[0])  # the cycle: that load + the rest
    row(n, "one file edited/added: load", stats(loads), "<= 50 ms at 10 000")
    row(n, "one file edited/added: cycle", stats(cycles), "<= 200 ms at 10 000")

    cli(n, args, tmp, remote)

    # runs Running, nothing changed
    if n <= args.running_max:
        running(n, args, world, server)
    else:
        row(n, "runs Running, no change", f"not measured (N > --running-max {args.running_max})")
    world.close()
    if n == args.churn_at and args.churn_seconds > 0:
        churn(n, args, tmp)
    return first / n


def cli(n: int, args: argparse.Namespace, tmp: Path, remote: Path) -> None:
    """`status` and `plan`, as a user runs them (a warm Git cache, a fresh process each).

    The first `status` on an empty cache directory clones and parses everything: it is
    timed on its own row, not as one of the repetitions."""
    first_seconds, first_rss = child(["status", "--repo", str(remote), "--cache-dir", str(tmp / f"cli-{n}")], tmp)
    row(n, "reconciler status, first run (empty cache: clone + parse)",
        f"{first_seconds * 1000:.0f} ms, peak RSS {first_rss:.0f} MB")
    status_runs = [child(["status", "--repo", str(remote), "--cache-dir",
                          str(tmp / f"cli-{n}")], tmp) for _ in range(args.reps)]
    plan_runs = [child(["plan", "--repo", str(remote), "--cache-dir",
                        str(tmp / f"cli-{n}")], tmp) for _ in range(args.reps)]
    row(n, "reconciler status", f"{stats([s for s, _ in status_runs])}, peak RSS "
        f"{max(r for _, r in status_runs):.0f} MB", "<= 10 s at 50 000")
    row(n, "reconciler plan", f"{stats([s for s, _ in plan_runs])}, peak RSS "
        f"{max(r for _, r in plan_runs):.0f} MB", "<= 6 s, <= 400 MB at 50 000")



def running(n: int, args: argparse.Namespace, world: World, server: FakeKubeServer) -> None:
    """N executions whose runs are all Running: a no-change cycle, and the follow job."""
    tekton = TektonSimulator(server)
    remote = Path(world.source.url)
    batch = {f"executions/r{i:05d}.yaml": execution_yaml(f"r{i:05d}", target=f"run-{i % 50}/Deployment/r{i:05d}")
             for i in range(n)}
    fast_import(remote, batch, "running batch", parent=True)
    t0 = time.perf_counter()
    world.reconciler.run_once()  # creates n runs
    created = time.perf_counter() - t0
    runs = [o["metadata"]["name"] for o in server.list_objects("tekton.dev", "v1", "pipelineruns", NS)
            if o["metadata"]["labels"].get("kubernaut.ai/workflow-execution", "").startswith("r")]
    for run in runs:
        tekton.start(NS, run)
    cache = world.follower.cache
    assert cache.wait_for(lambda: all((cache.run("PipelineRun", r) or {}).get("status", {}).get("startTime")
                                      for r in runs), 300), "the cache did not see every run start"
    world.reconciler.run_once()  # observe them Running, write that
    row(n, "create runs (one cycle)", f"{len(runs)} runs in {created:.1f} s")
    counts, times = [], []
    for _ in range(args.reps):
        server.clear_requests()
        times.append(timed(world.reconciler.run_once, 1)[0])
        counts.append(sum(1 for r in server.requests if not r.watch))
    names = {f"r{i:05d}" for i in range(n)}
    follow = timed(lambda: world.reconciler.observe_now(names), args.reps)
    row(n, f"{len(runs)} runs Running, no change: cycle", stats(times), "<= 300 ms at 10 000")
    asked = sorted({f"{r.method} {r.path.split('?')[0]}" for r in server.requests if not r.watch})
    row(n, f"{len(runs)} runs Running: API requests per cycle", f"{min(counts)} / {statistics.median(counts):.0f} / "
        f"{max(counts)} ({', '.join(asked)})", "constant in N")
    row(n, f"{len(runs)} runs Running: follow job", f"{stats(follow)} "
        f"({'never skipped' if max(follow) < 5 else 'SKIPPED'} at a 5 s interval)", "never skipped")
    tekton.close()


def proc_rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def service_cycles(proc: Proc) -> int:
    """Cycles the service has run, from its own metrics."""
    started = [line for line in proc.lines() if line.get("msg") == "reconciler started"]
    if not started:
        return 0
    port = started[0]["ports"]["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("kubernaut_reconciler_cycle_duration_seconds_count"):
                return int(float(line.split()[-1]))
    return 0


def churn(n: int, args: argparse.Namespace, tmp: Path) -> None:
    """The service as its own process (`reconciler run`) on a fresh N-execution repository
    (every execution terminal, the bot's status committed) and its own empty cluster, while
    executions are edited and added for --churn-seconds (the added ones run to completion on
    the simulated Tekton); its RSS is sampled from /proc and the slope fitted by least squares
    after the first tenth (start-up and first caches are not growth)."""
    remote = make_remote(tmp, n, "-churn")
    seed_terminal_status(remote, tmp / f"churn-seed-{n}")
    server = FakeKubeServer().__enter__()
    tekton = TektonSimulator(server, outcome="succeed")
    proc = Proc(tmp, server, remote, f"service-{n}", poll="2s")
    try:
        if not eventually(lambda: proc.proc.poll() is None and service_cycles(proc) >= 1, 300):
            raise SystemExit("the service did not finish its first cycle:\n" + proc.tail())
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        k = 0
        tick = threading.Event()
        while time.monotonic() - start < args.churn_seconds:
            i = k // 2
            files = ({f"executions/{name(i % n)}.yaml": execution_yaml(
                name(i % n), target=target(i % n) + "-x", params=f"{{NAMESPACE: payments, MEMORY_LIMIT: {k + 9}Gi}}")}
                if k % 2 == 0 else
                {f"executions/c{k:06d}.yaml": execution_yaml(f"c{k:06d}",
                                                             target=f"churn-{k % 50}/Deployment/c{k:06d}")})
            for _ in range(20):  # the service pushes too: fast-import refuses a non-fast-forward
                try:
                    fast_import(remote, files, f"churn {k}", parent=True)
                    break
                except subprocess.CalledProcessError:
                    tick.wait(0.1)
            samples.append((time.monotonic() - start, proc_rss_mb(proc.pid)))
            k += 1
            tick.wait(args.churn_interval)
        cycles = service_cycles(proc)
        peak = proc_rss_mb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        tekton.close()
        server.__exit__(None, None, None)
    warm = [s for s in samples if s[0] >= args.churn_seconds / 10] or samples
    slope = statistics.linear_regression([s[0] / 60 for s in warm], [s[1] for s in warm]).slope \
        if len(warm) > 1 else 0.0
    row(n, f"service RSS over {args.churn_seconds / 60:.3g} min of churn ({k} commits, {cycles} cycles)",
        f"{warm[0][1]:.0f} -> {warm[-1][1]:.0f} MB, peak {peak:.0f} MB, slope {slope:+.2f} MB/min",
        "<= 200 MB at 10 000, flat")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--running-max", type=int, default=10000)
    parser.add_argument("--churn-seconds", type=float, default=60.0,
                        help="how long the service process is churned (the issue's figure: 1800)")
    parser.add_argument("--churn-interval", type=float, default=3.0, help="seconds between churn commits")
    parser.add_argument("--churn-at", type=int, default=10000)
    parser.add_argument("--only-cli", action="store_true", help="only `status` and `plan` (time, peak RSS)")
    parser.add_argument("--only-churn", action="store_true", help="only the service churn (at every --sizes N)")
    parser.add_argument("--only-load", action="store_true", help="only the first full load (the per-execution row)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average at start: {os.getloadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    per_exec: dict[int, float] = {}
    try:
        script = Path(PY).parent / "reconciler"  # the console script pip installed beside this python
        for label, command in (("reconciler --version (console script)", [str(script), "--version"]),
                               ("python -m reconciler --version", [PY, "-m", "reconciler", "--version"])):
            if command[0] == str(script) and not script.exists():
                row("-", label, f"not measured ({script} is not installed)")
                continue
            versions = timed(lambda c=command: subprocess.run(c, capture_output=True, check=True),  # type: ignore[misc]
                             max(3, args.reps))
            bare = timed(lambda: subprocess.run([PY, "-c", "pass"], capture_output=True, check=True),
                         max(3, args.reps))
            row("-", label, stats(versions), "<= 250 ms", f"python -c pass {stats(bare)}")
        if not (args.only_churn or args.only_load):
            render_check(max(3, args.reps))
        for n in sizes:
            with FakeKubeServer() as server:  # each N on its own (empty) cluster
                per_exec[n] = bench_size(n, args, tmp, server)
        if len(per_exec) > 1 and not (args.only_cli or args.only_churn):
            lo, hi = min(per_exec), max(per_exec)
            row(f"{lo}->{hi}", "first-load cost per execution", f"{per_exec[hi] / per_exec[lo]:.2f}x",
                "<= 1.2x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at end: {os.getloadavg()}; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\n")
    print("| N | figure | min / median / max | target | baseline |")
    print("|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
