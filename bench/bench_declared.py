"""Benchmark: read + parse + validate + render N generated executions from one Git repo.

    python bench/bench_declared.py                 # N = 100, 1 000, 10 000
    python bench/bench_declared.py --sizes 500     # other sizes

For each N a repository with a catalog and N execution files (distinct targets, a mix of
both engines) is committed in a temporary directory; then a *fresh process* fetches it
into an empty cache, loads the declaration at the branch tip, and renders every execution.
The child measures its own phases; the parent reads the child's peak RSS from wait4, so
figures are not polluted by generating the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = "ghcr.io/acme/wf/{wid}@sha256:" + "b" * 64
CATALOG = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {{name: {wid}-1-0-0}}
spec:
  workflowId: {wid}
  version: "1.0.0"
  containerImage: {image}
  executionEngine: {engine}
  parameters:
    - {{name: NAMESPACE, required: true}}
    - {{name: MEMORY_LIMIT, required: true}}
    - {{name: REASON, required: false}}
"""
EXECUTION = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowExecution
metadata:
  name: exec-{i:05d}
spec:
  remediationRequestRef: {{name: rr-{i:05d}, namespace: kubernaut-system}}
  workflowRef:
    workflowId: {wid}
    version: "1.0.0"
  targetResource: ns-{ns}/Deployment/app-{i:05d}
  parameters:
    NAMESPACE: ns-{ns}
    MEMORY_LIMIT: {mem}Mi
    REASON: "OOMKilled 7 times in 30m; working set near the limit"
  executionConfig: {{serviceAccountName: kubernaut-workflow-runner, timeout: 30m}}
  confidence: 0.9
  rationale: >-
    Container app-{i:05d} was OOMKilled repeatedly after traffic growth; raising the memory
    limit is the lowest-risk remediation.
"""


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(path: Path, n: int) -> None:
    (path / "workflows").mkdir(parents=True)
    for wid, engine in (("raise-memory", "tekton"), ("raise-memory-job", "job")):
        (path / "workflows" / f"{wid}.yaml").write_text(
            CATALOG.format(wid=wid, engine=engine, image=IMAGE.format(wid=wid)))
    for i in range(n):
        folder = path / "executions" / f"batch-{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        wid = "raise-memory-job" if i % 10 == 0 else "raise-memory"
        (folder / f"exec-{i:05d}.yaml").write_text(
            EXECUTION.format(i=i, ns=i % 50, mem=256 + i % 1024, wid=wid))
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"{n} executions")


def measure(repo: Path, cache: Path) -> dict[str, float]:
    from reconciler.render.renderer import Renderer
    from reconciler.source.gitsource import GitSource

    t0 = time.perf_counter()
    source = GitSource(str(repo), cache_dir=cache)
    commit = source.fetch()
    t1 = time.perf_counter()
    snapshot = source.snapshot(commit)
    t2 = time.perf_counter()
    from reconciler.declare.assemble import load_declaration

    decl = load_declaration(snapshot.files, origins=snapshot.origins)
    t3 = time.perf_counter()
    renderer = Renderer()
    rendered = renderer.render_all(decl.executions)
    t4 = time.perf_counter()
    assert not decl.problems, decl.problems[:3]
    return {"valid": len(decl.executions), "rendered": len(rendered), "fetch_s": t1 - t0,
            "read_s": t2 - t1, "validate_s": t3 - t2, "render_s": t4 - t3, "total_s": t4 - t1}


def run_child(repo: Path, cache: Path) -> tuple[dict[str, float], float]:
    proc = subprocess.Popen([sys.executable, __file__, "--measure", str(repo), str(cache)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed ({proc.returncode})")
    return json.loads(out), usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--measure", nargs=2, metavar=("REPO", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    print(f"{'N':>6} {'fetch s':>8} {'read s':>7} {'validate s':>10} {'render s':>8} "
          f"{'total s':>8} {'exec/s':>8} {'peak RSS MB':>11}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            make_repo(repo, n)
            figures, rss = run_child(repo, Path(tmp) / "cache")
            assert figures["rendered"] == n
            rate = n / figures["total_s"]
            print(f"{n:>6} {figures['fetch_s']:>8.2f} {figures['read_s']:>7.2f} "
                  f"{figures['validate_s']:>10.2f} {figures['render_s']:>8.2f} "
                  f"{figures['total_s']:>8.2f} {rate:>8.0f} {rss:>11.1f}", flush=True)
    print("exec/s = executions read from Git, validated and rendered per second (fetch excluded);"
          " peak RSS of the whole measuring process.")


if __name__ == "__main__":
    main()
