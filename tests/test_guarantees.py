"""SPEC §10 at the cycle level: real Git remotes, the real write-back, the fake API server.

Each test names the guarantee it pins.  The process-level versions (SIGKILL, SIGSTOP, kill
storms) are in tests/test_guarantees_process.py; these drive the same code in-process with
an injected clock, so every branch is reached deterministically.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.declare.statusdoc import check_status_document, status_path
from reconciler.errors import GitError, NotLeader
from reconciler.record.status import Condition, ExecutionState, RunRef, from_document
from reconciler.record.transitions import CycleResult, MemoryStatusStore
from reconciler.record.writeback import GitStatusStore, Identity
from reconciler.record.writeback_git import status_yaml
from reconciler.run.cluster import KubeCluster
from reconciler.run.kube import KubeClient, RetryPolicy
from reconciler.run.kube_api import PIPELINERUNS
from reconciler.run.lifecycle import Settings
from reconciler.service.cycle import Reconciler
from reconciler.service.cycle_context import LOCK_HELD
from reconciler.service.metrics import Metrics
from reconciler.source.gitsource import GitSource
from tests.conftest import execution_yaml, git, push_as_human
from tests.harness import NS, TARGET, Env

BOT = Identity("kubernaut-bot", "bot@example.invalid")
REJECT_WHILE_FLAGGED = """#!/bin/sh
cat > /dev/null
echo "$(date +%s%N) ${KGR_PUSHER:-?}" >> "$GIT_DIR/attempts.log"
if [ -f "$GIT_DIR/reject" ]; then echo "rejected by policy" >&2; exit 1; fi
exit 0
"""


class World:
    """A bare remote the service would watch (seeded from the harness repo), a human clone
    to edit it, and "processes": a Reconciler with its own Git cache and write-back."""

    def __init__(self, env: Env, tmp: Path):
        self.env = env
        self.tmp = tmp
        self.remote = tmp / "remote.git"
        git(tmp, "init", "-q", "--bare", "-b", "main", str(self.remote))
        git(self.remote, "config", "receive.denyNonFastForwards", "true")
        git(self.remote, "config", "receive.fsckObjects", "true")  # as GitHub does
        hook = self.remote / "hooks" / "pre-receive"
        hook.write_text(REJECT_WHILE_FLAGGED)
        hook.chmod(0o755)
        env.repo.git("push", "-q", str(self.remote), "main")
        self.human = tmp / "human"
        git(tmp, "clone", "-q", str(self.remote), str(self.human))
        self.generation = 0
        self.store, self.reconciler = self.restart()

    def restart(self) -> tuple[GitStatusStore, Reconciler]:
        """A new process: empty memory, a new cache directory, the same bot identity."""
        self.generation += 1
        source = GitSource(f"file://{self.remote}", cache_dir=self.tmp / f"cache-{self.generation}")
        store = GitStatusStore(source, identity=BOT, attempts=2, base_delay=0.001, max_delay=0.001)
        cluster = KubeCluster(self.env.kube, NS, clock=self.env.clock)
        reconciler = Reconciler(source, cluster, settings=Settings(namespace=NS, cooldown=timedelta(minutes=5)),
                                store=store, clock=self.env.clock)
        self.store, self.reconciler = store, reconciler
        return store, reconciler

    def cycle(self) -> CycleResult:
        return self.reconciler.run_once()

    def push_human(self, message: str, **files: str | None) -> None:
        push_as_human(self.human, message, files)

    def remote_status(self, name: str) -> dict[str, object] | None:
        try:
            doc = yaml.safe_load(git(self.remote, "show", f"main:status/{name}.yaml"))
        except Exception:
            return None
        return doc["status"] if isinstance(doc, dict) else None

    def bot_commits(self) -> list[str]:
        return git(self.remote, "log", "--format=%H", f"--committer={BOT.email}", "main").split()

    def reject_pushes(self, on: bool) -> None:
        flag = self.remote / "reject"
        if on:
            flag.touch()
        elif flag.exists():
            flag.unlink()


@pytest.fixture
def world(env: Env, tmp_path: Path) -> Iterator[World]:
    yield World(env, tmp_path)


def posts(env: Env) -> int:
    return env.posts("pipelineruns")


def writes_to(env: Env, name: str) -> list[str]:
    return [r.method for r in env.server.requests
            if r.method in ("PATCH", "PUT", "DELETE") and r.path.rstrip("/").endswith(f"/pipelineruns/{name}")]


def run_to_completion(world: World, name: str = "oom") -> datetime:
    """Declare, create, succeed, record: returns the run's completion time."""
    world.push_human(f"declare {name}", **{f"executions/{name}.yaml": execution_yaml(name)})
    assert world.cycle().states[name].phase == "Running"
    world.env.tekton.succeed(NS, run_name(TARGET))
    world.env.clock.advance(minutes=1)
    done = world.cycle()
    assert done.states[name].phase == "Completed", done.errors
    completion = done.states[name].completion_time
    assert completion is not None
    return completion


