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
from datetime import timedelta

import pytest

from reconciler.record.status import ExecutionState, RunRef, with_summary
from reconciler.record.transitions import MemoryStatusStore
from tests.conftest import execution_yaml
from tests.harness import NS, Env, declare


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


def _settled_world(env: Env, count: int) -> list[str]:
    """``count`` executions on distinct targets, each already Completed in the store (their
    runs long released), and two passes so every memo is warm; their names."""
    files = {f"executions/e{i:03d}.yaml": execution_yaml(f"e{i:03d}", target=f"ns/Deployment/app-{i}")
             for i in range(count)}
    env.repo.commit("many", **files)
    decl = env.reconciler.source.load(env.reconciler.source.fetch())
    done = env.clock() - timedelta(minutes=30)
    env.store.states = {e.name: with_summary(ExecutionState(
        name=e.name, phase="Completed", reason="Succeeded", message="all tasks succeeded",
        observed_revision=decl.revision, spec_hash=e.spec_hash, workflow=f"{e.workflow_id}@{e.version}",
        target=e.target, execution_ref=RunRef("PipelineRun", NS, e.run_name, "uid-" + e.name),
        start_time=done - timedelta(minutes=2), completion_time=done), e.spec_hash, now=env.clock())
        for e in decl.executions}
    for _ in range(2):
        assert env.cycle().errors == []
    return sorted(env.store.states)


EDITS = {  # each given the repository's size, so every round edits a file of its own
    "add": lambda n: {f"executions/new{n}.yaml": execution_yaml(f"new{n}", target=f"ns/Deployment/new-{n}")},
    "edit a terminal one": lambda n: {f"executions/e00{n % 5}.yaml": execution_yaml(
        f"e00{n % 5}", target=f"ns/Deployment/app-{n % 5}", params=f"{{NAMESPACE: payments, MEMORY_LIMIT: {n}Gi}}")},
    "break one": lambda n: {f"executions/e00{n % 5}.yaml": "apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecution\n"},
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_after_one_edit_the_steps_look_at_what_changed_not_at_every_state(env: Env, edit: str) -> None:
    examined = []
    for count in (6, 40):  # the same edit on a small and a larger settled repository
        env.store.states = {}
        env.reconciler = env.new_reconciler()
        _settled_world(env, count)
        before = dict(env.store.states)
        env.repo.commit(f"{edit} at {count}", **EDITS[edit](count))
        result = env.cycle()
        assert result.errors == []
        examined.append(dict(env.reconciler.examined))
        # the same pass in a fresh process (no memo, nothing remembered by identity) agrees;
        # a run this pass created is one the fresh pass finds and adopts instead
        fresh = env.new_reconciler(store=MemoryStatusStore(), dry_run=True)
        fresh.store.states = before  # type: ignore[attr-defined]
        again = fresh.run_once()
        created = {f"new{count}"} if result.created else set()
        assert {n: s for n, s in again.states.items() if n not in created} == \
            {n: s for n, s in result.states.items() if n not in created}
        assert [t for t in again.transitions if t.name not in created] == \
            [t for t in result.transitions if t.name not in created]
        assert sum(env.reconciler.examined.values()) < sum(fresh.examined.values())
    assert examined[0] == examined[1]  # what a pass looks at does not grow with the repository
    assert all(n <= 3 for n in examined[1].values()), examined[1]
