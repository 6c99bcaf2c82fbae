"""The product's guarantees (README "Guarantees", SPEC §10), checked on real processes.

Each test runs `reconciler run` as child processes against a bare Git remote (hooks log
every push attempt with the pusher's ``POD_NAME`` and every ref update; ``receive.fsckObjects``
is on) and the fake API server (each process has its own bearer token, so every recorded
request says which process sent it).  Faults are what production sees: pushes rejected for
longer than the cooldown, SIGKILL at random moments, a leader frozen by SIGSTOP in the middle
of a push until its Lease expires, hand-edited, forged and deleted status files, failover.
Afterwards the remote's history and the API server's request log are read back and every
invariant is counted: one create per execution, one live run per target, no status
regression, no non-fast-forward update, every outcome recorded before its lock is released.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.declare.statusdoc import valid_execution_name
from reconciler.simulator import FakeKubeServer, TektonSimulator
from reconciler.simulator.watch import WatchEvent
from tests.conftest import CATALOG, WorkRepo, execution_yaml, git
from tests.procs import BOT, NS, Proc, eventually

G, V, PRS = "tekton.dev", "v1", "pipelineruns"
LEASE = ("coordination.k8s.io", "v1", "leases", "kubernaut-system", "kubernaut-gitops-reconciler")
EXECUTION_LABEL = "kubernaut.ai/workflow-execution"
TARGET_ANNOTATION = "kubernaut.ai/target-resource"
TERMINAL = {"Completed", "Failed", "Skipped"}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
ZERO = "0" * 40
LOCK_KEPT = "lock kept: terminal status not yet on the remote"
RESTART_CATALOG = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowDefinition
metadata: {name: restart-pods-1-0-0}
spec:
  workflowId: restart-pods
  version: "1.0.0"
  containerImage: ghcr.io/acme/wf/restart-pods@sha256:""" + "b" * 64 + """
  parameters:
    - {name: NAMESPACE, required: true}
"""

# Every attempt is logged ("<pod> start" / "<pod> done"); a push by <pod> waits while
# hold-<pod> exists until release exists; bot pushes are refused while reject exists.
PRE_RECEIVE = """#!/bin/sh
who="${POD_NAME:-human}"
echo "$who start" >> "$GIT_DIR/attempts.log"
if [ -f "$GIT_DIR/hold-$who" ]; then
  touch "$GIT_DIR/entered-$who"
  while [ ! -f "$GIT_DIR/release" ]; do sleep 0.02; done
fi
cat > /dev/null
echo "$who done" >> "$GIT_DIR/attempts.log"
if [ -f "$GIT_DIR/reject" ] && [ "$who" != human ]; then
  echo "status pushes are refused for now" >&2
  exit 1
fi
exit 0
"""
POST_RECEIVE = """#!/bin/sh
while read old new ref; do echo "${POD_NAME:-human} $old $new $ref" >> "$GIT_DIR/pushes.log"; done
"""


def target(i: int) -> str:
    return f"payments/Deployment/api-{i}"