# -- a lock is released only after the outcome is on the remote ----------------------------

def test_lock_is_kept_while_the_terminal_status_cannot_be_pushed(world: World) -> None:
    world.push_human("declare oom", **{"executions/oom.yaml": execution_yaml("oom")})
    world.cycle()
    world.reject_pushes(True)  # the bot's pushes fail from now on (a hook, an outage)
    world.env.tekton.succeed(NS, run_name(TARGET))
    world.env.clock.advance(minutes=1)
    observed = world.cycle()
    assert observed.states["oom"].phase == "Completed" and observed.errors  # the push failed
    world.env.clock.advance(minutes=10)  # far past the cooldown
    for _ in range(3):
        held = world.cycle()
        assert len(world.env.runs()) == 1, "the lock was released before the outcome was durable"
        assert held.locks_awaiting_writeback == 1
        condition = held.states["oom"].condition(LOCK_HELD)
        assert condition is not None and condition.reason == "StatusNotDurable"
        metrics = Metrics()
        metrics.record_cycle(held)
        assert metrics.registry.get_sample_value("kubernaut_reconciler_locks_awaiting_writeback") == 1
    assert (world.remote_status("oom") or {}).get("phase") == "Running"

    world.store, world.reconciler = world.restart()  # a rollout while the remote refuses
    world.cycle()
    assert len(world.env.runs()) == 1 and posts(world.env) == 1

    world.reject_pushes(False)
    world.cycle()  # the terminal status lands
    assert (world.remote_status("oom") or {}).get("phase") == "Completed"
    world.cycle()  # only now: released
    assert world.env.runs() == []
    final = world.remote_status("oom") or {}
    assert final.get("phase") == "Completed" and final.get("reason") != "ExternallyDeleted"
    assert LOCK_HELD not in {c["type"] for c in final.get("conditions", [])}  # type: ignore[union-attr]
    world.cycle()
    assert posts(world.env) == 1  # exactly one run, ever


# -- never re-run what started; status/ is untrusted -------------------------------------

def test_a_deleted_status_is_restored_and_the_execution_never_runs_again(world: World) -> None:
    completion = run_to_completion(world)
    world.env.clock.now = completion + timedelta(minutes=6)
    world.cycle()
    assert world.env.runs() == []  # lock released: nothing in the cluster remembers the run
    world.push_human("remove a status by hand", **{"status/oom.yaml": None})
    world.restart()  # and the process restarts: memory gone too
    world.cycle()
    assert posts(world.env) == 1, "the execution ran a second time"
    restored = world.remote_status("oom") or {}
    assert restored.get("phase") == "Completed"
    message = git(world.remote, "log", "-1", "--format=%B", "main")
    assert "status restored" in message and "oom" in message


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_an_edited_status_is_restored_to_the_truth(world: World, restart: bool) -> None:
    run_to_completion(world)
    edited = git(world.remote, "show", "main:status/oom.yaml").replace("phase: Completed", "phase: Failed")
    world.push_human("make it look failed", **{"status/oom.yaml": edited})
    if restart:
        world.restart()
    result = world.cycle()
    assert result.states["oom"].phase == "Completed"
    assert (world.remote_status("oom") or {}).get("phase") == "Completed"
    assert "status restored" in git(world.remote, "log", "-1", "--format=%B", "main")
    assert posts(world.env) == 1


def _foreign_run(env: Env, name: str, labels: dict[str, str]) -> None:
    env.server.create_object("tekton.dev", "v1", "pipelineruns", {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"pipelineRef": {"name": "someone-elses"}}})


