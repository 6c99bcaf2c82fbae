"""Chains (``after``, ``onFailureOf``) and the failure breaker (SPEC §3a, issue 13).

Pure tables first — every dependency state transition, the breaker's count, the validation
rules — then end to end on the fake API server with real Git: the fallback takes over the
primary's target at once, a satisfied primary skips its fallback, ``after`` waits across
cycles and a restart, the breaker trips, survives a restart, expires and is overridden only
where the policy allows it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.declare.assemble import load_declaration
from reconciler.declare.declared import ResolvedExecution
from reconciler.declare.names import run_name
from reconciler.gate.checks import Gate
from reconciler.gate.policy import Policy
from reconciler.record.status import ExecutionState, RunRef
from reconciler.run.chains import dependency_verdict
from reconciler.run.lifecycle import Act, RunInfo, Settings, breaker_verdict, decide_start
from tests.conftest import CATALOG, execution_yaml
from tests.harness import NS, ROLLBACK_CATALOG, TARGET, Env, declare, state
from tests.test_guarantees import World

T0 = datetime(2026, 11, 21, 9, 0, 0, tzinfo=timezone.utc)
ROLLBACK = 'workflowId: rollback-deployment, version: "1.2.0"'


def resolved(name: str = "dep", extra: str = "", target: str = TARGET, workflow: str | None = None,
             others: tuple[str, ...] = ("primary", "a", "b")) -> ResolvedExecution:
    files: dict[str, bytes | int] = {"workflows/w.yaml": CATALOG.encode(),
                                     "workflows/r.yaml": ROLLBACK_CATALOG.encode()}
    kw = {"workflow": workflow} if workflow else {}
    files[f"executions/{name}.yaml"] = execution_yaml(name, target=target, extra=extra, **kw).encode()
    for other in others:
        files[f"executions/{other}.yaml"] = execution_yaml(other, target="other/Deployment/x").encode()
    decl = load_declaration(files)
    assert decl.problems == [], [str(p) for p in decl.problems]
    found = decl.find(name)
    assert found is not None
    return found


def st(name: str, phase: str, reason: str = "", *, was: bool | None = None, target: str = TARGET,
       workflow: str = "increase-memory-limit@1.2.0", ended: int = 0, started: bool = True) -> ExecutionState:
    failure = {"reason": reason, "wasExecutionFailure": was} if phase == "Failed" and was is not None else {}
    terminal = phase in ("Completed", "Failed", "Skipped")
    return ExecutionState(name=name, phase=phase, reason=reason, target=target, workflow=workflow,
                          execution_ref=RunRef("PipelineRun", NS, run_name(target), f"uid-{name}") if started else None,
                          start_time=T0 if started else None,
                          completion_time=T0 + timedelta(minutes=ended) if terminal else None,
                          failure_details=failure)


# -- every dependency state transition (pure) ---------------------------------------------

AFTER = "  after: [primary]\n"
FALLBACK = "  onFailureOf: primary\n"
NARROW = "  onFailureOf: primary\n  onFailureReasons: [OOMKilled, DeadlineExceeded]\n"

# (case, spec lines, predecessor state or None, expected: "ready" | "wait" | "not-met", words)
DEPENDENCY_CASES = [
    ("after: not reconciled yet", AFTER, None, "wait", "waiting for primary to complete"),
    ("after: pending", AFTER, st("primary", "Pending", "Creating", started=False), "wait", "to complete"),
    ("after: running", AFTER, st("primary", "Running", "Running"), "wait", "to complete"),
    ("after: completed", AFTER, st("primary", "Completed", "Succeeded"), "ready", ""),
    ("after: failed", AFTER, st("primary", "Failed", "OOMKilled", was=True), "not-met",
     "primary ended Failed (OOMKilled)"),
    ("after: skipped", AFTER, st("primary", "Skipped", "ResourceBusy", started=False), "not-met",
     "primary ended Skipped (ResourceBusy)"),
    ("fallback: not reconciled yet", FALLBACK, None, "wait", "runs only if primary fails"),
    ("fallback: running", FALLBACK, st("primary", "Running", "Running"), "wait", "runs only if primary fails"),
    ("fallback: primary failed", FALLBACK, st("primary", "Failed", "TaskFailed", was=True), "ready", ""),
    ("fallback: primary failed before running", FALLBACK,
     st("primary", "Failed", "ImagePullBackOff", was=False), "ready", ""),
    ("fallback: primary completed", FALLBACK, st("primary", "Completed", "Succeeded"), "not-met",
     "primary ended Completed (Succeeded); this fallback runs only if it fails"),
    ("fallback: primary skipped", FALLBACK, st("primary", "Skipped", "RecentlyRemediated", started=False),
     "not-met", "primary ended Skipped"),
    ("narrowed fallback: waiting", NARROW, st("primary", "Running", "Running"), "wait",
     "runs only if primary fails (OOMKilled or DeadlineExceeded)"),
    ("narrowed fallback: a listed reason", NARROW, st("primary", "Failed", "OOMKilled", was=True), "ready", ""),
    ("narrowed fallback: another reason", NARROW, st("primary", "Failed", "Forbidden", was=True), "not-met",
     "primary failed with Forbidden, not OOMKilled or DeadlineExceeded"),
]


@pytest.mark.parametrize(("case", "spec", "before", "expected", "words"), DEPENDENCY_CASES,
                         ids=[c[0] for c in DEPENDENCY_CASES])
def test_dependency_transitions(case: str, spec: str, before: ExecutionState | None, expected: str,
                                words: str) -> None:
    execution = resolved(extra=spec)
    states = {"primary": before} if before is not None else {}
    verdict = dependency_verdict(execution, states)
    got = "ready" if verdict.ready else "not-met" if verdict.not_met else "wait"
    assert got == expected
    assert words in verdict.message
    decision = decide_start(execution, None, None, {}, T0, Settings(namespace=NS), "rev", states)
    s = decision.state
    if expected == "ready":
        assert (s.phase, s.reason, decision.act) == ("Pending", "Creating", Act.CREATE)
    elif expected == "wait":
        assert (s.phase, s.reason, decision.act) == ("Pending", "WaitingForDependency", Act.NONE)
        assert s.skip_details["waitingFor"] == ["primary"] and words in s.message
    else:
        assert (s.phase, s.reason, decision.act) == ("Skipped", "DependencyNotMet", Act.NONE)
        assert s.skip_details["conflictingExecution"] == "primary" and s.terminal


def test_one_outcome_that_rules_it_out_wins_over_one_still_pending() -> None:
    execution = resolved(extra="  after: [a, b]\n")
    states = {"a": st("a", "Running", "Running"), "b": st("b", "Failed", "TaskFailed", was=True)}
    decision = decide_start(execution, None, None, {}, T0, Settings(namespace=NS), "rev", states)
    assert (decision.state.phase, decision.state.reason) == ("Skipped", "DependencyNotMet")
    assert decision.state.skip_details["conflictingExecution"] == "b"
    waiting = dependency_verdict(execution, {"a": st("a", "Completed", "Succeeded")})
    assert waiting.waiting == ("b",) and "waiting for b to complete" in waiting.message


def _run(execution: str, *, terminal: bool = True, workflow: str = "increase-memory-limit",
         ended: int = 0, deleting: bool = False) -> RunInfo:
    return RunInfo("PipelineRun", NS, run_name(TARGET), "uid", execution, workflow, True, terminal,
                   False if terminal else None, T0 + timedelta(minutes=ended) if terminal else None, deleting, "h")


# (case, the run holding the target, the claim, expected (phase, reason, act))
LOCK_CASES = [
    ("predecessor's terminal run on the same target: released for the dependent",
     _run("primary"), {}, ("Pending", "LockReleasing", Act.RELEASE)),
    ("another execution's run in cooldown: the usual rule (same workflow)",
     _run("someone-else"), {}, ("Skipped", "RecentlyRemediated", Act.NONE)),
    ("another execution's run in cooldown: the usual rule (other workflow)",
     _run("someone-else", workflow="rollback-deployment"), {}, ("Pending", "CooldownActive", Act.NONE)),
    ("another execution running: busy", _run("someone-else", terminal=False), {},
     ("Skipped", "ResourceBusy", Act.NONE)),
    ("claimed this cycle by the terminal predecessor: not busy", None, {TARGET: "primary"},
     ("Pending", "Creating", Act.CREATE)),
    ("claimed this cycle by another execution: busy", None, {TARGET: "someone-else"},
     ("Skipped", "ResourceBusy", Act.NONE)),
]


@pytest.mark.parametrize(("case", "run", "claimed", "expected"), LOCK_CASES, ids=[c[0] for c in LOCK_CASES])
def test_same_target_exemption(case: str, run: RunInfo | None, claimed: dict[str, str],
                               expected: tuple[str, str, str]) -> None:
    execution = resolved(extra=FALLBACK)
    states = {"primary": st("primary", "Failed", "OOMKilled", was=True, ended=0)}
    decision = decide_start(execution, None, run, claimed, T0 + timedelta(minutes=1), Settings(namespace=NS),
                            "rev", states)
    assert (decision.state.phase, decision.state.reason, decision.act) == expected


def test_exemption_needs_the_same_target() -> None:
    """A predecessor on another target holds nothing the dependent needs: the usual rules."""
    execution = resolved(extra=FALLBACK)
    states = {"primary": st("primary", "Failed", "OOMKilled", was=True, target="other/Deployment/x")}
    decision = decide_start(execution, None, None, {TARGET: "primary"}, T0, Settings(namespace=NS), "rev", states)
    assert (decision.state.reason, decision.act) == ("ResourceBusy", Act.NONE)


# -- the failure breaker (pure) -------------------------------------------------------------

F, C, N = "Failed", "Completed", "never-ran"


def _history(*outcomes: str, workflow: str = "increase-memory-limit@1.2.0") -> dict[str, ExecutionState]:
    out = {}
    for i, outcome in enumerate(outcomes):  # oldest first, one minute apart
        name = f"run-{i}"
        if outcome == N:
            out[name] = st(name, "Failed", "ImagePullBackOff", was=False, ended=i, workflow=workflow)
        elif outcome == F:
            out[name] = st(name, "Failed", "OOMKilled", was=True, ended=i, workflow=workflow)
        else:
            out[name] = st(name, "Completed", "Succeeded", ended=i, workflow=workflow)
    return out


# (case, history oldest first, threshold, minutes after the newest, open)
BREAKER_CASES = [
    ("three failures trip it", (F, F, F), 3, 1, True),
    ("two failures do not", (F, F), 3, 1, False),
    ("a success ends the streak", (F, F, C, F, F), 3, 1, False),
    ("failures after an old success", (C, F, F, F), 3, 1, True),
    ("a run that never started neither counts nor resets", (F, N, F, N, F), 3, 1, True),
    ("only never-started failures", (N, N, N, N), 3, 1, False),
    ("expires after the period", (F, F, F), 3, 61, False),
    ("still open just before", (F, F, F), 3, 59, True),
    ("threshold 0 disables it", (F, F, F, F), 0, 1, False),
    ("threshold 1", (C, F), 1, 1, True),
]


@pytest.mark.parametrize(("case", "history", "threshold", "later", "is_open"), BREAKER_CASES,
                         ids=[c[0] for c in BREAKER_CASES])
def test_breaker(case: str, history: tuple[str, ...], threshold: int, later: int, is_open: bool) -> None:
    states = _history(*history)
    newest = T0 + timedelta(minutes=len(history) - 1)
    settings = Settings(namespace=NS, breaker_failures=threshold, breaker_period=timedelta(hours=1))
    verdict = breaker_verdict("increase-memory-limit", TARGET, states, newest + timedelta(minutes=later), settings)
    assert verdict.open is is_open
    if is_open:
        assert verdict.failures[0] == f"run-{len(history) - 1}"  # newest first
        assert verdict.until == newest + timedelta(hours=1)


def test_breaker_counts_one_workflow_on_one_target() -> None:
    states = {**_history(F, F, F)}
    settings = Settings(namespace=NS)
    now = T0 + timedelta(minutes=5)
    assert breaker_verdict("increase-memory-limit", TARGET, states, now, settings).open
    assert not breaker_verdict("rollback-deployment", TARGET, states, now, settings).open
    assert not breaker_verdict("increase-memory-limit", "other/Deployment/x", states, now, settings).open


@pytest.mark.parametrize(("override", "allowed", "expected"), [
    (False, False, "ConsecutiveFailures"), (False, True, "ConsecutiveFailures"),
    (True, False, "ConsecutiveFailures"), (True, True, "Creating"),
])
def test_breaker_override_needs_the_policy(override: bool, allowed: bool, expected: str) -> None:
    execution = resolved(extra="  overrideBreaker: true\n" if override else "")
    now = T0 + timedelta(minutes=5)
    decision = decide_start(execution, None, None, {}, now, Settings(namespace=NS), "rev", _history(F, F, F),
                            allowed)
    assert decision.state.reason == expected
    if expected == "ConsecutiveFailures":
        s = decision.state
        assert s.phase == "Skipped" and s.skip_details["breakerUntil"] == "2026-11-21T10:02:00Z"
        assert "failed 3 times in a row" in s.message and "run-2" in s.message
        assert ("overrideBreaker is ignored" in s.message) is override


# -- validation at PR time -------------------------------------------------------------------

# (case, files {name: spec lines}, file, rule, path, words, line)
RULE_CASES = [
    ("missing after", {"x": "  after: [nope]\n"}, "x", "dependency-missing", "spec.after[0]",
     "'nope', which is not an execution on this branch", 9),
    ("missing onFailureOf", {"x": "  onFailureOf: nope\n"}, "x", "dependency-missing", "spec.onFailureOf",
     "spec.onFailureOf names 'nope'", 9),
    ("self reference", {"x": "  after: [x]\n"}, "x", "dependency-cycle", "spec.after[0]", "depends on itself", 9),
    ("two-file cycle", {"x": "  after: [y]\n", "y": "  onFailureOf: x\n"}, "y", "dependency-cycle",
     "spec.onFailureOf", "x (executions/x.yaml) -> y (executions/y.yaml) -> x (executions/x.yaml)", 9),
    ("three-file cycle", {"x": "  after: [y]\n", "y": "  after: [z]\n", "z": "  after: [p, x]\n", "p": ""},
     "z", "dependency-cycle", "spec.after[1]", "dependency cycle: x (executions/x.yaml) -> y", 9),
    ("after and onFailureOf the same", {"x": "  after: [p]\n  onFailureOf: p\n", "p": ""}, "x",
     "dependency-contradiction", "spec.onFailureOf", "could never start", 10),
    ("reasons without onFailureOf", {"x": "  onFailureReasons: [OOMKilled]\n"}, "x", "dependency-reasons",
     "spec.onFailureReasons", "onFailureOf, which is not set", 9),
    ("unknown reason", {"x": "  onFailureOf: p\n  onFailureReasons: [OOM]\n", "p": ""}, "x", "wrong-value",
     "spec.onFailureReasons[0]", "OOMKilled", 10),
    ("after names twice", {"x": "  after: [p, p]\n", "p": ""}, "x", "dependency-duplicate", "spec.after",
     "more than once", 9),
    ("after is not a name", {"x": "  after: [Not_A_Name]\n"}, "x", "name-format", "spec.after[0]",
     "DNS-1123 label", 9),
]


@pytest.mark.parametrize(("case", "specs", "file", "rule", "path", "words", "line"), RULE_CASES,
                         ids=[c[0] for c in RULE_CASES])
def test_dependency_rules(case: str, specs: dict[str, str], file: str, rule: str, path: str, words: str,
                          line: int) -> None:
    files: dict[str, bytes | int] = {"workflows/w.yaml": CATALOG.encode()}
    for name, spec in specs.items():
        files[f"executions/{name}.yaml"] = execution_yaml(name, extra=spec).encode()
    decl = load_declaration(files)
    matching = [p for p in decl.problems if p.rule == rule and p.file == f"executions/{file}.yaml"]
    assert matching, [str(p) for p in decl.problems]
    problem = matching[0]
    assert (problem.path, problem.line) == (path, line)
    assert words in problem.message, problem.message
    assert f"executions/{file}.yaml" not in {e.file for e in decl.executions}


def test_cycle_invalidates_every_member_and_spares_the_rest() -> None:
    files: dict[str, bytes | int] = {"workflows/w.yaml": CATALOG.encode()}
    for name, spec in {"x": "  after: [y]\n", "y": "  after: [x]\n", "z": "  after: [x]\n", "p": ""}.items():
        files[f"executions/{name}.yaml"] = execution_yaml(name, extra=spec).encode()
    decl = load_declaration(files)
    assert {p.file for p in decl.problems if p.rule == "dependency-cycle"} == {"executions/x.yaml",
                                                                                "executions/y.yaml"}
    assert sorted(e.name for e in decl.executions) == ["p", "z"]  # z waits on an invalid x: it will be skipped


def test_chain_fields_are_in_the_spec_hash_and_absent_ones_change_nothing() -> None:
    plain = resolved("x", others=("primary",))
    assert resolved("x", extra="  after: []\n  overrideBreaker: false\n", others=("primary",)).spec_hash \
        == plain.spec_hash  # defaults written out: the same spec
    for extra in (AFTER, FALLBACK, NARROW, "  overrideBreaker: true\n"):
        assert resolved("x", extra=extra, others=("primary",)).spec_hash != plain.spec_hash, extra


def test_validate_cli_names_file_line_and_rule(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "workflows").mkdir(parents=True)
    (root / "executions").mkdir()
    (root / "workflows" / "w.yaml").write_text(CATALOG)
    (root / "executions" / "a.yaml").write_text(execution_yaml("a", extra="  after: [b]\n"))
    (root / "executions" / "b.yaml").write_text(execution_yaml("b", extra="  onFailureOf: a\n"))
    (root / "executions" / "c.yaml").write_text(execution_yaml("c", extra="  after: [gone]\n"))
    result = CliRunner().invoke(main, ["validate", str(root)])
    assert result.exit_code == 1, result.output
    at = f"{root}/executions"
    assert f"{at}/a.yaml:9:11: spec.after[0]: dependency cycle: a ({at}/a.yaml) -> b ({at}/b.yaml)" in result.output
    assert "executions/b.yaml:9:3: spec.onFailureOf: dependency cycle" in result.output
    assert "executions/c.yaml:9:11: spec.after[0]: spec.after[0] names 'gone'" in result.output
    assert "[dependency-missing]" in result.output


def test_schema_export_documents_the_chain_fields() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    for field in ("after", "onFailureOf", "onFailureReasons", "overrideBreaker"):
        assert f'"{field}"' in result.output, field
    assert "OOMKilled" in result.output


# -- end to end on the fake API server -------------------------------------------------------

def _fallback(name: str = "rollback", of: str = "oom", extra: str = "") -> str:
    return execution_yaml(name, workflow=ROLLBACK, extra=f"  onFailureOf: {of}\n{extra}")


def test_primary_fails_fallback_takes_the_target_at_once_and_completes(env: Env) -> None:
    env.repo.commit("primary and fallback", **{"executions/oom.yaml": execution_yaml("oom"),
                                               "executions/rollback.yaml": _fallback()})
    first = env.cycle()
    assert state(first, "oom") == ("Running", "Running")
    s = first.states["rollback"]
    assert (s.phase, s.reason, s.health) == ("Pending", "WaitingForDependency", "Progressing")
    assert "runs only if oom fails" in s.message and s.skip_details["waitingFor"] == ["oom"]
    assert env.cycle().states["rollback"].reason == "WaitingForDependency"

    env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), kind="oom", task="apply")
    failed = env.cycle()  # the outcome is not on the remote yet: the lock is kept this pass
    assert state(failed, "oom") == ("Failed", "OOMKilled")
    assert state(failed, "rollback") == ("Pending", "LockReleasing")
    assert "once that outcome is on the remote" in failed.states["rollback"].message
    assert failed.requeue  # the service runs the next cycle at once, not at the next poll
    (run,) = env.runs()
    assert run["metadata"]["labels"]["kubernaut.ai/workflow-execution"] == "oom"

    taken = env.cycle()  # no clock advance: the cooldown of oom does not apply to its fallback
    assert state(taken, "rollback") == ("Running", "Running")
    (run,) = env.runs()  # never two live runs on one target: oom's run was deleted first
    assert run["metadata"]["labels"]["kubernaut.ai/workflow-execution"] == "rollback"
    assert env.posts("pipelineruns") == 2 and "LockReleased" in env.events()
    assert state(taken, "oom") == ("Failed", "OOMKilled")

    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    done = env.cycle()
    assert (done.states["rollback"].phase, done.states["rollback"].health) == ("Completed", "Healthy")
    assert env.posts("pipelineruns") == 2


def test_primary_succeeds_fallback_is_skipped(env: Env) -> None:
    env.repo.commit("primary and fallback", **{"executions/oom.yaml": execution_yaml("oom"),
                                               "executions/rollback.yaml": _fallback()})
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    result = env.cycle()
    s = result.states["rollback"]
    assert (s.phase, s.reason, s.health) == ("Skipped", "DependencyNotMet", "Healthy")
    assert "oom ended Completed" in s.message and s.skip_details["conflictingExecution"] == "oom"
    env.clock.advance(minutes=10)
    assert state(env.cycle(), "rollback") == ("Skipped", "DependencyNotMet")  # terminal: final
    assert env.posts("pipelineruns") == 1


def test_narrowed_fallback_is_skipped_for_another_reason(env: Env) -> None:
    env.repo.commit("primary and fallback", **{
        "executions/oom.yaml": execution_yaml("oom"),
        "executions/rollback.yaml": _fallback(extra="  onFailureReasons: [OOMKilled]\n")})
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), kind="exit", task="apply")
    s = env.cycle().states["rollback"]
    assert (s.phase, s.reason) == ("Skipped", "DependencyNotMet")
    assert "failed with TaskFailed, not OOMKilled" in s.message
    assert env.posts("pipelineruns") == 1


def test_after_waits_across_cycles_and_a_restart(env: Env, tmp_path: Path) -> None:
    world = World(env, tmp_path)
    world.push_human("first, then second", **{
        "executions/first.yaml": execution_yaml("first"),
        "executions/second.yaml": execution_yaml("second", target="search/Deployment/api",
                                                 extra="  after: [first]\n")})
    for _ in range(3):
        result = world.cycle()
        assert state(result, "first")[0] == "Running"
        assert state(result, "second") == ("Pending", "WaitingForDependency")
        env.clock.advance(minutes=1)
    assert (world.remote_status("second") or {})["reason"] == "WaitingForDependency"
    world.restart()  # a new process: nothing in memory
    assert state(world.cycle(), "second") == ("Pending", "WaitingForDependency")
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    assert state(world.cycle(), "first") == ("Completed", "Succeeded")
    started = world.cycle()
    assert started.states["second"].phase == "Running"
    assert env.posts("pipelineruns") == 2


def _fail_next(env: Env, world: World, name: str) -> None:
    world.push_human(f"declare {name}", **{f"executions/{name}.yaml": execution_yaml(name)})
    assert world.cycle().states[name].phase == "Running", name
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.fail(NS, run_name(TARGET), kind="oom", task="apply")
    assert state(world.cycle(), name) == ("Failed", "OOMKilled")
    env.clock.advance(minutes=6)  # past the cooldown: the lock is released
    world.cycle()
    assert env.runs() == []


def test_breaker_trips_survives_a_restart_and_expires(env: Env, tmp_path: Path) -> None:
    world = World(env, tmp_path)
    for i in range(3):
        _fail_next(env, world, f"oom-{i}")
    world.push_human("a fourth try", **{"executions/oom-3.yaml": execution_yaml("oom-3")})
    world.restart()  # the count comes from the status history in Git, not memory
    fourth = world.cycle().states["oom-3"]
    assert (fourth.phase, fourth.reason) == ("Skipped", "ConsecutiveFailures")
    assert "oom-2, oom-1, oom-0" in fourth.message and fourth.skip_details["conflictingExecution"] == "oom-2"
    assert env.posts("pipelineruns") == 3
    other = world.restart()[1]  # and once more: the skip is final, the count still there
    assert other.run_once().states["oom-3"].reason == "ConsecutiveFailures"
    env.clock.advance(hours=1)
    world.push_human("after the period", **{"executions/oom-4.yaml": execution_yaml("oom-4")})
    assert world.cycle().states["oom-4"].phase == "Running"
    assert env.posts("pipelineruns") == 4


@pytest.mark.parametrize("allowed", [False, True])
def test_breaker_override_only_where_the_policy_allows(env: Env, allowed: bool) -> None:
    for i in range(3):
        declare(env, f"oom-{i}")
        assert state(env.cycle(), f"oom-{i}") == ("Running", "Running")
        env.tekton.start(NS, run_name(TARGET))
        env.tekton.fail(NS, run_name(TARGET), kind="oom", task="apply")
        env.cycle()
        env.clock.advance(minutes=6)
        env.cycle()
    env.reconciler = env.new_reconciler(gate=Gate(policy=Policy(allow_breaker_override=allowed)))
    declare(env, "override", extra="  overrideBreaker: true\n")
    s = env.cycle().states["override"]
    if allowed:
        assert (s.phase, s.reason) == ("Running", "Running")
        assert env.posts("pipelineruns") == 4
    else:
        assert (s.phase, s.reason) == ("Skipped", "ConsecutiveFailures")
        assert "allowBreakerOverride: false" in s.message
        assert env.posts("pipelineruns") == 3


def test_editing_a_chain_after_start_is_spec_changed(env: Env) -> None:
    env.repo.commit("two", **{"executions/oom.yaml": execution_yaml("oom"),
                              "executions/second.yaml": execution_yaml("second", target="search/Deployment/api")})
    env.cycle()
    env.repo.commit("edit", **{"executions/oom.yaml": execution_yaml("oom", extra="  after: [second]\n")})
    s = env.cycle().states["oom"]
    assert s.condition("SpecChangedAfterStart") is not None and s.sync == "OutOfSync"


# -- views: plan, get, status, the PR markdown ------------------------------------------------

def _chain_repo(env: Env) -> None:
    env.repo.commit("a chain", **{
        "executions/oom.yaml": execution_yaml("oom"),
        "executions/rollback.yaml": _fallback(extra="  onFailureReasons: [OOMKilled]\n"),
        "executions/later.yaml": execution_yaml("later", target="search/Deployment/api",
                                                extra="  after: [rollback]\n")})


def test_plan_shows_who_waits_on_whom(env: Env) -> None:
    _chain_repo(env)
    runner = CliRunner()
    text = runner.invoke(main, ["plan", "--repo", str(env.repo.path)])
    assert text.exit_code == 0, text.output
    assert "runs only if oom fails (OOMKilled)" in text.output
    tree = text.output[text.output.index("Chains (who waits on whom):"):].splitlines()
    assert tree[1:4] == ["  oom  + create",
                         "    if it fails (OOMKilled): rollback  … wait (WaitingForDependency)",
                         "      after it: later  … wait (WaitingForDependency)"]
    md = runner.invoke(main, ["plan", "--repo", str(env.repo.path), "-o", "markdown"]).output
    assert ("- `oom` — + create\n  - if it fails (OOMKilled): `rollback` — … wait (WaitingForDependency)\n"
            "    - after it: `later` — … wait (WaitingForDependency)\n") in md
    data = json.loads(runner.invoke(main, ["plan", "--repo", str(env.repo.path), "-o", "json"]).output)
    rollback = next(e for e in data["executions"] if e["name"] == "rollback")
    assert rollback["depends_on"] == ["oom"] and rollback["condition"] == "if oom fails (OOMKilled)"
    assert "depends_on" not in next(e for e in data["executions"] if e["name"] == "oom")


def test_plan_of_a_recorded_outcome_says_why_the_dependent_is_skipped(env: Env) -> None:
    _chain_repo(env)
    env.cycle()
    env.tekton.start(NS, run_name(TARGET))
    env.tekton.succeed(NS, run_name(TARGET))
    result = env.cycle()
    env.repo.commit("record", **{f"status/{n}.yaml": yaml.safe_dump(s.to_document())
                                 for n, s in result.states.items()})
    out = CliRunner().invoke(main, ["plan", "--repo", str(env.repo.path)]).output
    assert "if it fails (OOMKilled): rollback  ✓ done (DependencyNotMet)" in out  # recorded: final
    assert "after it: later  ~ skip (DependencyNotMet)" in out  # predicted from the recorded outcome
    assert "rollback ended Skipped (DependencyNotMet)" in out


def test_get_and_status_show_the_chain(env: Env) -> None:
    _chain_repo(env)
    result = env.cycle()
    env.repo.commit("record", **{f"status/{n}.yaml": yaml.safe_dump(s.to_document())
                                 for n, s in result.states.items()})
    runner = CliRunner()
    got = runner.invoke(main, ["get", "rollback", "--repo", str(env.repo.path)]).output
    assert "Waits on:     oom (if oom fails (OOMKilled))" in got
    assert "Dependent:    later runs after this: Pending (WaitingForDependency)" in got
    assert "waitingFor: ['oom']" in got
    primary = runner.invoke(main, ["get", "oom", "--repo", str(env.repo.path)]).output
    assert "Dependent:    rollback runs if this fails (OOMKilled): Pending (WaitingForDependency)" in primary
    rows = json.loads(runner.invoke(main, ["status", "--repo", str(env.repo.path), "-o", "json"]).output)
    by_name = {r["name"]: r for r in rows["executions"]}
    assert by_name["later"]["dependsOn"] == ["rollback"] and by_name["later"]["reason"] == "WaitingForDependency"
    assert "dependsOn" not in by_name["oom"]


def test_dashboard_detail_shows_the_chain(env: Env) -> None:
    from reconciler.source.gitsource import GitSource
    from reconciler.views.status_view import detail
    from tests.test_dashboard import FakeSource, serve

    _chain_repo(env)
    result = env.cycle()
    source = GitSource(str(env.repo.path), cache_dir=env.tmp / "views")
    commit = source.fetch()
    decl = source.load(commit)
    details = {n: detail(source, commit, decl, result.states, n) for n in ("oom", "rollback")}
    fake = FakeSource({n: d for n, d in details.items() if d is not None})
    with serve(fake) as server:
        rollback = httpx.get(f"{server.url}/executions/rollback", timeout=10).text
        primary = httpx.get(f"{server.url}/executions/oom", timeout=10).text
    waits = rollback.split('id="chain-waits-on">', 1)[1].split("</dd>", 1)[0]
    assert '<a href="/executions/oom">oom</a>' in waits and "(if oom fails (OOMKilled))" in waits
    assert "Why it did not run" in rollback and "WaitingForDependency" in rollback
    dependents = re.findall(r'<dd class="chain-dependent">(.*?)</dd>', primary)
    assert len(dependents) == 1 and '<a href="/executions/rollback">rollback</a>' in dependents[0]
    assert "phase-Pending" in dependents[0] and "WaitingForDependency" in dependents[0]


def test_breaker_settings_and_policy_switch_are_configurable() -> None:
    from reconciler.errors import ConfigError
    from reconciler.service.config import load_config

    config = load_config(None, environ={"RECONCILER_REPOSITORY__URL": "https://git.example/r.git",
                                        "RECONCILER_EXECUTION__BREAKER_FAILURES": "5",
                                        "RECONCILER_EXECUTION__BREAKER_PERIOD": "30m"})
    assert (config.execution.breaker_failures, config.execution.breaker_period) == (5, "30m")
    defaults = load_config(None, environ={"RECONCILER_REPOSITORY__URL": "https://git.example/r.git"})
    assert (defaults.execution.breaker_failures, defaults.execution.breaker_period) == (3, "1h")
    with pytest.raises(ConfigError, match=r"execution\.breakerPeriod"):
        load_config(None, environ={"RECONCILER_REPOSITORY__URL": "x", "RECONCILER_EXECUTION__BREAKER_PERIOD": "soon"})
    with pytest.raises(ConfigError, match=r"execution\.breakerFailures"):
        load_config(None, environ={"RECONCILER_REPOSITORY__URL": "x", "RECONCILER_EXECUTION__BREAKER_FAILURES": "-1"})
    assert Policy.model_validate({"allowBreakerOverride": True}).allow_breaker_override
    assert not Policy().allow_breaker_override
