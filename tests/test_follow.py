"""Watch-based following: a finished run is recorded without waiting for the next cycle."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from reconciler.declare.names import run_name
from reconciler.run.follow import RunFollower
from tests.harness import NS, TARGET, Env, declare


@pytest.fixture
def followed(env: Env) -> Iterator[tuple[Env, list[str], threading.Event]]:
    seen: list[str] = []
    recorded = threading.Event()

    def on_change(name: str) -> None:
        seen.append(name)
        result = env.reconciler.observe_now({name})
        if result.states.get(name) is not None and result.states[name].terminal:
            recorded.set()

    follower = RunFollower(env.kube, NS, on_change, watch_timeout=1, max_backoff=0.05)
    follower.start()
    assert follower.ready.wait(5)
    yield env, seen, recorded
    follower.stop()


def test_terminal_run_is_recorded_from_the_watch(followed: tuple[Env, list[str], threading.Event]) -> None:
    env, seen, recorded = followed
    declare(env, "oom")
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    saves = env.store.saves
    env.tekton.succeed(NS, run_name(TARGET))
    assert recorded.wait(5), "the watch did not deliver the terminal run"
    assert seen[-1] == "oom"
    assert env.store.states["oom"].phase == "Completed" and env.store.saves > saves


def test_watch_survives_expiry_and_outage(followed: tuple[Env, list[str], threading.Event]) -> None:
    env, _, recorded = followed
    declare(env, "oom")
    env.cycle()
    env.server.compact()  # every resourceVersion the watch knows is now too old (410)
    fault = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=3)
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), kind="oom")
    assert recorded.wait(10)
    assert env.store.states["oom"].reason == "OOMKilled"
    assert fault.hits >= 1


def test_external_deletion_is_noticed_by_the_watch(followed: tuple[Env, list[str], threading.Event]) -> None:
    env, _, recorded = followed
    declare(env, "oom")
    env.cycle()
    env.server.delete_object("tekton.dev", "v1", "pipelineruns", NS, run_name(TARGET))
    assert recorded.wait(5)
    assert env.store.states["oom"].reason == "ExternallyDeleted"


def test_a_run_that_ends_while_no_watch_is_open_is_reported_from_the_relist(
        followed: tuple[Env, list[str], threading.Event]) -> None:
    # A real server ends watches (timeoutSeconds, restarts) and answers a resume from a
    # compacted resourceVersion with 410 Gone; what changed meanwhile is only in the next LIST.
    env, seen, recorded = followed
    declare(env, "oom")
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    blocked = env.server.inject(method="GET", path_regex="pipelineruns", status=503, times=None, watch=True)
    env.server.store.close_all_watches()  # the open watch ends; new ones are refused for now
    watching = env.server.store._watchers  # re-checked whenever a watch opens or closes
    assert env.server.wait_for(lambda: blocked.hits >= 1 and not any(
        w.resource.plural == "pipelineruns" for w in list(watching)))
    env.tekton.succeed(NS, run_name(TARGET))  # no watch sees this
    env.server.compact()  # and no resume could replay it: 410 Gone
    blocked.remove()
    assert recorded.wait(5), "the relist did not report the run that ended meanwhile"
    assert seen[-1] == "oom" and env.store.states["oom"].phase == "Completed"