FORGED = """\
apiVersion: kubernaut.ai/v1alpha1
kind: WorkflowExecutionStatus
metadata: {{name: {name}}}
status:
  phase: Running
  reason: Running
  executionRef: {{kind: PipelineRun, namespace: kubernaut-workflows, name: {run}}}
"""


@pytest.mark.parametrize("labels", [
    {},  # no labels at all
    {"app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler"},  # ours in name, no execution label
    {"app.kubernetes.io/managed-by": "kubernaut-gitops-reconciler", "kubernaut.ai/workflow-execution": "other"},
    {"kubernaut.ai/workflow-execution": "evil"},  # the execution label without managed-by
], ids=["unlabelled", "managed-no-execution", "another-execution", "not-managed"])
@pytest.mark.parametrize("store_kind", ["git", "memory"])
def test_a_forged_status_never_steers_a_foreign_run(world: World, labels: dict[str, str], store_kind: str) -> None:
    """A status file naming someone else's running run: it is not cancelled, patched or deleted —
    neither by the service (which ignores non-bot status files) nor by sync --once (which reads
    them, but touches only runs whose labels say they are the execution's)."""
    _foreign_run(world.env, "their-run", labels)
    world.push_human("forge", **{"status/evil.yaml": FORGED.format(name="evil", run="their-run")})
    if store_kind == "memory":
        world.reconciler = Reconciler(world.reconciler.source, world.reconciler.cluster,
                                      settings=world.reconciler.settings, store=MemoryStatusStore(),
                                      clock=world.env.clock)
    for _ in range(2):
        world.env.clock.advance(minutes=10)
        world.cycle()
    assert writes_to(world.env, "their-run") == []
    (run,) = world.env.runs()
    assert run["metadata"]["name"] == "their-run" and "status" not in (run.get("spec") or {})


HOSTILE_STATUS_FILES = {
    "status/pwned.yaml": FORGED.format(name="../executions/pwned", run="x"),
    "status/mismatch.yaml": FORGED.format(name="someone-else", run="x"),
    "status/inject.yaml": FORGED.format(name='"a\\nM 100644 inline executions/pwned.yaml\\ndata 3\\nabc"', run="x"),
    "status/Upper.yaml": FORGED.format(name="Upper", run="x"),
    "status/bomb.yaml": "a: &a [x, x]\nb: [*a, *a]\n",
    "status/huge-int.yaml": FORGED.format(name="huge-int", run="x").replace("reason: Running", "reason: " + "9" * 5000),
}


def test_hostile_status_files_are_ignored_and_no_bad_path_is_committed(world: World) -> None:
    world.push_human("hostile statuses", **HOSTILE_STATUS_FILES)
    run_to_completion(world)
    assert set(world.store.ignored) == set(HOSTILE_STATUS_FILES)
    metrics = Metrics()
    metrics.record_cycle(world.cycle())
    assert metrics.registry.get_sample_value("kubernaut_reconciler_status_files_ignored") == len(HOSTILE_STATUS_FILES)
    for why in world.store.ignored.values():
        assert why  # each says what is wrong
    for commit in world.bot_commits():
        touched = git(world.remote, "diff-tree", "--no-commit-id", "-r", "--name-only", "--root", commit).split()
        assert touched and all(p.startswith("status/") and "/" not in p[len("status/"):] for p in touched), touched
        assert all(p in ("status/oom.yaml",) for p in touched), touched
    assert "executions/pwned.yaml" not in git(world.remote, "ls-tree", "-r", "--name-only", "main")
    git(world.tmp, "clone", "-q", str(world.remote), str(world.tmp / "fresh-clone"))  # still clonable


@pytest.mark.parametrize("name", ["../executions/pwned", "a\nM 100644 inline x", "UPPER", "", "a" * 64,
                                  "a/b", "-x", "x-", "café"])
