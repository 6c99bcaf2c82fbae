"""A cycle whose inputs did not change is skipped (issue 11), and every input change ends the skip.

The service's wiring: a bare remote, the Git write-back, the fake API server over real HTTP,
the cycle reading the watch-fed run cache, one fake clock for the reconciler and the
simulated Tekton.  A skipped cycle fetches and asks the API server nothing (the Warning
Events are watched too; while that watch is down, one LIST of them); each test changes one input — a push, a watch event, a
relist, a Warning Event, the clock passing a cooldown or a deadline, an edited status file,
lost leadership, a failed write-back — and checks that the next cycle is a full one that
acts on it.  Requests are counted on the fake server; no test depends on timings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.declare.names import run_name
from reconciler.record.status import ExecutionState, RunRef
from reconciler.record.transitions import CycleResult
from reconciler.record.writeback import GitStatusStore, Identity
from reconciler.run.cluster import KubeCluster
from reconciler.run.follow import RunFollower
from reconciler.run.lifecycle import RunInfo, Settings, overdue, overdue_at, release_at, release_due
from reconciler.service.cycle import Reconciler
from reconciler.source.gitsource import GitSource
from tests.conftest import execution_yaml, git, push_as_human
from tests.harness import NS, TARGET, Env

BOT = Identity("kubernaut-bot", "bot@example.invalid")
COOLDOWN = timedelta(minutes=5)
REJECT_WHILE_FLAGGED = """#!/bin/sh
cat > /dev/null
if [ -f "$GIT_DIR/reject" ]; then echo "rejected by policy" >&2; exit 1; fi
exit 0
"""


class Quiet:
    """One service-like process: Git source and write-back on a bare remote, the cycle
    reading the watch cache, leadership as a switch; a human clone to edit the remote."""

    def __init__(self, env: Env, tmp: Path):
        self.env = env
        self.tmp = tmp
        self.remote = tmp / "remote.git"
        git(tmp, "init", "-q", "--bare", "-b", "main", str(self.remote))
        hook = self.remote / "hooks" / "pre-receive"
        hook.write_text(REJECT_WHILE_FLAGGED)
        hook.chmod(0o755)
        env.repo.git("push", "-q", str(self.remote), "main")
        self.human = tmp / "human"
        git(tmp, "clone", "-q", str(self.remote), str(self.human))
        self.leader = True
        self.follower = RunFollower(env.kube, NS, lambda _: None, watch_timeout=1, max_backoff=0.05)
        self.follower.start()
        assert self.follower.ready.wait(10)
        self.source = GitSource(f"file://{self.remote}", cache_dir=tmp / "cache")
        self.store = GitStatusStore(self.source, identity=BOT, attempts=2, base_delay=0.001, max_delay=0.001,
                                    fence=lambda: self.leader)
        self.cluster = KubeCluster(env.kube, NS, clock=env.clock, cache=self.follower.cache)
        self.reconciler = Reconciler(self.source, self.cluster, settings=Settings(namespace=NS, cooldown=COOLDOWN),
                                     store=self.store, clock=env.clock, fence=lambda: self.leader)

    def close(self) -> None:
        self.follower.stop()

    def cycle(self) -> CycleResult:
        return self.reconciler.run_once()

    def settle(self) -> CycleResult:
        """Cycle until one is skipped (a pass that changed nothing leaves the mark); that one."""
        for _ in range(4):
            result = self.cycle()
            assert not result.errors, result.errors
            if result.skipped:
                return result
        raise AssertionError("no cycle was skipped: the quiet mark was never kept")

    def requests(self, action: Callable[[], Any]) -> tuple[Any, list[str]]:
        """What ``action`` returned, and the API requests it made (watches aside)."""
        self.env.server.clear_requests()
        out = action()
        return out, [f"{r.method} {r.path}" for r in self.env.server.requests if not r.watch]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        return self.follower.cache.wait_for(predicate, timeout)

    def run(self) -> dict[str, Any]:
        return self.follower.cache.run("PipelineRun", run_name(TARGET)) or {}

    def push_human(self, message: str, **files: str | None) -> None:
        push_as_human(self.human, message, files)

    def remote_status(self, name: str) -> dict[str, Any]:
        doc = yaml.safe_load(git(self.remote, "show", f"main:status/{name}.yaml"))
        return doc["status"] if isinstance(doc, dict) else {}

    def tip(self) -> str:
        return git(self.remote, "rev-parse", "main")

    def start_running(self, name: str = "oom") -> None:
        """Declare ``name`` on TARGET, create its run, let Tekton start it; observed Running."""
        self.push_human(f"declare {name}", **{f"executions/{name}.yaml": execution_yaml(name)})
        assert self.cycle().created == 1
        self.env.tekton.start(NS, run_name(TARGET))
        assert self.wait(lambda: bool(self.run().get("status", {}).get("startTime"))
                         and bool(self.follower.cache.children(self.run())))
        assert self.cycle().states[name].phase == "Running"

    def complete(self, name: str = "oom") -> None:
        """A Running run succeeds; the next cycle records it."""
        self.env.tekton.succeed(NS, run_name(TARGET))
        assert self.wait(lambda: bool(self.run().get("status", {}).get("completionTime")))
        assert self.cycle().states[name].phase == "Completed"


@pytest.fixture
def quiet(env: Env, tmp_path: Path) -> Iterator[Quiet]:
    q = Quiet(env, tmp_path)
    yield q
    q.close()


def _watches(env: Env, plural: str) -> int:
    return sum(1 for r in env.server.requests if r.watch and r.path.endswith(f"/{plural}"))


# -- the skip itself -------------------------------------------------------------------------

def test_a_quiet_repository_is_skipped_and_asks_the_api_server_nothing(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.complete()  # terminal; its run (the lock) stays for the cooldown
    settled = quiet.settle()
    commits = quiet.tip()
    skipped, requests = quiet.requests(quiet.cycle)
    assert skipped.skipped and requests == []
    assert skipped.transitions == [] and skipped.created == skipped.adopted == 0 and not skipped.requeue
    assert skipped.states == settled.states and skipped.revision == settled.revision
    assert skipped.fetch_seconds is not None  # the fetch was done: readiness and metrics stay true
    assert skipped.locks_awaiting_writeback == 0
    assert quiet.tip() == commits  # nothing written


def test_runs_running_cost_no_request_when_quiet(quiet: Quiet) -> None:
    """The Warning Events come from the watch cache too: a quiet cycle asks the API nothing."""
    quiet.start_running()
    quiet.settle()
    skipped, requests = quiet.requests(quiet.cycle)
    assert skipped.skipped and skipped.states["oom"].phase == "Running"
    assert requests == []


def test_with_the_event_watch_down_the_events_are_listed_and_still_end_the_skip(quiet: Quiet) -> None:
    """Without a synced Event watch (RBAC without `watch` on events, an outage of that watch),
    each quiet cycle lists the Warning Events once and compares their versions, as before."""
    quiet.start_running()
    env = quiet.env
    blocked = env.server.inject(method="GET", path_regex="/events", status=403, times=None, watch=True)
    assert quiet.wait(lambda: blocked.hits >= 1 and not quiet.follower.cache.synced("events"))
    quiet.settle()
    skipped, requests = quiet.requests(quiet.cycle)
    assert skipped.skipped and requests == [f"GET /api/v1/namespaces/{NS}/events"]
    run = run_name(TARGET)
    env.server.create_object("", "v1", "events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{run}-pod.2", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": f"{run}-apply-pod", "namespace": NS},
        "reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient memory.",
        "type": "Warning", "lastTimestamp": "2099-01-01T00:00:00Z"})
    assert not quiet.cycle().skipped
    env.server.faults.clear()


def test_a_watch_that_resumes_on_time_keeps_the_skip(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    env = quiet.env
    # every watch here ends after a second (a BOOKMARK, then resumed from its version): wait
    # for two more on each resource; none of that is a change of the cache
    env.server.clear_requests()
    assert env.server.wait_for(lambda: all(_watches(env, p) >= 2 for p in ("pipelineruns", "taskruns")), 10)
    assert quiet.cycle().skipped


def test_a_pending_execution_is_never_skipped(quiet: Quiet) -> None:
    quiet.push_human("declare held", **{"executions/held.yaml": execution_yaml("held", extra="  suspend: true\n")})
    results = [quiet.cycle() for _ in range(4)]
    assert [r.states["held"].reason for r in results] == ["Suspended"] * 4
    assert not any(r.skipped for r in results)


def test_an_invalid_file_settles_and_keeps_its_error(quiet: Quiet) -> None:
    quiet.push_human("declare a broken one", **{"executions/bad.yaml": execution_yaml(
        "bad", params="{NAMESPACE: payments}")})  # MEMORY_LIMIT is required
    first = quiet.cycle()
    assert (first.states["bad"].phase, first.states["bad"].reason) == ("Failed", "ConfigurationError")
    skipped = quiet.settle()
    assert skipped.states["bad"] == quiet.store.load()["bad"]
    assert "MEMORY_LIMIT" in skipped.states["bad"].message and skipped.declaration is not None
    assert [i.name for i in skipped.declaration.invalid] == ["bad"]


# -- each input change ends the skip -----------------------------------------------------------

def test_a_push_to_the_branch_ends_the_skip(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.complete()
    quiet.settle()
    quiet.push_human("declare another", **{"executions/other.yaml": execution_yaml(
        "other", target="payments/Deployment/other-api")})
    result = quiet.cycle()
    assert not result.skipped and result.created == 1
    assert result.states["other"].phase == "Running"


def test_children_the_cache_cannot_see_are_asked_again(quiet: Quiet) -> None:
    """A run Tekton has not started has no TaskRun in the cache: the cycle asks the API server
    (a child without our label is only found that way), and so does a skipped cycle."""
    quiet.push_human("declare oom", **{"executions/oom.yaml": execution_yaml("oom")})
    assert quiet.cycle().created == 1  # never started: no TaskRuns anywhere
    quiet.settle()
    run = run_name(TARGET)
    skipped, requests = quiet.requests(quiet.cycle)
    assert skipped.skipped
    assert requests == [f"GET /apis/tekton.dev/v1/namespaces/{NS}/taskruns"]  # the events: from the cache
    owner = quiet.run()
    quiet.env.server.create_object("tekton.dev", "v1", "taskruns", {  # no managed-by label: not in the cache
        "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": f"{run}-apply", "namespace": NS, "labels": {"tekton.dev/pipelineRun": run},
                     "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": run,
                                          "uid": owner["metadata"]["uid"], "controller": True}]},
        "spec": {"taskSpec": {"steps": [{"name": "apply", "image": "busybox"}]}}})
    assert not quiet.cycle().skipped
    assert quiet.settle().skipped  # observed with it; quiet again once that is recorded


def test_a_watch_event_ends_the_skip(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    quiet.env.tekton.succeed(NS, run_name(TARGET))  # the watch delivers it: the cache changes
    assert quiet.wait(lambda: bool(quiet.run().get("status", {}).get("completionTime")))
    result = quiet.cycle()
    assert not result.skipped and result.states["oom"].phase == "Completed"
    assert quiet.remote_status("oom")["phase"] == "Completed"


@pytest.mark.parametrize("fault", [410, 503], ids=["410-gone", "dropped-watch"])
def test_a_relist_ends_the_skip(quiet: Quiet, fault: int) -> None:
    quiet.start_running()
    quiet.settle()
    env = quiet.env
    informer = quiet.follower.cache.informers["pipelineruns"]
    env.server.inject(method="GET", path_regex="pipelineruns", status=fault, times=1, watch=True)
    assert quiet.wait(lambda: informer.relists >= 1 and quiet.follower.cache.synced())
    result = quiet.cycle()
    assert not result.skipped and not result.errors
    assert result.states["oom"].phase == "Running"
    assert quiet.cycle().skipped  # the relist changed nothing: quiet again


def test_a_relist_that_shows_a_finished_run_is_acted_on(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    env = quiet.env
    blocked = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None, watch=True)
    assert quiet.wait(lambda: blocked.hits >= 1 and not quiet.follower.cache.synced("pipelineruns"))
    unsynced = quiet.cycle()  # the cache may have missed events: never skipped
    assert not unsynced.skipped
    env.tekton.succeed(NS, run_name(TARGET))  # no watch sees this
    env.server.faults.clear()
    assert quiet.wait(lambda: quiet.follower.cache.synced())
    result = quiet.cycle()
    assert not result.skipped and result.states["oom"].phase == "Completed"


def test_a_warning_event_for_a_running_run_ends_the_skip(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    run = run_name(TARGET)
    quiet.env.server.create_object("", "v1", "events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{run}-pod.1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": f"{run}-apply-pod", "namespace": NS},
        "reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient memory.",
        "type": "Warning", "lastTimestamp": "2099-01-01T00:00:00Z"})
    result = quiet.cycle()
    assert not result.skipped and not result.errors
    assert quiet.cycle().skipped  # observed with that Event; nothing else changed


def test_the_end_of_a_cooldown_ends_the_skip_and_releases_the_lock(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.complete()
    settled = quiet.settle()
    completion = settled.states["oom"].completion_time
    assert completion is not None and len(quiet.env.runs()) == 1
    quiet.env.clock.now = completion + COOLDOWN - timedelta(seconds=1)
    assert quiet.cycle().skipped  # still cooling down: nothing to do
    quiet.env.clock.now = completion + COOLDOWN
    result = quiet.cycle()
    assert not result.skipped and not result.errors
    assert quiet.env.runs() == []  # released at the end of the cooldown, as a full cycle does
    assert "LockReleased" in quiet.env.events()


def test_an_overdue_run_is_cancelled_at_its_deadline(quiet: Quiet) -> None:
    quiet.start_running()
    settled = quiet.settle()
    state = settled.states["oom"]
    execution = settled.declaration.find("oom") if settled.declaration else None
    assert execution is not None and state.start_time is not None
    deadline = state.start_time + timedelta(seconds=execution.timeout_seconds) + Settings().deadline_grace
    quiet.env.clock.now = deadline  # not yet past it
    assert quiet.cycle().skipped
    quiet.env.clock.now = deadline + timedelta(seconds=1)
    result = quiet.cycle()
    assert not result.skipped
    assert (result.states["oom"].phase, result.states["oom"].reason) == ("Failed", "DeadlineExceeded")
    assert quiet.env.runs()[0]["spec"].get("status") == "Cancelled"


def test_a_status_file_edited_on_the_remote_is_restored(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.complete()
    quiet.settle()
    quiet.push_human("edit a status by hand", **{"status/oom.yaml": "status: {phase: Pending}\n"})
    result = quiet.cycle()
    assert not result.skipped and not result.errors
    assert quiet.remote_status("oom")["phase"] == "Completed"
    assert "status restored" in git(quiet.remote, "log", "-1", "--format=%B", "main")


def test_lost_leadership_is_not_skipped_and_writes_nothing(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    quiet.leader = False
    tip = quiet.tip()
    result, requests = quiet.requests(quiet.cycle)
    assert not result.skipped and any("leadership lost" in e for e in result.errors)
    assert not [r for r in requests if not r.startswith("GET ")]
    assert quiet.tip() == tip
    quiet.leader = True
    assert quiet.settle().skipped


def test_a_failed_write_back_is_retried_by_the_next_cycle(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.settle()
    (quiet.remote / "reject").touch()  # the bot's pushes fail from now on
    quiet.env.tekton.succeed(NS, run_name(TARGET))
    assert quiet.wait(lambda: bool(quiet.run().get("status", {}).get("completionTime")))
    failed = quiet.cycle()
    assert failed.errors and failed.states["oom"].phase == "Completed"
    failures = quiet.store.failures
    again = quiet.cycle()  # nothing else changed, but the outcome is not on the remote
    assert not again.skipped and quiet.store.failures == failures + 1
    (quiet.remote / "reject").unlink()
    landed = quiet.cycle()
    assert not landed.skipped and not landed.errors
    assert quiet.remote_status("oom")["phase"] == "Completed"
    assert quiet.settle().skipped


# -- the skipped answer is the full answer --------------------------------------------------

@pytest.mark.parametrize("stage", ["running", "terminal"])
def test_a_skipped_cycle_gives_what_a_fresh_process_computes(quiet: Quiet, stage: str) -> None:
    quiet.start_running()
    if stage == "terminal":
        quiet.complete()
    quiet.env.clock.advance(seconds=30)
    skipped = quiet.settle()
    quiet.env.clock.advance(seconds=30)
    again = quiet.cycle()
    assert again.skipped
    # a new process at the same moment: its own Git cache, status recovered from the remote,
    # every read from the API server (no cache)
    source = GitSource(f"file://{quiet.remote}", cache_dir=quiet.tmp / "fresh-cache")
    fresh = Reconciler(source, KubeCluster(quiet.env.kube, NS, clock=quiet.env.clock),
                       settings=Settings(namespace=NS, cooldown=COOLDOWN), clock=quiet.env.clock,
                       store=GitStatusStore(source, identity=BOT, attempts=2, base_delay=0.001))
    full = fresh.run_once()
    assert not full.skipped and not full.errors and full.transitions == []
    assert full.states == again.states == skipped.states
    assert full.revision == again.revision


def test_an_edit_after_start_is_reported_after_quiet_cycles(quiet: Quiet) -> None:
    quiet.start_running()
    quiet.complete()
    quiet.settle()
    quiet.push_human("edit after start", **{"executions/oom.yaml": execution_yaml(
        "oom", params="{NAMESPACE: payments, MEMORY_LIMIT: 4Gi}")})
    result = quiet.cycle()
    assert not result.skipped
    condition = result.states["oom"].condition("SpecChangedAfterStart")
    assert condition is not None and condition.status == "True"
    assert quiet.settle().states["oom"].condition("SpecChangedAfterStart") == condition


# -- the deadlines the mark keeps, against the predicates they stand for ---------------------

T = datetime(2026, 11, 21, 9, 0, 0, tzinfo=timezone.utc)
SETTINGS = Settings(cooldown=COOLDOWN)


@dataclass(frozen=True)
class _Execution:  # what overdue() reads of a ResolvedExecution
    timeout_seconds: int


def _run(*, terminal: bool = True, completed: datetime | None = T, managed: bool = True, deleting: bool = False,
         execution: str = "oom") -> RunInfo:
    return RunInfo("PipelineRun", NS, "run", "uid", execution, "wf", managed, terminal, True if terminal else None,
                   completed, deleting, "hash")


DONE = ExecutionState(name="oom", phase="Completed", execution_ref=RunRef("PipelineRun", NS, "run"))
GOING = ExecutionState(name="oom", phase="Running", execution_ref=RunRef("PipelineRun", NS, "run"), start_time=T)


@pytest.mark.parametrize(("run", "owner", "declared", "expected"), [
    (_run(), DONE, True, T + COOLDOWN),
    (_run(), None, False, T + COOLDOWN),  # orphaned: released after the cooldown too
    (_run(), None, True, None),  # the owner has not observed it yet
    (_run(), GOING, True, None),  # the owner is not terminal
    (_run(terminal=False), DONE, True, None),
    (_run(managed=False), DONE, True, None),
    (_run(deleting=True), DONE, True, None),
    (_run(execution=""), DONE, True, None),
    (_run(completed=None), DONE, True, None),  # the whole cooldown remains, whatever the time
])
def test_release_at_is_the_first_moment_release_due_holds(run: RunInfo, owner: ExecutionState | None,
                                                          declared: bool, expected: datetime | None) -> None:
    at = release_at(run, owner, declared, SETTINGS)
    assert at == expected
    for moment in (T - timedelta(days=1), T, T + COOLDOWN - timedelta(microseconds=1), T + COOLDOWN,
                   T + timedelta(days=1)):
        assert release_due(run, owner, declared, moment, SETTINGS) == (at is not None and moment >= at)


@pytest.mark.parametrize(("state", "timeout", "expected"), [
    (GOING, 60, T + timedelta(seconds=60) + SETTINGS.deadline_grace + timedelta(microseconds=1)),
    (ExecutionState(name="oom", phase="Running", execution_ref=GOING.execution_ref), 60, None),  # no start time
    (DONE, 60, None),
    (GOING, None, None),  # no longer declared: never overdue (it is cancelled instead)
])
def test_overdue_at_is_the_first_moment_overdue_holds(state: ExecutionState, timeout: int | None,
                                                      expected: datetime | None) -> None:
    execution: Any = _Execution(timeout) if timeout is not None else None
    at = overdue_at(state, execution, SETTINGS)
    assert at == expected
    edge = T + timedelta(seconds=60) + SETTINGS.deadline_grace
    for moment in (T, edge - timedelta(microseconds=1), edge, edge + timedelta(microseconds=1), edge + timedelta(days=1)):
        assert overdue(state, execution, moment, SETTINGS) == (at is not None and moment >= at)


def test_a_state_the_store_holds_that_the_mark_did_not_see_ends_the_skip(env: Env) -> None:
    """The mark holds the store's very objects: a state written since by anyone else (the
    follow job, an operator's tool) is what the next cycle starts from, never the mark's."""
    follower = RunFollower(env.kube, NS, lambda _: None, watch_timeout=1, max_backoff=0.05)
    follower.start()
    try:
        assert follower.ready.wait(10)
        reconciler = Reconciler(env.reconciler.source, KubeCluster(env.kube, NS, clock=env.clock,
                                                                   cache=follower.cache),
                                settings=Settings(namespace=NS, cooldown=COOLDOWN), store=env.store, clock=env.clock)
        env.repo.commit("declare oom", **{"executions/oom.yaml": execution_yaml("oom")})
        reconciler.run_once()
        env.tekton.succeed(NS, run_name(TARGET))
        assert follower.cache.wait_for(lambda: bool(((follower.cache.run("PipelineRun", run_name(TARGET)) or {})
                                                     .get("status") or {}).get("completionTime")), 10)
        assert reconciler.run_once().states["oom"].phase == "Completed"
        assert any(reconciler.run_once().skipped for _ in range(3))
        written = replace(env.store.states["oom"], message="written by someone else")
        env.store.states = {**env.store.states, "oom": written}
        result = reconciler.run_once()
        assert not result.skipped and result.states["oom"].message == written.message
    finally:
        follower.stop()


def test_a_state_replaced_in_the_store_ends_the_skip(quiet: Quiet) -> None:
    """The mark holds the store's very state objects: a state replaced by an equal copy (the
    same revision, the same cache; no commit, nothing on the remote moves) is no longer the
    object the mark checked, so the next pass runs in full and then settles again."""
    quiet.start_running()
    quiet.complete()
    settled = quiet.settle()
    assert quiet.cycle().skipped
    states = quiet.store.load()
    states["oom"] = replace(states["oom"])  # equal, not the same object
    quiet.store.save(states, [], settled.revision)  # nothing to commit: the files are the same
    assert not quiet.cycle().skipped
    assert quiet.settle().skipped
