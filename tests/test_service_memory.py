"""What the service does to keep its resident memory down, and that it changes no outcome.

* the follow job leaves the recorded states alone until the first cycle has ended (that
  cycle observes everything itself; loading them alongside its load only raised the
  high-water mark the process keeps);
* after the first cycle, then at most once a minute, the C heap's free pages go back to the
  system (``malloc_trim``): only free memory, so the states and the remote are the same.

Real Git remotes and the fake API server through the official client; no timing asserted.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.service.app import Service
from reconciler.service.app_jobs import HeapTrimmer
from reconciler.service.config import load_config
from tests.conftest import WorkRepo, execution_yaml
from tests.fakekube_client import new_api_client
from tests.test_service import NS, World, service_world

GLIBC = hasattr(ctypes.CDLL(None), "malloc_trim")


@pytest.fixture
def world(make_repo: Callable[[str], WorkRepo], tmp_path: Path) -> Iterator[World]:
    with service_world(make_repo("seed"), tmp_path) as w:
        yield w


def _unstarted(world: World, name: str) -> Service:
    """A Service whose jobs the test calls itself (no scheduler, no HTTP)."""
    data = {"repository": {"url": world.url, "pollInterval": "1h", "cacheDir": str(world.tmp / f"cache-{name}"),
                           "commitAuthor": {"name": "kubernaut-bot", "email": "bot@example.invalid"}},
            "execution": {"namespace": NS}, "leaderElection": {"enabled": False}}
    path = world.tmp / f"config-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    (world.tmp / name).mkdir(exist_ok=True)
    return Service(load_config(path, environ={}), api_client=new_api_client(world.server, world.tmp / name),
                   identity=name)


def _close(svc: Service) -> None:
    svc.stop()
    svc.kube.api.close()  # type: ignore[no-untyped-call]


def test_the_follow_job_waits_for_the_first_cycle_and_then_follows(world: World) -> None:
    world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    svc = _unstarted(world, "solo")
    try:
        svc.follow_job()
        assert svc.cycles == 0
        assert svc.store._tip == ""  # no recorded state was read from Git before the first cycle
        svc.reconcile_job()
        assert svc.cycles == 1 and svc.store.load()["oom"].phase == "Running"
        svc.follow_job()  # Running: followed up now (a cycle of its own)
        assert svc.cycles == 2 and svc.store.load()["oom"].phase == "Running"
    finally:
        _close(svc)


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_the_heap_is_trimmed_after_the_first_cycle_and_the_outcome_is_the_same(world: World) -> None:
    world.push(**{"executions/oom.yaml": execution_yaml("oom")})
    trimmed, reader, untrimmed = (_unstarted(world, n) for n in ("trimmed", "reader", "untrimmed"))
    untrimmed.heap._trim = None  # as on a C library without malloc_trim
    try:
        trimmed.reconcile_job()
        assert trimmed.heap.trims == 1
        trimmed.reconcile_job()
        assert trimmed.heap.trims == 1  # not again within the minute
        states = trimmed.store.load()
        assert states["oom"].phase == "Running"
        assert reader.store.load() == states  # what the remote holds is what the process holds
        untrimmed.reconcile_job()
        assert untrimmed.heap.trims == 0
    finally:
        for svc in (trimmed, reader, untrimmed):
            _close(svc)


@pytest.mark.parametrize("ticks,expected", [
    ([0.0], 1),  # the first cycle: always
    ([0.0, 1.0, 59.9], 1),  # then not within the interval
    ([0.0, 60.0], 2),
    ([0.0, 30.0, 61.0, 100.0, 121.0], 3),
    ([], 0),
])
def test_trims_at_most_once_per_interval(ticks: list[float], expected: int) -> None:
    now = [0.0]
    heap = HeapTrimmer(interval=60.0, clock=lambda: now[0])
    calls = []
    heap._trim = lambda: calls.append(now[0]) or 1
    for t in ticks:
        now[0] = t
        heap.after_cycle()
    assert heap.trims == expected == len(calls)


def test_no_c_library_trim_means_no_trim() -> None:
    heap = HeapTrimmer()
    heap._trim = None
    heap.after_cycle()
    assert heap.trims == 0