def test_status_paths_are_built_only_from_valid_names(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        status_path("", name)


def test_write_back_skips_an_invalid_name_and_writes_the_others(world: World) -> None:
    good = ExecutionState(name="good", phase="Running", reason="Running")
    world.store.load()
    world.store.save({"good": good, "../executions/pwned": replace(good, name="../executions/pwned")}, [], "r")
    assert (world.remote_status("good") or {}).get("phase") == "Running"
    touched = git(world.remote, "diff-tree", "--no-commit-id", "-r", "--name-only", "main").split()
    assert touched == ["status/good.yaml"]


# -- status never regresses -------------------------------------------------------------

def test_a_rebuilt_push_never_regresses_what_another_replica_wrote(world: World) -> None:
    world.store.load()
    running = ExecutionState(name="oom", phase="Running", reason="Running",
                             execution_ref=RunRef("PipelineRun", NS, "wfe-x", "u1"))
    world.store.save({"oom": running}, [], "r1")
    other, _ = world.restart()  # another replica (same bot identity) moves it on
    other.load()
    completed = replace(running, phase="Completed", reason="Succeeded")
    other.save({"oom": completed}, [], "r2")
    stale = world.generation
    first = GitStatusStore(GitSource(f"file://{world.remote}", cache_dir=world.tmp / f"cache-{stale - 1}"),
                           identity=BOT, attempts=2, base_delay=0.001)
    first._states, first._tip = {"oom": running}, ""  # the ex-leader's stale memory
    first.save({"oom": replace(running, message="still running")}, [], "r3")
    assert (world.remote_status("oom") or {}).get("phase") == "Completed"
    assert first.load()["oom"].phase == "Completed"  # and it learnt the truth


# -- fenced writes --------------------------------------------------------------------------

def test_a_fenced_client_sends_no_write(env: Env) -> None:
    fenced = KubeClient(env.api, fence=lambda: False, retry=RetryPolicy(attempts=2, base_delay=0.001))
    env.server.clear_requests()
    with pytest.raises(NotLeader):
        fenced.create(PIPELINERUNS, NS, {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                                         "metadata": {"name": "x"}, "spec": {}})
    with pytest.raises(NotLeader):
        fenced.delete(PIPELINERUNS, NS, "x")
    with pytest.raises(NotLeader):  # events are fenced too, and not swallowed as best-effort failures
        fenced.create_event(NS, {"metadata": {"name": "e"}})
    assert fenced.list(PIPELINERUNS, NS)[0] == []  # reads still work
    assert [r.method for r in env.server.requests] == ["GET"]


def test_the_fence_is_checked_before_each_retry(env: Env) -> None:
    leader = iter([True, False])
    fenced = KubeClient(env.api, fence=lambda: next(leader, False),
                        retry=RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.001))
    env.server.inject("POST", r"/pipelineruns$", status=503, times=1)
    with pytest.raises(NotLeader):
        fenced.create(PIPELINERUNS, NS, {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                                         "metadata": {"name": "x"}, "spec": {}})
    assert sum(1 for r in env.server.requests if r.method == "POST") == 1  # the retry was never sent


def test_each_push_attempt_checks_the_fence(world: World) -> None:
    leader = iter([True, False])
    world.store.fence = lambda: next(leader, False)
    world.store.attempts = 5
    world.reject_pushes(True)
    world.store.load()
    log = world.remote / "attempts.log"
    before = len(log.read_text().splitlines())
    with pytest.raises(NotLeader):
        world.store.save({"oom": ExecutionState(name="oom")}, [], "r")
    # the first attempt was refused by the remote; the retry never went out
    assert len(log.read_text().splitlines()) == before + 1


# -- status bytes depend on the state only ----------------------------------------------------

def test_cooldown_active_makes_no_commits(world: World) -> None:
    run_to_completion(world, "first")
    world.push_human("declare rollback", **{"executions/rollback.yaml": execution_yaml(
        "rollback", workflow='workflowId: rollback-deployment, version: "1.2.0"')})
    waiting = world.cycle()
    assert waiting.states["rollback"].reason == "CooldownActive"
    assert "cooldownUntil" in waiting.states["rollback"].skip_details
    commits = len(world.bot_commits())
    for _ in range(5):
        world.env.clock.advance(seconds=17)
        assert world.cycle().states["rollback"].reason == "CooldownActive"
    assert len(world.bot_commits()) == commits