def done(run: dict[str, Any] | None) -> bool:
    conditions = ((run or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Succeeded" and c.get("status") in ("True", "False") for c in conditions)


@dataclass
class World:
    """One remote, one fake API server, the people's clone, and the processes started."""

    tmp: Path
    server: FakeKubeServer
    remote: Path
    clone: WorkRepo
    procs: list[Proc] = field(default_factory=list)

    # -- people ------------------------------------------------------------------------
    def merge(self, message: str, files: dict[str, str | None]) -> str:
        """A person's commit on main (None deletes the file), pushed without force: on a
        rejection (the bot pushed meanwhile) start again from the new tip."""
        for _ in range(20):
            self.clone.git("fetch", "-q", str(self.remote), "main")
            self.clone.git("reset", "-q", "--hard", "FETCH_HEAD")
            for rel, text in files.items():
                if text is None:
                    self.clone.remove(rel)
                else:
                    self.clone.write(rel, text)
            self.clone.git("add", "-A")
            self.clone.git("commit", "-q", "-m", message)
            try:
                self.clone.git("push", "-q", str(self.remote), "HEAD:main")
                return self.clone.git("rev-parse", "HEAD")
            except subprocess.CalledProcessError:
                continue
        raise AssertionError(f"could not push {message!r}")

    def declare(self, *executions: tuple[str, str]) -> None:
        self.merge(f"declare {', '.join(n for n, _ in executions)}",
                   {f"executions/{name}.yaml": execution_yaml(name, target=tgt) for name, tgt in executions})

    # -- processes ---------------------------------------------------------------------
    def proc(self, name: str, **kwargs: Any) -> Proc:
        token = f"{name}-bearer-DO-NOT-LOG"
        self.server.add_token(token, name)
        proc = Proc(self.tmp, self.server, self.remote, name, token=token, **kwargs)
        self.procs.append(proc)
        return proc

    def no_credentials_logged(self) -> None:
        for proc in self.procs:
            assert f"{proc.name}-bearer-DO-NOT-LOG" not in proc.log.read_text(), proc.log

    def lease_holder(self) -> str:
        lease = self.server.get_object(*LEASE)
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    # -- the remote --------------------------------------------------------------------
    def status(self, name: str, rev: str = "main") -> dict[str, Any] | None:
        try:
            doc = yaml.safe_load(git(self.remote, "show", f"{rev}:status/{name}.yaml"))
        except (subprocess.CalledProcessError, yaml.YAMLError):
            return None
        return doc.get("status") if isinstance(doc, dict) and isinstance(doc.get("status"), dict) else None

    def phase(self, name: str) -> str | None:
        status = self.status(name)
        return str(status["phase"]) if status else None

    def commits(self) -> int:
        return int(git(self.remote, "rev-list", "--count", "main"))

    def bot_commits(self) -> list[tuple[str, str]]:
        """(sha, full message) of every commit by the bot identity on main, oldest first."""
        out = git(self.remote, "log", "--reverse", "--format=%H%x00%ce%x00%B%x01", "main")
        commits = []
        for block in out.split("\x01"):
            parts = block.strip("\n").split("\0")
            if len(parts) == 3 and parts[1] == BOT["email"]:
                commits.append((parts[0], parts[2]))
        return commits

    def touched(self, sha: str) -> list[str]:
        out = subprocess.run(["git", "diff-tree", "-r", "-z", "--no-renames", "--name-only", "--no-commit-id",
                              f"{sha}^", sha], cwd=self.remote, check=True, capture_output=True, text=True).stdout
        return [p for p in out.split("\0") if p]

    def regressions(self) -> list[str]:
        """Walk every status file's versions written by the bot: a terminal phase is final."""
        problems = []
        names = {p[len("status/"):-len(".yaml")] for sha, _ in self.bot_commits() for p in self.touched(sha)}
        for name in sorted(names):
            log = git(self.remote, "log", "--reverse", "--format=%H %ce", "main", "--", f"status/{name}.yaml")
            phases = []
            for line in log.splitlines():
                sha, email = line.split(" ", 1)
                status = self.status(name, sha) if email == BOT["email"] else None
                if status is not None:
                    phases.append(str(status.get("phase")))
            for before, after in pairwise(phases):
                if before in TERMINAL and after != before:
                    problems.append(f"{name}: {before} → {after} (history {phases})")
        return problems

    def pushes(self) -> list[tuple[str, str, str, str]]:
        path = self.remote / "pushes.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(w, o, n, r) for w, o, n, r in (line.split() for line in lines)]

    def attempts(self, who: str) -> list[str]:
        path = self.remote / "attempts.log"
        return [line for line in (path.read_text().splitlines() if path.exists() else []) if line.split()[0] == who]

    def non_fast_forward(self) -> list[str]:
        bad = []
        for who, old, new, ref in self.pushes():
            if ref == "refs/heads/main" and old != ZERO and subprocess.run(
                    ["git", "merge-base", "--is-ancestor", old, new], cwd=self.remote).returncode != 0:
                bad.append(f"{who}: {old[:12]} → {new[:12]}")
        return bad

    # -- the API server ----------------------------------------------------------------
    def creates(self) -> dict[str, list[str]]:
        """execution → names of the runs created for it (POST answered 201)."""
        out: dict[str, list[str]] = {}
        for r in self.server.requests:
            if r.method == "POST" and r.path.endswith(f"/{PRS}") and r.status == 201 and isinstance(r.body, dict):
                meta = r.body.get("metadata") or {}
                out.setdefault(str((meta.get("labels") or {}).get(EXECUTION_LABEL)), []).append(str(meta.get("name")))
        return out

    def writes_by(self, user: str, since: int = 0) -> list[str]:
        """API writes by one process (the Lease itself excluded: it is the arbiter)."""
        return [f"{r.method} {r.path} → {r.status}" for r in self.server.requests[since:]
                if r.user == user and r.method in WRITES and "/leases" not in r.path]

    def run_deletes(self) -> list[str]:
        return [r.path for r in self.server.requests if r.method == "DELETE" and f"/{PRS}/" in r.path]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("POD_NAME", raising=False)  # people's pushes are "human" in the hook logs
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(remote, "config", "receive.fsckObjects", "true")
    for hook, text in (("pre-receive", PRE_RECEIVE), ("post-receive", POST_RECEIVE)):
        (remote / "hooks" / hook).write_text(text)
        (remote / "hooks" / hook).chmod(0o755)
    clone = WorkRepo(tmp_path / "people")
    clone.commit("catalog", **{"workflows/w.yaml": CATALOG, "workflows/restart.yaml": RESTART_CATALOG})
    clone.git("push", "-q", str(remote), "main")
    with FakeKubeServer() as server:
        w = World(tmp_path, server, remote, clone)
        try:
            yield w
        finally:
            (remote / "release").touch()
            for proc in w.procs:
                proc.cont()
                proc.kill()


def get_text(port: int, path: str) -> str:
    """A GET on one of the service's ports (generous timeout: the dashboard waits for the
    status store, which a write-back retrying its push holds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as reply:
        return str(reply.read().decode())


def get_json(port: int, path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(get_text(port, path))
    return data


def lock_claimed(status: dict[str, Any] | None) -> bool:
    """The status says its run (the lock) is kept: condition LockHeld True."""
    return any(c.get("type") == "LockHeld" and c.get("status") == "True"
               for c in (status or {}).get("conditions") or [])


def outcome_by_name(pr: dict[str, Any]) -> str:
    """The simulated Tekton outcome: executions named *-fail run out of memory."""
    return "oom" if str(pr["metadata"]["labels"].get(EXECUTION_LABEL, "")).endswith("-fail") else "succeed"


# --------------------------------------------------------------------------------- 1

def test_rejected_write_back_keeps_locks_past_cooldown_then_sigkill_and_restart(world: World) -> None:
    names = {"one-ok": target(1), "two-fail": target(2), "three-ok": target(3)}
    world.declare(*names.items())
    tekton = TektonSimulator(world.server, outcome=outcome_by_name)
    remote_at_delete: dict[str, str | None] = {}

    def on_delete(event: WatchEvent) -> None:  # what the remote said when the lock went
        if event.resource.plural == PRS and event.type == "DELETED":
            remote_at_delete[event.name] = world.phase(event.object["metadata"]["labels"][EXECUTION_LABEL])

    unsubscribe = world.server.on_event(on_delete)
    (world.remote / "reject").touch()
    first = world.proc("pod-a", cooldown="2s")
    try:
        assert world.server.wait_for(lambda: all(done(world.server.get_object(G, V, PRS, NS, run_name(t)))
                                                 for t in names.values()), 30), first.tail()
        # the lock is due for release (terminal + cooldown) in every cycle from now on, and
        # kept because the outcome is not on the remote
        assert eventually(lambda: {line.get("execution") for line in first.lines()
                                   if line.get("msg") == LOCK_KEPT} >= set(names), 90), first.tail()
        assert len(world.attempts("pod-a")) >= 4  # starts and ends of refused pushes
        ports = next(line["ports"] for line in first.lines() if line.get("msg") == "reconciler started")
        for name in names:  # what operators see: the lock is held, and why
            conditions = get_json(ports["webhook"], f"/api/executions/{name}")["conditions"]
            assert {(c["type"], c["status"], c["reason"]) for c in conditions} >= {
                ("LockHeld", "True", "StatusNotDurable")}, conditions
        assert f"kubernaut_reconciler_locks_awaiting_writeback {float(len(names))}" in get_text(
            ports["metrics"], "/metrics")
        assert world.run_deletes() == []
        assert all(world.server.get_object(G, V, PRS, NS, run_name(t)) for t in names.values())
        assert all(who == "human" for who, *_ in world.pushes())  # no status push landed
    finally:
        first.kill()
    (world.remote / "reject").unlink()
    second = world.proc("pod-a", cooldown="2s")
    assert eventually(lambda: all(world.phase(n) in TERMINAL for n in names), 60), second.tail()
    assert world.server.wait_for(lambda: not world.server.list_objects(G, V, PRS, NS), 60), second.tail()
    assert second.terminate() == 0
    unsubscribe()
    tekton.close()

    assert world.creates() == {name: [run_name(t)] for name, t in names.items()}  # one run each, ever
    assert len([r for r in world.server.requests if r.method == "POST" and r.path.endswith(f"/{PRS}")]) == 3
    for name in names:
        status = world.status(name)
        assert status is not None
        assert status["phase"] == ("Failed" if name.endswith("-fail") else "Completed"), status
        assert status.get("reason") != "ExternallyDeleted", status
    assert world.status("two-fail")["reason"] == "OOMKilled"  # type: ignore[index]
    # each run was deleted only when the remote already held its outcome
    assert remote_at_delete == {run_name(names[n]): world.phase(n) for n in names}
    assert set(remote_at_delete.values()) <= TERMINAL
    assert world.regressions() == [] and world.non_fast_forward() == []
    world.no_credentials_logged()


# --------------------------------------------------------------------------------- 2

def test_kill_storm_keeps_every_invariant(world: World) -> None:
    seed = int(os.environ.get("KILL_STORM_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill storm seed: {seed} (rerun with KILL_STORM_SEED={seed})")
    rng = random.Random(seed)
    # 8 executions on 5 targets: three targets are wanted twice (lock, cooldown, release)
    executions = [(f"storm-{i}{'-fail' if i % 3 == 2 else ''}", target(10 + i % 5)) for i in range(8)]
    world.declare(*executions[:3])
    later = executions[3:]
    tekton = TektonSimulator(world.server, auto_start=True)
    overlaps: list[str] = []
    live: dict[str, str] = {}  # target → run name

    def on_event(event: WatchEvent) -> None:
        if event.resource.plural != PRS:
            return
        tgt = str((event.object["metadata"].get("annotations") or {}).get(TARGET_ANNOTATION))
        if event.type == "ADDED":
            if tgt in live:
                overlaps.append(f"{event.name} created while {live[tgt]} was live on {tgt}")
            live[tgt] = event.name
        elif event.type == "DELETED":
            live.pop(tgt, None)

    unsubscribe = world.server.on_event(on_event)

    def finish_some(share: float) -> None:
        for pr in world.server.list_objects(G, V, PRS, NS):
            if done(pr) or not (pr.get("status") or {}).get("startTime") or rng.random() >= share:
                continue
            name = pr["metadata"]["name"]
            if outcome_by_name(pr) == "succeed":
                tekton.succeed(NS, name)
            else:
                tekton.fail(NS, name, "oom")

    kills = 16
    pause = threading.Event()
    for _ in range(kills):
        proc = world.proc("pod-a", cooldown="1s")
        if later and rng.random() < 0.5:
            world.declare(later.pop(0))
        finish_some(0.5)
        # the fault itself: SIGKILL at a random moment of the process's life (not a wait for
        # anything — whatever it was doing is cut off)
        pause.wait(rng.uniform(0.5, 3.5))
        proc.kill()
    while later:
        world.declare(later.pop(0))

    tekton.outcome = outcome_by_name  # runs created from now on complete at once
    finish_some(1.0)
    last = world.proc("pod-a", cooldown="1s")
    names = [n for n, _ in executions]
    assert eventually(lambda: all(world.phase(n) in TERMINAL for n in names), 90), (
        {n: world.phase(n) for n in names}, last.tail())
    assert world.server.wait_for(lambda: not world.server.list_objects(G, V, PRS, NS), 60), last.tail()
    assert last.started()
    unsubscribe()

    killed = world.procs[:kills]
    after_start = sum(any(line.get("msg") == "reconciler started" for line in p.lines()) for p in killed)
    after_commit = sum(any(line.get("msg") == "status committed" for line in p.lines()) for p in killed)
    assert after_start >= 3, "the storm hit only starting processes: nothing was tested"
    creates = world.creates()
    print(f"{kills} kills ({after_start} of running services, {after_commit} after a status commit): {sum(map(len, creates.values()))} runs created, {len(world.run_deletes())} deleted, "
          f"{len(world.bot_commits())} status commits, phases "
          f"{ {n: (world.status(n) or {}).get('reason') for n in (n for n, _ in executions)} }")
    duplicates = {n: runs for n, runs in creates.items() if len(runs) > 1}
    per_name = Counter(name for runs in creates.values() for name in runs)
    deletes = Counter(path.rsplit("/", 1)[1] for path in world.run_deletes())
    unreleased = {n: c for n, c in per_name.items() if c > deletes[n] + 1}
    lost = {n: world.phase(n) for n in names if world.phase(n) not in TERMINAL}
    externally_deleted = [n for n in names if (world.status(n) or {}).get("reason") == "ExternallyDeleted"]
    ran_without_run = [n for n in names if world.phase(n) in ("Completed", "Failed") and len(creates.get(n, [])) != 1]
    stale_locks = [n for n in names if lock_claimed(world.status(n))]
    violations = {"duplicate creates": duplicates, "lock overlaps": overlaps, "creates without release": unreleased,
                  "lost statuses": lost, "regressed statuses": world.regressions(),
                  "non-fast-forward updates": world.non_fast_forward(), "ExternallyDeleted": externally_deleted,
                  "outcome without exactly one run": ran_without_run,
                  "LockHeld claimed after every run was deleted": stale_locks}
    assert {k: v for k, v in violations.items() if v} == {}, f"seed {seed}"
    assert len(world.procs) == kills + 1
    assert set(creates) <= set(names)
    assert last.terminate() == 0  # a clean shutdown after all that
    tekton.close()
    world.no_credentials_logged()


# --------------------------------------------------------------------------------- 3

def test_leader_frozen_mid_push_until_its_lease_expires_writes_nothing_after(world: World) -> None:
    world.declare(("frozen-1", target(21)))
    tekton = TektonSimulator(world.server, auto_start=True)
    (world.remote / "hold-pod-a").touch()
    a = world.proc("pod-a", leader=True)
    assert eventually(lambda: world.lease_holder().startswith("pod-a_"), 30), a.tail()
    b = world.proc("pod-b", leader=True)
    assert b.started()
    assert eventually(lambda: (world.remote / "entered-pod-a").exists(), 30), a.tail()
    a.stop()  # frozen in the middle of its status push
    assert eventually(lambda: world.lease_holder().startswith("pod-b_"), 30), b.tail()
    lost_at = len(world.server.requests)
    assert eventually(lambda: any(who == "pod-b" for who, *_ in world.pushes()), 30), b.tail()
    assert world.phase("frozen-1") == "Running"
    tekton.succeed(NS, run_name(target(21)))
    world.declare(("frozen-2", target(22)))
    assert eventually(lambda: world.phase("frozen-1") == "Completed" and world.phase("frozen-2") == "Running",
                      30), b.tail()

    a.cont()
    (world.remote / "release").touch()  # the frozen push goes on, against a moved branch
    assert eventually(lambda: any(line.get("msg") == "lost leadership; standing by" for line in a.lines()),
                      30), a.tail()
    assert eventually(lambda: "pod-a done" in world.attempts("pod-a"), 30)
    tekton.succeed(NS, run_name(target(22)))
    assert eventually(lambda: world.phase("frozen-2") == "Completed", 30), b.tail()
    assert a.proc.poll() is None  # standing by, not crashed
    assert b.terminate() == 0 and a.terminate() == 0
    tekton.close()

    assert world.attempts("pod-a") == ["pod-a start", "pod-a done"]  # no push attempt after the Lease was lost
    assert [who for who, *_ in world.pushes() if who == "pod-a"] == []
    assert world.writes_by("pod-a", lost_at) == []
    assert world.writes_by("pod-b", lost_at)  # the new leader did write
    assert world.creates() == {"frozen-1": [run_name(target(21))], "frozen-2": [run_name(target(22))]}
    assert world.regressions() == [] and world.non_fast_forward() == []
    world.no_credentials_logged()


# --------------------------------------------------------------------------------- 4

def foreign_run(world: World, name: str, labels: dict[str, str]) -> dict[str, Any]:
    body = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"pipelineRef": {"resolver": "bundles", "params": [
                {"name": "bundle", "value": "ghcr.io/someone/else@sha256:" + "c" * 64},
                {"name": "name", "value": "workflow"}, {"name": "kind", "value": "pipeline"}]},
                "timeouts": {"pipeline": "30m"}}}
    return world.server.create_object(G, V, PRS, body)


def forged(real: str, name: str, run: dict[str, Any]) -> str:
    """A believable status file (a real one, renamed) claiming `run` as the execution's run."""
    doc = yaml.safe_load(real)
    doc["metadata"]["name"] = name
    status = doc["status"]
    for key in ("completionTime", "duration", "failureDetails"):
        status.pop(key, None)
    status.update(phase="Running", reason="Running", health="Progressing",
                  executionRef={"kind": "PipelineRun", "namespace": NS, "name": run["metadata"]["name"],
                                "uid": run["metadata"]["uid"]})
    return str(yaml.safe_dump(doc, sort_keys=False))


def test_forged_edited_and_deleted_status_files_never_steer_the_service(world: World) -> None:
    world.declare(("honest", target(31)))
    tekton = TektonSimulator(world.server, auto_start=True)
    unlabelled = foreign_run(world, "foreign-unlabelled", {})
    other = foreign_run(world, "foreign-other", {"app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler",
                                                 EXECUTION_LABEL: "someone-else"})
    for run in (unlabelled, other):
        tekton.start(NS, run["metadata"]["name"])
    tekton.outcome = "succeed"  # the service's runs complete at once
    foreign_before = {n: world.server.get_object(G, V, PRS, NS, n) for n in ("foreign-unlabelled", "foreign-other")}
    svc = world.proc("pod-a", cooldown="1s")
    assert eventually(lambda: world.phase("honest") == "Completed", 30), svc.tail()
    real = git(world.remote, "show", "main:status/honest.yaml")
    edited = real.replace("phase: Completed", "phase: Failed")
    assert edited != real

    world.merge("forge statuses, declare forged-a", {
        "executions/forged-a.yaml": execution_yaml("forged-a", target=target(32)),
        "status/forged-a.yaml": forged(real, "forged-a", unlabelled),   # (a) declared, names a foreign run
        "status/ghost.yaml": forged(real, "ghost", other),              # (a) undeclared, another's run
        "status/pwned.yaml": real.replace("name: honest", "name: ../executions/pwned"),  # (b)
        "status/evil\nname.yaml": real, "status/...yaml": real, "status/a..b.yaml": real,  # (b)
        "status/honest.yaml": edited,                                   # (c)
    })
    assert eventually(lambda: world.phase("honest") == "Completed", 30), svc.tail()  # (c) restored
    assert any("honest: status restored" in message for _, message in world.bot_commits())
    assert eventually(lambda: world.phase("forged-a") == "Completed", 30), svc.tail()  # its own run, not the foreign one
    assert world.status("forged-a")["executionRef"]["name"] == run_name(target(32))  # type: ignore[index]

    # (d) the run (the lock) is gone and the remote says so; the service dies; someone
    # deletes the status file
    assert world.server.wait_for(lambda: world.server.get_object(G, V, PRS, NS, run_name(target(31))) is None,
                                 30), svc.tail()
    assert eventually(lambda: not lock_claimed(world.status("honest")), 30), svc.tail()
    svc.kill()
    world.merge("delete the status of honest", {"status/honest.yaml": None})
    restored_before = sum("honest: status restored" in m for _, m in world.bot_commits())
    again = world.proc("pod-a", cooldown="1s")
    assert eventually(lambda: world.phase("honest") == "Completed"
                      and sum("honest: status restored" in m for _, m in world.bot_commits()) > restored_before,
                      30), again.tail()
    world.declare(("after-restart", target(33)))  # and the service goes on writing
    assert eventually(lambda: world.phase("after-restart") == "Completed", 30), again.tail()
    assert again.terminate() == 0
    tekton.close()

    assert world.creates() == {"honest": [run_name(target(31))], "forged-a": [run_name(target(32))],
                               "after-restart": [run_name(target(33))]}
    for name, before in foreign_before.items():  # (a) untouched: not cancelled, patched or deleted
        assert world.server.get_object(G, V, PRS, NS, name) == before
        assert [r.method for r in world.server.requests if r.method in WRITES
                and (r.path.endswith(f"/{name}") or f"/{name}/" in r.path)] == []
    declared = {"honest", "forged-a", "after-restart"}
    for sha, message in world.bot_commits():  # (b) only status/<declared, valid>.yaml, ever
        for path in world.touched(sha):
            name = path.removeprefix("status/").removesuffix(".yaml")
            assert path == f"status/{name}.yaml" and valid_execution_name(name) and name in declared, (path, message)
    tip = git(world.remote, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert not [p for p in tip if "pwned" in p and p != "status/pwned.yaml"]
    assert world.regressions() == [] and world.non_fast_forward() == []
    world.no_credentials_logged()
    assert not lock_claimed(world.status("honest"))


# --------------------------------------------------------------------------------- 5

def test_unchanged_state_makes_no_commit_across_cycles_and_failover(world: World) -> None:
    world.declare(("memory-first", target(41)))
    tekton = TektonSimulator(world.server, outcome="succeed")
    a = world.proc("pod-a", leader=True, cooldown="10m")
    assert eventually(lambda: world.lease_holder().startswith("pod-a_"), 30), a.tail()
    b = world.proc("pod-b", leader=True, cooldown="10m")
    assert eventually(lambda: world.phase("memory-first") == "Completed", 30), a.tail()
    world.merge("declare restart-second", {"executions/restart-second.yaml": execution_yaml(
        "restart-second", target=target(41), params="{NAMESPACE: payments}",
        workflow='workflowId: restart-pods, version: "1.0.0"')})
    assert eventually(lambda: (world.status("restart-second") or {}).get("reason") == "CooldownActive", 30), a.tail()
    assert b.started()

    def cycles(proc: Proc) -> int:
        """The passes the process has run, from its own metrics (a cycle may read the cluster
        from its watch cache, so API requests do not count them)."""
        ports = next(line["ports"] for line in proc.lines() if line.get("msg") == "reconciler started")
        for line in get_text(ports["metrics"], "/metrics").splitlines():
            if line.startswith("kubernaut_reconciler_cycle_duration_seconds_count"):
                return int(float(line.split()[-1]))
        return 0

    commits, mark = world.commits(), cycles(a)
    assert eventually(lambda: cycles(a) >= mark + 6, 40), a.tail()
    assert world.commits() == commits, git(world.remote, "log", "-3", "-p", "main")

    a.kill()  # failover: the standby takes over with the same state
    assert eventually(lambda: world.lease_holder().startswith("pod-b_"), 30), b.tail()
    mark = cycles(b)
    assert eventually(lambda: cycles(b) >= mark + 6, 40), b.tail()
    assert world.commits() == commits, git(world.remote, "log", "-3", "-p", "main")
    assert (world.status("restart-second") or {}).get("reason") == "CooldownActive"
    assert b.terminate() == 0
    tekton.close()
    assert world.creates() == {"memory-first": [run_name(target(41))]}
    assert [w for w in world.writes_by("pod-b") if f"/{PRS}" in w] == []  # nothing created or released
    world.no_credentials_logged()
