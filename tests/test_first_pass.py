"""The start-up pass and the cycle's own per-execution work (issue 11): what a first pass
builds goes straight to the collector's oldest generation, and the steps that look at every
state spend a lookup on what did not change — with the same answer as the full computation.

Nothing here measures time: the collector's generations are read from :mod:`gc` itself, and
the fast paths are checked by counting the work they skip and by comparing their results
with a fresh process's.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.harness import Env, declare


@pytest.fixture
def collector_on() -> Iterator[None]:
    """The collector as a service runs it: enabled, nothing frozen; left as it was found."""
    enabled = gc.isenabled()
    gc.enable()
    assert gc.get_freeze_count() == 0
    yield
    if not enabled:
        gc.disable()


def _in_oldest(objects: list[object]) -> bool:
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    return all(id(o) in oldest for o in objects)


def test_the_first_pass_leaves_what_it_built_in_the_oldest_generation(env: Env, collector_on: None) -> None:
    declare(env, "oom")
    first = env.cycle()
    assert first.errors == []
    built = [first.states["oom"], first.states["oom"].conditions, first.declaration]
    assert _in_oldest(built)  # moved there whole, not walked through generations 0 and 1
    assert gc.isenabled() and gc.get_freeze_count() == 0  # nothing kept from the collector


def test_later_passes_and_a_frozen_heap_are_left_to_the_collector(env: Env, collector_on: None) -> None:
    declare(env, "oom")
    env.cycle()
    declare(env, "second", target="payments/Deployment/other")
    later = env.cycle()
    assert later.states["second"].phase == "Running"
    assert gc.isenabled() and gc.get_freeze_count() == 0
    fresh = env.new_reconciler()
    gc.freeze()  # someone else's policy (a one-shot CLI command): not undone by the first pass
    try:
        assert fresh.run_once().states["second"].phase == "Running"
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()


def test_the_collector_stays_off_when_the_caller_turned_it_off(env: Env) -> None:
    enabled = gc.isenabled()
    gc.disable()
    try:
        declare(env, "oom")
        assert env.cycle().errors == []
        assert not gc.isenabled()
    finally:
        if enabled:
            gc.enable()