def test_a_failover_rewrites_no_unchanged_status(world: World) -> None:
    completion = run_to_completion(world)
    world.env.clock.advance(seconds=7)  # sub-minute offsets, odd seconds: nothing may depend on them
    world.cycle()
    before = len(world.bot_commits())
    world.env.clock.now = completion + timedelta(minutes=2, microseconds=123456)
    world.restart()
    world.cycle()
    world.cycle()
    assert len(world.bot_commits()) == before
    assert world.store.commits == 0


NOW = datetime(2026, 11, 21, 9, 0, 0, 987654, tzinfo=timezone.utc)


@pytest.mark.parametrize("state", [
    ExecutionState(name="a"),
    ExecutionState(name="b", phase="Running", reason="Running", start_time=NOW,
                   execution_ref=RunRef("PipelineRun", NS, "wfe-1", "uid")),
    ExecutionState(name="c", phase="Completed", reason="Succeeded", start_time=NOW,
                   completion_time=NOW + timedelta(minutes=1, seconds=12, microseconds=115910),
                   conditions=(Condition("Ready", "True", "Succeeded", "done", NOW),)),
    ExecutionState(name="d", phase="Pending", reason="CooldownActive", message="ends at 2026-11-21T09:05:00Z",
                   skip_details={"reason": "CooldownActive", "cooldownUntil": "2026-11-21T09:05:00Z"}),
], ids=["pending", "running", "completed-fractional", "cooldown"])
def test_status_bytes_survive_a_round_trip(state: ExecutionState) -> None:
    """What a restarted process reads back renders the same bytes (no rewrite after failover)."""
    first = status_yaml(state)
    data = yaml.safe_load(first)
    assert check_status_document(data, f"status/{state.name}.yaml") is None
    again = from_document(data)
    assert again is not None and status_yaml(again) == first


def test_every_timestamp_in_a_cycle_is_whole_seconds(world: World) -> None:
    world.env.clock.now = world.env.clock.now.replace(microsecond=654321)
    world.push_human("declare oom", **{"executions/oom.yaml": execution_yaml("oom")})
    state = world.cycle().states["oom"]
    assert state.start_time is not None and state.start_time.microsecond == 0
    assert all(c.last_transition_time.microsecond == 0 for c in state.conditions)




def test_a_commit_that_touches_anything_unexpected_is_never_pushed(world: World) -> None:
    """The last line of defence: the built commit is checked against the expected paths."""
    tip = world.store._fetch_tip()
    sneaky = world.store._commit(tip, {"status/a.yaml": b"x\n", "executions/pwned.yaml": b"y\n"}, "m\n")
    with pytest.raises(GitError, match="refusing to push"):
        world.store._check_commit(tip, sneaky, {"status/a.yaml"})
    honest = world.store._commit(tip, {"status/a.yaml": b"x\n"}, "m\n")
    world.store._check_commit(tip, honest, {"status/a.yaml"})
    with pytest.raises(GitError, match="refusing to write the path"):
        world.store._commit(tip, {"status/../x.yaml": b"x\n"}, "m\n")


def test_a_lock_held_claim_never_outlives_the_lock(world: World) -> None:
    """The run is released in a pass whose push is lost; after a restart the recovered status
    still says LockHeld — the next pass sees the run is gone and drops the claim."""
    world.push_human("declare oom", **{"executions/oom.yaml": execution_yaml("oom")})
    world.cycle()
    world.reject_pushes(True)
    world.env.tekton.succeed(NS, run_name(TARGET))
    world.env.clock.advance(minutes=10)
    world.cycle()  # Completed, not pushed
    assert world.cycle().states["oom"].condition(LOCK_HELD) is not None  # kept, not pushed
    world.reject_pushes(False)
    world.cycle()  # Completed + LockHeld lands
    assert LOCK_HELD in {c["type"] for c in (world.remote_status("oom") or {}).get("conditions", [])}  # type: ignore[union-attr]
    world.reject_pushes(True)
    world.cycle()  # durable now: released — but the push saying so is refused
    assert world.env.runs() == []
    world.restart()
    world.reject_pushes(False)
    world.cycle()
    final = world.remote_status("oom") or {}
    assert final.get("phase") == "Completed"
    assert LOCK_HELD not in {c["type"] for c in final.get("conditions", [])}  # type: ignore[union-attr]
    assert posts(world.env) == 1
