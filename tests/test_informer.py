"""The watch-fed run cache (issue 11): a no-change cycle asks the API server a constant
number of things however many runs are Running; the cache survives 410 Gone and a dropped
watch without missing a terminal transition, and the cycle falls back to LISTs while it
is not synced.  Real HTTP to the fake API server; requests are counted there."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from reconciler.declare.names import run_name
from reconciler.run.cluster import KubeCluster
from reconciler.run.follow import RunFollower
from reconciler.run.informer import RunCache
from reconciler.run.lifecycle import Settings
from reconciler.service.cycle import Reconciler
from tests.harness import NS, Env, declare

pytestmark = pytest.mark.usefixtures("env")


class Wired:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.changed: list[str] = []
        self.follower = RunFollower(env.kube, NS, self._changed, watch_timeout=1, max_backoff=0.05)
        self.cluster = KubeCluster(env.kube, NS, clock=env.clock, cache=self.follower.cache)
        self.reconciler = Reconciler(env.reconciler.source, self.cluster, settings=env.reconciler.settings,
                                     store=env.store, clock=env.clock)

    def _changed(self, name: str) -> None:
        with self.cache.changed:
            self.changed.append(name)
            self.cache.changed.notify_all()

    @property
    def cache(self) -> RunCache:
        return self.follower.cache

    def wait(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        return self.cache.wait_for(predicate, timeout)


@pytest.fixture
def wired(env: Env) -> Iterator[Wired]:
    w = Wired(env)
    w.follower.start()
    assert w.follower.ready.wait(5)
    yield w
    w.follower.stop()


def _target(i: int) -> str:
    return f"ns-{i}/Deployment/app-{i}"


def _start(w: Wired, first: int, count: int) -> None:
    """Declare and start ``count`` executions; wait until the cache holds each run Running
    with its TaskRuns."""
    env = w.env
    for i in range(first, first + count):
        declare(env, f"e{i:03d}", target=_target(i))
    w.reconciler.run_once()
    for i in range(first, first + count):
        env.tekton.start(NS, run_name(_target(i)))

    def seen() -> bool:
        runs = w.cache.runs() or {}
        return all(
            (runs.get(run_name(_target(i))) or {}).get("status", {}).get("startTime")
            and w.cache.children(runs[run_name(_target(i))])
            for i in range(first + count))
    assert w.wait(seen)
    w.reconciler.run_once()  # observe them Running


def _api_requests(w: Wired) -> list[str]:
    w.env.server.clear_requests()
    result = w.reconciler.run_once()
    assert not result.errors
    return [f"{r.method} {r.path}" for r in w.env.server.requests if not r.watch]


def test_a_no_change_cycle_costs_a_constant_number_of_requests(wired: Wired) -> None:
    _start(wired, 0, 2)
    few = _api_requests(wired)
    assert all(s.phase == "Running" for s in wired.env.store.states.values())
    _start(wired, 2, 10)
    many = _api_requests(wired)
    assert len(wired.env.store.states) == 12
    assert all(s.phase == "Running" for s in wired.env.store.states.values())
    assert len(many) == len(few)
    assert not [r for r in many if "pipelineruns" in r or "taskruns" in r or "/jobs" in r]


def test_the_cache_survives_410_gone_without_missing_a_terminal_transition(wired: Wired) -> None:
    _start(wired, 0, 1)
    env = wired.env
    informer = wired.cache.informers["pipelineruns"]
    # the next resume is answered 410 Gone; the LIST after it fails for a while, and the run
    # ends in that gap, when no watch is open
    gone = env.server.inject(method="GET", path_regex="pipelineruns", status=410, times=1, watch=True)
    listing = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None, watch=False)
    assert wired.wait(lambda: gone.hits == 1 and listing.hits >= 1 and not wired.cache.synced("pipelineruns"))
    env.tekton.succeed(NS, run_name(_target(0)))
    env.server.faults.clear()
    assert wired.wait(lambda: "e000" in wired.changed and wired.cache.synced())
    assert informer.relists >= 1
    assert wired.reconciler.run_once().states["e000"].phase == "Completed"


def test_a_run_ending_while_the_watch_is_dropped_is_not_missed(wired: Wired) -> None:
    _start(wired, 0, 1)
    env = wired.env
    blocked = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None, watch=True)
    assert wired.wait(lambda: blocked.hits >= 1 and not wired.cache.synced("pipelineruns"))
    # not synced: the cycle asks the API server (a LIST), it does not trust the cache
    env.server.clear_requests()
    wired.reconciler.run_once()
    assert any(r.method == "GET" and r.path.endswith("/pipelineruns") and not r.watch
               for r in env.server.requests)
    env.tekton.succeed(NS, run_name(_target(0)))  # no watch sees this
    env.server.faults.clear()
    assert wired.wait(lambda: "e000" in wired.changed and wired.cache.synced())
    assert wired.reconciler.run_once().states["e000"].phase == "Completed"


def test_a_deleted_run_is_reported_from_the_relist(wired: Wired) -> None:
    _start(wired, 0, 1)
    env = wired.env
    blocked = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None, watch=True)
    assert wired.wait(lambda: blocked.hits >= 1 and not wired.cache.synced("pipelineruns"))
    env.server.delete_object("tekton.dev", "v1", "pipelineruns", NS, run_name(_target(0)))
    env.server.faults.clear()
    assert wired.wait(lambda: "e000" in wired.changed)
    assert wired.reconciler.run_once().states["e000"].reason == "ExternallyDeleted"


def test_without_a_cache_every_read_goes_to_the_api(env: Env) -> None:
    cluster = KubeCluster(env.kube, NS, clock=env.clock)
    reconciler = Reconciler(env.reconciler.source, cluster, settings=Settings(namespace=NS), store=env.store,
                            clock=env.clock)
    declare(env, "plain", target=_target(1))
    reconciler.run_once()
    env.server.clear_requests()
    reconciler.run_once()
    assert cluster.api_reads >= 1
    assert any(r.path.endswith("/pipelineruns") and not r.watch for r in env.server.requests)


def _pr(name: str, rv: str, uid: str = "u1") -> dict[str, object]:
    return {"kind": "PipelineRun", "metadata": {"name": name, "uid": uid, "resourceVersion": rv}}


@pytest.mark.parametrize(("steps", "moves"), [
    ([("upsert", _pr("a", "1"))], [True]),
    ([("upsert", _pr("a", "1")), ("upsert", _pr("a", "1"))], [True, False]),  # our create, then its ADDED
    ([("upsert", _pr("a", "2")), ("upsert", _pr("a", "1"))], [True, False]),  # an older version: ignored
    ([("upsert", _pr("a", "1")), ("upsert", _pr("a", "2"))], [True, True]),
    ([("upsert", _pr("a", "1")), ("upsert", _pr("a", "1", uid="u2"))], [True, True]),  # recreated
    ([("remove", "a")], [False]),  # nothing held by that name
    ([("upsert", _pr("a", "1")), ("remove", "a")], [True, True]),
])
def test_the_generation_moves_only_when_a_map_changes(env: Env, steps: list[tuple[str, object]],
                                                      moves: list[bool]) -> None:
    cache = RunCache(env.kube, NS)  # never started: the map is driven by hand
    informer = cache.informers["pipelineruns"]
    for (op, arg), moved in zip(steps, moves, strict=True):
        before = cache.generation
        if op == "upsert":
            informer.upsert(arg)  # type: ignore[arg-type]
        else:
            informer.remove(str(arg))
        assert (cache.generation != before) == moved


def test_the_cluster_has_a_generation_only_while_every_watch_is_synced(wired: Wired) -> None:
    generation = wired.cluster.generation()
    assert generation is not None
    env = wired.env
    blocked = env.server.inject(method="GET", path_regex="taskruns", status=503, times=None, watch=True)
    assert wired.wait(lambda: blocked.hits >= 1 and not wired.cache.synced("taskruns"))
    assert wired.cluster.generation() is None
    env.server.faults.clear()
    assert wired.wait(lambda: wired.cache.synced())
    again = wired.cluster.generation()
    assert again is not None and again != generation  # relisted: whatever the cycle read is stale
    assert KubeCluster(env.kube, NS).generation() is None  # no cache: nothing proves the cluster unchanged


def _event(name: str, kind: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NS},
            "involvedObject": {"kind": "Pod", "name": "some-pod", "namespace": NS},
            "reason": "FailedScheduling" if kind == "Warning" else "Scheduled", "message": "m", "type": kind}


def test_the_warning_events_come_from_the_watch_and_only_the_warnings(wired: Wired) -> None:
    """The Event informer selects type=Warning on the server (its LIST and its WATCH); the
    cluster reads the Warnings from it without a request while it is synced."""
    env = wired.env
    assert wired.wait(lambda: wired.cache.synced("events"))
    env.server.create_object("", "v1", "events", _event("normal.1", "Normal"))
    env.server.create_object("", "v1", "events", _event("warning.1", "Warning"))
    assert wired.wait(lambda: [e["metadata"]["name"] for e in wired.cache.warning_events() or []] == ["warning.1"])
    asked = [r.query for r in env.server.requests if r.path.endswith("/events")]
    assert asked and all(q.get("fieldSelector") == "type=Warning" for q in asked)  # the LIST and the watches
    env.server.clear_requests()
    assert [e["metadata"]["name"] for e in wired.cluster.warning_events()] == ["warning.1"]
    assert [r for r in env.server.requests if not r.watch] == []


def test_with_the_event_watch_down_the_cluster_lists_the_warnings(wired: Wired) -> None:
    env = wired.env
    blocked = env.server.inject(method="GET", path_regex="/events", status=503, times=None, watch=True)
    assert wired.wait(lambda: blocked.hits >= 1 and not wired.cache.synced("events"))
    env.server.create_object("", "v1", "events", _event("warning.2", "Warning"))
    env.server.clear_requests()
    assert [e["metadata"]["name"] for e in wired.cluster.warning_events()] == ["warning.2"]
    assert [r.path.split("?")[0] for r in env.server.requests if not r.watch] == [f"/api/v1/namespaces/{NS}/events"]
    assert wired.cluster.generation() is not None  # runs and children still vouch for themselves
    env.server.faults.clear()
